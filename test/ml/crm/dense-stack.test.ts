import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { close } from '../../helpers/close-arrays.js';
import { denseStack } from '../../../ml/crm/dense-stack.js';
import type { DenseLayerWeights } from '../../../ml/crm/dense-stack.js';
import { initTf } from '../../../ml/tf/backend.js';
import {
  DENSE_STACK,
  DENSE_STACK_GRAD,
  registerNativeKernels,
} from '../../../ml/tf/kernels/native-kernels.js';
import { loadNative } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';
import { fill, wholeBatchWeights } from '../../helpers/native-fixtures.js';

/**
 * The fused dense stack (the CRM's MLP and output layer as one tape op, native/corella_native.c
 * denseStackForward/Backward) and the one-region cross stack kernels: bit-identical to the layers one
 * by one and across pool thread counts, close to the cpu backend and to a float64 reference, and typed
 * range errors that leave the outputs alone.
 */
const status = loadNative();
const addon = status.addon as NativeAddon;

interface Case {
  m: number;
  widths: number[]; // k0, n_0, …, n_{L-1}
  relu: boolean[];
}

/** The bench MLP 128 → 256 → 128 → 1 (relu, relu, linear), a relu top layer, and a single linear layer. */
const CASES: Case[] = [
  { m: 1024, widths: [128, 256, 128, 1], relu: [true, true, false] },
  { m: 600, widths: [20, 33, 7], relu: [true, true] },
  { m: 1024, widths: [64, 1], relu: [false] },
];

function caseData(c: Case, seed: number) {
  const L = c.relu.length;
  return {
    x: fill(c.m * c.widths[0], seed),
    ws: Array.from({ length: L }, (_, l) =>
      fill(c.widths[l] * c.widths[l + 1], seed + 1 + l, 2 / Math.sqrt(c.widths[l])),
    ),
    bs: Array.from({ length: L }, (_, l) => fill(c.widths[l + 1], seed + 20 + l, 0.2)),
    up: fill(c.m * c.widths[L], seed + 40),
  };
}

/** The stack's output and the gradients of Σ output ⊙ up for x and every w and b, as plain arrays. */
function runStack(c: Case, d: ReturnType<typeof caseData>): Float32Array[] {
  const L = c.relu.length;
  return tf.tidy(() => {
    const t = [
      tf.tensor2d(d.x, [c.m, c.widths[0]]),
      ...d.ws.map((w, l) => tf.tensor2d(w, [c.widths[l], c.widths[l + 1]])),
      ...d.bs.map((b) => tf.tensor1d(b)),
    ];
    const stack = (a: tf.Tensor[]) =>
      denseStack(
        a[0] as tf.Tensor2D,
        c.relu.map((relu, l): DenseLayerWeights => ({ w: a[1 + l], b: a[1 + L + l], relu })),
      );
    const up = tf.tensor2d(d.up, [c.m, c.widths[L]]);
    const f = (...a: tf.Tensor[]) => tf.sum(tf.mul(stack(a), up));
    return [stack(t), ...tf.grads(f)(t)].map((x) => (x.dataSync() as Float32Array).slice());
  });
}

/** Runs f with the stack kernels unregistered, so denseStack falls back to one dense op per layer. */
function layerByLayer<T>(f: () => T): T {
  tf.unregisterKernel(DENSE_STACK, 'wasm');
  tf.unregisterKernel(DENSE_STACK_GRAD, 'wasm');
  try {
    return f();
  } finally {
    registerNativeKernels(addon);
  }
}

/** Float64 forward and backward of the same stack, in plain JS. */
function reference(c: Case, d: ReturnType<typeof caseData>): Float64Array[] {
  const L = c.relu.length;
  const { m, widths } = c;
  const hs: Float64Array[] = [Float64Array.from(d.x)];
  for (let l = 0; l < L; l++) {
    const k = widths[l];
    const n = widths[l + 1];
    const x = hs[l];
    const y = new Float64Array(m * n);
    for (let r = 0; r < m; r++)
      for (let j = 0; j < n; j++) {
        let s = d.bs[l][j];
        for (let q = 0; q < k; q++) s += x[r * k + q] * d.ws[l][q * n + j];
        y[r * n + j] = c.relu[l] && s < 0 ? 0 : s;
      }
    hs.push(y);
  }
  let dy = Float64Array.from(d.up);
  const dws: Float64Array[] = [];
  const dbs: Float64Array[] = [];
  for (let l = L - 1; l >= 0; l--) {
    const k = widths[l];
    const n = widths[l + 1];
    const dz = dy.map((v, i) => (c.relu[l] && !(hs[l + 1][i] > 0) ? 0 : v));
    const dw = new Float64Array(k * n);
    const db = new Float64Array(n);
    const dx = new Float64Array(m * k);
    for (let r = 0; r < m; r++)
      for (let j = 0; j < n; j++) {
        const g = dz[r * n + j];
        if (g === 0) continue;
        db[j] += g;
        for (let q = 0; q < k; q++) {
          dw[q * n + j] += hs[l][r * k + q] * g;
          dx[r * k + q] += g * d.ws[l][q * n + j];
        }
      }
    dws[l] = dw;
    dbs[l] = db;
    dy = dx;
  }
  return [hs[L], dy, ...dws, ...dbs];
}

describe.runIf(addon !== undefined)('the fused dense stack', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });
  afterAll(async () => {
    addon.setThreads(1);
    await initTf('wasm', () => undefined);
  });

  it.each(CASES.map((c, i) => [i, c] as const))(
    'case %i: bit-identical to the layers one by one at 1 and 2 threads, and to 1 thread at 2',
    (i, c) => {
      const d = caseData(c, 100 + 10 * i);
      const names = ['y', 'dx', ...c.relu.map((_, l) => `dw${l}`), ...c.relu.map((_, l) => `db${l}`)];
      const fusedAt: Float32Array[][] = [];
      for (const threads of [1, 2]) {
        addon.setThreads(threads);
        // The layers' bits hold with the weight gradients in their own region; summed by row blocks
        // (stackWeightsFused) they are test/ml/crm/stack-weights.test.ts's subject.
        const fused = wholeBatchWeights(addon, () => runStack(c, d));
        const split = layerByLayer(() => runStack(c, d));
        names.forEach((name, j) => expect(fused[j], `${threads} thread(s): ${name}`).toEqual(split[j]));
        fusedAt.push(fused);
      }
      addon.setThreads(1);
      names.forEach((name, j) => expect(fusedAt[1][j], `2 against 1 thread: ${name}`).toEqual(fusedAt[0][j]));
      // Not a trivial agreement: the relu layers did clip, and the gradients are not zero.
      expect(fusedAt[0][0].some((v) => v === 0) || !c.relu.at(-1)).toBe(true);
      expect(fusedAt[0][1].some((v) => v !== 0)).toBe(true);
    },
  );

  it.each(CASES.map((c, i) => [i, c] as const))(
    'case %i: values and gradients against the cpu backend and a float64 reference',
    async (i, c) => {
      const d = caseData(c, 100 + 10 * i);
      const got = runStack(c, d);
      await initTf('cpu', () => undefined);
      const cpu = runStack(c, d);
      await initTf('wasm', () => undefined);
      const f64 = reference(c, d);
      const names = ['y', 'dx', ...c.relu.map((_, l) => `dw${l}`), ...c.relu.map((_, l) => `db${l}`)];
      // db sums ~m terms of O(1): allow float32 rounding of the sum's size
      names.forEach((name, j) => {
        close(got[j], cpu[j], `against cpu: ${name}`);
        close(got[j], f64[j], `against float64: ${name}`, name.startsWith('d') ? 2e-4 : 1e-5);
      });
    },
  );

  it('rejects mismatched layer lists, shapes and relu masks with a RangeError, writing nothing', () => {
    const m = 4;
    const x = fill(m * 3, 1);
    const w0 = fill(3 * 2, 2);
    const b0 = fill(2, 3);
    const y0 = new Float32Array(m * 2).fill(9);
    const untouched = () => expect(y0).toEqual(new Float32Array(m * 2).fill(9));
    expect(() => addon.denseStackForward(x, [w0], [b0, b0], [y0], m, 3, 1)).toThrow(RangeError);
    expect(() => addon.denseStackForward(x, [w0], [b0], [y0], m, 3, 1)).not.toThrow();
    y0.fill(9);
    expect(() => addon.denseStackForward(x, [w0], [b0], [y0], m, 4, 1)).toThrow(/shapes do not fit/);
    expect(() => addon.denseStackForward(x, [w0], [fill(3, 4)], [y0], m, 3, 1)).toThrow(/shapes do not fit/);
    expect(() => addon.denseStackForward(x, [w0], [b0], [y0], m, 3, 2)).toThrow(/relu mask/);
    expect(() => addon.denseStackForward(x, [w0], [b0], [], m, 3, 1)).toThrow(TypeError);
    untouched();
    const dx = new Float32Array(m * 3).fill(5);
    const dw = new Float32Array(6).fill(5);
    const db = new Float32Array(2).fill(5);
    expect(() => addon.denseStackBackward(fill(m * 3, 5), x, [w0], [y0], dx, [dw], [db], m, 3, 1)).toThrow(
      /shapes do not fit/,
    );
    expect(() =>
      addon.denseStackBackward(fill(m * 2, 5), x, [w0], [y0], dx, [dw], [db, db], m, 3, 1),
    ).toThrow(/differ in length/);
    expect(dx).toEqual(new Float32Array(m * 3).fill(5));
    expect(dw).toEqual(new Float32Array(6).fill(5));
  });

  it('the one-region cross stack kernels: 2 threads give the bits of 1, and bad lists are RangeErrors', () => {
    const m = 1024;
    const n = 128;
    const L = 3;
    const x0 = fill(m * n, 7);
    const ws = Array.from({ length: L }, (_, l) => fill(n * n, 8 + l, 0.2));
    const bs = Array.from({ length: L }, (_, l) => fill(n, 12 + l, 0.2));
    const dy = fill(m * n, 16);
    const run = (threads: number) => {
      addon.setThreads(threads);
      const ys = ws.map(() => new Float32Array(m * n));
      const zs = ws.map(() => new Float32Array(m * n));
      addon.crossStackForward(x0, ws, bs, ys, zs, m, n);
      const dx0 = new Float32Array(m * n);
      const dws = ws.map(() => new Float32Array(n * n));
      const dbs = ws.map(() => new Float32Array(n));
      addon.crossStackBackward(dy, x0, ws, zs, ys.slice(0, -1), dx0, dws, dbs, m, n);
      addon.setThreads(1);
      return [...ys, ...zs, dx0, ...dws, ...dbs];
    };
    const one = run(1);
    const two = run(2);
    one.forEach((a, i) => expect(two[i], `output ${i}`).toEqual(a));
    expect(one[L * 2].some((v) => v !== 0)).toBe(true);
    const dx0 = new Float32Array(m * n).fill(3);
    const dws = ws.map(() => new Float32Array(n * n));
    const dbs = ws.map(() => new Float32Array(n));
    // x_1 … x_{L-1}: L − 1 of them
    expect(() => addon.crossStackBackward(dy, x0, ws, ws, [x0, x0, x0], dx0, dws, dbs, m, n)).toThrow(
      RangeError,
    );
    expect(() =>
      addon.crossStackForward(
        x0,
        ws,
        bs.slice(1),
        ws.map(() => new Float32Array(m * n)),
        ws,
        m,
        n,
      ),
    ).toThrow(/differ in length/);
    expect(() => addon.crossStackBackward(dy, x0, ws, ws, [x0, x0], dx0, dws, dbs, m, n)).toThrow(
      /shapes do not fit/,
    );
    expect(dx0).toEqual(new Float32Array(m * n).fill(3));
  });

  it('the cross stack backward with the l2 term in its row region: the bits of it and then l2Grad, at 1 and 2 threads', () => {
    const m = 1024;
    const n = 128;
    const L = 3;
    const x0 = fill(m * n, 27);
    const ws = Array.from({ length: L }, (_, l) => fill(n * n, 28 + l, 0.2));
    const bs = Array.from({ length: L }, (_, l) => fill(n, 32 + l, 0.2));
    const dy = fill(m * n, 36);
    const ys = ws.map(() => new Float32Array(m * n));
    const zs = ws.map(() => new Float32Array(m * n));
    addon.crossStackForward(x0, ws, bs, ys, zs, m, n);
    const backward = (threads: number, fused: boolean, cols: number, factor: number) => {
      addon.setThreads(threads);
      const dx0 = new Float32Array(m * n);
      const dws = ws.map(() => new Float32Array(n * n));
      const dbs = ws.map(() => new Float32Array(n));
      const xs = ys.slice(0, -1);
      let sq: number | undefined;
      if (fused) sq = addon.crossStackBackward(dy, x0, ws, zs, xs, dx0, dws, dbs, m, n, cols, factor);
      else {
        expect(addon.crossStackBackward(dy, x0, ws, zs, xs, dx0, dws, dbs, m, n)).toBeUndefined();
        sq = addon.l2Grad(dx0, x0, m, n, cols, factor);
      }
      addon.setThreads(1);
      return { sq, outs: [dx0, ...dws, ...dbs] };
    };
    // the bench's embedding columns (all 128) and a part of the row, with a factor that moves dx0 visibly
    for (const [cols, factor] of [
      [128, 0.05],
      [40, 2e-9],
      [0, 0.05],
    ]) {
      const want = backward(1, false, cols, factor);
      expect(want.sq).toBeGreaterThanOrEqual(0);
      for (const t of [1, 2]) {
        const got = backward(t, true, cols, factor);
        expect(got.sq, `${t} threads, cols ${cols}: Σ x0²`).toBe(want.sq);
        got.outs.forEach((o, i) =>
          expect(o, `${t} threads, cols ${cols}: output ${i}`).toEqual(want.outs[i]),
        );
      }
    }
    const dx0 = new Float32Array(m * n).fill(3);
    const dws = ws.map(() => new Float32Array(n * n));
    const dbs = ws.map(() => new Float32Array(n));
    for (const cols of [-1, n + 1])
      expect(() =>
        addon.crossStackBackward(dy, x0, ws, zs, ys.slice(0, -1), dx0, dws, dbs, m, n, cols, 0.1),
      ).toThrow(/l2Cols must be in 0\.\.n/);
    // l2Cols without l2Factor: refused, not ignored
    const half = addon.crossStackBackward as unknown as (...args: unknown[]) => unknown;
    expect(() => half.call(addon, dy, x0, ws, zs, ys.slice(0, -1), dx0, dws, dbs, m, n, 8)).toThrow(
      TypeError,
    );
    expect(dx0).toEqual(new Float32Array(m * n).fill(3));
  });
});
