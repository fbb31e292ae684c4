import { describe, expect, it } from 'vitest';
import { recentRows, sliceSplit } from '../../../ml/data/slice.js';
import type { EncodedSplit } from '../../../ml/data/types.js';

function split(): EncodedSplit {
  const n = 4;
  return {
    name: 'valid',
    size: n,
    labels: Float32Array.from([0, 1, 1, 0]),
    sampleIds: Uint32Array.from([10, 11, 12, 13]),
    timestamps: Float64Array.from([0, 86_400, 2 * 86_400, 3 * 86_400]),
    userRows: Int32Array.from([0, 0, 1, 1]),
    categorical: Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]),
    sequences: [Int32Array.from([1, 0, 2, 0, 3, 0, 4, 4])],
    dense: new Float32Array(0),
    targetItemRows: Int32Array.from([5, 6, 7, 8]),
    historyItemRows: Int32Array.from([1, -1, 2, -1, 3, -1, 4, 4]),
    historyRatings: Float32Array.from([5, NaN, 4, NaN, 3, NaN, 2, 1]),
    historyLen: 2,
  };
}

describe('sliceSplit / recentRows', () => {
  it('copies the chosen rows of every column, 2-D columns by row', () => {
    const s = sliceSplit(split(), [3, 1]);
    expect(s.size).toBe(2);
    expect(Array.from(s.sampleIds)).toEqual([13, 11]);
    expect(Array.from(s.categorical)).toEqual([7, 8, 3, 4]);
    expect(Array.from(s.sequences[0])).toEqual([4, 4, 2, 0]);
    expect(Array.from(s.historyItemRows)).toEqual([4, 4, 2, -1]);
    expect(Array.from(s.labels)).toEqual([0, 1]);
  });

  it('keeps the last days before the newest sample', () => {
    expect(Array.from(recentRows(split(), 1))).toEqual([2, 3]);
    expect(Array.from(recentRows(split()))).toEqual([0, 1, 2, 3]);
  });
});
