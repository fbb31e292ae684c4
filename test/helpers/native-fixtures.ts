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
