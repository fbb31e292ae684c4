import type { PipelineConfig } from './types.js';
import type { LlmConfig } from '../ml/llm/index.js';
import { CorellaError } from '../ml/errors.js';
import type { JointConfigInput } from '../ml/corella/joint.js';
import type { Calibration, CalibrationConfig } from '../ml/corella/calibration.js';
import type { CalibrationInput } from '../db/repositories/calibrations.js';
import type { CalibrationPoint } from '../db/schema/calibrations.js';
import { join } from 'node:path';

/** How many rows of each split get LLM features up front (the LLM is the expensive part of a run). */
export interface LlmPools {
  valid: number;
  test: number;
  seed: number;
  /** Pools are drawn in user blocks of the LLM's historyBlock, so their prompts share prefixes. */
  block: number;
}

export function llmConfigOf(config: PipelineConfig, home: string): LlmConfig {
  const s = (config.llm ?? {}) as Record<string, unknown>;
  if (typeof s.model !== 'string' || s.model === '') {
    throw new CorellaError('BAD_CONFIG', 'config.llm.model is required (a .gguf path or an hf: URI)');
  }
  const out: Record<string, unknown> = { modelCacheDir: join(home, 'models') };
  for (const k of [
    'model',
    'gpu',
    'gpuLayers',
    'threads',
    'contextSize',
    'batchSize',
    'sequences',
    'lora',
    'template',
    'answers',
    'hidden',
    'maxHistoryItems',
    'historyBlock',
    'targetReserveTokens',
    'itemAffinity',
  ]) {
    if (s[k] !== undefined) out[k] = s[k];
  }
  return out as unknown as LlmConfig;
}

export function llmPoolsOf(config: PipelineConfig): LlmPools {
  const llm = (config.llm ?? {}) as Record<string, unknown>;
  const p = llm.pools as Partial<LlmPools> | undefined;
  const block = typeof llm.historyBlock === 'number' ? llm.historyBlock : 1;
  return { valid: p?.valid ?? 2000, test: p?.test ?? 2000, seed: p?.seed ?? 11, block };
}

export function jointConfigOf(config: PipelineConfig, runId: string): JointConfigInput {
  return {
    poolBlock: llmPoolsOf(config).block,
    ...(config.joint ?? {}),
    checkpointName: `runs/${runId}/joint`,
  } as JointConfigInput;
}

/** Calibration works on the same validation pool the LLM features were extracted for. */
export function calibrationConfigOf(config: PipelineConfig): Partial<CalibrationConfig> {
  const pools = llmPoolsOf(config);
  return {
    maxRows: pools.valid,
    seed: pools.seed,
    poolBlock: pools.block,
    ...((config.calibration ?? {}) as Partial<CalibrationConfig>),
  };
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
