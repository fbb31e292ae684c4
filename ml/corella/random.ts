/**
 * Seeded randomness for the CoReLLa stages. Weight initialisation and subset sampling must be reproducible
 * across backends and runs, so they never touch Math.random or tfjs' own RNG.
 */
import { mulberry32, permutation as shuffle } from '../crm/random.js';
import type { EncodedSplit } from '../data/types.js';
import { userBlocks } from '../data/user-blocks.js';

export type Rng = () => number;

/** mulberry32 (ml/crm's generator): tiny, fast, good enough for initialisation and sampling; floats in [0, 1). */
export function makeRng(seed: number): Rng {
  return mulberry32(seed);
}

/** Glorot-uniform matrix [fanIn, fanOut], row-major. */
export function glorotUniform(rng: Rng, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const out = new Float32Array(fanIn * fanOut);
  for (let i = 0; i < out.length; i++) out[i] = (rng() * 2 - 1) * limit;
  return out;
}

/** Fisher–Yates shuffle of 0..n-1 (the same draws as ml/crm's shuffle). */
export function permutation(rng: Rng, n: number): Int32Array {
  const p = shuffle(n, rng);
  return new Int32Array(p.buffer, p.byteOffset, p.length);
}

/**
 * Random rows of a split (all when `count` is 0 or ≥ size), sorted, seeded. Prefixes of one permutation:
 * with the same seed, a smaller sample is a subset of a larger one (so their LLM features are shared).
 */
export function sampleRows(size: number, count: number, seed: number): Int32Array {
  if (count <= 0 || count >= size) return Int32Array.from({ length: size }, (_, i) => i);
  return permutation(makeRng(seed), size).slice(0, count).sort();
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
  return flattenUnits(units, permutation(makeRng(seed), units.length), count).sort();
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
