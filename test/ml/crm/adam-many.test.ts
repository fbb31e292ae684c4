import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adam } from '../../../ml/crm/adam.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { CrmNet } from '../../../ml/crm/model.js';
import { LocalStepper } from '../../../ml/crm/parallel.js';
import { uniformCategoricalSplit } from '../../../ml/data/uniform-categorical.js';
import { initTf } from '../../../ml/tf/backend.js';
import { loadNative, nativeMode } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';

/**
 * adamMany (native/corella_native.c): a step's dense Adam updates in one pool region, its arrays' elements
 * one index space cut into chunks that cross array boundaries. Against one adam call per array: the same
 * bits for weights and both moments at 1, 2 and 3 threads, on the bench shape's 12 arrays and on odd sizes
 * whose chunk boundaries fall inside arrays; typed errors naming the argument that change nothing; and
 * whole training steps with and without it (Adam.updateDenseAll falls back to updateDense when it is
 * hidden), every loss and weight the same bits.
 */
const addon = loadNative().addon;
// Where the addon is required (CI builds it), its absence fails these tests instead of skipping them.
const run = addon?.adamMany !== undefined || process.env.CI === 'true' || nativeMode() === 'on';

function fill(n: number, seed: number, scale = 1): Float32Array {
  let s = seed;
  return Float32Array.from(
    { length: n },
    () => scale * ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5),
  );
}

const ARGS = [0.0013, 0.9, 0.999, 1e-7] as const;

describe.runIf(run)('adamMany', () => {
  const a = addon as NativeAddon & { adamMany: NonNullable<NativeAddon['adamMany']> };
  const threads0 = a.threads();
  afterAll(() => a.setThreads(threads0));

  /** Arrays of the given sizes: w, g, m (mixed sign) and v (positive, from an earlier step). */
  function arrays(sizes: number[], seed: number) {
    return sizes.map((n, i) => ({
      w: fill(n, seed + 4 * i),
      g: fill(n, seed + 4 * i + 1, 0.01),
      m: fill(n, seed + 4 * i + 2, 0.001),
      v: fill(n, seed + 4 * i + 3, 1e-5).map(Math.abs),
    }));
  }
  const copy = (xs: ReturnType<typeof arrays>) =>
    xs.map((x) => ({ w: x.w.slice(), g: x.g, m: x.m.slice(), v: x.v.slice() }));

  it.each([
    [
      'the bench shape (cross 3×[128², 128], mlp 128·256, 256, 256·128, 128, 128, 1)',
      [16384, 128, 16384, 128, 16384, 128, 32768, 256, 32768, 128, 128, 1],
    ],
    ['odd sizes, chunk boundaries inside arrays', [1, 9000, 7, 40001, 3, 12345, 16]],
    ['one array', [70000]],
  ])('%s: the bits of one adam call per array, at 1, 2 and 3 threads', (_, sizes) => {
    const base = arrays(sizes, 11);
    a.setThreads(1);
    const want = copy(base);
    for (const x of want) a.adam(x.w, x.g, x.m, x.v, ...ARGS);
    expect(want[0].w).not.toEqual(base[0].w);
    const regions0 = a.poolStats().regions;
    for (const t of [1, 2, 3]) {
      a.setThreads(t);
      const got = copy(base);
      a.adamMany(
        got.map((x) => x.w),
        got.map((x) => x.g),
        got.map((x) => x.m),
        got.map((x) => x.v),
        ...ARGS,
      );
      got.forEach((x, i) => {
        expect(x.w, `${t} threads: w[${i}]`).toEqual(want[i].w);
        expect(x.m, `${t} threads: m[${i}]`).toEqual(want[i].m);
        expect(x.v, `${t} threads: v[${i}]`).toEqual(want[i].v);
      });
    }
    // At 2 and 3 threads the total (≥ 70k) was split: one region a call
    expect(a.poolStats().regions - regions0).toBe(2);
  });

  it('rejects bad arguments with a type or range error naming them, changing nothing', () => {
    a.setThreads(2);
    const xs = arrays([100, 50], 3);
    const before = copy(xs);
    const ws = xs.map((x) => x.w);
    const gs = xs.map((x) => x.g);
    const ms = xs.map((x) => x.m);
    const vs = xs.map((x) => x.v);
    const cases: [unknown[], RegExp, ErrorConstructor][] = [
      [[ws, gs, ms], /expected 8 arguments/, RangeError],
      [['w', gs, ms, vs, ...ARGS], /ws must be an array of 1\.\.16 Float32Arrays/, TypeError],
      [[[], gs, ms, vs, ...ARGS], /ws must be an array of 1\.\.16 Float32Arrays/, TypeError],
      [
        [Array.from({ length: 17 }, () => ws[0]), gs, ms, vs, ...ARGS],
        /ws must be an array of 1\.\.16/,
        TypeError,
      ],
      [[ws, [gs[0]], ms, vs, ...ARGS], /ws, gs, ms and vs differ in length/, RangeError],
      [[ws, gs, [ms[0], new Float64Array(50)], vs, ...ARGS], /ms\[1\]/, TypeError],
      [
        [ws, gs, ms, [vs[0], new Float32Array(49)], ...ARGS],
        /gs\[1\], ms\[1\] or vs\[1\] differs in length from ws\[1\]/,
        RangeError,
      ],
      [[ws, gs, ms, vs, 'lr', 0.9, 0.999, 1e-7], /./, TypeError],
    ];
    for (const [args, message, type] of cases) {
      const call = () => (a.adamMany as (...xs: unknown[]) => void)(...args);
      expect(call).toThrow(type);
      expect(call).toThrow(message);
    }
    xs.forEach((x, i) => {
      expect(x.w).toEqual(before[i].w);
      expect(x.m).toEqual(before[i].m);
      expect(x.v).toEqual(before[i].v);
    });
  });
});

describe.runIf(run)('training steps with adamMany', () => {
  const a = addon as NativeAddon;
  const kernel = a.adamMany;
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });
  afterAll(() => {
    a.adamMany = kernel;
    a.setThreads(1);
  });

  async function train(steps: number) {
    const { featureMap, split } = uniformCategoricalSplit(
      'adam-many',
      [6040, 3706, 2, 7, 21, 3439, 18, 100],
      4096,
    );
    const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
    const model = new CrmNet(config, featureMap);
    const stepper = new LocalStepper(model, new Adam({ lr: 0.002 }), split);
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) {
      const rows = Int32Array.from({ length: 1024 }, (_, i) => (s * 1024 + i * 7) % split.size);
      losses.push(await stepper.step(rows, s));
    }
    const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
    await stepper.close();
    model.dispose();
    return { losses, weights };
  }

  it('the bench shape: every loss and weight the bits of one adam call per variable, at 1 and 2 threads', async () => {
    a.adamMany = undefined;
    a.setThreads(1);
    const without = await train(5);
    expect(without.losses[4]).not.toBe(without.losses[0]);
    a.adamMany = kernel;
    for (const t of [1, 2]) {
      a.setThreads(t);
      const run = await train(5);
      expect(run.losses, `${t} thread(s)`).toEqual(without.losses);
      without.weights.forEach((w, i) => expect(run.weights[i], `${t} thread(s): variable ${i}`).toEqual(w));
    }
  }, 120_000);
});
