/**
 * The LLM side of a joint step, as the stage loops see it. Today's only kind is the frozen-LLM adapter on
 * cached features (joint-adapter-branch.ts); a branch whose own LLM weights train (LoRA on a tfjs
 * transformer) implements the same interface, so the loops, the checkpoint and the output calibration do
 * not change when it arrives.
 *
 * Why the trainer, not the branch, owns the optimiser step: stage 2 differentiates one loss,
 * α·L_llm + β·L_crm + γ·L_align, with respect to the CRM, the branch and the alignment projections at once
 * (tf.variableGrads over all three), then applies the CRM's gradients with its gentler learning rate and the
 * rest with the branch's. A branch therefore only has to build its forward pass from tf ops on its
 * trainableVariables(); the gradient and the Adam step follow. A branch that can compute the LLM side of
 * that gradient its own way (the LoRA branch on several threads) offers parallelJointGradients; the
 * trainer still applies every gradient with its two optimisers.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { CtrDataset } from '../data/types.js';
import type { LlmFeatureSource } from '../llm/types.js';
import type { LongRunOptions } from '../progress.js';
import type { JointConfig } from './joint-config.js';

/**
 * The row sets a branch is prepared for: the stage-2 and stage-3 subsets and the validation sample (in the
 * row plan's order). Batches name rows by their position in one of them.
 */
export type JointPart = 'stage2' | 'stage3' | 'valid';

export interface BranchActivation {
  name: string;
  value: tf.Tensor2D;
}

export interface BranchForward {
  /** Click logits [B]. */
  logits: tf.Tensor1D;
  /** The hidden layers the alignment loss pairs with CRM layers (empty unless asked for). */
  activations: BranchActivation[];
}

/**
 * What the LLM side of a split stage-2 step is given. The split is exact: L_align's gradient with respect to
 * g_llm(h_llm) needs only the value of g_crm(h_crm), and the other way round.
 */
export interface JointLlmStep {
  alpha: number;
  gamma: number;
  sharedDim: number;
  /**
   * Per alignment pair (empty when γ = 0): the branch activation it reads, g_llm's current weight
   * [width, S] and bias [S], and g_crm(h_crm) of the batch's rows ([B·S], row after row).
   */
  pairs: { llm: string; w: Float32Array; b: Float32Array; targets: Float32Array }[];
}

export interface JointLlmGradients {
  /** Σᵢ (α·BCEᵢ + γ/P·Σₚ‖aₚᵢ − cₚᵢ‖²) / B: the LLM side's part of the loss. */
  loss: number;
  /** The batch's click logits [B]. */
  logits: Float32Array;
  /** g_llm(h_llm) per pair, [B·S] row after row. */
  projected: Float32Array[];
  /** Gradients of the branch's trainableVariables(), by name. */
  grads: { name: string; tensor: tf.Tensor }[];
  /** Gradients of each pair's g_llm weight and bias. */
  projectionGrads: { w: Float32Array; b: Float32Array }[];
}

export interface JointLlmBranch {
  /** What the branch is, for reports ('adapter'). */
  readonly kind: string;
  /** Alignable layers, in order; the alignment projections are built for these widths. */
  readonly activationShapes: { name: string; width: number }[];
  /**
   * Forward pass on rows `local` (positions within `part`). Called inside tf.tidy / tf.variableGrads, so it
   * must build its result from tf ops on trainableVariables() for gradients to reach them.
   */
  forward(
    part: JointPart,
    local: ArrayLike<number>,
    opts?: { activations?: boolean; training?: boolean },
  ): BranchForward;
  /**
   * Optional: the mean BCE of rows `local` against `labels` and its gradients for the branch-only step,
   * computed its own way (the LoRA branch's worker threads); undefined means "differentiate forward()".
   */
  parallelGradients?(
    part: JointPart,
    local: ArrayLike<number>,
    labels: ArrayLike<number>,
  ): { loss: number; grads: { name: string; tensor: tf.Tensor }[] } | undefined;
  /**
   * Optional, with parallelJointGradients: true when that computes the LLM side of the stage-2 step on rows
   * `local` (the LoRA branch on more than one thread, or a batch too large for one tape); the trainer then
   * splits that step instead of one tape over everything.
   */
  splitJoint?(part: JointPart, local: ArrayLike<number>): boolean;
  /**
   * Optional: the LLM side of a stage-2 step computed the branch's own way (the LoRA branch's worker
   * threads). The CRM side of each alignment pair comes in as values (see JointLlmStep); out come the
   * gradients of α·L_llm + γ·L_align with respect to the branch and g_llm, and the values the CRM side's
   * gradient needs. Undefined means "differentiate forward()".
   */
  parallelJointGradients?(
    part: JointPart,
    local: ArrayLike<number>,
    labels: ArrayLike<number>,
    step: JointLlmStep,
  ): JointLlmGradients | undefined;
  /** Click probabilities for every row of `part`, in its order (inference mode, batched). */
  predict(part: JointPart): Float32Array;
  /** What the joint step updates (the trainer's optimiser applies their gradients). */
  trainableVariables(): tf.Variable[];
  /** An independent copy with the same weights (the boundary-shift reference fit trains one alone). */
  clone(): JointLlmBranch;
  /** Replaces the output logit z by a·z + b, kept in the weights (the output calibration). */
  rescaleOutput(a: number, b: number): void;
  /** Its full state, for checkpoints and the final artifact; the branch's factory restores it. */
  serialize(): string;
  dispose(): void;
}

/** What trainJoint hands a branch kind's opener: the rows of each part, and a checkpoint's state to resume. */
export interface OpenBranchArgs extends LongRunOptions {
  llm: LlmFeatureSource;
  dataset: CtrDataset;
  rows: Record<JointPart, Int32Array>;
  cfg: JointConfig;
  /** The branch's serialize() output from the checkpoint being resumed (absent = a fresh branch). */
  saved?: Uint8Array;
}

export interface OpenedBranch<B extends JointLlmBranch = JointLlmBranch> {
  branch: B;
  /** Which LLM the branch reads, for the result and the registry. */
  llm: { modelSha256: string; template: string; hiddenDim: number };
}

/** Builds (or restores) one kind of branch for a run; openAdapterBranch is today's. */
export type OpenJointBranch<B extends JointLlmBranch = JointLlmBranch> = (
  args: OpenBranchArgs,
) => Promise<OpenedBranch<B>>;
