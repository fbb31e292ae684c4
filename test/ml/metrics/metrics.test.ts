import { describe, expect, it } from 'vitest';
import {
  accuracy,
  auc,
  bucketMetrics,
  bucketOf,
  ctrMetrics,
  logLoss,
  quantileEdges,
  userAuc,
} from '../../../ml/metrics/index.js';

/** O(n²) AUC by counting ordered pairs, ties as one half: the definition the fast version must match. */
function pairwiseAuc(labels: number[], scores: number[]): number {
  let num = 0;
  let den = 0;
  labels.forEach((yi, i) => {
    if (yi !== 1) return;
    labels.forEach((yj, j) => {
      if (yj !== 0) return;
      den++;
      num += scores[i] > scores[j] ? 1 : scores[i] === scores[j] ? 0.5 : 0;
    });
  });
  return num / den;
}

describe('AUC', () => {
  it('counts a tied positive/negative pair as one half (hand computed)', () => {
    // pairs: .9>.1, .9>.4, .4>.1, .4=.4 → 3.5 / 4
    expect(auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4])).toBeCloseTo(0.875, 12);
  });

  it('is 1 for a perfect ranking, 0 for a reversed one, 0.5 when every score ties', () => {
    expect(auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])).toBe(1);
    expect(auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4])).toBe(0);
    expect(auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5])).toBe(0.5);
  });

  it('matches the pairwise definition on data with many ties', () => {
    let s = 3;
    const r = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
    const labels = Array.from({ length: 400 }, () => (r() < 0.4 ? 1 : 0));
    const scores = labels.map((y) => Math.round((r() + 0.3 * y) * 10) / 10);
    expect(auc(labels, scores)).toBeCloseTo(pairwiseAuc(labels, scores), 12);
  });

  it('is NaN when one class is missing and rejects mismatched lengths', () => {
    expect(auc([1, 1], [0.2, 0.3])).toBeNaN();
    expect(() => auc([1, 0], [0.2])).toThrow(/lengths differ/);
  });
});

describe('LogLoss and ACC', () => {
  it('LogLoss is the mean negative log-likelihood (hand computed)', () => {
    expect(logLoss([1, 0], [0.8, 0.3])).toBeCloseTo(-(Math.log(0.8) + Math.log(0.7)) / 2, 12);
  });

  it('LogLoss clips predictions so a certain miss stays finite', () => {
    expect(logLoss([1], [0])).toBeCloseTo(-Math.log(1e-7), 9);
    expect(logLoss([0], [1], 1e-3)).toBeCloseTo(-Math.log(1e-3), 9);
  });

  it('ACC thresholds at 0.5 inclusive', () => {
    // right, right, wrong, wrong
    expect(accuracy([1, 0, 1, 0], [0.5, 0.49, 0.2, 0.9])).toBe(0.5);
    expect(accuracy([1], [0.5])).toBe(1);
    expect(accuracy([0], [0.5])).toBe(0);
    expect(accuracy([1, 0, 1, 0], [0.51, 0.49, 0.7, 0.1])).toBe(1);
  });
});

describe('per-user AUC', () => {
  it('averages over users with both classes only (hand computed)', () => {
    const labels = [1, 0, 1, 0, 0, 1, 1, 0, 0];
    const probs = [0.9, 0.1, 0.2, 0.8, 0.5, 0.6, 0.7, 0.7, 0.3];
    const users = [1, 1, 2, 2, 2, 3, 3, 4, 4];
    // user 1: 1.0; user 2: positive .2 vs .8,.5 → 0; user 3 only positives, user 4 only negatives
    const u = userAuc(labels, probs, users);
    expect(u.users).toBe(2);
    expect(u.mean).toBeCloseTo(0.5, 12);
    expect(u.weighted).toBeCloseTo((1 * 2 + 0 * 3) / 5, 12);
  });
});

describe('bucket metrics', () => {
  it('puts quantile edges so equal scores share a bucket', () => {
    const score = [1, 2, 3, 4, 5, 6, 7, 8];
    expect(quantileEdges(score, 4)).toEqual([3, 5, 7]);
    expect(quantileEdges([1, 1, 1, 1, 1, 1, 2, 3], 4)).toEqual([2]);
    expect(bucketOf(2.9, [3, 5, 7])).toBe(0);
    expect(bucketOf(3, [3, 5, 7])).toBe(1);
    expect(bucketOf(100, [3, 5, 7])).toBe(3);
  });

  it('computes the metrics of each bucket over its own samples', () => {
    const labels = [1, 0, 1, 0, 1, 1, 0, 0];
    const probs = [0.9, 0.2, 0.4, 0.6, 0.8, 0.7, 0.3, 0.1];
    const score = [0, 0, 0, 0, 1, 1, 1, 1];
    const b = bucketMetrics(labels, probs, score, { buckets: 2 });
    expect(b).toHaveLength(2);
    expect(b[0]).toMatchObject({ bucket: 0, lo: -Infinity, hi: 1, count: 4, positives: 2 });
    expect(b[0].auc).toBeCloseTo(auc([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]), 12);
    expect(b[0].acc).toBe(0.5);
    expect(b[1]).toMatchObject({ bucket: 1, lo: 1, hi: Infinity, count: 4, positives: 2, auc: 1, acc: 1 });
    expect(b[1].logLoss).toBeCloseTo(logLoss([1, 1, 0, 0], [0.8, 0.7, 0.3, 0.1]), 12);
  });

  it('accepts explicit edges and rejects unsorted ones', () => {
    const b = bucketMetrics([1, 0, 1], [0.9, 0.1, 0.5], [0.1, 0.5, 0.9], { edges: [0.3, 0.6] });
    expect(b.map((x) => x.count)).toEqual([1, 1, 1]);
    expect(() => bucketMetrics([1], [1], [1], { edges: [0.5, 0.2] })).toThrow(/ascending/);
  });

  it('ctrMetrics reports user AUC when users are given', () => {
    const m = ctrMetrics([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8], [1, 1, 2, 2]);
    expect(m).toMatchObject({ count: 4, positives: 2, userAuc: 0.5, userAucUsers: 2 });
  });
});
