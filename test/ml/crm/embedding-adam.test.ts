import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adam } from '../../../ml/crm/adam.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { CrmNet } from '../../../ml/crm/model.js';
import { LocalStepper } from '../../../ml/crm/parallel.js';
import type { CrmConfig } from '../../../ml/crm/types.js';
import type { EncodedSplit, FeatureMap } from '../../../ml/data/types.js';
import { uniformCategoricalSplit } from '../../../ml/data/uniform-categorical.js';
import { initTf } from '../../../ml/tf/backend.js';
import { loadNative } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';
import { syntheticDataset } from './fixtures.js';

/**
 * The embedding table's update in one native call (embeddingAdam: touched rows, their scattered gradients
 * and their lazy Adam step, split over the pool) against the three kernels it replaces, markRows +
 * scatterAdd + adamRows on a [V, dim] gradient buffer: the same bits for the weights, both moments and
 * the touched list, at 1, 2 and 3 pool threads; typed range errors that change nothing; and whole
 * training steps with and without it. Also l2Grad's row sums against an exact float64 reference.
 */
const addon = loadNative().addon;

function rand(seed: number): () => number {
  let s = seed;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

function fill(n: number, seed: number, scale = 1): Float32Array {
  const r = rand(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * scale);
}

interface Case {
  V: number;
  D: number;
  B: number;
  cat: Int32Array;
  seqRows: Int32Array[];
  seqWeights: Float32Array[];
  width: number;
  dx0: Float32Array;
  w: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** A bench-sized batch: 8 categorical fields and two pooled sequences (zero-weight padding, repeats). */
function benchCase(seed: number, B = 1024, V = 13_333): Case {
  const D = 16;
  const nCat = 8;
  const r = rand(seed);
  // Skewed ids, so many rows repeat within the batch (a popular item gets dozens of entries).
  const id = () => Math.floor(r() ** 3 * V);
  const cat = Int32Array.from({ length: B * nCat }, id);
  const lens = [5, 3];
  const seqRows = lens.map((L) => Int32Array.from({ length: B * L }, id));
  const seqWeights = lens.map((L) =>
    Float32Array.from({ length: B * L }, () => (r() < 0.3 ? 0 : Math.fround(1 / (1 + Math.floor(r() * L))))),
  );
  const width = (nCat + lens.length) * D + 3; // 3 dense values past the embeddings, never read
  return {
    V,
    D,
    B,
    cat,
    seqRows,
    seqWeights,
    width,
    dx0: fill(B * width, seed + 1, 1e-3),
    w: fill(V * D, seed + 2, 0.1),
    m: fill(V * D, seed + 3, 1e-4),
    v: fill(V * D, seed + 4, 1e-6).map((x) => x * x),
  };
}

/** Bit equality of two float arrays (toEqual walks 200k elements slowly); names the first difference. */
function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  expect(got.length, `${what}: length`).toBe(want.length);
  const i = g.findIndex((x, k) => x !== w[k]);
  expect(i < 0 ? 'same bits' : `first difference at ${i}: ${got[i]} vs ${want[i]}`, what).toBe('same bits');
}

const ADAM = [0.00123, 0.9, 0.999, 1e-7] as const;

/** The three kernels the fused one replaces, as SparseEmbeddingStepper called them. */
function unfused(a: NativeAddon, c: Case, scale: number) {
  const [w, m, v] = [c.w.slice(), c.m.slice(), c.v.slice()];
  const g = new Float32Array(c.V * c.D);
  const mark = new Uint8Array(c.V);
  const touched = new Int32Array(c.V);
  const nCat = c.cat.length / c.B;
  let count = a.markRows(c.cat, null, mark, touched, 0);
  a.scatterAdd(g, c.dx0, c.cat, null, c.B, nCat, 0, c.D, c.width, c.D, scale);
  c.seqRows.forEach((rows, s) => {
    count = a.markRows(rows, c.seqWeights[s], mark, touched, count);
    const L = rows.length / c.B;
    a.scatterAdd(g, c.dx0, rows, c.seqWeights[s], c.B, L, (nCat + s) * c.D, 0, c.width, c.D, scale);
  });
  a.adamRows(w, g, m, v, touched, count, c.D, ...ADAM);
  return { w, m, v, touched: touched.slice(0, count) };
}

function fused(a: NativeAddon, c: Case, scale: number) {
  const [w, m, v] = [c.w.slice(), c.m.slice(), c.v.slice()];
  const touched = new Int32Array(c.V);
  const count = a.embeddingAdam!(
    w,
    m,
    v,
    c.dx0,
    c.cat,
    c.seqRows,
    c.seqWeights,
    c.B,
    c.width,
    c.D,
    scale,
    ...ADAM,
    touched,
  );
  return { w, m, v, touched: touched.slice(0, count) };
}

describe.runIf(addon?.embeddingAdam !== undefined)('embeddingAdam: the embedding update in one call', () => {
  const a = addon as NativeAddon;
  afterAll(() => a.setThreads(1));

  it('the bits of markRows + scatterAdd + adamRows (weights, moments, touched order) at 1, 2 and 3 threads', () => {
    for (const scale of [1, 0.37]) {
      const c = benchCase(11);
      a.setThreads(1);
      const want = unfused(a, c, scale);
      // The update did something, and repeated rows were summed (far fewer touched rows than entries).
      expect(want.touched.length).toBeGreaterThan(100);
      expect(want.touched.length).toBeLessThan(c.cat.length);
      expect(want.w.some((x, i) => x !== c.w[i])).toBe(true);
      for (const threads of [1, 2, 3]) {
        a.setThreads(threads);
        const before = a.poolStats();
        const got = fused(a, c, scale);
        const after = a.poolStats();
        const at = `scale ${scale}, ${threads} thread(s)`;
        expect(Array.from(got.touched), `${at}: touched`).toEqual(Array.from(want.touched));
        expectSameBits(got.w, want.w, `${at}: w`);
        expectSameBits(got.m, want.m, `${at}: m`);
        expectSameBits(got.v, want.v, `${at}: v`);
        // Above one thread the rows really are split over the pool.
        if (threads > 1) expect(after.regions, at).toBeGreaterThan(before.regions);
      }
    }
  });

  it('a zero scale still steps the touched rows (moments decay), as the unfused kernels do; no entries, no rows', () => {
    const c = benchCase(12, 64);
    a.setThreads(2);
    const want = unfused(a, c, 0);
    const got = fused(a, c, 0);
    expect(Array.from(got.touched)).toEqual(Array.from(want.touched));
    expectSameBits(got.w, want.w, 'w');
    expectSameBits(got.m, want.m, 'm');
    expectSameBits(got.v, want.v, 'v');
    // Only padding: nothing is touched and nothing changes.
    const pad = {
      ...c,
      cat: new Int32Array(0),
      seqWeights: c.seqWeights.map((x) => new Float32Array(x.length)),
    };
    const none = fused(a, { ...pad, width: c.width }, 1);
    expect(none.touched.length).toBe(0);
    expectSameBits(none.w, c.w, 'w after padding only');
  });

  it('prewake takes 0..1000 µs and rejects anything else with a range error, at any pool size', () => {
    for (const threads of [1, 2]) {
      a.setThreads(threads);
      expect(() => a.prewake!(0)).not.toThrow();
      expect(() => a.prewake!(150)).not.toThrow();
      expect(() => a.prewake!(1001)).toThrow(RangeError);
      expect(() => a.prewake!(-1)).toThrow(/us must be in 0\.\.1000/);
      expect(() => a.prewake!('5' as unknown as number)).toThrow(/expected a number/);
    }
    // The pool still runs regions after a prewake (no worker is left waiting on a stale one).
    const c = benchCase(14, 256);
    a.setThreads(1);
    const want = unfused(a, c, 1);
    a.setThreads(2);
    a.prewake!(1000);
    const got = fused(a, c, 1);
    expectSameBits(got.w, want.w, 'w after a prewake');
  });

  it('rejects bad arguments with a range or type error naming them, changing nothing', () => {
    const c = benchCase(13, 32, 500);
    const call = (over: Partial<Record<string, unknown>>) => {
      const args = {
        w: c.w.slice(),
        m: c.m.slice(),
        v: c.v.slice(),
        dx0: c.dx0,
        cat: c.cat,
        seqRows: c.seqRows,
        seqWeights: c.seqWeights,
        B: c.B,
        width: c.width,
        D: c.D,
        touched: new Int32Array(c.V),
        ...over,
      } as unknown as Record<string, never>;
      const copy = [args.w, args.m, args.v].map((x: Float32Array) => x.slice());
      let error: unknown;
      try {
        a.embeddingAdam!(
          args.w,
          args.m,
          args.v,
          args.dx0,
          args.cat,
          args.seqRows,
          args.seqWeights,
          args.B,
          args.width,
          args.D,
          1,
          ...ADAM,
          args.touched,
        );
      } catch (e) {
        error = e;
      }
      expect([args.w, args.m, args.v], JSON.stringify(Object.keys(over))).toEqual(copy);
      return error as Error;
    };
    const bad = (over: Partial<Record<string, unknown>>, kind: typeof RangeError, re: RegExp) => {
      const e = call(over);
      expect(e, JSON.stringify(Object.keys(over))).toBeInstanceOf(kind);
      expect(e.message).toMatch(re);
    };
    const outside = c.cat.slice();
    outside[17] = c.V;
    bad({ cat: outside }, RangeError, /categoricalRows has a row id outside the table/);
    const negative = c.seqRows[1].slice();
    negative[3] = -1;
    bad({ seqRows: [c.seqRows[0], negative] }, RangeError, /sequenceRows has a row id outside the table/);
    bad({ m: new Float32Array(10) }, RangeError, /w, m and v differ in length/);
    bad({ D: 0 }, RangeError, /dim must be in 1\.\.1024/);
    bad({ B: 5 }, RangeError, /categoricalRows is not bags × fields long/);
    bad({ dx0: c.dx0.subarray(1) }, RangeError, /dx0 is not bags × width/);
    bad({ width: 16 }, RangeError, /room for every field/);
    bad({ seqWeights: [c.seqWeights[0]] }, RangeError, /differ in count/);
    bad({ seqWeights: [c.seqWeights[0], c.seqWeights[0]] }, RangeError, /rows or weights are not bags × len/);
    bad({ touched: new Int32Array(10) }, RangeError, /touched is shorter/);
    bad({ cat: new Float32Array(c.cat.length) }, TypeError, /categoricalRows must be an Int32Array/);
    bad({ seqRows: [c.seqWeights[0]] }, TypeError, /sequenceRows\[0\] must be an Int32Array/);
  });

  it('l2Grad: dx0 += factor·x0, and Σ x0² per row in eight lanes (lane j mod 8, pairwise, then the tail), rows in order, exactly as float64 JS computes them', () => {
    // 37 rows: the pool's chunks cut them at any row; 20 wide, the first 19 columns regularised (two
    // whole lane rounds and a tail of three).
    const [bags, width, cols, factor] = [37, 20, 19, 0.0625 / 3];
    // Magnitudes over 2^±12, so that the double sums round and their order shows in the bits.
    const spread = rand(23);
    const x0 = fill(bags * width, 21, 3).map((x) => x * 2 ** Math.floor((spread() - 0.5) * 24));
    const dx0 = fill(bags * width, 22);
    const want = dx0.slice();
    const f = Math.fround(factor);
    let sq = 0;
    for (let b = 0; b < bags; b++) {
      const at = (j: number) => x0[b * width + j];
      const lane = new Float64Array(8);
      const whole = cols - (cols % 8);
      for (let j = 0; j < whole; j++) lane[j % 8] += at(j) * at(j);
      let row = lane[0] + lane[1] + (lane[2] + lane[3]) + (lane[4] + lane[5] + (lane[6] + lane[7]));
      for (let j = whole; j < cols; j++) row += at(j) * at(j);
      for (let j = 0; j < cols; j++)
        want[b * width + j] = Math.fround(want[b * width + j] + Math.fround(f * at(j)));
      sq += row;
    }
    for (const threads of [1, 2]) {
      a.setThreads(threads);
      const got = dx0.slice();
      expect(a.l2Grad(got, x0, bags, width, cols, factor)).toBe(sq);
      expect(got).toEqual(want);
    }
  });
});

/** Trains `steps` batches and returns every loss and weight. */
async function train(
  config: CrmConfig,
  featureMap: FeatureMap,
  split: EncodedSplit,
  steps: number,
  B: number,
) {
  const model = new CrmNet(config, featureMap);
  const stepper = new LocalStepper(model, new Adam({ lr: 0.002 }), split);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const rows = Int32Array.from({ length: B }, (_, i) => (s * B + i * 7) % split.size);
    losses.push(await stepper.step(rows, s));
  }
  const weights = model.namedVariables().map((v) => (v.variable.dataSync() as Float32Array).slice());
  await stepper.close();
  model.dispose();
  return { losses, weights };
}

describe.runIf(addon?.embeddingAdam !== undefined)('training steps with the fused embedding update', () => {
  const a = addon as NativeAddon;
  const fusedKernel = a.embeddingAdam;
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });
  afterAll(() => {
    a.embeddingAdam = fusedKernel;
    a.setThreads(1);
  });

  /** The same training with the addon's embeddingAdam hidden: the stepper then takes the three kernels. */
  async function both(
    config: CrmConfig,
    featureMap: FeatureMap,
    split: EncodedSplit,
    steps: number,
    B: number,
  ) {
    a.embeddingAdam = undefined;
    a.setThreads(1);
    const without = await train(config, featureMap, split, steps, B);
    a.embeddingAdam = fusedKernel;
    const withIt = [];
    for (const threads of [1, 2]) {
      a.setThreads(threads);
      withIt.push(await train(config, featureMap, split, steps, B));
    }
    return { without, withIt };
  }

  it('bench shape and a feature map with a pooled history and a dense field: every loss and weight the same bits', async () => {
    const dcnv2 = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
    const bench = uniformCategoricalSplit('embedding-adam', [6040, 3706, 2, 7, 21, 3439, 18, 100], 4096);
    const ds = syntheticDataset({ users: 3000, items: 2000, rows: 4096, dense: 1, maxLen: 5 });
    for (const [what, fm, split, B] of [
      ['bench', bench.featureMap, bench.split, 1024],
      ['history', ds.featureMap, ds.splits.train, 600],
    ] as const) {
      const { without, withIt } = await both(dcnv2, fm, split, 6, B);
      expect(without.losses[5], what).not.toBe(without.losses[0]);
      for (const [t, run] of withIt.entries()) {
        expect(run.losses, `${what}, ${t + 1} thread(s)`).toEqual(without.losses);
        without.weights.forEach((w, i) =>
          expect(run.weights[i], `${what}, ${t + 1} thread(s): variable ${i}`).toEqual(w),
        );
      }
    }
  });
});
