import { CorellaError } from '../errors.js';

export function checkSameLength(what: string, a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${what}: lengths differ (${a.length} labels vs ${b.length} predictions)`,
    );
  }
}

/**
 * Exact ROC AUC by the rank-sum (Mann–Whitney) statistic; tied scores share their average rank, which
 * counts each tied positive/negative pair as one half. NaN when either class is absent.
 */
export function auc(labels: ArrayLike<number>, scores: ArrayLike<number>): number {
  checkSameLength('auc', labels, scores);
  const n = labels.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => scores[a] - scores[b]);
  let nPos = 0;
  let rankSumPos = 0;
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && scores[order[j]] === scores[order[i]]) j++;
    // Ranks i+1..j (1-based) share their mean.
    const avgRank = (i + 1 + j) / 2;
    for (let k = i; k < j; k++) {
      if (labels[order[k]] > 0.5) {
        nPos++;
        rankSumPos += avgRank;
      }
    }
    i = j;
  }
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  return (rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** Mean binary cross-entropy with predictions clipped to [eps, 1 − eps] so one confident miss stays finite. */
export function logLoss(labels: ArrayLike<number>, probs: ArrayLike<number>, eps = 1e-7): number {
  checkSameLength('logLoss', labels, probs);
  const n = labels.length;
  if (n === 0) return NaN;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.min(1 - eps, Math.max(eps, probs[i]));
    s += labels[i] > 0.5 ? -Math.log(p) : -Math.log(1 - p);
  }
  return s / n;
}

/** Share of samples whose prediction (≥ threshold ⇒ 1) matches the label. */
export function accuracy(labels: ArrayLike<number>, probs: ArrayLike<number>, threshold = 0.5): number {
  checkSameLength('accuracy', labels, probs);
  const n = labels.length;
  if (n === 0) return NaN;
  let ok = 0;
  for (let i = 0; i < n; i++) if (probs[i] >= threshold === labels[i] > 0.5) ok++;
  return ok / n;
}

export interface UserAuc {
  /** Unweighted mean of per-user AUC over users that have both a positive and a negative sample. */
  mean: number;
  /** The same weighted by each counted user's sample count (often reported as GAUC). */
  weighted: number;
  /** Users counted. */
  users: number;
}

export function userAuc(
  labels: ArrayLike<number>,
  probs: ArrayLike<number>,
  users: ArrayLike<number>,
): UserAuc {
  checkSameLength('userAuc', labels, probs);
  checkSameLength('userAuc (users)', labels, users);
  const byUser = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const u = users[i];
    let rows = byUser.get(u);
    if (!rows) byUser.set(u, (rows = []));
    rows.push(i);
  }
  let sum = 0;
  let wsum = 0;
  let w = 0;
  let counted = 0;
  for (const rows of byUser.values()) {
    const a = auc(
      rows.map((r) => labels[r]),
      rows.map((r) => probs[r]),
    );
    if (Number.isNaN(a)) continue;
    counted++;
    sum += a;
    wsum += a * rows.length;
    w += rows.length;
  }
  return { mean: counted ? sum / counted : NaN, weighted: w ? wsum / w : NaN, users: counted };
}
