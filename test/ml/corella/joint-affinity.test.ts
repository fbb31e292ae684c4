import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { trainJoint } from '../../../ml/corella/joint.js';
import type { EncodedSplit, ItemTable } from '../../../ml/data/types.js';
import type { LlmFeatures, LlmFeatureSource } from '../../../ml/llm/types.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-joint-affinity-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * The world's LLM with item-affinity features as the real extractor gives them: a field of their own. Here
 * they carry the world's decisive hidden column (and two noise columns), so an adapter that reads only its
 * input tail (affinity + log-odds) can learn only if it reads the affinity field, row-aligned.
 */
class AffinityLlm implements LlmFeatureSource {
  /** signal false: the first column is noise too (the control). */
  constructor(
    private readonly inner: LlmFeatureSource,
    private readonly signal = true,
  ) {}

  async features(split: EncodedSplit, items: ItemTable, rows: ArrayLike<number>): Promise<LlmFeatures> {
    const f = await this.inner.features(split, items, rows);
    const n = f.sampleIds.length;
    const affinity = new Float32Array(n * 3);
    for (let i = 0; i < n; i++) {
      affinity[i * 3] = this.signal ? f.hidden[i * f.hiddenDim] : Math.sin(3.7 * f.sampleIds[i] + 1);
      affinity[i * 3 + 1] = Math.sin(f.sampleIds[i]);
      affinity[i * 3 + 2] = Math.cos(f.sampleIds[i]);
    }
    return { ...f, affinity };
  }
}

describe('trainJoint with item-affinity features', () => {
  it('builds the adapter for the named affinity columns and learns from them through the input tail', async () => {
    const world = acceptanceWorld(2, { train: 900, valid: 300, test: 10 });
    const run = async (signal: boolean, name: string) => {
      const crm = new TinyCrm([3, 6], { seed: 3 });
      await trainTinyCrm(crm, world.dataset.splits.train, 2);
      return trainJoint({
        crm,
        dataset: world.dataset,
        llm: new AffinityLlm(world.llm, signal),
        store: new FileArtifactStore(join(dir, name)),
        config: {
          stage2: { samples: 400, epochs: 3, batchSize: 64, learningRate: 0.02, crmLearningRate: 0.01 },
          stage3: { samples: 400, epochs: 4, batchSize: 64, learningRate: 0.02 },
          adapter: { layers: [8, 4], inputTail: 4, skipInputs: 4 },
          alignment: { sharedDim: 4 },
          validationSamples: 300,
          boundaryShift: false,
        },
      });
    };
    const r = await run(true, 'signal');
    const control = await run(false, 'control');
    expect(r.adapter.config.hiddenDim).toBe(world.llm.hiddenDim);
    expect(r.adapter.config.affinityDim).toBe(3);
    expect(r.adapter.inputDim).toBe(4);
    // On the special segment's neutral rows only the LLM side (here: the first affinity column) knows the
    // label: the branch reading the affinity field, row-aligned, beats the same branch on noise columns.
    expect(r.stage3.validation!.llm.auc).toBeGreaterThan(control.stage3.validation!.llm.auc + 0.03);
    // Features without the affinity field are refused, not read as something else.
    const plain = await world.llm.features(world.dataset.splits.valid, world.dataset.items, [0, 1]);
    expect(() => r.adapter.predict(plain)).toThrow(/affinity/);
    for (const x of [r, control]) {
      x.adapter.dispose();
      x.projections.dispose();
    }
  });
});
