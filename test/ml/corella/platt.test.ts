import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { trainJoint } from '../../../ml/corella/joint.js';
import { fitPlatt } from '../../../ml/corella/platt.js';
import { mulberry32 } from '../../../ml/random.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-platt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fitPlatt', () => {
  it('recovers the slope and intercept that generated the labels', () => {
    const rng = mulberry32(9);
    const n = 20_000;
    const z = Float32Array.from({ length: n }, () => (rng() * 2 - 1) * 4);
    const y = Float32Array.from(z, (zi) => (rng() < 1 / (1 + Math.exp(-(0.4 * zi - 0.7))) ? 1 : 0));
    const { a, b } = fitPlatt(z, y);
    expect(a).toBeCloseTo(0.4, 1);
    expect(b).toBeCloseTo(-0.7, 1);
  });

  it('flattens an inverted branch to the base rate instead of trusting a negative slope', () => {
    const z = Float32Array.from([-2, -1, 1, 2, -2, 2]);
    const y = Float32Array.from([1, 1, 0, 0, 1, 0]);
    const { a, b } = fitPlatt(z, y);
    expect(a).toBe(0);
    expect(b).toBeCloseTo(0, 6);
  });
});

describe('trainJoint with calibrateOutput', () => {
  it('folds the Platt scale of the uncertain validation rows into the stored adapter', async () => {
    const { dataset, llm } = acceptanceWorld(2, { train: 800, valid: 300, test: 10 });
    const config = {
      stage2: { samples: 300, epochs: 2, batchSize: 64, learningRate: 0.01, crmLearningRate: 0.01 },
      stage3: { samples: 200, epochs: 2, batchSize: 64, learningRate: 0.01 },
      adapter: { layers: [8, 4] },
      alignment: { sharedDim: 4 },
      validationSamples: 100,
    };
    const run = async (calibrateOutput: number, sub: string) => {
      const crm = new TinyCrm([3, 6], { seed: 3 });
      await trainTinyCrm(crm, dataset.splits.train, 2);
      const r = await trainJoint({
        crm,
        dataset,
        llm,
        store: new FileArtifactStore(join(dir, sub)),
        config: { ...config, calibrateOutput },
      });
      return { r, crm };
    };
    const plain = await run(0, 'plain');
    const cal = await run(0.3, 'cal');
    expect(plain.r.outputCalibration).toBeUndefined();
    const oc = cal.r.outputCalibration!;
    expect(oc.rows).toBe(30);
    expect(oc.after.logLoss).toBeLessThanOrEqual(oc.before.logLoss + 1e-9);
    // Same training, then logit a·z + b: the stored adapter is the rescaled one.
    const f = await llm.features(dataset.splits.valid, dataset.items, [0, 1, 2, 3, 4]);
    const z0 = plain.r.adapter.predictLogits(f);
    const stored = LlmAdapter.deserialize(
      await new FileArtifactStore(join(dir, 'cal')).get(cal.r.artifacts.adapter.sha256),
    );
    const z1 = stored.predictLogits(f);
    for (let i = 0; i < z0.length; i++) expect(z1[i]).toBeCloseTo(oc.a * z0[i] + oc.b, 4);
    expect(Math.abs(oc.a - 1) + Math.abs(oc.b)).toBeGreaterThan(1e-3);
    for (const x of [plain, cal]) {
      x.r.adapter.dispose();
      x.r.projections.dispose();
      x.crm.dispose();
    }
    stored.dispose();
  });
});
