/**
 * Seeded row samples of a split, for the row plan (row-plan.ts) and the benchmarks. Prefixes of one
 * permutation: with the same seed, a smaller sample is a subset of a larger one (so LLM features are shared).
 */
import type { EncodedSplit } from '../data/types.js';
import { userBlocks } from '../data/user-blocks.js';
import { mulberry32, permutation } from '../random.js';

/** Random rows of a split (all when `count` is 0 or ≥ size), sorted, seeded. */
export function sampleRows(size: number, count: number, seed: number): Int32Array {
  if (count <= 0 || count >= size) return Int32Array.from({ length: size }, (_, i) => i);
  return permutation(mulberry32(seed), size).slice(0, count).sort();
}

/**
 * Like sampleRows, but draws whole user blocks (ml/data/user-blocks.ts) so the LLM branch can reuse each
 * block's shared prompt prefix; the last block drawn is cut to hit `count` exactly. Each row is equally
 * likely to be drawn, so pool metrics stay unbiased. `block` ≤ 1 is exactly sampleRows, and with one seed
 * a smaller pool is still a subset of a larger one.
 */
export function samplePool(split: EncodedSplit, count: number, seed: number, block = 1): Int32Array {
  if (block <= 1) return sampleRows(split.size, count, seed);
  if (count <= 0 || count >= split.size) return Int32Array.from({ length: split.size }, (_, i) => i);
  const units = userBlocks(split, block);
  return flattenUnits(units, permutation(mulberry32(seed), units.length), count).sort();
}

/** Rows of `units` taken in `order` until `count` rows (the last unit cut short). */
export function flattenUnits(units: Int32Array[], order: ArrayLike<number>, count: number): Int32Array {
  const out = new Int32Array(count);
  let n = 0;
  for (let i = 0; i < order.length && n < count; i++) {
    const u = units[order[i]];
    const take = Math.min(u.length, count - n);
    out.set(u.subarray(0, take), n);
    n += take;
  }
  return out.slice(0, n);
}
