/**
 * The three CTR metrics CoReLLa reports, on plain arrays. Kept private to ml/corella so routing and
 * calibration do not depend on the shape of ml/metrics; the numbers are the standard definitions.
 */
export interface CtrScores {
  auc: number;
  logLoss: number;
  acc: number;
  n: number;
  positives: number;
}

export type MetricName = 'auc' | 'logLoss' | 'acc';

/** True when a larger value of the metric is better. */
export function higherIsBetter(m: MetricName): boolean {
  return m !== 'logLoss';
}

/** ROC AUC by the rank-sum (Mann–Whitney) formula with average ranks for ties; NaN when one class is absent. */
export function auc(p: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = p.length;
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[a] - p[b]);
  let pos = 0;
  let rankSumPos = 0;
  let i = 0;
  while (i < n) {
    let j = i;
    while (j + 1 < n && p[idx[j + 1]] === p[idx[i]]) j++;
    const avgRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[idx[k]] > 0.5) {
        pos++;
        rankSumPos += avgRank;
      }
    }
    i = j + 1;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return NaN;
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

const EPS = 1e-7;

export function logLoss(p: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (p.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < p.length; i++) {
    const q = Math.min(1 - EPS, Math.max(EPS, p[i]));
    s -= labels[i] > 0.5 ? Math.log(q) : Math.log(1 - q);
  }
  return s / p.length;
}

export function accuracy(p: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (p.length === 0) return NaN;
  let ok = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0.5 === labels[i] > 0.5) ok++;
  return ok / p.length;
}

export function ctrScores(p: ArrayLike<number>, labels: ArrayLike<number>): CtrScores {
  let positives = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] > 0.5) positives++;
  return {
    auc: auc(p, labels),
    logLoss: logLoss(p, labels),
    acc: accuracy(p, labels),
    n: p.length,
    positives,
  };
}

export function pick<T extends ArrayLike<number>>(a: T, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length);
  for (let i = 0; i < rows.length; i++) out[i] = a[rows[i]];
  return out;
}
