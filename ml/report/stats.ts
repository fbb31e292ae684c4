/**
 * Uncertainty and calibration statistics of one evaluated pool: bootstrap intervals of AUC differences and
 * reliability bins. Pure functions over stored per-row predictions, so a report can be rendered again later
 * from what the run stored.
 */
import { makeRng } from '../corella/random.js';
import { auc } from '../metrics/index.js';

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

/** Row order by ascending score, with each row's tie group (rows of equal score share one group). */
function sortedTies(scores: ArrayLike<number>): { order: Uint32Array; groupEnd: Uint32Array } {
  const n = scores.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => scores[x] - scores[y]);
  // groupEnd[k] = one past the last position of the tie group that position k belongs to
  const groupEnd = new Uint32Array(n);
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && scores[order[j]] === scores[order[i]]) j++;
    for (let k = i; k < j; k++) groupEnd[k] = j;
    i = j;
  }
  return { order, groupEnd };
}

/**
 * AUC of a resample given as a count per row (the Mann–Whitney statistic with ties counted half), walking
 * the rows in a score order sorted once: a bootstrap round costs O(n) instead of a sort.
 */
export function weightedAuc(
  labels: ArrayLike<number>,
  sorted: { order: Uint32Array; groupEnd: Uint32Array },
  weights: ArrayLike<number>,
): number {
  const { order, groupEnd } = sorted;
  let negBelow = 0;
  let pos = 0;
  let neg = 0;
  let num = 0;
  let k = 0;
  while (k < order.length) {
    const end = groupEnd[k];
    let p = 0;
    let q = 0;
    for (; k < end; k++) {
      const i = order[k];
      if (labels[i] > 0.5) p += weights[i];
      else q += weights[i];
    }
    num += p * negBelow + 0.5 * p * q;
    negBelow += q;
    pos += p;
    neg += q;
  }
  return pos > 0 && neg > 0 ? num / (pos * neg) : NaN;
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
  const rng = makeRng(opts.seed);
  const sa = sortedTies(a);
  const sb = sortedTies(b);
  const weights = new Float64Array(labels.length);
  const diffs: number[] = [];
  for (let k = 0; k < opts.rounds; k++) {
    weights.fill(0);
    for (let g = 0; g < groups.length; g++) {
      for (const i of groups[Math.floor(rng() * groups.length)]) weights[i]++;
    }
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
