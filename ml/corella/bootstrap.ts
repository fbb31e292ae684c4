/**
 * Bootstrap machinery shared by calibration (is the hybrid's validation gain more than noise?) and the run
 * report (intervals of AUC differences). A resample is a count per row, so one round costs O(rows): AUC is
 * walked in a score order sorted once, and a mean is a weighted sum.
 */
import type { Rng } from '../random.js';

/** Row order by ascending score, with each row's tie group (rows of equal score share one group). */
export interface SortedScores {
  order: Uint32Array;
  /** groupEnd[k] = one past the last position of the tie group that position k belongs to. */
  groupEnd: Uint32Array;
}

export function sortedTies(scores: ArrayLike<number>): SortedScores {
  const n = scores.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => scores[x] - scores[y]);
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
  sorted: SortedScores,
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
 * One resample of `groups` with replacement (each group a list of row indices, e.g. one user's rows):
 * `weights` is overwritten with how often each row was drawn. Resampling whole users keeps the
 * correlation of one user's rows inside a resample, so the interval is not too narrow.
 */
export function resampleGroups(groups: ArrayLike<number>[], rng: Rng, weights: Float64Array): void {
  weights.fill(0);
  for (let g = 0; g < groups.length; g++) {
    const rows = groups[Math.floor(rng() * groups.length)];
    for (let j = 0; j < rows.length; j++) weights[rows[j]]++;
  }
}

/** Row indices grouped by the value of `key` per row (e.g. the user of each row), in first-seen order. */
export function groupsOf(key: ArrayLike<number>): Int32Array[] {
  const out = new Map<number, number[]>();
  for (let i = 0; i < key.length; i++) {
    const g = out.get(key[i]);
    if (g) g.push(i);
    else out.set(key[i], [i]);
  }
  return [...out.values()].map((g) => Int32Array.from(g));
}

/** Each row its own group (the row bootstrap). */
export function singletonGroups(n: number): Int32Array[] {
  return Array.from({ length: n }, (_, i) => Int32Array.of(i));
}

/** Percentile interval of the finite values of `draws` (sorted in place); undefined when none is finite. */
export function percentileInterval(
  draws: number[],
  confidence: number,
): { lo: number; hi: number; rounds: number } | undefined {
  const d = draws.filter(Number.isFinite).sort((x, z) => x - z);
  if (d.length === 0) return undefined;
  const tail = (1 - confidence) / 2;
  const q = (f: number) => d[Math.min(d.length - 1, Math.max(0, Math.floor(f * d.length)))];
  return { lo: q(tail), hi: q(1 - tail), rounds: d.length };
}
