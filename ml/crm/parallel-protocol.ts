import type { FeatureMap } from '../data/types.js';
import type { EncodedSplit } from '../data/types.js';
import type { TfBackendName } from '../tf/backend.js';
import type { CrmConfig } from './types.js';

/**
 * Shared memory between the trainer and its gradient worker. The main thread owns the optimizer; after
 * each step it publishes the new dense weights and the embedding rows it changed, the worker computes the
 * gradients of its half of the next batch and publishes them.
 */
export interface WorkerInit {
  entry: string;
  backend: TfBackendName;
  config: CrmConfig;
  featureMap: FeatureMap;
  split: EncodedSplit;
  /** float32: dense variables (denseVariables() order) then the whole table. */
  weights: SharedArrayBuffer;
  /** float32: dense gradients (same layout as weights' dense part) then dx0 [maxRows, width]. */
  grads: SharedArrayBuffer;
  /** int32: rows changed by the last update, [count, row...]. */
  touched: SharedArrayBuffer;
  denseSizes: number[];
}

export type ToWorker =
  { type: 'step'; rows: Int32Array; dropoutStep: number; profile?: boolean } | { type: 'sync-all' };
export type FromWorker =
  | { type: 'ready' }
  /** profile: the worker's phase wall times (ms) for this step, when the step asked for them. */
  | { type: 'done'; loss: number; width: number; profile?: Record<string, number> }
  | { type: 'error'; message: string; stack?: string };
