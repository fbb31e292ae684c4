import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { findCheckpoint } from '../../../ml/corella/joint-checkpoint.js';
import { openLoraBranch } from '../../../ml/corella/joint-lora-branch.js';
import { trainStage2, trainStage3 } from '../../../ml/corella/joint-stages.js';
import type { EncodedSplit } from '../../../ml/data/types.js';
import type { LlamaTf } from '../../../ml/llm/tf/llama-forward.js';
import { LoraBranch } from '../../../ml/llm/tf/lora-branch.js';
import type { Progress } from '../../../ml/progress.js';
import { useTinyLlamaTf } from '../../helpers/tiny-llama-tf.js';
import { acceptanceWorld, jointStageLoop, TinyCrm, trainTinyCrm } from './fixtures.js';

let model: LlamaTf;
let modelPath: string;
let dir: string;
const YES = 300;
const NO = 301;

/**
 * A prompt per row that carries what the label depends on (the segment, the level and, on the "neutral"
 * level, the hidden z as one of two tokens), after a shared head, as a history prompt would.
 */
function promptOf(split: EncodedSplit, row: number): number[] {
  const [seg, level] = [split.categorical[2 * row], split.categorical[2 * row + 1]];
  return [1, 40, 41, 42, 50 + seg, 60 + level, 70 + (split.labels[row] > 0.5 ? 1 : 0), 43];
}

useTinyLlamaTf('corella-joint-lora-', (m, path) => {
  model = m;
  modelPath = path;
  dir = dirname(path);
});

describe('the joint trainer with a LoRA branch (llm.finetune.method = "lora")', () => {
  it('stage 2 (α·L_llm + β·L_crm + γ·L_align on real blocks) and stage 3 train the LoRA; checkpoints restore it', async () => {
    const world = acceptanceWorld(3, { train: 300, valid: 60, test: 10 });
    const { dataset } = world;
    const crm = new TinyCrm([3, 6], { seed: 3 });
    await trainTinyCrm(crm, dataset.splits.train, 1);
    const store = new FileArtifactStore(join(dir, 'store'));
    const rows = {
      stage2: Int32Array.from({ length: 96 }, (_, i) => i),
      stage3: Int32Array.from({ length: 64 }, (_, i) => 100 + i),
      valid: Int32Array.from({ length: 60 }, (_, i) => i),
    };
    const progress: Progress[] = [];
    const opened = await openLoraBranch({
      model,
      modelPath,
      modelSha256: 'f'.repeat(64),
      template: 'test',
      finetune: { method: 'lora', layers: 2, rank: 4, alpha: 8, targets: ['q', 'v'], frozenThreads: 1 },
      answerTokens: [YES, NO],
      promptOf,
      dataset,
      rows,
      alignLayers: [0, 2],
      store,
      onProgress: (p) => void progress.push(p),
    });
    const { branch } = opened;
    expect(branch.kind).toBe('lora');
    // Every row's frozen pass ran once, before the first step (block 0 is frozen, so its row is kept).
    const distinct = new Set(
      [
        ...Array.from(rows.stage2, (r) => promptOf(dataset.splits.train, r)),
        ...Array.from(rows.stage3, (r) => promptOf(dataset.splits.train, r)),
        ...Array.from(rows.valid, (r) => promptOf(dataset.splits.valid, r)),
      ].map((t) => t.join(',')),
    ).size;
    expect(opened.frozen).toMatchObject({ computed: distinct, fromStore: 0 });
    expect(progress.at(-1)).toMatchObject({ stage: 'llm-frozen-pass', done: 220, total: 220 });
    expect(branch.frozen.keepLayers).toEqual([0]);

    const { pairs, proj, lossHistory, loop } = jointStageLoop({
      crm,
      branch,
      train: dataset.splits.train,
      store,
      name: 'joint-lora',
      rows,
      joint: {
        stage2: { samples: 96, epochs: 2, batchSize: 16, learningRate: 0.02, crmLearningRate: 0.001 },
        stage3: { samples: 64, epochs: 2, batchSize: 16, learningRate: 0.02 },
        validationSamples: 60,
      },
      sharedDim: 4,
    });
    const y = Array.from(rows.valid, (r) => dataset.splits.valid.labels[r]);
    const validBce = () => {
      const p = branch.predict('valid');
      return -y.reduce((a, l, i) => a + (l ? Math.log(p[i]) : Math.log(1 - p[i])), 0) / y.length;
    };
    const zeroShot = validBce();
    const b0 = JSON.stringify(branch.adapter.toHostSync());
    await trainStage2({
      ...loop,
      rows: rows.stage2,
      startEpoch: 0,
      history: lossHistory.stage2,
      pairCount: pairs.length,
    });
    expect(lossHistory.stage2).toHaveLength(2);
    for (const e of lossHistory.stage2) {
      expect(e.total).toBeCloseTo(e.llm + e.crm + 0.1 * e.align, 4);
      expect(e.align).toBeGreaterThan(0);
    }
    expect(lossHistory.stage2[1].llm).toBeLessThan(lossHistory.stage2[0].llm);
    const afterStage2 = JSON.stringify(branch.adapter.toHostSync());
    expect(afterStage2).not.toBe(b0);
    await trainStage3({ ...loop, rows: rows.stage3, startEpoch: 0, history: lossHistory.stage3 });
    expect(lossHistory.stage3).toHaveLength(2);
    expect(JSON.stringify(branch.adapter.toHostSync())).not.toBe(afterStage2);
    // The prompts carry the label: a trained LoRA must beat the zero-shot model on the validation rows.
    expect(validBce()).toBeLessThan(zeroShot - 0.05);

    // The latest checkpoint holds the branch: reopening from it gives the same predictions.
    const ckpt = await findCheckpoint(store, 'joint-lora', 'hash-1');
    expect(ckpt).toMatchObject({ phase: 'stage3', epochsDone: 2 });
    const reopened = await openLoraBranch({
      model,
      modelPath,
      modelSha256: 'f'.repeat(64),
      template: 'test',
      finetune: { method: 'lora', layers: 2, rank: 4, alpha: 8, frozenThreads: 1 },
      answerTokens: [YES, NO],
      promptOf,
      dataset,
      rows,
      store,
      saved: await store.get(ckpt!.adapter),
    });
    // The frozen pass came from the store this time.
    expect(reopened.frozen).toMatchObject({ computed: 0, fromStore: distinct });
    expect(reopened.branch).toBeInstanceOf(LoraBranch);
    const p1 = branch.predict('valid');
    const p2 = reopened.branch.predict('valid');
    p1.forEach((v, i) => expect(p2[i]).toBeCloseTo(v, 6));
    reopened.branch.dispose();
    branch.dispose();
    proj.dispose();
  }, 300_000);

  it('refuses a finetune config that is not LoRA', async () => {
    const world = acceptanceWorld(4, { train: 10, valid: 5, test: 5 });
    await expect(
      openLoraBranch({
        model,
        modelPath,
        modelSha256: 'f'.repeat(64),
        template: 'test',
        finetune: { method: 'none' } as never,
        answerTokens: [YES, NO],
        promptOf,
        dataset: world.dataset,
        rows: { stage2: new Int32Array(0), stage3: new Int32Array(0), valid: new Int32Array(0) },
      }),
    ).rejects.toMatchObject({ code: 'BAD_CONFIG' });
  });
});
