import { z } from 'zod';
import { parseSection } from '../config/issues.js';
import { METRIC_NAMES, type MetricName } from './score.js';

const fraction = z.number().min(0).max(1);

/** Validation pool fields: a pipeline takes them from `llm.pools` when unset (the LLM features' own rows). */
const poolFields = {
  /** Validation rows used (random subset; 0 = all). */
  maxRows: z.number().int().min(0).describe('Validation rows used (random subset; 0 = all).'),
  seed: z.number().int(),
  /** Draw the validation rows in user blocks of this size (see JointConfig.poolBlock); 1 = single rows. */
  poolBlock: z.number().int().min(1),
};

const calibrationShape = {
  /** Quantiles q of the validation entropies; threshold t_q routes samples with entropy > t_q (≈ 1−q). */
  quantiles: z
    .array(fraction)
    .min(1)
    .default(Array.from({ length: 21 }, (_, i) => i / 20)),
  metric: z
    .enum(METRIC_NAMES as readonly MetricName[] as [MetricName, ...MetricName[]])
    .default('auc')
    .describe('The metric the threshold maximises.'),
  maxRoutedFraction: fraction.default(0.2).describe('Most of the samples the LLM branch may get.'),
  /**
   * The LLM branch is only run on this top fraction of validation rows by entropy; curve points that would
   * route more are left out. 1 = the whole curve (every validation row goes through the LLM once).
   */
  curveMaxFraction: z.number().gt(0).max(1).default(1),
  /** Rows whose item the CRM never saw count as maximally uncertain (ml/corella/routing routingEntropies). */
  coldItems: z.boolean().default(false),
  /**
   * Route only when the hybrid's gain over the CRM clears its noise (bootstrap lower bound > 0); false is
   * the old rule (best point metric under the budget, however small its gain).
   */
  requireGain: z.boolean().default(true),
  /** Two-sided confidence of the gain's bootstrap interval; its lower bound must be above 0. */
  gainConfidence: z.number().gt(0).lt(1).default(0.95),
  /** Bootstrap resamples per candidate threshold (each costs O(rows)). */
  bootstrapRounds: z.number().int().min(1).default(200),
};

export const calibrationConfigSchema = z.strictObject({
  ...calibrationShape,
  maxRows: poolFields.maxRows.default(0),
  seed: poolFields.seed.default(11),
  poolBlock: poolFields.poolBlock.default(1),
});

/** The pipeline's `calibration` section: unset pool fields follow `llm.pools` (schema/pipeline.ts). */
export const calibrationSectionSchema = z.strictObject({
  ...calibrationShape,
  maxRows: poolFields.maxRows
    .optional()
    .describe('Validation rows used (default: llm.pools.valid; 0 = all).'),
  seed: poolFields.seed.optional().describe('Seed of the validation rows (default: llm.pools.seed).'),
  poolBlock: poolFields.poolBlock
    .optional()
    .describe('User block size of the rows (default: llm.historyBlock).'),
});

export type CalibrationConfig = z.output<typeof calibrationConfigSchema>;

export const DEFAULT_CALIBRATION_CONFIG: CalibrationConfig = calibrationConfigSchema.parse({});

export function resolveCalibrationConfig(input: Partial<CalibrationConfig> = {}): CalibrationConfig {
  return parseSection(calibrationConfigSchema, input, 'calibration config');
}
