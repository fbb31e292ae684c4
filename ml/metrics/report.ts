import { CorellaError } from '../errors.js';
import { accuracy, auc, checkSameLength, logLoss, userAuc } from './classification.js';

export interface CtrMetrics {
  count: number;
  positives: number;
  auc: number;
  logLoss: number;
  acc: number;
  /** Present when user ids were given. */
  userAuc?: number;
  userAucUsers?: number;
}

export function ctrMetrics(
  labels: ArrayLike<number>,
  probs: ArrayLike<number>,
  users?: ArrayLike<number>,
): CtrMetrics {
  checkSameLength('ctrMetrics', labels, probs);
  let positives = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] > 0.5) positives++;
  const m: CtrMetrics = {
    count: labels.length,
    positives,
    auc: auc(labels, probs),
    logLoss: logLoss(labels, probs),
    acc: accuracy(labels, probs),
  };
  if (users) {
    const u = userAuc(labels, probs, users);
    m.userAuc = u.mean;
    m.userAucUsers = u.users;
  }
  return m;
}

export interface BucketMetrics extends CtrMetrics {
  bucket: number;
  /** Inclusive lower edge of the score range (−Infinity for the first bucket). */
  lo: number;
  /** Exclusive upper edge (+Infinity for the last bucket). */
  hi: number;
}

/**
 * Edges at the score quantiles k/buckets (k = 1..buckets−1), deduplicated: equal scores always share a
 * bucket, so heavily tied scores give fewer, larger buckets rather than arbitrary splits of a tie.
 */
export function quantileEdges(score: ArrayLike<number>, buckets: number): number[] {
  if (!Number.isInteger(buckets) || buckets < 1) {
    throw new CorellaError('BAD_CONFIG', `buckets must be a positive integer, got ${buckets}`);
  }
  const sorted = Float64Array.from(score).sort();
  const n = sorted.length;
  const edges: number[] = [];
  for (let k = 1; k < buckets && n > 0; k++) {
    const e = sorted[Math.floor((k * n) / buckets)];
    if (e > sorted[0] && (edges.length === 0 || e > edges[edges.length - 1])) edges.push(e);
  }
  return edges;
}

/** Index of the bucket of `s` for sorted `edges`: the number of edges ≤ s. */
export function bucketOf(s: number, edges: readonly number[]): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (edges[mid] <= s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * CTR metrics per bucket of an arbitrary per-sample score (e.g. CRM prediction entropy): quantile buckets
 * by default, or explicit ascending `edges`.
 */
export function bucketMetrics(
  labels: ArrayLike<number>,
  probs: ArrayLike<number>,
  score: ArrayLike<number>,
  opts: { buckets?: number; edges?: number[]; users?: ArrayLike<number> } = {},
): BucketMetrics[] {
  checkSameLength('bucketMetrics', labels, probs);
  checkSameLength('bucketMetrics (score)', labels, score);
  const edges = opts.edges ?? quantileEdges(score, opts.buckets ?? 10);
  for (let i = 1; i < edges.length; i++) {
    if (!(edges[i] > edges[i - 1]))
      throw new CorellaError('BAD_CONFIG', `bucket edges must be strictly ascending: ${edges.join(', ')}`);
  }
  const members: number[][] = Array.from({ length: edges.length + 1 }, () => []);
  for (let i = 0; i < score.length; i++) members[bucketOf(score[i], edges)].push(i);
  return members.map((rows, b) => {
    const pick = (a: ArrayLike<number>) => rows.map((r) => a[r]);
    return {
      bucket: b,
      lo: b === 0 ? -Infinity : edges[b - 1],
      hi: b === edges.length ? Infinity : edges[b],
      ...ctrMetrics(pick(labels), pick(probs), opts.users ? pick(opts.users) : undefined),
    };
  });
}
