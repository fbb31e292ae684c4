import type { PipelineConfig } from './types.js';
import type { LlmConfig } from '../ml/llm/index.js';
import { CorellaError } from '../ml/errors.js';
import type { JointConfigInput } from '../ml/corella/joint.js';
import type { Calibration, CalibrationConfig } from '../ml/corella/calibration.js';
import { llmConfigShape, type LlmSection } from '../ml/llm/config.js';
import type { CalibrationInput } from '../db/repositories/calibrations.js';
import type { CalibrationPoint } from '../db/schema/calibrations.js';
import { resolvePipelineConfig, type ResolvedPipelineConfig } from '../schema/pipeline.js';
import { join } from 'node:path';

/**
 * How many rows of each split get LLM features up front (`llm.pools`), drawn in user blocks of the LLM's
 * historyBlock so their prompts share prefixes.
 */
export type LlmPools = LlmSection['pools'] & { block: number };

/**
 * Every helper below validates the whole config again: an activity may be handed a config that no CLI
 * checked (a workflow started by another client), and a bad one must fail before any work, not be read
 * field by field with fallbacks.
 */
function resolved(config: PipelineConfig): ResolvedPipelineConfig {
  return resolvePipelineConfig(config);
}

/** The LLM's part of the `llm` section (the keys its schema declares) plus the model cache of this home. */
export function llmConfigOf(config: PipelineConfig, home: string): LlmConfig {
  const llm = resolved(config).llm;
  if (llm.model === undefined) {
    throw new CorellaError('BAD_CONFIG', 'config.llm.model is required (a .gguf path or an hf: URI)', {
      details: { field: 'llm.model' },
    });
  }
  const out: Record<string, unknown> = { modelCacheDir: join(home, 'models') };
  for (const k of Object.keys(llmConfigShape) as (keyof typeof llmConfigShape)[]) {
    if (llm[k] !== undefined) out[k] = llm[k];
  }
  return out as LlmConfig;
}

export function llmPoolsOf(config: PipelineConfig): LlmPools {
  const { pools, historyBlock } = resolved(config).llm;
  return { ...pools, block: historyBlock };
}

export function jointConfigOf(config: PipelineConfig, runId: string): JointConfigInput {
  return { ...resolved(config).joint, checkpointName: `runs/${runId}/joint` };
}

/** Calibration works on the same validation pool the LLM features were extracted for. */
export function calibrationConfigOf(config: PipelineConfig): CalibrationConfig {
  return resolved(config).calibration;
}

/**
 * Thresholds as stored and passed around: the sweep's "route nothing" / "route everything" are ±Infinity,
 * which JSON and Postgres cannot carry. Entropies lie in [0, ln 2] and routing takes entropy > threshold, so
 * ln 2 routes nothing and −1 routes everything.
 */
export function storableThreshold(t: number): number {
  if (Number.isFinite(t)) return t;
  return t > 0 ? Math.LN2 : -1;
}

/** The calibration row of a sweep, as CalibrationRepository stores it. */
export function calibrationRow(
  runId: string,
  cal: Pick<Calibration, 'threshold' | 'metric' | 'curve'> & Partial<Pick<Calibration, 'reason'>>,
  modelVersionId?: number | null,
): CalibrationInput {
  const threshold = storableThreshold(cal.threshold);
  const curve: CalibrationPoint[] = cal.curve.map((p) => ({
    threshold: storableThreshold(p.threshold),
    llmShare: p.routedFraction,
    quantile: p.quantile,
    auc: p.auc,
    logLoss: p.logLoss,
    acc: p.acc,
  }));
  // The reason lives on the chosen point (the table has no other jsonb column, and this needs no
  // migration); a chosen threshold outside the curve (e.g. route nothing without quantile 1) is appended.
  if (cal.reason !== undefined) {
    const chosen = curve.find((p) => p.threshold === threshold);
    if (chosen) chosen.reason = cal.reason;
    else curve.push({ threshold, llmShare: 0, reason: cal.reason });
  }
  return { runId, threshold, metric: cal.metric, curve, modelVersionId };
}
