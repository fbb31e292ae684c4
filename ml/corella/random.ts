/**
 * Seeded randomness for the CoReLLa stages. Weight initialisation and subset sampling must be reproducible
 * across backends and runs, so they never touch Math.random or tfjs' own RNG.
 */
export type Rng = () => number;

/** mulberry32: tiny, fast, good enough for initialisation and sampling. Returns floats in [0, 1). */
export function makeRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Glorot-uniform matrix [fanIn, fanOut], row-major. */
export function glorotUniform(rng: Rng, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const out = new Float32Array(fanIn * fanOut);
  for (let i = 0; i < out.length; i++) out[i] = (rng() * 2 - 1) * limit;
  return out;
}

/** Fisher–Yates shuffle of 0..n-1. */
export function permutation(rng: Rng, n: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/**
 * Random rows of a split (all when `count` is 0 or ≥ size), sorted, seeded. Prefixes of one permutation:
 * with the same seed, a smaller sample is a subset of a larger one (so their LLM features are shared).
 */
export function sampleRows(size: number, count: number, seed: number): Int32Array {
  if (count <= 0 || count >= size) return Int32Array.from({ length: size }, (_, i) => i);
  return permutation(makeRng(seed), size).slice(0, count).sort();
}
