import type { EncodedSplit } from './types.js';

/** The given rows of a split as a split of its own (sample ids kept, so cached LLM features still match). */
export function sliceSplit(split: EncodedSplit, rows: ArrayLike<number>): EncodedSplit {
  const n = rows.length;
  const pick1 = <T extends Float32Array | Float64Array | Int32Array | Uint32Array>(
    a: T,
    make: (n: number) => T,
  ): T => {
    const out = make(n);
    for (let i = 0; i < n; i++) out[i] = a[rows[i]];
    return out;
  };
  const pickW = <T extends Float32Array | Int32Array>(a: T, width: number, make: (n: number) => T): T => {
    const out = make(n * width);
    for (let i = 0; i < n; i++) out.set(a.subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
    return out;
  };
  const nCat = split.size > 0 ? split.categorical.length / split.size : 0;
  const nDense = split.size > 0 ? split.dense.length / split.size : 0;
  return {
    name: split.name,
    size: n,
    labels: pick1(split.labels, (k) => new Float32Array(k)),
    sampleIds: pick1(split.sampleIds, (k) => new Uint32Array(k)),
    timestamps: pick1(split.timestamps, (k) => new Float64Array(k)),
    userRows: pick1(split.userRows, (k) => new Int32Array(k)),
    categorical: pickW(split.categorical, nCat, (k) => new Int32Array(k)),
    sequences: split.sequences.map((s) =>
      pickW(s, split.size > 0 ? s.length / split.size : 0, (k) => new Int32Array(k)),
    ),
    dense: pickW(split.dense, nDense, (k) => new Float32Array(k)),
    targetItemRows: pick1(split.targetItemRows, (k) => new Int32Array(k)),
    historyItemRows: pickW(split.historyItemRows, split.historyLen, (k) => new Int32Array(k)),
    historyRatings: pickW(split.historyRatings, split.historyLen, (k) => new Float32Array(k)),
    historyLen: split.historyLen,
  };
}

/** Rows whose timestamp lies in the last `days` before the split's newest sample (all rows when omitted). */
export function recentRows(split: EncodedSplit, days?: number): Int32Array {
  if (days === undefined || split.size === 0) return Int32Array.from({ length: split.size }, (_, i) => i);
  let newest = -Infinity;
  for (let i = 0; i < split.size; i++) newest = Math.max(newest, split.timestamps[i]);
  const from = newest - days * 86_400;
  const rows: number[] = [];
  for (let i = 0; i < split.size; i++) if (split.timestamps[i] >= from) rows.push(i);
  return Int32Array.from(rows);
}
