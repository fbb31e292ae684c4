import { describe, expect, it } from 'vitest';
import { promotionDecision } from '../../activities/registry.js';
import { parseDuration, UsageError } from '../../cli/args.js';
import { retrainWorkflowId } from '../../cli/config.js';
import { table } from '../../cli/output.js';
import { canonicalHash, canonicalJson } from '../../ml/canonical.js';

describe('cli helpers', () => {
  it('parses durations and rejects nonsense', () => {
    expect(parseDuration('24h')).toBe(86_400_000);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('2d')).toBe(172_800_000);
    expect(() => parseDuration('soon')).toThrow(UsageError);
    expect(() => parseDuration('10 parsecs')).toThrow(UsageError);
  });

  it('gives the same workflow id for the same dataset and config, whatever the key order', () => {
    const a = retrainWorkflowId(
      { source: 'movielens-1m', dir: '/d' },
      { crm: { epochs: 1, batchSize: 2 }, joint: { gamma: 0.2 } },
    );
    const b = retrainWorkflowId(
      { dir: '/d', source: 'movielens-1m' },
      { joint: { gamma: 0.2 }, crm: { batchSize: 2, epochs: 1 } },
    );
    const c = retrainWorkflowId({ source: 'movielens-1m', dir: '/d' }, { crm: { epochs: 1, batchSize: 3 } });
    expect(a.id).toBe(b.id);
    expect(a.id).toMatch(/^retrain-movielens-1m-[0-9a-f]{12}$/);
    expect(c.id).not.toBe(a.id);
  });

  it('canonical JSON sorts keys at every level and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}',
    );
    expect(canonicalHash({ x: 1, y: 2 })).toBe(canonicalHash({ y: 2, x: 1 }));
  });

  it('renders aligned tables', () => {
    expect(
      table(
        [
          ['a', 1],
          ['bbb', 0.123456],
        ],
        ['k', 'v'],
      ),
    ).toBe('k    v\n---  ------\na    1\nbbb  0.1235');
  });
});

describe('promotion gate', () => {
  const rule = { metric: 'hybrid.auc', margin: 0.001 };
  it('crowns the first version', () => {
    expect(promotionDecision({ 'hybrid.auc': 0.7 }, undefined, rule).alias).toBe('champion');
  });
  it('promotes only past the margin', () => {
    expect(promotionDecision({ 'hybrid.auc': 0.7015 }, { 'hybrid.auc': 0.7 }, rule).alias).toBe('champion');
    expect(promotionDecision({ 'hybrid.auc': 0.7005 }, { 'hybrid.auc': 0.7 }, rule).alias).toBe('challenger');
    expect(promotionDecision({ 'hybrid.auc': 0.69 }, { 'hybrid.auc': 0.7 }, rule).alias).toBe('challenger');
  });
  it('never promotes a candidate without the metric', () => {
    expect(promotionDecision({}, { 'hybrid.auc': 0.7 }, rule).alias).toBe('challenger');
  });
});
