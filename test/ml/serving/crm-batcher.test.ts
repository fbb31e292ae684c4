/**
 * CRM micro-batching with a CRM that records its calls: concurrent requests share one predict call with
 * their rows concatenated in order, each gets its own slice back, and maxRows flushes early.
 */
import { describe, expect, it } from 'vitest';
import type { CrmModel } from '../../../ml/crm/types.js';
import type { EncodedSplit } from '../../../ml/data/types.js';
import { concatSplits, CrmBatcher } from '../../../ml/serving/crm-batcher.js';

function split(ids: number[]): EncodedSplit {
  const n = ids.length;
  return {
    name: 'test',
    size: n,
    labels: new Float32Array(n),
    sampleIds: new Uint32Array(n),
    timestamps: new Float64Array(n),
    userRows: new Int32Array(n),
    categorical: Int32Array.from(ids.flatMap((i) => [i, i + 1])),
    sequences: [Int32Array.from(ids.flatMap((i) => [i, 0, 0]))],
    dense: new Float32Array(0),
    targetItemRows: Int32Array.from(ids),
    historyItemRows: new Int32Array(n * 3).fill(-1),
    historyRatings: new Float32Array(n * 3).fill(NaN),
    historyLen: 3,
  };
}

/** "Probability" = the row's first categorical id / 1000, so results show which row they came from. */
function recordingCrm(calls: number[]): CrmModel {
  return {
    predict: (s: EncodedSplit) => {
      calls.push(s.size);
      return Promise.resolve(Float32Array.from({ length: s.size }, (_, r) => s.categorical[r * 2] / 1000));
    },
  } as unknown as CrmModel;
}

describe('CrmBatcher', () => {
  it('scores concurrent requests in one call and hands each its own rows', async () => {
    const calls: number[] = [];
    const b = new CrmBatcher(recordingCrm(calls), { maxWaitMs: 5 });
    const reqs = [[1, 2, 3], [4], [5, 6]];
    const out = await Promise.all(reqs.map((ids) => b.predict(split(ids))));
    expect(calls).toEqual([6]);
    out.forEach((p, i) => expect(Array.from(p)).toEqual(reqs[i].map((x) => Math.fround(x / 1000))));
    expect(b.stats).toEqual({ calls: 1, requests: 3, rows: 6 });
  });

  it('flushes as soon as maxRows are waiting, and a later request starts a new batch', async () => {
    const calls: number[] = [];
    const b = new CrmBatcher(recordingCrm(calls), { maxWaitMs: 1000, maxRows: 4 });
    const t0 = performance.now();
    const [x, y] = await Promise.all([b.predict(split([1, 2])), b.predict(split([3, 4]))]);
    expect(performance.now() - t0).toBeLessThan(500);
    expect(calls).toEqual([4]);
    expect(Array.from(x).concat(Array.from(y))).toHaveLength(4);
    const late = b.predict(split([9]));
    await b.drain();
    expect(Array.from(await late)).toEqual([Math.fround(0.009)]);
    expect(calls).toEqual([4, 1]);
  });

  it('scores a lone request at the next turn of the loop, and waits for company only while it comes', async () => {
    const calls: number[] = [];
    const b = new CrmBatcher(recordingCrm(calls), { maxWaitMs: 400 });
    // Nothing came together yet: no timer wait for a request nobody joins.
    let t0 = performance.now();
    await b.predict(split([1]));
    expect(performance.now() - t0).toBeLessThan(200);
    // A burst in one turn of the loop is still one batch.
    await Promise.all([b.predict(split([2])), b.predict(split([3]))]);
    expect(calls).toEqual([1, 2]);
    // Requests came together last time: the next one waits up to maxWaitMs, and one arriving meanwhile joins.
    t0 = performance.now();
    const first = b.predict(split([4]));
    await new Promise((r) => setTimeout(r, 50));
    const second = b.predict(split([5]));
    await Promise.all([first, second]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(350);
    expect(calls).toEqual([1, 2, 2]);
    // That batch held two, so the wait stays until a batch of one: the loop adapts back to lone traffic.
    await b.predict(split([6]));
    await b.predict(split([7]));
    expect(calls).toEqual([1, 2, 2, 1, 1]);
  });

  it('concatenates every column row-wise', () => {
    const j = concatSplits([split([1, 2]), split([7])]);
    expect(j.size).toBe(3);
    expect(Array.from(j.categorical)).toEqual([1, 2, 2, 3, 7, 8]);
    expect(Array.from(j.sequences[0])).toEqual([1, 0, 0, 2, 0, 0, 7, 0, 0]);
    expect(Array.from(j.targetItemRows)).toEqual([1, 2, 7]);
    expect(j.historyItemRows).toHaveLength(9);
  });
});
