import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { close } from '../../helpers/close-arrays.js';
import { Adam } from '../../../ml/crm/adam.js';
import { disposeCrmBatch } from '../../../ml/crm/batch.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { CrmNet } from '../../../ml/crm/model.js';
import { SparseEmbeddingStepper } from '../../../ml/crm/train-step.js';
import { initTf } from '../../../ml/tf/backend.js';
import { crossLayer } from '../../../ml/tf/cross.js';
import { dense } from '../../../ml/tf/dense.js';
import { embeddingBag, embeddingBagReference } from '../../../ml/tf/kernels/embedding-bag.js';
import {
  BCE_WITH_LOGITS,
  CROSS_STACK,
  CROSS_STACK_GRAD,
  nativeKernelsActive,
  registerNativeKernels,
} from '../../../ml/tf/kernels/native-kernels.js';
import { crossStack } from '../../../ml/crm/cross-stack.js';
import { sigmoidCrossEntropy } from '../../../ml/crm/loss.js';
import { loadNative, nativeMode } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';
import { syntheticDataset } from '../crm/fixtures.js';
import { crossInputs, fill, rand, wholeBatchWeights } from '../../helpers/native-fixtures.js';

/**
 * The native kernels (native/corella_native.c on the wasm backend) against the stock tfjs cpu backend,
 * which shares no code with them: values and gradients within float32 tolerance. CI builds the addon
 * (npm ci's postinstall, with Debian's libopenblas-dev), so there its absence is a failure, not a skip.
 */
const status = loadNative();
const required = process.env.CI === 'true' || nativeMode() === 'on';

/** Runs `f` on a backend and returns plain arrays, disposing every tensor it made. */
async function on(backend: 'wasm' | 'cpu', f: () => tf.Tensor[]): Promise<Float32Array[]> {
  await initTf(backend, () => undefined);
  const out = tf.tidy(() => f().map((t) => t.dataSync() as Float32Array));
  await initTf('wasm', () => undefined);
  return out;
}

describe('native kernels (OpenBLAS on the wasm heap)', () => {
  it('the addon is built and active where it is required (CI, CORELLA_TF_NATIVE=on)', async () => {
    const init = await initTf('wasm', () => undefined);
    if (!required && !status.addon) {
      // Visible in the output; the remaining tests then check nothing native.
      console.warn(`native kernels not tested: ${status.reason}`);
      return;
    }
    expect(status.addon, status.reason).toBeDefined();
    expect(init.accelerator).toBe('openblas');
    expect(nativeKernelsActive()).toBe(true);
  });

  // At 2 pool threads the bench-sized cases (1024 rows) are split across the pool; the small ones stay on
  // the caller (below the row threshold), so both paths are checked against the cpu backend.
  describe.runIf(status.addon !== undefined).each([1, 2])(
    'equivalence with the stock cpu backend, %i pool thread(s)',
    (threads) => {
      beforeAll(async () => {
        await initTf('wasm', () => undefined);
        status.addon!.setThreads(threads);
      });
      afterAll(async () => {
        status.addon!.setThreads(1);
        await initTf('wasm', () => undefined);
      });

      it('matMul: every transpose combination, batched and broadcast batches', async () => {
        const cases: { a: number[]; b: number[]; ta: boolean; tb: boolean }[] = [
          { a: [37, 11], b: [11, 5], ta: false, tb: false },
          { a: [11, 37], b: [11, 5], ta: true, tb: false },
          { a: [37, 11], b: [5, 11], ta: false, tb: true },
          { a: [11, 37], b: [5, 11], ta: true, tb: true },
          { a: [3, 7, 4], b: [3, 4, 6], ta: false, tb: false },
          { a: [1, 7, 4], b: [3, 6, 4], ta: false, tb: true },
          { a: [2, 3, 4, 7], b: [1, 1, 4, 2], ta: true, tb: false },
          { a: [1, 9], b: [9, 1], ta: false, tb: false },
          { a: [1024, 128], b: [128, 128], ta: false, tb: false },
          { a: [128, 1024], b: [128, 64], ta: true, tb: false },
          { a: [1024, 128], b: [256, 128], ta: false, tb: true },
          { a: [2, 512, 128], b: [2, 128, 128], ta: false, tb: false },
        ];
        for (const [i, c] of cases.entries()) {
          const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
          const A = fill(size(c.a), 10 + i);
          const B = fill(size(c.b), 20 + i);
          const run = () => [tf.matMul(tf.tensor(A, c.a), tf.tensor(B, c.b), c.ta, c.tb)];
          const [want] = await on('cpu', run);
          const [got] = await on('wasm', run);
          close(got, want, `case ${i} ${JSON.stringify(c)}`);
        }
      });

      it('fused matMul: bias of width n or 1, linear and relu, and the prelu fallback', async () => {
        const x = fill(64 * 24, 1);
        const w = fill(24 * 16, 2);
        for (const [name, bias, activation] of [
          ['bias n, relu', fill(16, 3), 'relu'],
          ['bias n, linear', fill(16, 4), 'linear'],
          ['bias 1, relu', fill(1, 5), 'relu'],
          ['no bias, relu', undefined, 'relu'],
          ['prelu (stock fallback)', fill(16, 6), 'prelu'],
        ] as const) {
          const run = () => [
            tf.fused.matMul({
              a: tf.tensor2d(x, [64, 24]),
              b: tf.tensor2d(w, [24, 16]),
              bias: bias ? tf.tensor1d(bias) : undefined,
              activation,
              preluActivationWeights: activation === 'prelu' ? tf.fill([16], 0.1) : undefined,
            }),
          ];
          const [want] = await on('cpu', run);
          const [got] = await on('wasm', run);
          close(got, want, name);
        }
      });

      it.each([
        [50, 13, 9],
        [1024, 128, 256],
      ])(
        'dense [%i, %i]·[.., %i]: values and gradients (relu/linear, with and without bias)',
        async (M, K, N) => {
          const x = fill(M * K, 7);
          const w = fill(K * N, 8);
          const b = fill(N, 9);
          const up = fill(M * N, 10);
          for (const activation of ['relu', 'linear'] as const) {
            for (const withBias of [true, false]) {
              const run = () => {
                const xs = tf.tensor2d(x, [M, K]);
                const ws = tf.tensor2d(w, [K, N]);
                const bs = tf.tensor1d(b);
                const f = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
                  tf.sum(
                    tf.mul(dense(xx, ww, withBias ? bb : undefined, activation), tf.tensor2d(up, [M, N])),
                  );
                const wrt = withBias ? [xs, ws, bs] : [xs, ws];
                const grads = tf.grads((...a: tf.Tensor[]) => f(a[0], a[1], a[2] ?? bs))(wrt);
                return [dense(xs, ws, withBias ? bs : undefined, activation), ...grads];
              };
              const want = await on('cpu', run);
              const got = await on('wasm', run);
              want.forEach((wv, i) => close(got[i], wv, `${activation}/${withBias}: output ${i}`));
            }
          }
        },
      );

      it.each([
        [40, 12],
        [1024, 128],
      ])('cross layer [%i, %i]: values and gradients for x0, x, w and b', async (m, n) => {
        const { x0, x, w, b, dy: up } = crossInputs(m, n, 11);
        const run = () => {
          const t = [tf.tensor2d(x0, [m, n]), tf.tensor2d(x, [m, n]), tf.tensor2d(w, [n, n]), tf.tensor1d(b)];
          const f = (...a: tf.Tensor[]) =>
            tf.sum(
              tf.mul(
                crossLayer(a[0] as tf.Tensor2D, a[1] as tf.Tensor2D, a[2], a[3]),
                tf.tensor2d(up, [m, n]),
              ),
            );
          return [crossLayer(t[0] as tf.Tensor2D, t[1] as tf.Tensor2D, t[2], t[3]), ...tf.grads(f)(t)];
        };
        const want = await on('cpu', run);
        const got = await on('wasm', run);
        ['y', 'dx0', 'dx', 'dw', 'db'].forEach((name, i) => close(got[i], want[i], name));
      });

      it('two stacked cross layers sharing x0: gradients accumulate into x0 like the stock ops', async () => {
        const m = 16;
        const n = 8;
        const x0 = fill(m * n, 16);
        const w1 = fill(n * n, 17);
        const w2 = fill(n * n, 18);
        const run = () => {
          const t = [tf.tensor2d(x0, [m, n]), tf.tensor2d(w1, [n, n]), tf.tensor2d(w2, [n, n])];
          const b = tf.zeros([n]);
          const f = (...a: tf.Tensor[]) => {
            const x1 = crossLayer(a[0] as tf.Tensor2D, a[0] as tf.Tensor2D, a[1], b);
            return tf.sum(tf.square(crossLayer(a[0] as tf.Tensor2D, x1, a[2], b)));
          };
          return tf.grads(f)(t);
        };
        const want = await on('cpu', run);
        const got = await on('wasm', run);
        ['dx0', 'dw1', 'dw2'].forEach((name, i) => close(got[i], want[i], name));
      });

      it('Identity (clone) shares memory by reference count: the clone outlives its source', () => {
        const a = tf.tensor2d(fill(12, 25), [3, 4]);
        const want = a.dataSync().slice();
        const c = tf.clone(a);
        a.dispose();
        const more = tf.ones([64, 64]); // reuses freed heap memory if the clone's were wrongly released
        expect(c.dataSync()).toEqual(want);
        tf.dispose([c, more]);
      });

      it.each([
        [31, 5, 24],
        [3000, 16, 4096],
      ])(
        'embedding bag (V %i, dim %i, %i bags): values and table gradient, bags of 1 and of 4 with zero weights',
        async (V, D, bags) => {
          for (const bag of [1, 4]) {
            const N = bags * bag;
            const r = rand(bag);
            const rows = Int32Array.from({ length: N }, () => Math.floor((r() + 0.5) * V));
            const weights = Float32Array.from({ length: N }, () => (r() < -0.2 ? 0 : r() + 0.5));
            const table = fill(V * D, 19);
            const up = fill((N / bag) * D, 20);
            const run = (impl: typeof embeddingBag) => () => {
              const t = tf.tensor2d(table, [V, D]);
              const rw = tf.tensor1d(rows, 'int32');
              const ww = tf.tensor1d(weights);
              const g = tf.grad((tt: tf.Tensor) =>
                tf.sum(tf.mul(impl(tt, rw, ww, bag), tf.tensor2d(up, [N / bag, D]))),
              )(t);
              return [impl(t, rw, ww, bag), g];
            };
            const reference = (t: tf.Tensor, rw: tf.Tensor1D, ww: tf.Tensor1D, L: number) =>
              embeddingBagReference(t as tf.Tensor2D, rw, ww, L);
            const want = await on('cpu', run(reference));
            const got = await on('wasm', run(embeddingBag));
            close(got[0], want[0], `bag ${bag}: values`);
            close(got[1], want[1], `bag ${bag}: table gradient`);
          }
        },
      );

      it('three sparse training steps of a DCNv2 (history, dense field, l2) match the cpu backend', async () => {
        const ds = syntheticDataset({ rows: 400, dense: 1, maxLen: 5 });
        const config = defaultCrmConfig('dcnv2', {
          embeddingDim: 4,
          crossLayers: 2,
          mlp: [8, 4],
          l2Embedding: 0.01,
        });
        const train = async (backend: 'wasm' | 'cpu') => {
          await initTf(backend, () => undefined);
          const model = new CrmNet(config, ds.featureMap);
          const stepper = new SparseEmbeddingStepper(model, new Adam({ lr: 0.01 }));
          const losses: number[] = [];
          for (let s = 0; s < 3; s++) {
            const batch = model.makeBatch(
              ds.splits.train,
              Array.from({ length: 64 }, (_, i) => (s * 64 + i * 5) % ds.splits.train.size),
            );
            losses.push(stepper.step(batch));
            disposeCrmBatch(batch);
          }
          const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
          model.dispose();
          await initTf('wasm', () => undefined);
          return { losses, weights };
        };
        const want = await train('cpu');
        const got = await train('wasm');
        close(got.losses, want.losses, 'losses', 1e-5);
        want.weights.forEach((w, i) => close(got.weights[i], w, `variable ${i}`, 1e-5));
      });
    },
  );

  describe.runIf(status.addon !== undefined)('the intra-op pool: 2 threads give the bits of 1', () => {
    const addon = status.addon as NativeAddon;
    afterAll(() => addon.setThreads(1));

    /** Runs `f` at 1 and at 2 pool threads on copies of the same inputs; returns both outputs. */
    function atOneAndTwo<T>(f: () => T): [T, T] {
      addon.setThreads(1);
      const one = f();
      addon.setThreads(2);
      const two = f();
      addon.setThreads(1);
      return [one, two];
    }

    it('setThreads sizes the pool (1..64) and leaves OpenBLAS at its own setting', () => {
      addon.setThreads(2);
      expect(addon.threads()).toBe(2);
      expect(addon.blasThreads()).toBe(1);
      expect(() => addon.setThreads(0)).toThrow(/expected 1\.\.64/);
      expect(() => addon.setThreads(65)).toThrow(/expected 1\.\.64/);
      expect(addon.threads()).toBe(2);
      addon.setThreads(1);
      expect(addon.threads()).toBe(1);
    });

    it('the kernels of a 1024-row step hand chunks to a worker thread at 2 threads, and none at 1', () => {
      const m = 1024;
      const n = 128;
      const a = fill(m * n, 40);
      const w = fill(n * n, 41);
      const out = new Float32Array(m * n);
      addon.setThreads(1);
      const before = addon.poolStats();
      addon.matmul(a, w, out, 1, m, n, n, false, false, 0, 0, null, 0);
      expect(addon.poolStats()).toMatchObject({ regions: before.regions, workerChunks: before.workerChunks });
      expect(addon.poolStats().kernelMs).toBeGreaterThan(before.kernelMs);
      addon.setThreads(2);
      // A worker that is not scheduled in time leaves its chunks to the caller; over many regions it is not
      // starved on every one unless the pool never wakes it.
      const deadline = Date.now() + 20_000;
      while (addon.poolStats().workerChunks === before.workerChunks && Date.now() < deadline)
        addon.matmul(a, w, out, 1, m, n, n, false, false, 0, 0, null, 0);
      const after = addon.poolStats();
      addon.setThreads(1);
      expect(after.regions).toBeGreaterThan(before.regions);
      expect(after.workerChunks).toBeGreaterThan(before.workerChunks);
    });

    it('cross and dense kernels: every output bit-identical at 1 and 2 threads', () => {
      const m = 1024;
      const n = 128;
      const x0 = fill(m * n, 42);
      const x = fill(m * n, 43);
      const w = fill(n * n, 44);
      const b = fill(n, 45);
      const dy = fill(m * n, 46);
      const [one, two] = atOneAndTwo(() => {
        const y = new Float32Array(m * n);
        const z = new Float32Array(m * n);
        addon.crossForward(x0, x, w, b, y, z, m, n);
        const g = [m * n, m * n, n * n, n].map((k) => new Float32Array(k));
        addon.crossBackward(dy, x0, x, w, z, g[0], g[1], g[2], g[3], m, n);
        // dense 128 → 256 with relu and bias, then 256 → 1 linear without
        const wd = fill(n * 256, 47);
        const yd = new Float32Array(m * 256);
        addon.matmul(x, wd, yd, 1, m, 256, n, false, false, 0, 0, fill(256, 48), 1);
        const dd = [m * n, n * 256, 256].map((k) => new Float32Array(k));
        addon.denseBackward(fill(m * 256, 49), x, wd, yd, dd[0], dd[1], dd[2], m, n, 256, true);
        const dl = [m * 256, 256].map((k) => new Float32Array(k));
        addon.denseBackward(
          fill(m, 50),
          yd,
          fill(256, 51),
          fill(m, 52),
          dl[0],
          dl[1],
          null,
          m,
          256,
          1,
          false,
        );
        return [y, z, ...g, yd, ...dd, ...dl];
      });
      one.forEach((o, i) => expect(two[i], `output ${i}`).toEqual(o));
    });

    it('embedding bag, its gradient, scatterAdd, adam, adamRows and l2Grad: bit-identical at 1 and 2 threads', () => {
      const V = 13_333;
      const D = 16;
      // Large enough that every one of these kernels splits at 2 threads (the scatters and l2Grad only
      // from 512k floats of work): 4096 bags of 8, 128 wide.
      const B = 4096;
      const L = 8;
      const r = rand(53);
      const rows = Int32Array.from({ length: B * L }, () => Math.floor((r() + 0.5) * V));
      const weights = Float32Array.from({ length: B * L }, () => (r() < -0.3 ? 0 : r() + 0.5));
      const table = fill(V * D, 54);
      const width = 8 * D;
      const dx0 = fill(B * width, 55);
      const x0 = fill(B * width, 56);
      const touched = Int32Array.from(new Set(rows));
      let regions = 0;
      const [one, two] = atOneAndTwo(() => {
        const before = addon.poolStats().regions;
        const bagOut = new Float32Array(B * D);
        addon.embeddingBag(table, rows, weights, bagOut, D, L);
        const bagGrad = new Float32Array(V * D);
        addon.embeddingBagGrad(fill(B * D, 57), rows, weights, bagGrad, D, L);
        const g = new Float32Array(V * D);
        addon.scatterAdd(g, dx0, rows, null, B, L, 0, D, width, D, 0.5);
        addon.scatterAdd(g, dx0, rows, weights, B, L, 4 * D, 0, width, D, 2);
        const [w, m, v] = [fill(115_000, 58), fill(115_000, 59), fill(115_000, 60).map((q) => q * q)];
        addon.adam(w, fill(115_000, 61), m, v, 0.001, 0.9, 0.999, 1e-7);
        const [tw, tm, tv] = [table.slice(), new Float32Array(V * D), new Float32Array(V * D)];
        addon.adamRows(tw, g, tm, tv, touched, touched.length, D, 0.001, 0.9, 0.999, 1e-7);
        const l2 = dx0.slice();
        const sq = addon.l2Grad(l2, x0, B, width, 8 * D, 0.01);
        regions = addon.poolStats().regions - before;
        return { arrays: [bagOut, bagGrad, g, w, m, v, tw, tm, tv, l2], sq };
      });
      // The 2-thread run (the last) handed each of its 7 kernel calls to the pool.
      expect(regions).toBeGreaterThanOrEqual(7);
      one.arrays.forEach((o, i) => expect(two.arrays[i], `output ${i}`).toEqual(o));
      expect(two.sq).toBe(one.sq);
    }, 240_000); // 26 s alone at load 12; several test files at once under load took past 60 s

    it('adamRows rejects a row listed twice (chunks of the list would race on it), changing nothing', () => {
      const w = fill(40, 62);
      const before = w.slice();
      expect(() =>
        addon.adamRows(
          w,
          fill(40, 63),
          new Float32Array(40),
          new Float32Array(40),
          Int32Array.from([1, 3, 1]),
          3,
          4,
          0.1,
          0.9,
          0.999,
          1e-7,
        ),
      ).toThrow(/listed twice/);
      expect(w).toEqual(before);
    });

    it('ten bench-shaped DCNv2 training steps (batch 1024): losses and every weight bit-identical at 1 and 2 threads', async () => {
      await initTf('wasm', () => undefined);
      const ds = syntheticDataset({ users: 3000, items: 2000, rows: 4096, dense: 1, maxLen: 5 });
      const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
      const train = (threads: number) => {
        addon.setThreads(threads);
        const model = new CrmNet(config, ds.featureMap);
        const stepper = new SparseEmbeddingStepper(model, new Adam({ lr: 0.001 }));
        const losses: number[] = [];
        for (let s = 0; s < 10; s++) {
          const rows = Array.from({ length: 1024 }, (_, i) => (s * 1024 + i * 7) % ds.splits.train.size);
          const batch = model.makeBatch(ds.splits.train, rows);
          losses.push(stepper.step(batch));
          disposeCrmBatch(batch);
        }
        const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
        model.dispose();
        addon.setThreads(1);
        return { losses, weights };
      };
      const one = train(1);
      const two = train(2);
      expect(two.losses).toEqual(one.losses);
      one.weights.forEach((w, i) => expect(two.weights[i], `variable ${i}`).toEqual(w));
      // The steps did train: a run that changed nothing would agree trivially.
      expect(one.losses[9]).not.toBe(one.losses[0]);
    });
  });

  describe.runIf(status.addon !== undefined)(
    'the fused cross stack (x0 gradient summed in the kernels)',
    () => {
      const addon = status.addon as NativeAddon;
      afterAll(async () => {
        addon.setThreads(1);
        await initTf('wasm', () => undefined);
      });

      /** Runs f with the stack kernels unregistered, so crossStack falls back to one op per layer. */
      function layerByLayer<T>(f: () => T): T {
        tf.unregisterKernel(CROSS_STACK, 'wasm');
        tf.unregisterKernel(CROSS_STACK_GRAD, 'wasm');
        try {
          return f();
        } finally {
          registerNativeKernels(addon);
        }
      }

      it.each([1, 2, 3])(
        'crossStack of %i layer(s): bit-identical to the layers one by one, and close to the cpu backend',
        async (layers) => {
          await initTf('wasm', () => undefined);
          const m = 1024;
          const n = 24;
          const x0 = fill(m * n, 40);
          const ws = Array.from({ length: layers }, (_, l) => fill(n * n, 41 + l));
          const bs = Array.from({ length: layers }, (_, l) => fill(n, 51 + l));
          const up = fill(m * n, 60);
          const run = () => {
            const t = [
              tf.tensor2d(x0, [m, n]),
              ...ws.map((w) => tf.tensor2d(w, [n, n])),
              ...bs.map((b) => tf.tensor1d(b)),
            ];
            const stack = (a: tf.Tensor[]) =>
              crossStack(
                a[0] as tf.Tensor2D,
                ws.map((_, l) => ({ w: a[1 + l], b: a[1 + layers + l] })),
              );
            const f = (...a: tf.Tensor[]) => tf.sum(tf.mul(stack(a), tf.tensor2d(up, [m, n])));
            return [stack(t), ...tf.grads(f)(t)];
          };
          const names = ['y', 'dx0', ...ws.map((_, l) => `dw${l}`), ...bs.map((_, l) => `db${l}`)];
          for (const threads of [1, 2]) {
            addon.setThreads(threads);
            const fused = wholeBatchWeights(addon, () =>
              tf.tidy(() => run().map((t) => t.dataSync() as Float32Array)),
            );
            const split = layerByLayer(() => tf.tidy(() => run().map((t) => t.dataSync() as Float32Array)));
            names.forEach((name, i) => expect(fused[i], `${threads} thread(s): ${name}`).toEqual(split[i]));
          }
          addon.setThreads(1);
          const got = tf.tidy(() => run().map((t) => t.dataSync() as Float32Array));
          const want = await on('cpu', run);
          names.forEach((name, i) => close(got[i], want[i], `against cpu: ${name}`));
        },
      );

      it('crossBackward flags: accumulate adds dy ⊙ z onto dx0, fold adds dx too; bad flags change nothing', () => {
        const m = 8;
        const n = 4;
        const [dy, x0, x, w, z] = [1, 2, 3, 4, 5].map((s) =>
          fill(m * n, 70 + s).subarray(0, s === 4 ? n * n : m * n),
        );
        const out = () => ({
          dx: new Float32Array(m * n),
          dw: new Float32Array(n * n),
          db: new Float32Array(n),
        });
        const plain = out();
        const dx0Plain = new Float32Array(m * n);
        addon.crossBackward(dy, x0, x, w, z, dx0Plain, plain.dx, plain.dw, plain.db, m, n);
        const start = fill(m * n, 80);
        const acc = out();
        const dx0Acc = start.slice();
        addon.crossBackward(dy, x0, x, w, z, dx0Acc, acc.dx, acc.dw, acc.db, m, n, 1);
        expect(dx0Acc).toEqual(Float32Array.from(start, (v, i) => v + dx0Plain[i]));
        expect(acc.dx).toEqual(plain.dx);
        const fold = out();
        const dx0Fold = start.slice();
        addon.crossBackward(dy, x0, x, w, z, dx0Fold, fold.dx, fold.dw, fold.db, m, n, 3);
        // two float32 roundings, as the tape's two Adds did
        expect(dx0Fold).toEqual(
          Float32Array.from(start, (v, i) => Math.fround(Math.fround(v + dx0Plain[i]) + plain.dx[i])),
        );
        expect(fold.dw).toEqual(plain.dw);
        const before = start.slice();
        expect(() =>
          addon.crossBackward(dy, x0, x, w, z, before, fold.dx, fold.dw, fold.db, m, n, 4),
        ).toThrow(/flags must be 0..3/);
        expect(() => addon.crossBackward(dy, x0, x, w, z, before, before, fold.dw, fold.db, m, n, 2)).toThrow(
          /must differ/,
        );
        expect(before).toEqual(start);
      });

      it('ten bench-shaped DCNv2 steps (batch 1024): every loss and weight bit-identical to the layer-by-layer cross step, close to the unfused step', async () => {
        await initTf('wasm', () => undefined);
        const ds = syntheticDataset({ users: 3000, items: 2000, rows: 4096, dense: 1, maxLen: 5 });
        const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
        const train = () => {
          const model = new CrmNet(config, ds.featureMap);
          const stepper = new SparseEmbeddingStepper(model, new Adam({ lr: 0.001 }));
          const losses: number[] = [];
          for (let s = 0; s < 10; s++) {
            const rows = Array.from({ length: 1024 }, (_, i) => (s * 1024 + i * 7) % ds.splits.train.size);
            const batch = model.makeBatch(ds.splits.train, rows);
            losses.push(stepper.step(batch));
            disposeCrmBatch(batch);
          }
          const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
          model.dispose();
          return { losses, weights };
        };
        addon.setThreads(2);
        // the dense stack stays fused in both: its weights too must come from their own region
        const fused = wholeBatchWeights(addon, train);
        const split = wholeBatchWeights(addon, () => layerByLayer(train));
        // The step before any fusion: the loss from stock ops too. The native loss sums in double and
        // rounds σ(z) − y once, so its bits differ (~1e-7 relative in the loss); ten Adam steps stay
        // within 1e-5 of every weight.
        tf.unregisterKernel(BCE_WITH_LOGITS, 'wasm');
        let unfused: ReturnType<typeof train>;
        try {
          unfused = wholeBatchWeights(addon, () => layerByLayer(train));
        } finally {
          registerNativeKernels(addon);
        }
        addon.setThreads(1);
        expect(fused.losses).toEqual(split.losses);
        split.weights.forEach((w, i) => expect(fused.weights[i], `variable ${i}`).toEqual(w));
        expect(fused.losses[9]).not.toBe(fused.losses[0]);
        close(fused.losses, unfused.losses, 'losses against the unfused step', 1e-6);
        unfused.weights.forEach((w, i) =>
          close(fused.weights[i], w, `variable ${i} against the unfused step`, 1e-5),
        );
      });
    },
  );

  describe.runIf(status.addon !== undefined)('the native BCE-with-logits loss', () => {
    const addon = status.addon as NativeAddon;
    afterAll(async () => {
      addon.setThreads(1);
      await initTf('wasm', () => undefined);
    });

    /** Logits over the whole range the stable form must survive, labels 0/1 and soft. */
    function inputs(n: number, seed: number): [Float32Array, Float32Array] {
      const r = rand(seed);
      const z = Float32Array.from({ length: n }, (_, i) => (i % 97 === 0 ? (i % 2 ? 60 : -60) : 16 * r()));
      const y = Float32Array.from({ length: n }, (_, i) => (i % 5 === 0 ? r() + 0.5 : r() < 0 ? 0 : 1));
      return [z, y];
    }

    it.each([40, 1024])('%i samples: loss and gradient match the stock ops on cpu', async (n) => {
      const [z, y] = inputs(n, 90);
      // z is scaled inside the loss so the gradient also passes the upstream factor through.
      const run = () => {
        const zv = tf.variable(tf.tensor1d(z), true, `bce-z/${n}/${tf.getBackend()}`);
        const yt = tf.tensor1d(y);
        const { value, grads } = tf.variableGrads(
          () => sigmoidCrossEntropy(tf.mul(zv, 2) as tf.Tensor1D, yt),
          [zv],
        );
        const out = [value.dataSync().slice(), grads[zv.name].dataSync().slice()] as Float32Array[];
        tf.dispose([zv, yt, value, grads[zv.name]]);
        return out;
      };
      await initTf('cpu', () => undefined);
      const want = run();
      await initTf('wasm', () => undefined);
      expect(tf.getKernel(BCE_WITH_LOGITS, 'wasm')).toBeDefined();
      const got = run();
      close(got[0], want[0], 'loss', 1e-6);
      close(got[1], want[1], 'dloss/dz', 1e-6);
      expect(Number.isFinite(got[0][0])).toBe(true);
    });

    it('the kernel: Σ loss and g against a float64 reference, bit-identical at 1 and 2 threads, and rejects mismatched lengths', () => {
      const n = 600_000; // above the size at which the pass splits
      const [z, y] = inputs(n, 91);
      let want = 0;
      for (let i = 0; i < n; i++)
        want += Math.max(z[i], 0) - z[i] * y[i] + Math.log1p(Math.exp(-Math.abs(z[i])));
      const g1 = new Float32Array(n);
      const g2 = new Float32Array(n);
      addon.setThreads(1);
      const s1 = addon.bceWithLogits(z, y, g1, 1 / n);
      addon.setThreads(2);
      const s2 = addon.bceWithLogits(z, y, g2, 1 / n);
      addon.setThreads(1);
      expect(s2).toBe(s1);
      expect(g2).toEqual(g1);
      expect(Math.abs(s1 - want) / want).toBeLessThan(1e-12);
      for (const i of [0, 1, 97, 194, 12345]) {
        const sig = 1 / (1 + Math.exp(-z[i]));
        expect(g1[i]).toBeCloseTo((sig - y[i]) / n, 12);
      }
      const g = new Float32Array(3).fill(7);
      expect(() => addon.bceWithLogits(z.subarray(0, 3), y.subarray(0, 2), g, 1)).toThrow(/differ in length/);
      expect(g).toEqual(new Float32Array(3).fill(7));
    });
  });

  describe.runIf(status.addon !== undefined)('host-side loops equal their JS versions', () => {
    const addon = status.addon as NativeAddon;

    it('adam and adamRows are bit-identical to the JS Adam arithmetic', () => {
      const n = 1000;
      const g = fill(n, 21);
      const w = fill(n, 22);
      const m = fill(n, 23).map((x) => x * 0.1);
      const v = fill(n, 24).map((x) => x * x * 0.01);
      const [lr, b1, b2, eps] = [0.0123, 0.9, 0.999, 1e-7];
      const jw = w.slice();
      const jm = m.slice();
      const jv = v.slice();
      for (let i = 0; i < n; i++) {
        const mi = (jm[i] = b1 * jm[i] + (1 - b1) * g[i]);
        const vi = (jv[i] = b2 * jv[i] + (1 - b2) * g[i] * g[i]);
        jw[i] -= (lr * mi) / (Math.sqrt(vi) + eps);
      }
      const nw = w.slice();
      const nm = m.slice();
      const nv = v.slice();
      addon.adam(nw, g, nm, nv, lr, b1, b2, eps);
      expect(nw).toEqual(jw);
      expect(nm).toEqual(jm);
      expect(nv).toEqual(jv);

      // Rows 3 and 7 of a [10, 100] table: exactly the same update there, nothing elsewhere.
      const rw = w.slice();
      const rm = m.slice();
      const rv = v.slice();
      addon.adamRows(rw, g, rm, rv, Int32Array.from([7, 3]), 2, 100, lr, b1, b2, eps);
      for (let i = 0; i < n; i++) {
        const row = Math.floor(i / 100);
        const touched = row === 3 || row === 7;
        expect(rw[i]).toBe(touched ? jw[i] : w[i]);
        expect(rm[i]).toBe(touched ? jm[i] : m[i]);
      }
    });

    it('scatterAdd adds weighted slices onto rows, strided for fields and pooled for sequences', () => {
      const B = 3;
      const D = 2;
      const width = 3 * D;
      const dx0 = Float32Array.from({ length: B * width }, (_, i) => i + 1);
      // fields 0 and 1 (columns 0..3) by row id
      const g = new Float32Array(10 * D);
      addon.scatterAdd(g, dx0, Int32Array.from([4, 5, 4, 6, 0, 5]), null, B, 2, 0, D, width, D, 0.5);
      const want = new Float32Array(10 * D);
      const add = (row: number, src: number, f: number) => {
        for (let d = 0; d < D; d++) want[row * D + d] += f * dx0[src + d];
      };
      [4, 5, 4, 6, 0, 5].forEach((row, k) => add(row, Math.floor(k / 2) * width + (k % 2) * D, 0.5));
      expect(g).toEqual(want);
      // a pooled sequence in column 2: every position adds the same slice × its weight
      const seqRows = Int32Array.from([1, 2, 9, 9, 1, 3]);
      const seqW = Float32Array.from([0.5, 0.5, 0, 1, 0.25, 0.75]);
      addon.scatterAdd(g, dx0, seqRows, seqW, B, 2, 2 * D, 0, width, D, 2);
      seqRows.forEach((row, k) => {
        if (seqW[k] !== 0) add(row, Math.floor(k / 2) * width + 2 * D, 2 * seqW[k]);
      });
      expect(g).toEqual(want);
    });

    it('markRows appends each new row once (skipping zero weights); l2Grad adds factor·x0 and sums squares', () => {
      const mark = new Uint8Array(10);
      const touched = new Int32Array(10);
      let count = addon.markRows(Int32Array.from([3, 5, 3, 0]), null, mark, touched, 0);
      count = addon.markRows(Int32Array.from([5, 9, 8]), Float32Array.from([1, 0, 2]), mark, touched, count);
      expect(Array.from(touched.subarray(0, count))).toEqual([3, 5, 0, 8]);
      expect(Array.from(mark)).toEqual([1, 0, 0, 1, 0, 1, 0, 0, 1, 0]);

      const x0 = Float32Array.from([1, 2, 3, 4, 5, 6]);
      const dx0 = Float32Array.from([1, 1, 1, 1, 1, 1]);
      // two rows of width 3, the first 2 columns regularised
      expect(addon.l2Grad(dx0, x0, 2, 3, 2, 0.5)).toBe(1 + 4 + 16 + 25);
      expect(Array.from(dx0)).toEqual([1.5, 2, 1, 3, 3.5, 1]);
    });

    it('rejects buffers too small for the shapes and row ids outside the table', () => {
      const a = new Float32Array(6);
      expect(() => addon.matmul(a, a, new Float32Array(3), 1, 2, 2, 3, false, false, 0, 0, null, 0)).toThrow(
        /shapes do not fit/,
      );
      expect(() =>
        addon.embeddingBag(
          new Float32Array(8),
          Int32Array.from([0, 4]),
          new Float32Array(2),
          new Float32Array(4),
          2,
          1,
        ),
      ).toThrow(/outside the table/);
      expect(() =>
        addon.scatterAdd(
          new Float32Array(4),
          new Float32Array(2),
          Int32Array.from([-1]),
          null,
          1,
          1,
          0,
          0,
          2,
          2,
          1,
        ),
      ).toThrow(/outside the table/);
      expect(() => addon.matmul(a, a, a, 1, 1, 1, 1, false, false, 0, 0, null, 0 as 0 | 1)).not.toThrow();
    });
  });
});
