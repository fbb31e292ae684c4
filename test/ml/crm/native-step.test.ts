import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adam } from '../../../ml/crm/adam.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { CrmNet } from '../../../ml/crm/model.js';
import { nativeStepSupported } from '../../../ml/crm/native-step.js';
import { LocalStepper } from '../../../ml/crm/parallel.js';
import type { CrmConfig } from '../../../ml/crm/types.js';
import type { EncodedSplit, FeatureMap } from '../../../ml/data/types.js';
import { uniformCategoricalSplit } from '../../../ml/data/uniform-categorical.js';
import { initTf } from '../../../ml/tf/backend.js';
import { loadNative } from '../../../ml/tf/native.js';
import { syntheticDataset } from './fixtures.js';

/**
 * The tape-free training step (ml/crm/native-step.ts) calls the kernels the tape's ops call, in the same
 * order, so its losses and weights must be the tape step's bits: on the bench shape (categorical fields
 * only, x0 straight from the bag), on a feature map with a pooled sequence and a dense field (x0
 * assembled from parts), at 1 and 2 pool threads, and for a cross-network-only model.
 */
const addon = loadNative().addon;

/** The bench's shape: 8 categorical fields, uniform ids, coin-flip labels. */
function benchSplit(): { featureMap: FeatureMap; split: EncodedSplit } {
  return uniformCategoricalSplit('native-step-bench', [6040, 3706, 2, 7, 21, 3439, 18, 100], 4096);
}

function train(
  config: CrmConfig,
  featureMap: FeatureMap,
  split: EncodedSplit,
  opts: { tape: boolean; threads: number; steps?: number; batch?: number },
) {
  addon!.setThreads(opts.threads);
  const model = new CrmNet(config, featureMap);
  const stepper = new LocalStepper(model, new Adam({ lr: 0.001 }), split, { tape: opts.tape });
  const tapeFree = stepper.tapeFree;
  const losses: number[] = [];
  const B = opts.batch ?? 1024;
  return (async () => {
    for (let s = 0; s < (opts.steps ?? 10); s++) {
      const rows = Int32Array.from({ length: B }, (_, i) => (s * B + i * 7) % split.size);
      losses.push(await stepper.step(rows, s));
    }
    const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
    await stepper.close();
    model.dispose();
    addon!.setThreads(1);
    return { losses, weights, tapeFree };
  })();
}

describe.runIf(addon !== undefined)('the tape-free native training step', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });
  afterAll(async () => {
    addon!.setThreads(1);
    await initTf('wasm', () => undefined);
  });

  const dcnv2 = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });

  it('bench shape, 10 steps of 1024: every loss and weight bit-identical to the tape step, at 1 and 2 threads', async () => {
    const { featureMap, split } = benchSplit();
    const tape = await train(dcnv2, featureMap, split, { tape: true, threads: 1 });
    expect(tape.tapeFree).toBe(false);
    for (const threads of [1, 2]) {
      const native = await train(dcnv2, featureMap, split, { tape: false, threads });
      expect(native.tapeFree).toBe(true);
      expect(native.losses, `${threads} thread(s): losses`).toEqual(tape.losses);
      tape.weights.forEach((w, i) =>
        expect(native.weights[i], `${threads} thread(s): variable ${i}`).toEqual(w),
      );
    }
    // The steps trained: a run that changed nothing would agree trivially.
    expect(tape.losses[9]).not.toBe(tape.losses[0]);
  });

  it('a pooled history and a dense field (x0 built from parts), and a cross-network-only model: the tape step’s bits', async () => {
    const ds = syntheticDataset({ users: 3000, items: 2000, rows: 4096, dense: 1, maxLen: 5 });
    const configs = [
      dcnv2,
      defaultCrmConfig('dcnv2', {
        embeddingDim: 8,
        crossLayers: 2,
        mlp: [],
        crossStructure: 'crossnet_only',
      }),
    ];
    for (const config of configs) {
      const tape = await train(config, ds.featureMap, ds.splits.train, {
        tape: true,
        threads: 2,
        steps: 6,
        batch: 600,
      });
      const native = await train(config, ds.featureMap, ds.splits.train, {
        tape: false,
        threads: 2,
        steps: 6,
        batch: 600,
      });
      expect(native.tapeFree).toBe(true);
      expect(native.losses, config.crossStructure).toEqual(tape.losses);
      tape.weights.forEach((w, i) =>
        expect(native.weights[i], `${config.crossStructure}: variable ${i}`).toEqual(w),
      );
      expect(tape.losses[5]).not.toBe(tape.losses[0]);
    }
  });

  it('models the native step does not cover keep the tape', () => {
    const ds = syntheticDataset({ rows: 64 });
    const base = { embeddingDim: 8, crossLayers: 2, mlp: [16] };
    const covered = new CrmNet(defaultCrmConfig('dcnv2', base), ds.featureMap);
    expect(nativeStepSupported(covered)).toBe(true);
    for (const over of [
      { batchNorm: true },
      { dropout: 0.1 },
      { crossStructure: 'parallel' as const },
      { lowRank: { rank: 4, experts: 2 } },
    ]) {
      const model = new CrmNet(defaultCrmConfig('dcnv2', { ...base, ...over }), ds.featureMap);
      expect(nativeStepSupported(model), JSON.stringify(over)).toBe(false);
      const stepper = new LocalStepper(model, new Adam({ lr: 0.001 }), ds.splits.train);
      expect(stepper.tapeFree, JSON.stringify(over)).toBe(false);
      model.dispose();
    }
    covered.dispose();
  });
});
