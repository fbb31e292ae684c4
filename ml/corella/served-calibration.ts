/**
 * Threshold calibration on served traffic: the rows are logged predictions that received feedback, so the
 * threshold is re-derived on the entropy distribution the model actually sees, not the validation split's.
 *
 * What differs from ml/corella/calibration.ts: the CRM answers and entropies are given (as logged, the
 * engine's routing entropies), and an LLM answer exists only where the server routed the row, or where the
 * recalibration activity shadow-scored it. A threshold is admissible only if every row it routes has an
 * LLM answer (sweepThresholds leaves the others out), which is why shadow scoring takes the unrouted rows of
 * highest entropy first (`shadowCandidates`): they are the ones a lower threshold would route next. The
 * LLM budget is a constraint, not a preference: when live traffic under the current threshold routes more
 * than `maxRoutedFraction`, the chosen threshold is one within budget even if it scores worse.
 */
import { CorellaError } from '../errors.js';
import { DEFAULT_CALIBRATION_CONFIG, sweepThresholds, type CurvePoint } from './calibration.js';
import { combine } from './routing.js';
import { ctrScores, higherIsBetter, type CtrScores, type MetricName } from './score.js';

export interface ServedRows {
  /** The probability the server answered (LLM, CRM or CRM fallback). */
  pServed: ArrayLike<number>;
  pCrm: ArrayLike<number>;
  /** The routing entropy the server computed (ln 2 for cold items when the version routes them). */
  entropy: ArrayLike<number>;
  /** The LLM branch's answer, served or shadow-scored; NaN where there is none. */
  pLlm: ArrayLike<number>;
  labels: ArrayLike<number>;
  /** 1 where the server routed the row (route 'llm' or 'crm-fallback'). */
  routedLive: ArrayLike<number>;
}

export interface ServedCalibrationOptions {
  /** The LLM budget: the largest share of rows a threshold may route. */
  maxRoutedFraction: number;
  /** The version's stored threshold (null when never calibrated). */
  currentThreshold: number | null;
  metric?: MetricName;
  /** Quantiles of the served entropies tried as thresholds; default every 1%. */
  quantiles?: number[];
  /** The routed share the current threshold had when it was calibrated, if known. */
  calibratedRoutedFraction?: number | null;
}

export interface RoutingDrift {
  /** Share of the window's rows the server routed. */
  liveRoutedFraction: number;
  /** Share the current threshold routed on its calibration data (null when unknown). */
  calibratedRoutedFraction: number | null;
  /** live − calibrated (null when unknown). */
  delta: number | null;
  /** Live traffic routes more than the budget allows. */
  overBudget: boolean;
}

export interface ServedCalibration {
  metric: MetricName;
  maxRoutedFraction: number;
  /** The chosen threshold (+Infinity routes nothing). */
  threshold: number;
  chosen: CurvePoint;
  crmOnly: CurvePoint;
  curve: CurvePoint[];
  /** Why sweepThresholds chose its threshold (its gain check; stored with the calibration row). */
  reason?: string;
  /** The current threshold on these rows; routed rows without an LLM answer keep the CRM's, as served. */
  current: CurvePoint | null;
  /** The hybrid as it was served on these rows. */
  served: CtrScores;
  drift: RoutingDrift;
  /** Whether the chosen threshold should replace the current one. */
  apply: boolean;
  n: number;
  llmRows: number;
}

const DEFAULT_QUANTILES = Array.from({ length: 101 }, (_, i) => i / 100);

/**
 * The rows to shadow-score: those without an LLM answer, highest entropy first, at most `maxRows`. Taking
 * them in entropy order keeps the curve complete down to the lowest entropy reached.
 */
export function shadowCandidates(
  entropy: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  maxRows: number,
): Int32Array {
  const missing: number[] = [];
  for (let i = 0; i < entropy.length; i++) if (Number.isNaN(pLlm[i])) missing.push(i);
  missing.sort((a, b) => entropy[b] - entropy[a] || a - b);
  return Int32Array.from(missing.slice(0, Math.max(0, maxRows)));
}

/** Thresholds at or above ln 2 all route nothing (the stored form of +Infinity is ln 2). */
function sameRouting(a: number, b: number): boolean {
  return (a >= Math.LN2 && b >= Math.LN2) || Math.abs(a - b) <= 1e-12;
}

function isBetter(metric: MetricName, a: number, b: number): boolean {
  if (Number.isNaN(a)) return false;
  if (Number.isNaN(b)) return true;
  return higherIsBetter(metric) ? a > b : a < b;
}

export function calibrateOnServed(rows: ServedRows, opts: ServedCalibrationOptions): ServedCalibration {
  const n = rows.pCrm.length;
  for (const [name, a] of Object.entries(rows)) {
    if ((a as ArrayLike<number>).length !== n) {
      throw new CorellaError(
        'BAD_CONFIG',
        `served calibration: ${name} has ${(a as ArrayLike<number>).length} rows, pCrm ${n}`,
        {
          details: { field: name },
        },
      );
    }
  }
  if (n === 0)
    throw new CorellaError('DATA_NOT_AVAILABLE', 'served calibration: no served rows with feedback');
  const metric = opts.metric ?? DEFAULT_CALIBRATION_CONFIG.metric;
  // Logged entropies as stored (float64): rounding them would let a chosen threshold route a row it was
  // computed to leave out.
  const h = Float64Array.from(rows.entropy);
  const sweep = sweepThresholds(
    rows.pCrm,
    rows.pLlm,
    rows.labels,
    { metric, maxRoutedFraction: opts.maxRoutedFraction, quantiles: opts.quantiles ?? DEFAULT_QUANTILES },
    h,
  );

  let current: CurvePoint | null = null;
  if (opts.currentThreshold !== null) {
    // As served: a routed row without an LLM answer (a fallback) kept the CRM's probability.
    const pLlmOrCrm = Float32Array.from(rows.pLlm, (p, i) => (Number.isNaN(p) ? rows.pCrm[i] : p));
    const { p, routed } = combine(rows.pCrm, pLlmOrCrm, h, opts.currentThreshold);
    const s = ctrScores(p, rows.labels);
    current = {
      quantile: NaN,
      threshold: opts.currentThreshold,
      routed,
      routedFraction: routed / n,
      auc: s.auc,
      logLoss: s.logLoss,
      acc: s.acc,
    };
  }

  let live = 0;
  for (let i = 0; i < n; i++) if (rows.routedLive[i]) live++;
  const liveRoutedFraction = live / n;
  const calibrated = opts.calibratedRoutedFraction ?? null;
  const overBudget = liveRoutedFraction > opts.maxRoutedFraction;

  const changed = current === null || !sameRouting(sweep.threshold, current.threshold);
  const apply =
    changed &&
    (current === null ||
      overBudget ||
      current.routedFraction > opts.maxRoutedFraction ||
      isBetter(metric, sweep.chosen[metric], current[metric]));

  return {
    metric,
    maxRoutedFraction: opts.maxRoutedFraction,
    threshold: sweep.threshold,
    chosen: sweep.chosen,
    crmOnly: sweep.crmOnly,
    curve: sweep.curve,
    reason: sweep.reason,
    current,
    served: ctrScores(rows.pServed, rows.labels),
    drift: {
      liveRoutedFraction,
      calibratedRoutedFraction: calibrated,
      delta: calibrated === null ? null : liveRoutedFraction - calibrated,
      overBudget,
    },
    apply,
    n,
    llmRows: sweep.llmRows,
  };
}
