import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { openLoraBranch } from '../../../ml/corella/joint-lora-branch.js';
import { trainStage2, trainStage3 } from '../../../ml/corella/joint-stages.js';
import type { EncodedSplit } from '../../../ml/data/types.js';
import { CorellaError } from '../../../ml/errors.js';
import type { LlamaTf } from '../../../ml/llm/tf/llama-forward.js';
import { useTinyLlamaTf } from '../../helpers/tiny-llama-tf.js';
import { acceptanceWorld, jointStageLoop, TinyCrm, trainTinyCrm } from './fixtures.js';

/**
 * llm.finetune.frozenMemoryMb: the pipeline's LoRA branch with a frozen-output budget far below its rows'
 * entries trains stage 2 and stage 3 to the same bits as with every entry in memory.
 */
let model: LlamaTf;
let modelPath: string;
let dir: string;
const YES = 300;
const NO = 301;

function promptOf(split: EncodedSplit, row: number): number[] {
  const [seg, level] = [split.categorical[2 * row], split.categorical[2 * row + 1]];
  return [1, 40, 41, 42, 50 + seg, 60 + level, 70 + (split.labels[row] > 0.5 ? 1 : 0), 43, 44 + (row % 7)];
}

useTinyLlamaTf('corella-joint-lora-memory-', (m, path) => {
  model = m;
  modelPath = path;
  dir = dirname(path);
});

const world = () => acceptanceWorld(3, { train: 200, valid: 40, test: 10 });
const rows = {
  stage2: Int32Array.from({ length: 48 }, (_, i) => i),
  stage3: Int32Array.from({ length: 48 }, (_, i) => 100 + i),
  valid: Int32Array.from({ length: 40 }, (_, i) => i),
};

async function run(name: string, frozenMemoryMb?: number) {
  const { dataset } = world();
  const crm = new TinyCrm([3, 6], { seed: 3 });
  await trainTinyCrm(crm, dataset.splits.train, 1);
  const store = new FileArtifactStore(join(dir, name));
  const opened = await openLoraBranch({
    model,
    modelPath,
    modelSha256: 'e'.repeat(64),
    template: 'test',
    finetune: { method: 'lora', layers: 2, rank: 4, alpha: 8, frozenMemoryMb, frozenThreads: 1 },
    answerTokens: [YES, NO],
    promptOf,
    dataset,
    rows,
    alignLayers: [0, 2],
    store,
  });
  const { branch } = opened;
  const { pairs, lossHistory, loop } = jointStageLoop({
    crm,
    branch,
    train: dataset.splits.train,
    store,
    name: 'joint-lora-mem',
    rows,
    joint: {
      stage2: { samples: 48, epochs: 1, batchSize: 8, learningRate: 0.02, crmLearningRate: 0.001 },
      stage3: { samples: 48, epochs: 2, batchSize: 8, learningRate: 0.02 },
      validationSamples: 40,
    },
    sharedDim: 4,
  });
  await trainStage2({
    ...loop,
    rows: rows.stage2,
    startEpoch: 0,
    history: lossHistory.stage2,
    pairCount: pairs.length,
  });
  await trainStage3({ ...loop, rows: rows.stage3, startEpoch: 0, history: lossHistory.stage3 });
  const out = {
    lossHistory,
    weights: branch.adapter.toHostSync(),
    valid: branch.predict('valid'),
    peak: branch.frozen.peakResidentBytes,
    reads: branch.frozen.stats.storeReads,
    entries: opened.frozen.computed,
    maxBytes: branch.frozen.maxBytes,
  };
  branch.dispose();
  return out;
}

describe('llm.finetune.frozenMemoryMb', () => {
  it('a budget below the entries trains stages 2 and 3 to the same bits, within the budget', async () => {
    const full = await run('full');
    // Each entry: 9 tokens and one kept row (block 0) of nEmbd floats.
    const entry = 10 * model.hp.nEmbd * 4;
    expect(full.peak).toBe(full.entries * entry);
    expect(full.reads).toBe(0);
    const budgetMb = (12 * entry) / 2 ** 20;
    const bounded = await run('bounded', budgetMb);
    expect(bounded.maxBytes).toBe(budgetMb * 2 ** 20);
    expect(bounded.peak).toBeLessThanOrEqual(12 * entry);
    expect(bounded.reads).toBeGreaterThan(rows.stage2.length);
    expect(bounded.lossHistory).toEqual(full.lossHistory);
    expect(bounded.weights).toEqual(full.weights);
    expect(Array.from(bounded.valid)).toEqual(Array.from(full.valid));
  }, 240_000);

  it('a budget without a local store to read entries back from is a typed error naming the field', async () => {
    const { dataset } = world();
    const err = await openLoraBranch({
      model,
      modelPath,
      modelSha256: 'e'.repeat(64),
      template: 'test',
      finetune: { method: 'lora', layers: 2, frozenMemoryMb: 1, frozenThreads: 1 },
      answerTokens: [YES, NO],
      promptOf,
      dataset,
      rows,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).details.field).toBe('llm.finetune.frozenMemoryMb');
  });
});
