import { describe, expect, it } from 'vitest';
import {
  bootstrapAucDiff,
  extraMaskedRows,
  meanPercentile,
  segmentRow,
  targetMask,
  type SegmentInput,
} from '../../../bench/segments.js';
import type { EncodedSplit, ItemTable } from '../../../ml/data/types.js';

const items: ItemTable = { ids: ['10', '20', '30'], titles: ['a', 'b', 'c'], genres: ['', '', ''] };
const split = { size: 5, targetItemRows: Int32Array.of(0, 2, 1, 2, -1) } as unknown as EncodedSplit;

describe('bench segments', () => {
  it('marks rows whose target item is in the set, ignoring padding rows', () => {
    expect(Array.from(targetMask(split, items, ['30', '99']))).toEqual([0, 1, 0, 1, 0]);
  });

  it('adds only masked rows missing from the base, deterministically, capped by what exists', () => {
    const mask = Uint8Array.from({ length: 100 }, (_, r) => (r % 3 === 0 ? 1 : 0));
    const base = Int32Array.of(0, 3, 4);
    const a = extraMaskedRows(base, mask, 10, 5);
    expect(a.rows.length).toBe(10);
    expect(a.available).toBe(32);
    for (const r of a.rows) {
      expect(mask[r]).toBe(1);
      expect([0, 3]).not.toContain(r);
    }
    expect(Array.from(a.rows)).toEqual([...a.rows].sort((x, y) => x - y));
    expect(Array.from(extraMaskedRows(base, mask, 10, 5).rows)).toEqual(Array.from(a.rows));
    expect(Array.from(extraMaskedRows(base, mask, 10, 6).rows)).not.toEqual(Array.from(a.rows));
    expect(extraMaskedRows(base, mask, 1000, 5).rows.length).toBe(32);
    expect(() => extraMaskedRows(base, mask, -1, 5)).toThrow(/planted-rows/);
  });

  it('bootstraps an AUC difference: zero for one predictor against itself, positive for a better one', () => {
    const n = 200;
    const y = Float32Array.from({ length: n }, (_, i) => i % 2);
    const good = Float32Array.from(y, (v, i) => 0.3 + 0.4 * v + ((i * 7) % 10) / 100);
    const noise = Float32Array.from({ length: n }, (_, i) => ((i * 37) % 101) / 101);
    const same = bootstrapAucDiff(y, good, good, 50);
    expect([same.point, same.lo95, same.hi95]).toEqual([0, 0, 0]);
    const diff = bootstrapAucDiff(y, good, noise, 200);
    expect(diff.point).toBeGreaterThan(0.3);
    expect(diff.lo95).toBeGreaterThan(0);
    expect(diff.lo95).toBeLessThanOrEqual(diff.point);
    expect(diff.hi95).toBeGreaterThanOrEqual(diff.point);
    expect(diff.rounds).toBe(200);
  });

  it('ranks values within a reference distribution', () => {
    expect(meanPercentile([0, 10], [1, 2, 3, 4])).toBe(0.5);
    expect(meanPercentile([2.5], [1, 2, 3, 4])).toBe(0.5);
    expect(Number.isNaN(meanPercentile([], [1]))).toBe(true);
  });

  it('scores a segment and counts routed rows by entropy above the threshold', () => {
    const f = (...v: number[]) => Float32Array.from(v);
    const d: SegmentInput = {
      labels: f(1, 0, 1, 0),
      pStage1: f(0.9, 0.1, 0.2, 0.8),
      pCrm: f(0.9, 0.1, 0.2, 0.8),
      pLlm: f(0.6, 0.4, 0.7, 0.3),
      pHybrid: f(0.9, 0.1, 0.7, 0.3),
      entropy: f(0.1, 0.1, 0.6, 0.6),
      entropyStage1: f(0.1, 0.1, 0.5, 0.5),
      threshold: 0.5,
    };
    const row = segmentRow('x', d, Int32Array.of(0, 2, 3));
    expect(row.n).toBe(3);
    expect(row.positives).toBe(2);
    expect(row.routed).toBeCloseTo(2 / 3, 4);
    expect(row.meanCrmEntropy).toBeCloseTo(1.3 / 3, 4);
    expect(row.stage1Crm.auc).toBe(0.5);
    expect(row.hybrid.auc).toBe(1);
  });
});
