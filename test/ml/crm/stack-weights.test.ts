import { afterAll, describe, expect, it } from 'vitest';
import { close } from '../../helpers/close-arrays.js';
import { loadNative } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';
import { fill } from '../../helpers/native-fixtures.js';

/**
 * The stacks' backward with the weight gradients fused into the row region (native/corella_native.c,
 * block_weights and reduce_weights_chunk): each 256-row block's x_lᵀ·dz_l and Σ dz_l, summed in block
 * order. Checked against the unfused kernel run on each block alone (the same sgemm, so the same bits),
 * summed in float32 in block order: exactly that, at 1, 2 and 3 threads; dx / dx0 the unfused bits;
 * close to the unfused whole-batch gradients; the switch's typed error. The fused path is off by default
 * (stackWeightsFused; docs/crm-speed.md says why).
 */
const status = loadNative();
type Addon = NativeAddon & { stackWeightsFused(on?: boolean): boolean };
const addon = status.addon as Addon | undefined;

const rows = (a: Float32Array, width: number, r0: number, r1: number) => a.slice(r0 * width, r1 * width);
/** Row blocks as the stacks cut them: 1 below 512 rows, else m / 256 (at most 16), by chunk_range. */
function blocks(m: number): [number, number][] {
  const c = m < 512 ? 1 : Math.min(16, Math.floor(m / 256));
  return Array.from({ length: c }, (_, i) => [Math.floor((m * i) / c), Math.floor((m * (i + 1)) / c)]);
}
/** Σ parts in order, rounding to float32 after each add, as the kernel's reduction does. */
function sumInOrder(parts: Float32Array[]): Float32Array {
  const out = parts[0].slice();
  for (const p of parts.slice(1)) for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i] + p[i]);
  return out;
}

interface Grads {
  dx: Float32Array;
  dws: Float32Array[];
  dbs: Float32Array[];
}

describe.runIf(addon !== undefined)('fused weight gradients in the stacks’ backward', () => {
  const a = addon as Addon;
  const initially = a?.stackWeightsFused();
  afterAll(() => {
    a.stackWeightsFused(initially ?? false);
    a.setThreads(1);
  });

  const widths = [128, 256, 128, 1];
  const RELU = 0b011;
  function denseData(m: number, seed: number) {
    const L = widths.length - 1;
    const x = fill(m * widths[0], seed);
    const ws = Array.from({ length: L }, (_, l) => fill(widths[l] * widths[l + 1], seed + 1 + l, 0.2));
    const bs = Array.from({ length: L }, (_, l) => fill(widths[l + 1], seed + 10 + l, 0.2));
    const ys = widths.slice(1).map((n) => new Float32Array(m * n));
    a.denseStackForward(x, ws, bs, ys, m, widths[0], RELU);
    return { m, x, ws, ys, dy: fill(m, seed + 30) };
  }
  function dense(d: ReturnType<typeof denseData>, r0 = 0, r1 = d.m): Grads {
    const m = r1 - r0;
    const g: Grads = {
      dx: new Float32Array(m * widths[0]),
      dws: d.ws.map((w) => new Float32Array(w.length)),
      dbs: widths.slice(1).map((n) => new Float32Array(n)),
    };
    a.denseStackBackward(
      rows(d.dy, 1, r0, r1),
      rows(d.x, widths[0], r0, r1),
      d.ws,
      d.ys.map((y, l) => rows(y, widths[l + 1], r0, r1)),
      g.dx,
      g.dws,
      g.dbs,
      m,
      widths[0],
      RELU,
    );
    return g;
  }

  const n = 128;
  const L = 3;
  function crossData(m: number, seed: number) {
    const x0 = fill(m * n, seed);
    const ws = Array.from({ length: L }, (_, l) => fill(n * n, seed + 1 + l, 0.1));
    const bs = Array.from({ length: L }, (_, l) => fill(n, seed + 10 + l, 0.1));
    const ys = Array.from({ length: L }, () => new Float32Array(m * n));
    const zs = Array.from({ length: L }, () => new Float32Array(m * n));
    a.crossStackForward(x0, ws, bs, ys, zs, m, n);
    return { m, x0, ws, ys, zs, dy: fill(m * n, seed + 30) };
  }
  function cross(d: ReturnType<typeof crossData>, r0 = 0, r1 = d.m): Grads {
    const m = r1 - r0;
    const g: Grads = {
      dx: new Float32Array(m * n),
      dws: d.ws.map((w) => new Float32Array(w.length)),
      dbs: d.ws.map(() => new Float32Array(n)),
    };
    const r = (v: Float32Array) => rows(v, n, r0, r1);
    a.crossStackBackward(
      r(d.dy),
      r(d.x0),
      d.ws,
      d.zs.map(r),
      d.ys.slice(0, -1).map(r),
      g.dx,
      g.dws,
      g.dbs,
      m,
      n,
    );
    return g;
  }

  /** What the fused kernel must return: each block's gradients by the unfused kernel on that block alone. */
  function fromBlocks(run: (r0: number, r1: number) => Grads, m: number, whole: Grads): Grads {
    const parts = blocks(m).map(([r0, r1]) => run(r0, r1));
    return {
      dx: whole.dx,
      dws: whole.dws.map((_, l) => sumInOrder(parts.map((p) => p.dws[l]))),
      dbs: whole.dbs.map((_, l) => sumInOrder(parts.map((p) => p.dbs[l]))),
    };
  }

  const kinds = [
    { kind: 'dense', make: denseData, run: dense },
    { kind: 'cross', make: crossData, run: cross },
  ] as const;

  describe.each(kinds)('$kind stack', ({ make, run }) => {
    it.each([1024, 600, 300])(
      '%i rows: block partials summed in order, the same bits at 1, 2 and 3 threads',
      (m) => {
        const d = make(m, 5 + m) as never;
        a.setThreads(1);
        a.stackWeightsFused(false);
        const unfused = run(d);
        const want = fromBlocks((r0, r1) => run(d, r0, r1), m, unfused);
        a.stackWeightsFused(true);
        for (const threads of [1, 2, 3]) {
          a.setThreads(threads);
          const got = run(d);
          expect(got.dx, `${threads} thread(s): dx`).toEqual(unfused.dx);
          got.dws.forEach((dw, l) => expect(dw, `${threads} thread(s): dw${l}`).toEqual(want.dws[l]));
          got.dbs.forEach((db, l) => expect(db, `${threads} thread(s): db${l}`).toEqual(want.dbs[l]));
          // and close to the whole-batch sums (bit-identical with one block)
          got.dws.forEach((dw, l) =>
            m < 512 ? expect(dw).toEqual(unfused.dws[l]) : close(dw, unfused.dws[l], `dw${l}`, 1e-5),
          );
          got.dbs.forEach((db, l) =>
            m < 512 ? expect(db).toEqual(unfused.dbs[l]) : close(db, unfused.dbs[l], `db${l}`, 1e-5),
          );
        }
        // the gradients are not trivially zero
        expect(want.dws.every((dw) => dw.some((v) => v !== 0))).toBe(true);
        a.setThreads(1);
      },
    );
  });

  it('the switch is off by default, takes a boolean, and a bad one changes nothing', () => {
    a.stackWeightsFused(false);
    expect(a.stackWeightsFused(true)).toBe(true);
    expect(() => a.stackWeightsFused('yes' as never)).toThrow(/expected a boolean/);
    expect(a.stackWeightsFused()).toBe(true);
    expect(a.stackWeightsFused(false)).toBe(false);
  });

  it('the stacks’ range errors still name the shapes, with the fused weights on', () => {
    a.stackWeightsFused(true);
    const d = denseData(8, 3);
    const dws = d.ws.map((w) => new Float32Array(w.length));
    const dbs = widths.slice(1).map((w) => new Float32Array(w));
    expect(() =>
      a.denseStackBackward(d.dy, d.x, d.ws, d.ys, new Float32Array(7), dws, dbs, 8, widths[0], RELU),
    ).toThrow(/shapes do not fit the buffers/);
    expect(dws.every((w) => w.every((v) => v === 0))).toBe(true);
  });
});
