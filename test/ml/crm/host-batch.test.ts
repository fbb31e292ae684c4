import { describe, expect, it } from 'vitest';
import { hostRows } from '../../../ml/crm/batch.js';
import { tableLayout } from '../../../ml/crm/layout.js';
import { hostBatch } from '../../../ml/crm/native-step.js';
import type { CrmNet } from '../../../ml/crm/model.js';
import { syntheticDataset } from './fixtures.js';

/**
 * hostRows and hostBatch with `into`: the step reuses the previous batch's arrays, which must come back
 * exactly as a fresh assembly would make them (padding weights included, which the fresh arrays get
 * from zero-initialisation), and a batch of another size must not be written into them.
 */
describe('batch assembly into reused arrays', () => {
  const ds = syntheticDataset({ users: 300, items: 200, rows: 500, dense: 2, maxLen: 5 });
  const split = ds.splits.train;
  const layout = tableLayout(ds.featureMap);
  const rowsA = Int32Array.from({ length: 64 }, (_, i) => (i * 7) % split.size);
  const rowsB = Int32Array.from({ length: 64 }, (_, i) => (i * 13 + 5) % split.size);

  it('hostRows into the previous arrays equals a fresh hostRows, in the same arrays', () => {
    const first = hostRows(split, rowsA, layout);
    const fresh = hostRows(split, rowsB, layout);
    const reused = hostRows(split, rowsB, layout, first);
    expect(reused.categoricalRows).toBe(first.categoricalRows);
    expect(reused.sequenceWeights[0]).toBe(first.sequenceWeights[0]);
    expect(reused).toEqual(fresh);
    // The batches differ (else reuse would pass trivially), padding included.
    expect(hostRows(split, rowsA, layout)).not.toEqual(fresh);
    expect(fresh.sequenceWeights[0].some((w) => w === 0)).toBe(true);
  });

  it('a batch of another size gets new arrays and leaves the old ones alone', () => {
    const first = hostRows(split, rowsA, layout);
    const copy = first.categoricalRows.slice();
    const small = hostRows(split, rowsB.subarray(0, 10), layout, first);
    expect(small.categoricalRows).not.toBe(first.categoricalRows);
    expect(small.categoricalRows.length).toBe(10 * layout.categoricalOffsets.length);
    expect(first.categoricalRows).toEqual(copy);
  });

  it('hostBatch reuses labels and dense values too', () => {
    const model = { layout } as unknown as CrmNet;
    const first = hostBatch(model, split, rowsA);
    const fresh = hostBatch(model, split, rowsB);
    const reused = hostBatch(model, split, rowsB, first);
    expect(reused.labels).toBe(first.labels);
    expect(reused.dense).toBe(first.dense);
    expect(reused).toEqual(fresh);
  });
});
