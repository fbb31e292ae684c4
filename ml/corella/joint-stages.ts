/**
 * The stage loops of the joint trainer: each runs its epochs from where a checkpoint left off, checkpoints
 * after every epoch and reports progress. The branch they train is any JointLlmBranch.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit } from '../data/types.js';
import type { LongRunOptions } from '../progress.js';
import type { AlignmentProjections } from './alignment.js';
import { boundaryShift, type BoundaryShift } from './boundary.js';
import type { JointCheckpointer } from './joint-checkpoint.js';
import type { JointConfig } from './joint-config.js';
import { branchEpoch, jointEpoch, stage2Step, validationAlignLoss, type EpochLoss } from './joint-epochs.js';
import type { JointLlmBranch } from './joint-llm-branch.js';

export interface StageLoopArgs extends LongRunOptions {
  cfg: JointConfig;
  crm: CrmModel;
  branch: JointLlmBranch;
  proj: AlignmentProjections;
  train: EncodedSplit;
  rows: Int32Array;
  /** Epochs a checkpoint already finished. */
  startEpoch: number;
  /** Receives each finished epoch's losses (the checkpoint stores this history). */
  history: EpochLoss[];
  checkpointer: JointCheckpointer;
}

/**
 * The "before" boundary: the stage-1 CRM against a copy of the branch trained alone on the stage-2 subset,
 * measured on the validation rows.
 */
export async function referenceBoundary(a: {
  cfg: JointConfig;
  crm: CrmModel;
  branch: JointLlmBranch;
  proj: AlignmentProjections;
  train: EncodedSplit;
  valid: EncodedSplit;
  stage2Rows: Int32Array;
  validRows: Int32Array;
  signal?: AbortSignal;
}): Promise<BoundaryShift> {
  const { cfg } = a;
  const ref = a.branch.clone();
  const opt = tf.train.adam(cfg.stage2.learningRate);
  for (let e = 0; e < cfg.stage2.epochs; e++) {
    await branchEpoch({
      branch: ref,
      opt,
      train: a.train,
      rows: a.stage2Rows,
      part: 'stage2',
      stage: cfg.stage2,
      epoch: e,
      kind: 'reference',
      seed: cfg.seed,
      signal: a.signal,
    });
  }
  opt.dispose();
  const pc = await a.crm.predict(a.valid, a.validRows);
  const before = boundaryShift(
    pc,
    ref.predict('valid'),
    validationAlignLoss(a.crm, ref, a.proj, a.valid, a.validRows, 1024),
  );
  ref.dispose();
  return before;
}

/**
 * Runs epochs [startEpoch, total) of one stage: each epoch's losses join the history, then a checkpoint is
 * written and progress reported, so a retry resumes after the last finished epoch.
 */
async function runEpochs(
  a: StageLoopArgs,
  stage: 'stage2' | 'stage3',
  total: number,
  epoch: (e: number) => Promise<EpochLoss>,
  message?: (loss: EpochLoss) => string,
): Promise<void> {
  for (let e = a.startEpoch; e < total; e++) {
    const e0 = Date.now();
    const loss = await epoch(e);
    a.history.push(loss);
    const ck = await a.checkpointer.save(stage, e + 1);
    const sec = (Date.now() - e0) / 1000;
    await a.onProgress?.({
      stage,
      epoch: e,
      done: e + 1,
      total,
      samplesPerSec: sec > 0 ? a.rows.length / sec : undefined,
      checkpoint: ck,
      ...(message ? { message: message(loss) } : {}),
    });
  }
}

/** Stage 2: CRM, branch and projections trained together, epochs [startEpoch, stage2.epochs). */
export async function trainStage2(a: StageLoopArgs & { pairCount: number }): Promise<void> {
  const step = stage2Step(a.cfg, a.crm, a.branch, a.proj, a.pairCount);
  await a.checkpointer.useOptimizers('stage2', { crm: step.optCrm, other: step.optOther });
  await runEpochs(
    a,
    'stage2',
    a.cfg.stage2.epochs,
    (epoch) => jointEpoch({ ...a, step, epoch }),
    (loss) => `loss ${loss.total.toFixed(4)}`,
  );
  step.optCrm.dispose();
  step.optOther.dispose();
}

/** Stage 3: the branch alone on its own subset, epochs [startEpoch, stage3.epochs). */
export async function trainStage3(a: StageLoopArgs): Promise<void> {
  const { cfg } = a;
  const opt = tf.train.adam(cfg.stage3.learningRate);
  await a.checkpointer.useOptimizers('stage3', { branch: opt });
  await runEpochs(a, 'stage3', cfg.stage3.epochs, (epoch) =>
    branchEpoch({
      branch: a.branch,
      opt,
      train: a.train,
      rows: a.rows,
      part: 'stage3',
      stage: cfg.stage3,
      epoch,
      kind: 'stage3',
      seed: cfg.seed,
      signal: a.signal,
    }),
  );
  opt.dispose();
}
