/**
 * One epoch of each kind the joint trainer runs: the stage-2 joint step (CRM + LLM branch + alignment; one
 * tape, or split with the branch's threads) and the branch-only epoch (stage 3 and the boundary-shift
 * reference fit), plus the validation alignment loss.
 * Shuffles are seeded by (seed, stage, epoch) alone, so a resumed run retraces an uninterrupted one.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit } from '../data/types.js';
import { throwIfAborted, yieldToEventLoop } from '../progress.js';
import { alignmentLoss, type AlignmentProjections } from './alignment.js';
import { CorellaError } from '../errors.js';
import type { JointConfig, StageConfig } from './joint-config.js';
import type { JointLlmBranch, JointLlmGradients, JointPart } from './joint-llm-branch.js';
import { bceWithLogits, weightedSum } from './ops.js';
import { mulberry32, permutation } from '../random.js';
import { pick } from './score.js';

export interface EpochLoss {
  epoch: number;
  total: number;
  llm: number;
  crm: number;
  align: number;
}

/**
 * Frees every tensor of a CRM batch, including any a CRM adds beyond the CrmBatch fields (ml/crm's
 * prepared batches carry extra id/weight tensors), without depending on a CRM's internals.
 */
function disposeBatch(b: ReturnType<CrmModel['makeBatch']>): void {
  const walk = (v: unknown, depth: number): void => {
    if (v instanceof tf.Tensor) v.dispose();
    else if (Array.isArray(v)) v.forEach((x) => walk(x, depth + 1));
    else if (v && typeof v === 'object' && depth < 3) Object.values(v).forEach((x) => walk(x, depth + 1));
  };
  walk(b, 0);
}

/** Mean of a scalar over batches of validation rows: L_align with both networks in inference mode. */
export function validationAlignLoss(
  crm: CrmModel,
  branch: JointLlmBranch,
  proj: AlignmentProjections,
  split: EncodedSplit,
  rows: Int32Array,
  batchSize: number,
): number {
  if (proj.config.pairs.length === 0 || rows.length === 0) return NaN;
  let sum = 0;
  for (let s = 0; s < rows.length; s += batchSize) {
    const e = Math.min(rows.length, s + batchSize);
    const batch = crm.makeBatch(split, rows.subarray(s, e));
    const v = tf.tidy(() => {
      const cf = crm.forward(batch, { training: false, activations: true });
      const local = Array.from({ length: e - s }, (_, i) => s + i);
      const af = branch.forward('valid', local, { activations: true });
      return proj.loss(cf.activations, af.activations).dataSync()[0];
    });
    disposeBatch(batch);
    sum += v * (e - s);
  }
  return sum / rows.length;
}

/** The shuffle seeds of the branch-only epochs ('stage3' and the 'reference' fit draw different orders). */
function branchEpochSeed(seed: number, stage: 'reference' | 'stage3', epoch: number): number {
  return seed * 31 + epoch + (stage === 'stage3' ? 1000 : 0);
}

/** One branch-only epoch on `rows` of train (the `part` the branch holds for them): L_llm alone. */
export async function branchEpoch(a: {
  branch: JointLlmBranch;
  opt: tf.Optimizer;
  train: EncodedSplit;
  rows: Int32Array;
  part: JointPart;
  stage: StageConfig;
  epoch: number;
  kind: 'reference' | 'stage3';
  seed: number;
  signal?: AbortSignal;
}): Promise<EpochLoss> {
  const { branch, opt, rows, epoch } = a;
  const order = permutation(mulberry32(branchEpochSeed(a.seed, a.kind, epoch)), rows.length);
  const vars = branch.trainableVariables();
  let sum = 0;
  for (let s = 0; s < order.length; s += a.stage.batchSize) {
    throwIfAborted(a.signal);
    const local = order.subarray(s, Math.min(order.length, s + a.stage.batchSize));
    const labels = pick(
      a.train.labels,
      Array.from(local, (i) => rows[i]),
    );
    // The LoRA branch's threads compute this step's gradients themselves when they can.
    const pg = branch.parallelGradients?.(a.part, local, labels);
    if (pg) {
      opt.applyGradients(pg.grads);
      tf.dispose(pg.grads.map((g) => g.tensor));
    }
    const v = pg
      ? pg.loss
      : tf.tidy(() => {
          const y = tf.tensor1d(labels);
          const cost = opt.minimize(
            () => bceWithLogits(branch.forward(a.part, local, { training: true }).logits, y),
            true,
            vars,
          );
          return cost!.dataSync()[0];
        });
    sum += v * local.length;
    await yieldToEventLoop();
  }
  const l = sum / Math.max(1, order.length);
  return { epoch, total: l, llm: l, crm: NaN, align: NaN };
}

/** The optimisers and variable split of stage 2, made once for all its epochs. */
export interface Stage2Step {
  crmVars: tf.Variable[];
  otherVars: tf.Variable[];
  crmNames: Set<string>;
  optCrm: tf.Optimizer;
  optOther: tf.Optimizer;
  useAlign: boolean;
}

export function stage2Step(
  cfg: JointConfig,
  crm: CrmModel,
  branch: JointLlmBranch,
  proj: AlignmentProjections,
  pairCount: number,
): Stage2Step {
  const useAlign = cfg.gamma > 0 && pairCount > 0;
  const crmVars = crm.trainableVariables();
  const otherVars = [...branch.trainableVariables(), ...(useAlign ? proj.trainableVariables() : [])];
  return {
    crmVars,
    otherVars,
    crmNames: new Set(crmVars.map((v) => v.name)),
    optCrm: tf.train.adam(cfg.stage2.crmLearningRate),
    optOther: tf.train.adam(cfg.stage2.learningRate),
    useAlign,
  };
}

/**
 * One stage-2 epoch: α·L_llm + β·L_crm + γ·L_align (plus the CRM's own regulariser at β) differentiated
 * with respect to the CRM, the branch and the projections together; the CRM's gradients go to its own,
 * gentler optimiser.
 */
export async function jointEpoch(a: {
  cfg: JointConfig;
  crm: CrmModel;
  branch: JointLlmBranch;
  proj: AlignmentProjections;
  step: Stage2Step;
  train: EncodedSplit;
  rows: Int32Array;
  epoch: number;
  signal?: AbortSignal;
}): Promise<EpochLoss> {
  const { cfg, crm, branch, proj, step, rows: stage2Rows, epoch } = a;
  const { useAlign } = step;
  const order = permutation(mulberry32(cfg.seed * 17 + epoch), stage2Rows.length);
  const acc = { total: 0, llm: 0, crm: 0, align: 0 };
  for (let s = 0; s < order.length; s += cfg.stage2.batchSize) {
    throwIfAborted(a.signal);
    const local = order.subarray(s, Math.min(order.length, s + cfg.stage2.batchSize));
    const rows = Int32Array.from(local, (i) => stage2Rows[i]);
    const batch = crm.makeBatch(a.train, rows);
    // The LoRA branch computes the LLM side itself on several threads, or sample by sample when one tape
    // would not fit; otherwise one tape over everything.
    const split =
      branch.parallelJointGradients !== undefined && branch.splitJoint?.('stage2', local) === true;
    const parts = split
      ? splitJointStep({ ...a, batch, local, labels: pick(a.train.labels, Array.from(rows)) })
      : tf.tidy(() => {
          let kept: tf.Scalar[] = [];
          const { value, grads } = tf.variableGrads(() => {
            const cf = crm.forward(batch, { training: true, activations: useAlign });
            const af = branch.forward('stage2', local, { activations: useAlign, training: true });
            const lCrm = bceWithLogits(cf.logits, batch.labels);
            const reg = crm.regularizer(batch);
            const lLlm = bceWithLogits(af.logits, batch.labels);
            const lAlign = useAlign ? proj.loss(cf.activations, af.activations) : tf.scalar(0);
            kept = [tf.keep(lLlm), tf.keep(lCrm), tf.keep(lAlign)];
            return jointObjective(cfg, [lLlm, lCrm, lAlign], reg);
          }, [...step.crmVars, ...step.otherVars]);
          return applyStage2Gradients(cfg, step, namedGradients(grads), value, kept);
        });
    disposeBatch(batch);
    acc.total += parts[0] * local.length;
    acc.llm += parts[1] * local.length;
    acc.crm += parts[2] * local.length;
    acc.align += parts[3] * local.length;
    await yieldToEventLoop();
  }
  const m = Math.max(1, order.length);
  return { epoch, total: acc.total / m, llm: acc.llm / m, crm: acc.crm / m, align: acc.align / m };
}

/** α·L_llm + β·L_crm + γ·L_align, plus the CRM's regulariser at β: the stage-2 objective, one or split. */
function jointObjective(
  cfg: JointConfig,
  [lLlm, lCrm, lAlign]: tf.Scalar[],
  reg: tf.Scalar | null | undefined,
) {
  const terms = [lLlm, lCrm, lAlign];
  const weights = [cfg.alpha, cfg.beta, cfg.gamma];
  if (reg) {
    terms.push(reg);
    weights.push(cfg.beta);
  }
  return weightedSum(terms, weights);
}

/**
 * The stage-2 step split between this thread and the branch's threads, exactly (up to float32 summation
 * order) the one-tape step. This thread's tape runs the CRM forward and g_crm(h_crm); inside it, the branch
 * is handed those values and computes, on its threads, the gradients of α·L_llm + γ·L_align with respect to
 * the LoRA and g_llm (∂‖a − c‖²/∂a needs c's value only), returning the logits and a = g_llm(h_llm). With
 * those as constants the tape finishes the same objective, whose gradient then reaches only the CRM and
 * g_crm (the LLM side's terms are constants here): β·L_crm + γ·L_align(stop(a), c). The reported losses are
 * this objective's, computed by the same functions as the one-tape step. The branch's own per-sample tapes
 * nest inside this one (tfjs keeps their nodes apart: nothing of theirs reaches this tape's loss), which is
 * what lets this thread compute its share of the LLM samples instead of waiting.
 *
 * Gradients are applied as the one-tape step applies them: the CRM's with its optimiser (when β > 0 or
 * γ·L_align reaches it), everything else with the other, in the same variable order (Adam keys its moments
 * by position).
 */
function splitJointStep(a: {
  cfg: JointConfig;
  crm: CrmModel;
  branch: JointLlmBranch;
  proj: AlignmentProjections;
  step: Stage2Step;
  batch: ReturnType<CrmModel['makeBatch']>;
  local: Int32Array;
  labels: ArrayLike<number>;
}): number[] {
  const { cfg, crm, branch, proj, step, batch, local } = a;
  const { useAlign } = step;
  const S = proj.config.sharedDim;
  const B = local.length;
  const llmProj = proj.llmProjections();
  return tf.tidy(() => {
    let kept: tf.Scalar[] = [];
    let side: JointLlmGradients | undefined;
    const { value, grads } = tf.variableGrads(() => {
      const cf = crm.forward(batch, { training: true, activations: useAlign });
      const c = useAlign ? proj.projectCrm(cf.activations) : [];
      side = branch.parallelJointGradients!('stage2', local, a.labels, {
        alpha: cfg.alpha,
        gamma: useAlign ? cfg.gamma : 0,
        sharedDim: S,
        pairs: c.map((ck, k) => ({
          llm: proj.config.pairs[k].llm,
          w: llmProj[k].w.dataSync() as Float32Array,
          b: llmProj[k].b.dataSync() as Float32Array,
          targets: ck.dataSync() as Float32Array,
        })),
      });
      if (!side) throw new CorellaError('BAD_CONFIG', 'the LLM branch offered no threaded stage-2 step');
      side.grads.forEach((g) => tf.keep(g.tensor));
      const lCrm = bceWithLogits(cf.logits, batch.labels);
      const reg = crm.regularizer(batch);
      const lLlm = bceWithLogits(tf.tensor1d(side.logits), batch.labels);
      const llmSide = side.projected;
      const lAlign = useAlign
        ? alignmentLoss(c.map((ck, k) => ({ crm: ck, llm: tf.tensor2d(llmSide[k], [B, S]) })))
        : tf.scalar(0);
      kept = [tf.keep(lLlm), tf.keep(lCrm), tf.keep(lAlign)];
      return jointObjective(cfg, [lLlm, lCrm, lAlign], reg);
    }, [...step.crmVars, ...step.otherVars]);
    const llm = side!;
    const byName = namedGradients(grads);
    for (const g of llm.grads) byName.set(g.name, g.tensor);
    if (useAlign)
      llmProj.forEach((p, k) => {
        byName.set(p.w.name, tf.tensor(llm.projectionGrads[k].w, p.w.shape));
        byName.set(p.b.name, tf.tensor(llm.projectionGrads[k].b, p.b.shape));
      });
    const out = applyStage2Gradients(cfg, step, byName, value, kept);
    tf.dispose(llm.grads.map((g) => g.tensor));
    return out;
  });
}

/** A tape's gradients by variable name; variables the loss does not reach (projections at γ = 0) have none. */
function namedGradients(grads: tf.NamedTensorMap | Record<string, tf.Tensor | null>): Map<string, tf.Tensor> {
  const byName = new Map<string, tf.Tensor>();
  for (const [name, tensor] of Object.entries(grads)) if (tensor) byName.set(name, tensor);
  return byName;
}

/**
 * The end of either stage-2 step: the CRM's gradients go to its optimiser (when β > 0 or γ·L_align reaches
 * it), everything else to the other, in the variables' order (Adam keys its moments by position), and the
 * losses are read out as [total, L_llm, L_crm, L_align]. Runs inside the step's tidy.
 */
function applyStage2Gradients(
  cfg: JointConfig,
  step: Stage2Step,
  byName: Map<string, tf.Tensor>,
  value: tf.Scalar,
  kept: tf.Scalar[],
): number[] {
  const gCrm: { name: string; tensor: tf.Tensor }[] = [];
  const gOther: { name: string; tensor: tf.Tensor }[] = [];
  for (const v of [...step.crmVars, ...step.otherVars]) {
    const tensor = byName.get(v.name);
    if (tensor) (step.crmNames.has(v.name) ? gCrm : gOther).push({ name: v.name, tensor });
  }
  if (cfg.beta > 0 || step.useAlign) step.optCrm.applyGradients(gCrm);
  step.optOther.applyGradients(gOther);
  const out = [value.dataSync()[0], ...kept.map((k) => k.dataSync()[0])];
  kept.forEach((k) => k.dispose());
  return out;
}
