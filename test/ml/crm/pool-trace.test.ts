import { afterAll, describe, expect, it } from 'vitest';
import { loadNative, nativeMode } from '../../../ml/tf/native.js';
import type { NativeAddon, PoolTrace } from '../../../ml/tf/native.js';

/**
 * The pool's region trace (poolTrace in native/corella_native.c), which bench/crm-stack-profile.ts
 * --whole-step reads to count a step's regions, the gaps between them and how late the worker joins: it
 * records exactly the regions that ran on the pool (not the inline runs), in order, with sane times and
 * chunk counts; it records nothing when off; it leaves the kernels' results unchanged; a non-boolean
 * argument is a typed error that leaves tracing as it was.
 */
type Addon = NativeAddon & { poolTrace(on: unknown): PoolTrace };
const addon = loadNative().addon as Addon | undefined;
// Where the addon is required (CI builds it), its absence fails these tests instead of skipping them.
const required = process.env.CI === 'true' || nativeMode() === 'on';

function fill(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from(
    { length: n },
    () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5,
  );
}

describe.skipIf(!addon && !required)('poolTrace', () => {
  const a = addon!;
  const threads0 = a.threads();
  afterAll(() => {
    a.poolTrace(false);
    a.setThreads(threads0);
  });

  // One region each at 2 threads: a 1024-row dense stack forward (4 row blocks) and an Adam over 64k floats.
  const B = 1024;
  const W = 128;
  const x = fill(B * W, 1);
  const w = [fill(W * 64, 2), fill(64, 3)];
  const b = [fill(64, 4), fill(1, 5)];
  const forward = () => {
    const hs = [new Float32Array(B * 64), new Float32Array(B)];
    a.denseStackForward(x, w, b, hs, B, W, 1);
    return hs[1];
  };

  it('records each pool region once, in order, and nothing of inline runs', () => {
    a.setThreads(2);
    a.poolTrace(true);
    const before = a.poolStats().regions;
    const y2 = forward();
    const p = fill(1 << 16, 6);
    a.adam(p, fill(1 << 16, 7), new Float32Array(1 << 16), new Float32Array(1 << 16), 1e-3, 0.9, 0.999, 1e-7);
    // one chunk: runs inline on the caller, no region
    a.adam(
      new Float32Array(8),
      new Float32Array(8),
      new Float32Array(8),
      new Float32Array(8),
      1e-3,
      0.9,
      0.999,
      1e-7,
    );
    const t = a.poolTrace(false);
    const regions = a.poolStats().regions - before;
    expect(regions).toBeGreaterThanOrEqual(2);
    expect(t.start.length).toBe(regions);
    expect(t.inline).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < t.start.length; i++) {
      expect(t.end[i]).toBeGreaterThanOrEqual(t.start[i]);
      if (i > 0) expect(t.start[i]).toBeGreaterThanOrEqual(t.end[i - 1]);
      expect(t.chunks[i]).toBeGreaterThan(1);
      expect(t.workerChunks[i]).toBeGreaterThanOrEqual(0);
      expect(t.workerChunks[i]).toBeLessThanOrEqual(t.chunks[i]);
      // joined is −1 (no worker chunk) or inside the region
      if (t.joined[i] >= 0) {
        expect(t.workerChunks[i]).toBeGreaterThan(0);
        expect(t.joined[i]).toBeGreaterThanOrEqual(t.start[i]);
        expect(t.joined[i]).toBeLessThanOrEqual(t.end[i]);
      } else expect(t.workerChunks[i]).toBe(0);
    }
    // tracing changes no result: the same forward at 1 thread, untraced
    a.setThreads(1);
    expect(forward()).toEqual(y2);
  });

  it('records nothing while off, and hands back an empty record after each call', () => {
    a.setThreads(2);
    a.poolTrace(false);
    forward();
    expect(a.poolTrace(true).start.length).toBe(0);
    forward();
    expect(a.poolTrace(true).start.length).toBeGreaterThan(0);
    expect(a.poolTrace(false).start.length).toBe(0);
  });

  it('refuses a non-boolean with a typed error and keeps tracing as it was', () => {
    a.setThreads(2);
    a.poolTrace(true);
    expect(() => a.poolTrace('yes')).toThrow(TypeError);
    expect(() => a.poolTrace(undefined)).toThrow(/on must be a boolean/);
    forward();
    expect(a.poolTrace(false).start.length).toBeGreaterThan(0);
  });
});
