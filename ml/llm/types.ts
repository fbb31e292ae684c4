import type { EncodedSplit, ItemTable } from '../data/types.js';

/** LLM outputs for a set of samples, row-aligned with `sampleIds`. */
export interface LlmFeatures {
  modelSha256: string;
  template: string;
  hiddenDim: number;
  sampleIds: Uint32Array;
  /** e^yes / (e^yes + e^no) */
  pYes: Float32Array;
  /** logit(yes) − logit(no) */
  logOdds: Float32Array;
  /** n × hiddenDim: the prompt's final hidden state. */
  hidden: Float32Array;
  /**
   * n × AFFINITY_FEATURES.length (ml/llm/item-affinity.ts), in that order: the item-affinity features, present
   * when llm.itemAffinity is on. Kept apart from `hidden` so that nothing reads them by position in it.
   */
  affinity?: Float32Array;
}

/**
 * Produces LLM features for rows of a split (from cache when possible). The hybrid predictor calls it only
 * for the rows it routes to the LLM, so tests can count exactly which rows were asked for.
 */
export interface LlmFeatureSource {
  features(split: EncodedSplit, items: ItemTable, rows: ArrayLike<number>): Promise<LlmFeatures>;
}
