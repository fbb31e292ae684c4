/**
 * Threshold calibration on the validation split: sweep entropy thresholds at quantiles of the CRM's
 * validation entropies, score the hybrid at each, and choose the threshold that maximises the configured
 * metric among those routing at most `maxRoutedFraction` of the samples. The whole curve is returned so it
 * can be stored with the calibration.
 *
 * A threshold must also earn its routing (`requireGain`): the hybrid's gain over the CRM has to clear its
 * own noise, i.e. the lower bound of a bootstrap interval of the gain (users resampled when known) must be
 * above 0. Without this a useless LLM branch (e.g. one Platt scaling flattened to a constant) still got
 * 15% of the rows for a +0.0002 validation "gain" that was pure noise, and the hybrid lost to the CRM.
 */
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { LlmFeatureSource } from '../llm/types.js';
import type { LongRunOptions } from '../progress.js';
import type { LlmBranchModel } from './llm-branch-model.js';
import {
  groupsOf,
  percentileInterval,
  resampleGroups,
  singletonGroups,
  sortedTies,
  weightedAuc,
} from './bootstrap.js';
import { fetchFeatures } from './features.js';
import { mulberry32 } from '../random.js';
import { calibrationRows } from './row-plan.js';
import { combine, entropies, routingEntropies } from './routing.js';
import { ctrScores, higherIsBetter, pick, type MetricName } from './score.js';

export {
  DEFAULT_CALIBRATION_CONFIG,
  resolveCalibrationConfig,
  type CalibrationConfig,
} from './calibration-config.js';
import { resolveCalibrationConfig, type CalibrationConfig } from './calibration-config.js';

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

/** The bootstrap of one candidate threshold's gain (hybrid − CRM on the metric, sign flipped for LogLoss). */
export interface GainCheck {
  threshold: number;
  routedFraction: number;
  /** Gain on the whole validation pool. */
  gain: number;
  lo: number;
  hi: number;
  /** Two-sided confidence of [lo, hi]: gainConfidence split over the candidates (Bonferroni). */
  confidence: number;
  /** Resamples with a finite gain (a resample with one class only has no AUC). */
  rounds: number;
  /** 'user': whole users resampled; 'row': single rows (users unknown). */
  unit: 'user' | 'row';
  admissible: boolean;
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
  /** Candidates bootstrapped, best point metric first, up to the first admissible one (requireGain). */
  gainChecks: GainCheck[];
  /** Why this threshold (set when requireGain decided; undefined under the old rule). */
  reason?: string;
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
  /** User of each row: the gain's bootstrap resamples whole users (default: single rows). */
  users?: ArrayLike<number>,
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
  if (users !== undefined && users.length !== n) {
    throw new CorellaError('BAD_CONFIG', `calibration: ${n} predictions, ${users.length} users`, {
      details: { field: 'users' },
    });
  }
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
  const m = cfg.metric;
  let chosen = crmOnly;
  for (const c of curve) {
    if (c.routedFraction > cfg.maxRoutedFraction) continue;
    if (better(m, c[m], chosen[m])) chosen = c;
  }
  const gainChecks: GainCheck[] = [];
  let reason: string | undefined;
  if (cfg.requireGain) {
    const gains = gainBootstrap(pCrm, pLlm, labels, h, cfg, crmOnly, users);
    // Only points that beat the CRM on the whole pool could win; best first (ties: fewer rows routed, as
    // the plain sweep picks), stopping at the first admissible one, so the bootstrap runs on few of them.
    const candidates = curve
      .filter((c) => c.routed > 0 && c.routedFraction <= cfg.maxRoutedFraction && better(m, c[m], crmOnly[m]))
      .sort((a, b) => (better(m, a[m], b[m]) ? -1 : better(m, b[m], a[m]) ? 1 : a.routed - b.routed));
    // Picking the best of many thresholds inflates its gain (and falling through to the next one tests
    // again): each check gets confidence 1 − (1 − gainConfidence)/candidates (Bonferroni). Measured on a
    // constant branch over 60 pools (test/ml/corella/calibration-gain.test.ts's fixture, 101 quantiles): the
    // old rule routed it in 59, the best point alone at 95% in 6, falling through at 95% in 12, this in 4.
    chosen = crmOnly;
    for (const c of candidates) {
      const g = gains.check(c, candidates.length);
      gainChecks.push(g);
      if (g.admissible) {
        chosen = c;
        break;
      }
    }
    reason = gainReason(cfg, gainChecks, candidates.length);
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
    gainChecks,
    reason,
  };
}

const METRIC_LABEL: Record<MetricName, string> = { auc: 'AUC', logLoss: 'LogLoss', acc: 'ACC' };

const signed = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(4)}`;
const percent = (x: number) => `${Math.round(x * 1000) / 10}%`;

/** A sentence for the calibration row: why this threshold, or why nothing is routed. */
function gainReason(cfg: CalibrationConfig, checks: GainCheck[], candidates: number): string {
  const label = METRIC_LABEL[cfg.metric];
  const conf = `${Math.round(cfg.gainConfidence * 1000) / 10}%`;
  const over = candidates > 1 ? `, Bonferroni over ${candidates} thresholds` : '';
  const won = checks.find((g) => g.admissible);
  if (won) {
    return (
      `hybrid gain ${signed(won.gain)} ${label} at ${percent(won.routedFraction)} routed cleared its noise: ` +
      `${conf} lower bound ${signed(won.lo)} (${won.rounds} ${won.unit} resamples${over})`
    );
  }
  const best = checks[0];
  if (!best) {
    return `no threshold routing ≤ ${percent(cfg.maxRoutedFraction)} beat the CRM on validation ${label}: nothing routed`;
  }
  const lo = Number.isFinite(best.lo) ? signed(best.lo) : 'undefined';
  return (
    `no threshold's hybrid gain cleared its noise: best ${signed(best.gain)} ${label} at ` +
    `${percent(best.routedFraction)} routed, ${conf} lower bound ${lo} ` +
    `(${best.rounds} ${best.unit} resamples${over}): nothing routed`
  );
}

/** Per-row loss of the metrics that are means over rows (ml/metrics' LogLoss clipping and ACC cut-off). */
function rowLoss(metric: 'logLoss' | 'acc', p: number, y: number): number {
  if (metric === 'acc') return (p >= 0.5 ? 1 : 0) === (y > 0.5 ? 1 : 0) ? 0 : 1;
  const q = Math.min(1 - 1e-7, Math.max(1e-7, p));
  return y > 0.5 ? -Math.log(q) : -Math.log(1 - q);
}

/**
 * The bootstrap of the gain at candidate thresholds. Every candidate is resampled with the same seed, so
 * all see the same resamples (paired): their intervals differ by the routing, not by the draw. A round is
 * O(rows): AUC walks score orders sorted once per candidate; LogLoss/ACC gains are weighted means.
 */
function gainBootstrap(
  pCrm: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  labels: ArrayLike<number>,
  h: ArrayLike<number>,
  cfg: CalibrationConfig,
  crmOnly: CurvePoint,
  users?: ArrayLike<number>,
) {
  const n = pCrm.length;
  // One user (e.g. a split whose users are unknown, all row 0) leaves nothing to resample: use rows.
  const byUser = users ? groupsOf(users) : [];
  const unit: 'user' | 'row' = byUser.length >= 2 ? 'user' : 'row';
  const groups = unit === 'user' ? byUser : singletonGroups(n);
  const crmSorted = cfg.metric === 'auc' ? sortedTies(pCrm) : undefined;
  const weights = new Float64Array(n);
  const check = (c: CurvePoint, tested: number): GainCheck => {
    const confidence = 1 - (1 - cfg.gainConfidence) / tested;
    const { p } = combine(pCrm, pLlm, h, c.threshold);
    // Gain > 0 means the hybrid is better: LogLoss differences are flipped so higher is better throughout.
    let draw: () => number;
    if (cfg.metric === 'auc') {
      const hybSorted = sortedTies(p);
      draw = () => weightedAuc(labels, hybSorted, weights) - weightedAuc(labels, crmSorted!, weights);
    } else {
      const metric = cfg.metric;
      const d = new Float64Array(n);
      for (let i = 0; i < n; i++)
        d[i] = rowLoss(metric, pCrm[i], labels[i]) - rowLoss(metric, p[i], labels[i]);
      draw = () => {
        let s = 0;
        let w = 0;
        for (let i = 0; i < n; i++) {
          s += weights[i] * d[i];
          w += weights[i];
        }
        return w > 0 ? s / w : NaN;
      };
    }
    const rng = mulberry32(cfg.seed);
    const draws: number[] = [];
    for (let r = 0; r < cfg.bootstrapRounds; r++) {
      resampleGroups(groups, rng, weights);
      draws.push(draw());
    }
    const m = cfg.metric;
    const gain = higherIsBetter(m) ? c[m] - crmOnly[m] : crmOnly[m] - c[m];
    const iv = percentileInterval(draws, confidence);
    const lo = iv?.lo ?? NaN;
    return {
      threshold: c.threshold,
      routedFraction: c.routedFraction,
      gain,
      lo,
      hi: iv?.hi ?? NaN,
      confidence,
      rounds: iv?.rounds ?? 0,
      unit,
      // Two groups or fewer cannot say anything about noise; a NaN bound is never admissible.
      admissible: groups.length >= 2 && lo > 0,
    };
  };
  return { check };
}

export interface CalibrateArgs extends LongRunOptions {
  crm: CrmModel;
  /** The LLM branch on llama.cpp's features (LlmAdapter, or LoraHead for a LoRA version). */
  adapter: LlmBranchModel;
  llm: LlmFeatureSource;
  split: EncodedSplit;
  items: ItemTable;
  config?: Partial<CalibrationConfig>;
}

/**
 * The calibration pool and the part of it the LLM branch must answer: the top `curveMaxFraction` of the pool
 * by routing entropy (`local`, indices into `rows`, highest entropy first; a stable sort, so ties keep pool
 * order). Only routed rows can change the hybrid, so a pool of 10,000 rows with `curveMaxFraction` 0.2 gives
 * the gain's bootstrap five times the rows of a 2,000-row pool for the same 2,000 LLM prompts. The LoRA
 * features pass calls this with the same CRM to extract exactly these rows ahead of calibration.
 */
export async function calibrationPlan(
  crm: CrmModel,
  split: EncodedSplit,
  input: Partial<CalibrationConfig> = {},
): Promise<{
  rows: Int32Array;
  pCrm: Float32Array;
  h: Float32Array;
  local: Int32Array;
  llmRows: Int32Array;
}> {
  const cfg = resolveCalibrationConfig(input);
  const rows = calibrationRows(split, cfg);
  const pCrm = await crm.predict(split, rows);
  const h = routingEntropies(pCrm, split, rows, cfg.coldItems);
  const k = Math.min(rows.length, Math.ceil(cfg.curveMaxFraction * rows.length));
  const byEntropy = Int32Array.from({ length: rows.length }, (_, i) => i).sort((a, b) => h[b] - h[a]);
  const local = byEntropy.slice(0, k);
  return { rows, pCrm, h, local, llmRows: Int32Array.from(local, (i) => rows[i]) };
}

/** Calibrates on `split` (the validation split), running the LLM branch only where the curve needs it. */
export async function calibrateThreshold(args: CalibrateArgs): Promise<Calibration> {
  const cfg = resolveCalibrationConfig(args.config);
  const { split } = args;
  const { rows, pCrm, h, local, llmRows } = await calibrationPlan(args.crm, split, cfg);
  const pLlm = new Float32Array(rows.length).fill(NaN);
  if (local.length > 0) {
    const f = await fetchFeatures(args.llm, split, args.items, llmRows, {
      signal: args.signal,
      onProgress: args.onProgress,
      stage: 'calibration-llm',
    });
    const q = args.adapter.predict(f);
    local.forEach((i, j) => (pLlm[i] = q[j]));
  }
  // A tie at the cut-off leaves rows of equal entropy without an LLM score; sweepThresholds skips those
  // thresholds instead of routing them to a missing prediction.
  // The gain's bootstrap resamples whole users: one user's rows are correlated, and a row bootstrap would
  // call a gain real that one lucky user made.
  const users = Int32Array.from(rows, (r) => split.userRows[r]);
  return sweepThresholds(pCrm, pLlm, pick(split.labels, rows), cfg, h, users);
}
