import { describe, expect, it } from 'vitest';
import { METRIC_PREFIX, metricKey, prefixMetrics, scoreMetrics } from '../../activities/metric-keys.js';

describe('metric keys', () => {
  it('prefixes every key once, and the empty prefix keeps keys as they are', () => {
    expect(prefixMetrics(METRIC_PREFIX.joint, { 'stage2.loss': 0.5, rows: 3 })).toEqual({
      'joint.stage2.loss': 0.5,
      'joint.rows': 3,
    });
    expect(prefixMetrics('', { 'crm.test.auc': 0.7 })).toEqual({ 'crm.test.auc': 0.7 });
    expect(metricKey(METRIC_PREFIX.eval, 'test.hybrid.auc')).toBe('eval.test.hybrid.auc');
  });

  it("names a scorer's numbers auc, logloss and acc", () => {
    expect(scoreMetrics('test.crm', { auc: 0.7, logLoss: 0.6, acc: 0.65 })).toEqual({
      'test.crm.auc': 0.7,
      'test.crm.logloss': 0.6,
      'test.crm.acc': 0.65,
    });
  });
});
