import { resolveCalibrationConfig } from '../ml/corella/calibration.js';
import { resolveJointConfig } from '../ml/corella/joint-config.js';
import type { RowPlanConfig } from '../ml/corella/row-plan.js';
import { calibrationConfigOf, jointConfigOf, llmPoolsOf } from './corella-config.js';
import type { PipelineConfig } from './types.js';

/**
 * The row plan's inputs for a run's config, resolved as the stages resolve them (the LLM-features activity,
 * the joint trainer, the calibration and the evaluation all draw their rows from this one plan).
 */
export function rowPlanConfigOf(config: PipelineConfig, runId: string): RowPlanConfig {
  const pools = llmPoolsOf(config);
  return {
    joint: resolveJointConfig(jointConfigOf(config, runId)),
    calibration: resolveCalibrationConfig(calibrationConfigOf(config)),
    test: { size: pools.test, seed: pools.seed, block: pools.block },
  };
}
