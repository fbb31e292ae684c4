/**
 * Threshold calibration on the validation split: sweep entropy thresholds at quantiles of the CRM's
 * validation entropies, score the hybrid at each, and choose the threshold that maximises the configured
 * metric among those routing at most `maxRoutedFraction` of the samples. The whole curve is returned so it
 * can be stored with the calibration.
 */
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { LlmFeatureSource } from '../llm/types.js';
import type { LongRunOptions } from '../progress.js';
import type { LlmAdapter } from './adapter.js';
import { fetchFeatures } from './features.js';
import { samplePool } from './random.js';
import { combine, entropies, routingEntropies } from './routing.js';
import { ctrScores, higherIsBetter, METRIC_NAMES, pick, type MetricName } from './score.js';

export interface CalibrationConfig {
  /** Quantiles q of the validation entropies; threshold t_q routes samples with entropy > t_q (≈ 1−q). */
  quantiles: number[];
  metric: MetricName;
  maxRoutedFraction: number;
  /** Validation rows used (random subset; 0 = all). */
  maxRows: number;
  /**
   * The LLM branch is only run on this top fraction of validation rows by entropy; curve points that would
   * route more are left out. 1 = the whole curve (every validation row goes through the LLM once).
   */
  curveMaxFraction: number;
  seed: number;
  /** Draw the validation rows in user blocks of this size (see JointConfig.poolBlock); 1 = single rows. */
  poolBlock: number;
  /** Rows whose item the CRM never saw count as maximally uncertain (ml/corella/routing routingEntropies). */
  coldItems: boolean;
}

export const DEFAULT_CALIBRATION_CONFIG: CalibrationConfig = {
  quantiles: Array.from({ length: 21 }, (_, i) => i / 20),
  metric: 'auc',
  maxRoutedFraction: 0.2,
  maxRows: 0,
  curveMaxFraction: 1,
  seed: 11,
  poolBlock: 1,
  coldItems: false,
};

export interface CurvePoint {
  quantile: number;
  /** Entropy threshold in nats (routes entropy > threshold). */
  threshold: number;
  routed: number;
  routedFraction: number;
  auc: number;
  logLoss: number;
  acc: number;
}

export interface Calibration {
  metric: MetricName;
  maxRoutedFraction: number;
  threshold: number;
  chosen: CurvePoint;
  /** CRM-only reference (nothing routed). */
  crmOnly: CurvePoint;
  curve: CurvePoint[];
  n: number;
  /** Validation rows the LLM branch was run on. */
  llmRows: number;
}

export function resolveCalibrationConfig(input: Partial<CalibrationConfig> = {}): CalibrationConfig {
  const c = { ...DEFAULT_CALIBRATION_CONFIG, ...input };
  const bad = (field: string, msg: string): never => {
    throw new CorellaError('BAD_CONFIG', `calibration config ${field}: ${msg}`, { details: { field } });
  };
  if (!METRIC_NAMES.includes(c.metric))
    bad('metric', `must be one of ${METRIC_NAMES.join(', ')}, got ${JSON.stringify(c.metric)}`);
  if (!(c.maxRoutedFraction >= 0 && c.maxRoutedFraction <= 1))
    bad('maxRoutedFraction', `must be in [0, 1], got ${c.maxRoutedFraction}`);
  if (!(c.curveMaxFraction > 0 && c.curveMaxFraction <= 1))
    bad('curveMaxFraction', `must be in (0, 1], got ${c.curveMaxFraction}`);
  if (
    !Array.isArray(c.quantiles) ||
    c.quantiles.length === 0 ||
    c.quantiles.some((q) => !(q >= 0 && q <= 1))
  ) {
    bad('quantiles', `must be a non-empty list of numbers in [0, 1]`);
  }
  if (!Number.isInteger(c.maxRows) || c.maxRows < 0) bad('maxRows', `must be an integer ≥ 0`);
  if (!Number.isInteger(c.poolBlock) || c.poolBlock < 1) bad('poolBlock', `must be an integer ≥ 1`);
  return c;
}

function better(metric: MetricName, a: number, b: number): boolean {
  if (Number.isNaN(a)) return false;
  if (Number.isNaN(b)) return true;
  return higherIsBetter(metric) ? a > b : a < b;
}

/**
 * The sweep on precomputed predictions. `pLlm` may be NaN where the LLM branch was not run: thresholds
 * whose routed set would include such a row are left out of the curve.
 */
export function sweepThresholds(
  pCrm: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  labels: ArrayLike<number>,
  input: Partial<CalibrationConfig> = {},
  /** Routing uncertainty per row (default: the entropy of pCrm). */
  entropy?: ArrayLike<number>,
): Calibration {
  const cfg = resolveCalibrationConfig(input);
  const n = pCrm.length;
  if (pLlm.length !== n || labels.length !== n) {
    throw new CorellaError(
      'BAD_CONFIG',
      `calibration: ${n} CRM predictions, ${pLlm.length} LLM predictions, ${labels.length} labels`,
    );
  }
  if (n === 0) throw new CorellaError('DATA_NOT_AVAILABLE', 'calibration: no validation samples');
  const h = entropy ?? entropies(pCrm);
  const sorted = Float64Array.from(h).sort();
  // Highest entropy of a row without an LLM prediction: thresholds below it would route that row.
  let maxMissing = -Infinity;
  for (let i = 0; i < n; i++) if (Number.isNaN(pLlm[i])) maxMissing = Math.max(maxMissing, h[i]);

  const point = (quantile: number, threshold: number): CurvePoint => {
    const { p, routed } = combine(pCrm, pLlm, h, threshold);
    const s = ctrScores(p, labels);
    return {
      quantile,
      threshold,
      routed,
      routedFraction: routed / n,
      auc: s.auc,
      logLoss: s.logLoss,
      acc: s.acc,
    };
  };
  const crmOnly = point(1, Infinity);
  const seen = new Set<number>();
  const curve: CurvePoint[] = [];
  for (const q of [...cfg.quantiles].sort((a, b) => b - a)) {
    // t = the ceil(q·n)-th smallest entropy, so (without ties) exactly n − ceil(q·n) samples lie above it.
    const idx = Math.ceil(q * n) - 1;
    const t = q >= 1 ? Infinity : idx < 0 ? -Infinity : sorted[idx];
    // Ties in entropy make neighbouring quantiles the same threshold.
    if (seen.has(t)) continue;
    // This threshold would route a row the LLM branch was not run on.
    if (maxMissing > t) continue;
    seen.add(t);
    curve.push(t === Infinity ? { ...crmOnly, quantile: q } : point(q, t));
  }
  let chosen = crmOnly;
  for (const c of curve) {
    if (c.routedFraction > cfg.maxRoutedFraction) continue;
    const m = cfg.metric;
    if (better(m, c[m], chosen[m])) chosen = c;
  }
  let llmRows = 0;
  for (let i = 0; i < n; i++) if (!Number.isNaN(pLlm[i])) llmRows++;
  return {
    metric: cfg.metric,
    maxRoutedFraction: cfg.maxRoutedFraction,
    threshold: chosen.threshold,
    chosen,
    crmOnly,
    curve,
    n,
    llmRows,
  };
}

export interface CalibrateArgs extends LongRunOptions {
  crm: CrmModel;
  adapter: LlmAdapter;
  llm: LlmFeatureSource;
  split: EncodedSplit;
  items: ItemTable;
  config?: Partial<CalibrationConfig>;
}

/** Calibrates on `split` (the validation split), running the LLM branch only where the curve needs it. */
export async function calibrateThreshold(args: CalibrateArgs): Promise<Calibration> {
  const cfg = resolveCalibrationConfig(args.config);
  const { split } = args;
  const rows = samplePool(split, cfg.maxRows, cfg.seed, cfg.poolBlock);
  const pCrm = await args.crm.predict(split, rows);
  const h = routingEntropies(pCrm, split, rows, cfg.coldItems);
  const k = Math.min(rows.length, Math.ceil(cfg.curveMaxFraction * rows.length));
  const byEntropy = Int32Array.from({ length: rows.length }, (_, i) => i).sort((a, b) => h[b] - h[a]);
  const local = byEntropy.slice(0, k);
  const pLlm = new Float32Array(rows.length).fill(NaN);
  if (k > 0) {
    const f = await fetchFeatures(
      args.llm,
      split,
      args.items,
      Array.from(local, (i) => rows[i]),
      {
        signal: args.signal,
        onProgress: args.onProgress,
        stage: 'calibration-llm',
      },
    );
    const q = args.adapter.predict(f);
    local.forEach((i, j) => (pLlm[i] = q[j]));
  }
  // A tie at the cut-off leaves rows of equal entropy without an LLM score; sweepThresholds skips those
  // thresholds instead of routing them to a missing prediction.
  return sweepThresholds(pCrm, pLlm, pick(split.labels, rows), cfg, h);
}
