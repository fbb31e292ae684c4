import type { Tensor1D, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import type { z } from 'zod';
import type { EncodedSplit } from '../data/types.js';
import type { crmModelSchema } from './config.js';

export type CrossStructure = 'stacked' | 'parallel' | 'crossnet_only';

/** A CRM model config, as ml/crm/config.ts's schema defines it ('lr' is the logistic-regression baseline). */
export type CrmConfig = z.output<typeof crmModelSchema>;

/** Tensors for one batch of rows of an EncodedSplit. */
export interface CrmBatch {
  /** int32 [B, nCategorical] */
  categorical: Tensor2D;
  /** int32 [B, maxLen] per sequence field */
  sequences: Tensor2D[];
  /** float32 [B, nDense] or undefined when there are no dense fields */
  dense?: Tensor2D;
  labels: Tensor1D;
}

export interface CrmActivation {
  /** e.g. 'cross_0', 'cross_1', 'mlp_0' */
  name: string;
  value: Tensor2D;
}

export interface CrmForward {
  /** Pre-sigmoid logits [B]. */
  logits: Tensor1D;
  /** Every cross-layer and MLP-layer activation, in order (only when asked for). */
  activations: CrmActivation[];
}

/** The surface the joint training (ml/corella) relies on. */
export interface CrmModel {
  readonly config: CrmConfig;
  readonly featureMapId: string;
  /** Names and widths of the layers `forward(..., {activations: true})` returns. */
  readonly activationShapes: { name: string; width: number }[];
  makeBatch(split: EncodedSplit, rows: ArrayLike<number>): CrmBatch;
  forward(batch: CrmBatch, opts: { training: boolean; activations?: boolean }): CrmForward;
  /** Regularisation term to add to the loss (L2 on embeddings), scalar. */
  regularizer(batch: CrmBatch): import('@tensorflow/tfjs-core').Scalar | undefined;
  trainableVariables(): Variable[];
  /** Click probabilities for the given rows (all rows when omitted), in batches. */
  predict(split: EncodedSplit, rows?: ArrayLike<number>, batchSize?: number): Promise<Float32Array>;
  dispose(): void;
}
