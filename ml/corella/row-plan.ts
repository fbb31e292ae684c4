/**
 * Which rows each CoReLLa stage uses. The LLM-features activity precomputes features for exactly these rows
 * and the joint trainer and evaluation read them back from the cache, so every caller must draw them here:
 * a second copy of the sampling that drifted would make the cache miss silently (and the LLM pay twice).
 */
import type { EncodedSplit } from '../data/types.js';
import { userBlocks } from '../data/user-blocks.js';
import type { JointConfig } from './joint-config.js';
import { samplePool } from './random.js';
import { selectSubsets, type SubsetPlan } from './subsets.js';

/** The validation rows trainJoint uses (for precomputing their LLM features). */
export function jointValidationRows(valid: EncodedSplit, cfg: JointConfig): Int32Array {
  if (cfg.validationSamples === 0) return new Int32Array(0);
  return samplePool(valid, cfg.validationSamples, cfg.validationSeed, cfg.poolBlock);
}

/** The stage-2 and stage-3 rows for a config ('hard' needs the stage-1 CRM's entropy of every train row). */
export function jointSubsets(train: EncodedSplit, cfg: JointConfig, entropy?: Float32Array): SubsetPlan {
  return selectSubsets({
    size: train.size,
    n2: cfg.stage2.enabled ? cfg.stage2.samples : 0,
    n3: cfg.stage3.enabled ? cfg.stage3.samples : 0,
    selection: cfg.subset,
    seed: cfg.seed,
    entropy,
    hardPower: cfg.hardPower,
    units: cfg.poolBlock > 1 ? userBlocks(train, cfg.poolBlock) : undefined,
  });
}
