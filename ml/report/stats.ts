/**
 * Uncertainty and calibration statistics of one evaluated pool: bootstrap intervals of AUC differences and
 * reliability bins. Pure functions over stored per-row predictions, so a report can be rendered again later
 * from what the run stored.
 */
import { resampleGroups, sortedTies, weightedAuc } from '../corella/bootstrap.js';
import { mulberry32 } from '../random.js';
import { auc } from '../metrics/index.js';

// weightedAuc moved to ml/corella/bootstrap.ts, shared with calibration; re-exported for its callers.
export { weightedAuc };

export interface Interval {
  /** The difference on the whole pool. */
  point: number;
  lo95: number;
  hi95: number;
  /** Resamples with a finite difference (a resample with one class only has no AUC). */
  rounds: number;
  /** 'user': whole users resampled (rows of one user are correlated); 'row': single rows. */
  unit: 'user' | 'row';
}

/**
 * Percentile interval of auc(a) − auc(b) over `rounds` resamples of `groups` (each group a list of row
 * indices, resampled with replacement). Undefined when the pool has fewer than two groups or one class only.
 */
export function aucDiffInterval(
  labels: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  groups: number[][],
  opts: { rounds: number; seed: number; unit: 'user' | 'row' },
): Interval | undefined {
  const point = auc(labels, a) - auc(labels, b);
  if (groups.length < 2 || !Number.isFinite(point)) return undefined;
  const rng = mulberry32(opts.seed);
  const sa = sortedTies(a);
  const sb = sortedTies(b);
  const weights = new Float64Array(labels.length);
  const diffs: number[] = [];
  for (let k = 0; k < opts.rounds; k++) {
    resampleGroups(groups, rng, weights);
    const d = weightedAuc(labels, sa, weights) - weightedAuc(labels, sb, weights);
    if (Number.isFinite(d)) diffs.push(d);
  }
  if (diffs.length === 0) return undefined;
  diffs.sort((x, z) => x - z);
  const q = (f: number) => diffs[Math.min(diffs.length - 1, Math.floor(f * diffs.length))];
  return { point, lo95: q(0.025), hi95: q(0.975), rounds: diffs.length, unit: opts.unit };
}

/** Row indices grouped by the value of `key` per row (e.g. the user of each evaluated row). */
export function groupBy(key: ArrayLike<number>, rows?: ArrayLike<number>): number[][] {
  const out = new Map<number, number[]>();
  const n = rows ? rows.length : key.length;
  for (let j = 0; j < n; j++) {
    const i = rows ? rows[j] : j;
    const g = out.get(key[i]);
    if (g) g.push(i);
    else out.set(key[i], [i]);
  }
  return [...out.values()];
}

export interface ReliabilityBin {
  /** Bin range of the predicted probability, [lo, hi). */
  lo: number;
  hi: number;
  n: number;
  /** Mean predicted probability of the bin's rows. */
  predicted: number;
  /** Observed click rate of the bin's rows. */
  observed: number;
}

/** Equal-width bins of the predicted probability; empty bins are left out (they have no point to draw). */
export function reliabilityBins(
  p: ArrayLike<number>,
  labels: ArrayLike<number>,
  bins = 10,
): ReliabilityBin[] {
  const n = new Array<number>(bins).fill(0);
  const sp = new Array<number>(bins).fill(0);
  const sy = new Array<number>(bins).fill(0);
  for (let i = 0; i < p.length; i++) {
    const b = Math.min(bins - 1, Math.max(0, Math.floor(p[i] * bins)));
    n[b]++;
    sp[b] += p[i];
    sy[b] += labels[i];
  }
  const out: ReliabilityBin[] = [];
  for (let b = 0; b < bins; b++) {
    if (n[b] === 0) continue;
    out.push({ lo: b / bins, hi: (b + 1) / bins, n: n[b], predicted: sp[b] / n[b], observed: sy[b] / n[b] });
  }
  return out;
}
