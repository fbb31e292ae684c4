import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { DEFAULT_CALIBRATION_CONFIG } from '../../../ml/corella/calibration.js';
import {
  jointValidationRows,
  resolveJointConfig,
  trainJoint,
  type JointConfigInput,
} from '../../../ml/corella/joint.js';
import { selectSubsets } from '../../../ml/corella/subsets.js';
import { mulberry32 } from '../../../ml/random.js';
import { sampleRows } from '../../../ml/corella/sampling.js';
import { restoreVariables, snapshotVariables } from '../../../ml/corella/weights.js';
import { CorellaError } from '../../../ml/errors.js';
import type { Progress } from '../../../ml/progress.js';
import { acceptanceWorld, makeSplit, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
let n = 0;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-joint-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const small: JointConfigInput = {
  stage2: { samples: 300, epochs: 2, batchSize: 64, learningRate: 0.01, crmLearningRate: 0.01 },
  stage3: { samples: 200, epochs: 2, batchSize: 64, learningRate: 0.01 },
  adapter: { layers: [8, 4] },
  alignment: { sharedDim: 4 },
  validationSamples: 100,
};

async function setup(seed = 1) {
  const world = acceptanceWorld(seed, { train: 800, valid: 300, test: 10 });
  const crm = new TinyCrm([3, 6], { seed: 3 });
  await trainTinyCrm(crm, world.dataset.splits.train, 2);
  const store = new FileArtifactStore(join(dir, `s${n++}`));
  return { ...world, crm, store };
}

const weights = (crm: TinyCrm) =>
  JSON.stringify(snapshotVariables(crm.trainableVariables()).map((s) => s.data));

describe('trainJoint', () => {
  it('asks the LLM only for the disjoint stage-2/3 subsets and the validation sample', async () => {
    const { dataset, llm, crm, store } = await setup();
    const progress: Progress[] = [];
    const r = await trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: small,
      onProgress: (p) => void progress.push(p),
    });
    const trainRows = llm.calls.filter((c) => c.split === 'train').flatMap((c) => c.rows);
    const validRows = llm.calls.filter((c) => c.split === 'valid').flatMap((c) => c.rows);
    expect(trainRows.length).toBe(500);
    expect(new Set(trainRows).size).toBe(500);
    expect(validRows.length).toBe(100);
    expect(llm.calls.some((c) => c.split === 'test')).toBe(false);
    expect(r.stage2.samples).toBe(300);
    expect(r.stage3.samples).toBe(200);
    expect(r.stage2.epochs).toHaveLength(2);
    expect(r.stage3.epochs).toHaveLength(2);
    expect(progress.filter((p) => p.stage === 'stage2')).toHaveLength(2);
    expect(progress.filter((p) => p.stage === 'stage3').every((p) => typeof p.checkpoint === 'string')).toBe(
      true,
    );
    // The stage-2 objective is α·L_llm + β·L_crm + γ·L_align (defaults 1, 1, 0.1).
    for (const e of r.stage2.epochs) expect(e.total).toBeCloseTo(e.llm + e.crm + 0.1 * e.align, 4);
    expect(r.boundaryShift?.before.n).toBe(100);
    expect(r.boundaryShift?.after.alignLoss).toBeLessThan(r.boundaryShift!.before.alignLoss);
    // The stored adapter artifact is the returned adapter.
    const back = LlmAdapter.deserialize(await store.get(r.artifacts.adapter.sha256));
    const f = await llm.features(dataset.splits.valid, dataset.items, [0, 1, 2, 3]);
    expect(Array.from(back.predict(f))).toEqual(Array.from(r.adapter.predict(f)));
    back.dispose();
    r.adapter.dispose();
    r.projections.dispose();
  });

  it('switches stages off: no stage 2 leaves the CRM untouched, no stages leaves the adapter at init', async () => {
    const { dataset, llm, crm, store } = await setup();
    const w0 = weights(crm);
    const only3 = await trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: { ...small, stage2: { ...small.stage2, enabled: false }, checkpointName: 'only3' },
    });
    expect(weights(crm)).toBe(w0);
    expect(only3.stage2.epochs).toHaveLength(0);
    expect(only3.stage3.epochs).toHaveLength(2);
    expect(only3.boundaryShift).toBeUndefined();

    const none = await trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: {
        ...small,
        stage2: { ...small.stage2, enabled: false },
        stage3: { ...small.stage3, enabled: false },
        checkpointName: 'none',
      },
    });
    const init = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [8, 4], seed: 7 });
    const f = await llm.features(dataset.splits.valid, dataset.items, [0, 1, 2]);
    // No training rows: normalisation is not fitted either, so the adapter is exactly its initialisation.
    expect(Array.from(none.adapter.predict(f))).toEqual(Array.from(init.predict(f)));

    const with2 = await trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: { ...small, checkpointName: 'with2' },
    });
    expect(weights(crm)).not.toBe(w0);
    for (const r of [only3, none, with2]) {
      r.adapter.dispose();
      r.projections.dispose();
    }
    init.dispose();
  });

  it('resumes from its checkpoint instead of training again', async () => {
    const { dataset, llm, crm, store } = await setup();
    const stage1 = snapshotVariables(crm.trainableVariables());
    const cfg = { ...small, checkpointName: 'resume' };
    const first = await trainJoint({ crm, dataset, llm, store, config: cfg });
    const asked = llm.requestedRows;
    const afterFirst = weights(crm);
    // The caller hands the same stage-1 CRM to the retried run.
    restoreVariables(crm.trainableVariables(), stage1, 'stage-1 CRM');
    const again = await trainJoint({ crm, dataset, llm, store, config: cfg });
    expect(again.resumedFrom).toBe('stage3:2');
    expect(again.artifacts.adapter.sha256).toBe(first.artifacts.adapter.sha256);
    expect(again.stage2.epochs).toEqual(first.stage2.epochs);
    // The CRM comes back as stage 2 left it.
    expect(weights(crm)).toBe(afterFirst);
    // Features are asked for again (the source caches them), the training is not repeated.
    expect(llm.requestedRows).toBe(2 * asked);
    // A different starting CRM (here: the one stage 2 changed) or resume: false starts afresh.
    const other = await trainJoint({ crm, dataset, llm, store, config: cfg });
    expect(other.resumedFrom).toBeUndefined();
    restoreVariables(crm.trainableVariables(), stage1, 'stage-1 CRM');
    const fresh = await trainJoint({ crm, dataset, llm, store, config: { ...cfg, resume: false } });
    expect(fresh.resumedFrom).toBeUndefined();
    for (const r of [first, again, other, fresh]) {
      r.adapter.dispose();
      r.projections.dispose();
    }
  });

  it('rejects bad configs with the field named, before touching the store', async () => {
    const { dataset, llm, crm, store } = await setup();
    const w0 = weights(crm);
    await expect(
      trainJoint({
        crm,
        dataset,
        llm,
        store,
        config: { ...small, stage2: { ...small.stage2, samples: 700 } },
      }),
    ).rejects.toThrow(/stage2\.samples \(700\) \+ stage3\.samples \(200\)/);
    await expect(trainJoint({ crm, dataset, llm, store, config: { ...small, gamma: -1 } })).rejects.toThrow(
      CorellaError,
    );
    await expect(
      trainJoint({
        crm,
        dataset,
        llm,
        store,
        config: { ...small, alignment: { sharedDim: 4, pairs: [{ crm: 'cross_0', llm: 'adapter_0' }] } },
      }),
    ).rejects.toThrow(/pairs\[0\]\.crm/);
    expect(weights(crm)).toBe(w0);
    // Nothing was written: the store's directory was never even created.
    await expect(stat(store.root)).rejects.toThrow(/ENOENT/);
  });

  it('stops when cancelled', async () => {
    const { dataset, llm, crm, store } = await setup();
    const ac = new AbortController();
    const run = trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: small,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.stage === 'stage2') ac.abort(new Error('stop now'));
      },
    });
    await expect(run).rejects.toThrow('stop now');
  });
});

describe('subset selection', () => {
  it('biases hard subsets towards high CRM entropy and keeps stages disjoint', () => {
    const rng = mulberry32(3);
    const h = Float32Array.from({ length: 2000 }, () => rng() * Math.LN2);
    const mean = (rows: Int32Array) => rows.reduce((a, r) => a + h[r], 0) / rows.length;
    const hard = selectSubsets({ size: h.length, n2: 300, n3: 300, selection: 'hard', seed: 1, entropy: h });
    const harder = selectSubsets({
      size: h.length,
      n2: 300,
      n3: 300,
      selection: 'hard',
      seed: 1,
      entropy: h,
      hardPower: 6,
    });
    const rand = selectSubsets({ size: h.length, n2: 300, n3: 300, selection: 'random', seed: 1 });
    expect(mean(rand.stage2)).toBeCloseTo(Math.LN2 / 2, 1);
    expect(mean(hard.stage2)).toBeGreaterThan(mean(rand.stage2) + 0.1);
    expect(mean(harder.stage2)).toBeGreaterThan(mean(hard.stage2));
    for (const p of [hard, harder, rand]) {
      expect(p.stage2.length).toBe(300);
      expect(new Set([...p.stage2, ...p.stage3]).size).toBe(600);
    }
  });
});

describe('validation rows', () => {
  it('are a subset of the calibration rows with the default seeds, so their LLM features are shared', () => {
    const split = (n: number) => ({ ...makeSplit('valid', [], 0), size: n });
    const v = jointValidationRows(split(3000), resolveJointConfig({ validationSamples: 200 }));
    const c = new Set(sampleRows(3000, 900, DEFAULT_CALIBRATION_CONFIG.seed));
    expect(v).toHaveLength(200);
    expect(Array.from(v).every((r) => c.has(r))).toBe(true);
    expect(jointValidationRows(split(100), resolveJointConfig({ validationSamples: 500 }))).toHaveLength(100);
  });
});
