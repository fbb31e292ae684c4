/**
 * Which rows each CoReLLa stage uses: the stage-2 and stage-3 subsets, the joint trainer's validation
 * sample, the calibration sweep's validation pool and the evaluation's test pool. The LLM-features activity
 * precomputes features for exactly these rows and the later stages read them back from the cache, so every
 * caller draws them here: a second copy of the sampling that drifted would make the cache miss silently
 * (and the LLM pay twice).
 */
import type { EncodedSplit, SplitName } from '../data/types.js';
import { userBlocks } from '../data/user-blocks.js';
import type { CalibrationConfig } from './calibration.js';
import type { JointConfig } from './joint-config.js';
import { samplePool } from './sampling.js';
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

/** The validation rows the threshold calibration sweeps (all of them when maxRows is 0). */
export function calibrationRows(
  valid: EncodedSplit,
  cfg: Pick<CalibrationConfig, 'maxRows' | 'seed' | 'poolBlock'>,
): Int32Array {
  return samplePool(valid, cfg.maxRows, cfg.seed, cfg.poolBlock);
}

/** The test pool the alignment evaluation scores: `size` rows (0 = all) drawn in user blocks of `block`. */
export interface TestPool {
  size: number;
  seed: number;
  block: number;
}

export function testPoolRows(test: EncodedSplit, pool: TestPool): Int32Array {
  return samplePool(test, pool.size, pool.seed, pool.block);
}

/** Everything the plan needs, resolved. */
export interface RowPlanConfig {
  joint: JointConfig;
  calibration: Pick<CalibrationConfig, 'maxRows' | 'seed' | 'poolBlock'>;
  test: TestPool;
}

/** Rows per split, sorted and distinct. */
export type LlmFeatureRows = Partial<Record<SplitName, Int32Array>> & { valid: Int32Array; test: Int32Array };

function sortedUnion(...parts: Int32Array[]): Int32Array {
  return Int32Array.from(new Set(parts.flatMap((p) => Array.from(p)))).sort();
}

/**
 * The rows whose LLM features can be known before stage 1 ends, per split: the validation rows (the
 * calibration pool and the joint validation sample, usually a subset of it), the test pool and, with
 * random subsets, the stage-2/3 rows. 'hard' subsets depend on the stage-1 CRM, so trainJoint fetches those
 * itself (train is then absent).
 */
export function llmFeatureRows(
  splits: Record<'train' | 'valid' | 'test', EncodedSplit>,
  plan: RowPlanConfig,
): LlmFeatureRows {
  const out: LlmFeatureRows = {
    valid: sortedUnion(
      calibrationRows(splits.valid, plan.calibration),
      jointValidationRows(splits.valid, plan.joint),
    ),
    test: testPoolRows(splits.test, plan.test),
  };
  if (plan.joint.subset === 'random') {
    const s = jointSubsets(splits.train, plan.joint);
    out.train = sortedUnion(s.stage2, s.stage3);
  }
  return out;
}
