import type { NativeAddon } from '../../ml/tf/native.js';

/** A seeded LCG in [−0.5, 0.5): the native kernel tests' inputs, the same bits on every run. */
export function rand(seed: number): () => number {
  let s = seed;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296 - 0.5;
}

/** n seeded values of rand(seed), times scale. */
export function fill(n: number, seed: number, scale = 1): Float32Array {
  const r = rand(seed);
  return Float32Array.from({ length: n }, () => scale * r());
}

/**
 * One cross layer's inputs for an [m, n] batch: x0, x, w [n, n], b [n] and an upstream gradient dy, from
 * seeds seed … seed + 4, so that tests of the same kernel draw the same kind of batch.
 */
export function crossInputs(m: number, n: number, seed: number) {
  return {
    x0: fill(m * n, seed),
    x: fill(m * n, seed + 1),
    w: fill(n * n, seed + 2),
    b: fill(n, seed + 3),
    dy: fill(m * n, seed + 4),
  };
}

/**
 * Runs f with the stacks' weight gradients in their own region over the whole batch, as the layers take
 * them: the layers' bits hold then. By row blocks (stackWeightsFused) they are summed in block order, which
 * test/ml/crm/stack-weights.test.ts checks.
 */
export function wholeBatchWeights<T>(addon: NativeAddon, f: () => T): T {
  const a = addon as NativeAddon & { stackWeightsFused(on?: boolean): boolean };
  const was = a.stackWeightsFused();
  a.stackWeightsFused(false);
  try {
    return f();
  } finally {
    a.stackWeightsFused(was);
  }
}
