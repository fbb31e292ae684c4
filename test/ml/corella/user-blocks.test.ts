import { describe, expect, it } from 'vitest';
import type { EncodedSplit } from '../../../ml/data/types.js';
import { blockOffset, userBlocks, userSampleIndex } from '../../../ml/data/user-blocks.js';
import { mulberry32 } from '../../../ml/random.js';
import { samplePool, sampleRows } from '../../../ml/corella/sampling.js';
import { selectSubsets } from '../../../ml/corella/subsets.js';
import { jointSubsets, resolveJointConfig } from '../../../ml/corella/joint.js';
import { makeSplit } from './fixtures.js';

/** `users` users with `per` samples each, rows interleaved across users and out of time order. */
function interleaved(users: number, per: number): EncodedSplit {
  const n = users * per;
  const s = makeSplit('train', [], 0);
  const rng = mulberry32(5);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  // Row r holds sample order[r]: user = sample % users, time = sample.
  return {
    ...s,
    size: n,
    labels: new Float32Array(n),
    sampleIds: Uint32Array.from(order, (k) => 1000 + k),
    timestamps: Float64Array.from(order, (k) => k),
    userRows: Int32Array.from(order, (k) => k % users),
    targetItemRows: new Int32Array(n),
  };
}

describe('user blocks', () => {
  const split = interleaved(7, 23);

  it('index each user’s samples in time order', () => {
    const idx = userSampleIndex(split);
    for (let r = 0; r < split.size; r++) {
      const k = split.timestamps[r];
      expect(idx[r]).toBe(Math.floor(k / 7));
    }
  });

  it('group consecutive samples of one user, every row exactly once', () => {
    const blocks = userBlocks(split, 5);
    const seen = new Set<number>();
    const idx = userSampleIndex(split);
    for (const b of blocks) {
      expect(b.length).toBeGreaterThan(0);
      expect(b.length).toBeLessThanOrEqual(5);
      const u = split.userRows[b[0]];
      b.forEach((r, k) => {
        expect(split.userRows[r]).toBe(u);
        expect(blockOffset(split, r, 5)).toBe(k);
        if (k > 0) expect(idx[r]).toBe(idx[b[k - 1]] + 1);
        seen.add(r);
      });
    }
    expect(seen.size).toBe(split.size);
    // 23 samples per user in blocks of 5: four full blocks and one of 3.
    expect(blocks.length).toBe(7 * 5);
  });

  it('samplePool with block 1 is sampleRows; with blocks it draws whole blocks and nests by count', () => {
    expect(Array.from(samplePool(split, 40, 3, 1))).toEqual(Array.from(sampleRows(split.size, 40, 3)));
    const small = samplePool(split, 30, 3, 5);
    const big = samplePool(split, 60, 3, 5);
    expect(small).toHaveLength(30);
    expect(big).toHaveLength(60);
    const bigSet = new Set(big);
    expect(Array.from(small).every((r) => bigSet.has(r))).toBe(true);
    // At most one drawn block is cut short: count the blocks the pool touches.
    const touched = new Set(
      Array.from(big, (r) => `${split.userRows[r]}:${Math.floor(userSampleIndex(split)[r] / 5)}`),
    );
    expect(touched.size).toBeLessThanOrEqual(Math.ceil(60 / 3));
    expect(touched.size).toBeLessThan(60 / 2);
    expect(Array.from(samplePool(split, 0, 3, 5))).toHaveLength(split.size);
  });

  it('every row is about equally likely to be drawn', () => {
    const hits = new Float64Array(split.size);
    for (let seed = 0; seed < 400; seed++) for (const r of samplePool(split, 40, seed, 5)) hits[r]++;
    const mean = (400 * 40) / split.size;
    for (const h of hits) expect(Math.abs(h - mean)).toBeLessThan(mean * 0.5);
  });

  it('selectSubsets over units keeps stages disjoint and blocks whole; hard favours high-entropy blocks', () => {
    const units = userBlocks(split, 5);
    const plan = selectSubsets({ size: split.size, n2: 50, n3: 30, selection: 'random', seed: 2, units });
    expect(plan.stage2).toHaveLength(50);
    expect(plan.stage3).toHaveLength(30);
    expect(new Set([...plan.stage2, ...plan.stage3]).size).toBe(80);
    const h = Float32Array.from({ length: split.size }, (_, r) => (split.userRows[r] === 3 ? 0.69 : 0.01));
    const hard = selectSubsets({
      size: split.size,
      n2: 20,
      n3: 0,
      selection: 'hard',
      seed: 2,
      entropy: h,
      units,
    });
    expect(Array.from(hard.stage2).filter((r) => split.userRows[r] === 3).length).toBe(20);
    const viaConfig = jointSubsets(
      split,
      resolveJointConfig({ poolBlock: 5, seed: 2, stage2: { samples: 50 }, stage3: { samples: 30 } }),
    );
    expect(Array.from(viaConfig.stage2)).toEqual(Array.from(plan.stage2));
  });
});
