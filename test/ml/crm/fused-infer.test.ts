import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CrmNet } from '../../../ml/crm/model.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { fusedInferAddon, inferPlan } from '../../../ml/crm/fused-infer.js';
import type { CrmInferAddon } from '../../../ml/crm/fused-infer.js';
import type { CrmConfig } from '../../../ml/crm/types.js';
import type { EncodedSplit, FeatureMap } from '../../../ml/data/types.js';
import { CorellaError } from '../../../ml/errors.js';
import { initTf } from '../../../ml/tf/backend.js';
import { registerNativeKernels, restoreNativeKernels } from '../../../ml/tf/kernels/native-kernels.js';
import { liveData } from '../../../ml/tf/memory.js';
import { loadNative } from '../../../ml/tf/native.js';
import type { NativeAddon } from '../../../ml/tf/native.js';
import { syntheticDataset } from './fixtures.js';

/**
 * The fused native inference forward (native/crm_infer.c via CrmNet.inferInto) against the tfjs forward on
 * every structure the config allows, its bits at several pool sizes, its refusals, and the fallback.
 */

const N = 700; // 3 blocks of 256 rows: the last one partial
const TAGS_VOCAB = 7;
const TAGS_LEN = 3;

/** The synthetic dataset plus a second, multi-hot field with its own vocabulary, and OOV ids everywhere. */
function fixture(): { fm: FeatureMap; split: EncodedSplit } {
  const ds = syntheticDataset({ rows: Math.ceil(N / 0.8) + 1, dense: 2, maxLen: 5 });
  const base = ds.splits.train;
  const fm: FeatureMap = {
    ...ds.featureMap,
    sequences: [
      ...ds.featureMap.sequences,
      { name: 'tags', kind: 'sequence', vocabSize: TAGS_VOCAB, maxLen: TAGS_LEN },
    ],
  };
  const n = base.size;
  const tags = new Int32Array(n * TAGS_LEN);
  for (let i = 0; i < n; i++)
    for (let p = 0; p <= i % TAGS_LEN; p++) tags[i * TAGS_LEN + p] = 1 + ((i * 5 + p) % 6);
  const categorical = base.categorical.slice();
  const history = base.sequences[0].slice();
  const dense = base.dense.slice();
  // Out-of-vocabulary ids (negative, = vocabulary, far above) in every kind of field, on a spread of rows.
  const vocab = fm.categorical.map((f) => f.vocabSize);
  for (let i = 0; i < n; i += 7) {
    const f = i % vocab.length;
    categorical[i * vocab.length + f] = [-1, vocab[f], 99_999][i % 3];
    history[i * 5] = [-3, 51, 1_000][i % 3];
    tags[i * TAGS_LEN] = [-2, TAGS_VOCAB, 77][i % 3];
  }
  for (let i = 0; i < dense.length; i++) dense[i] = ((i * 37) % 11) / 5 - 1;
  return {
    fm,
    split: { ...base, categorical, sequences: [history, tags], dense },
  };
}

const { fm, split } = fixture();
const rowsAll = Int32Array.from({ length: N }, (_, i) => (i * 13) % split.size);

function randomise(model: CrmNet, seed: number): void {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
  for (const { name, variable } of model.namedVariables()) {
    // Batch-norm variances stay positive; everything else in ±0.4, biases and the table included.
    const positive = name.endsWith('moving_var');
    const data = Float32Array.from({ length: variable.size }, () =>
      positive ? 0.2 + next() : (next() - 0.5) * 0.8,
    );
    variable.assign(tf.tensor(data, variable.shape));
  }
}

const dcn = (o: Partial<CrmConfig> = {}) =>
  defaultCrmConfig('dcnv2', { embeddingDim: 4, crossLayers: 2, mlp: [16, 8], ...o });

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function both(model: CrmNet, rows: Int32Array) {
  const fused = { p: new Float32Array(rows.length), z: new Float32Array(rows.length) };
  const ref = { p: new Float32Array(rows.length), z: new Float32Array(rows.length) };
  const pathF = model.inferInto(split, rows, fused.p, { logits: fused.z });
  const pathT = model.inferInto(split, rows, ref.p, { logits: ref.z, path: 'tfjs' });
  return { fused, ref, pathF, pathT };
}

describe('fused CRM inference', () => {
  let addon: NativeAddon;
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
    const native = loadNative().addon;
    if (!native) throw new Error(`these tests need the native addon: ${loadNative().reason}`);
    addon = native;
  });
  afterAll(() => addon.setThreads(1));

  const structures: Partial<CrmConfig>[] = [
    { crossStructure: 'stacked' },
    { crossStructure: 'parallel' },
    { crossStructure: 'crossnet_only', mlp: [] },
    { crossStructure: 'stacked', batchNorm: true, dropout: 0.3 },
    { crossStructure: 'parallel', lowRank: { rank: 3, experts: 2 }, batchNorm: true },
    { crossStructure: 'crossnet_only', mlp: [], lowRank: { rank: 2, experts: 3 } },
    { crossStructure: 'stacked', lowRank: { rank: 4, experts: 1 }, crossLayers: 3 },
    { crossStructure: 'stacked', crossLayers: 0 },
  ];
  for (const o of structures) {
    it(`equals the tfjs forward to float rounding, OOV and multi-hot rows included: ${JSON.stringify(o)}`, () => {
      const model = new CrmNet(dcn(o), fm);
      randomise(model, 11);
      const { fused, ref, pathF, pathT } = both(model, rowsAll);
      expect([pathF, pathT]).toEqual(['fused', 'tfjs']);
      // The logits spread wide enough that a wrong layer would show (not all ≈ one value).
      const spread = Math.max(...ref.z) - Math.min(...ref.z);
      expect(spread).toBeGreaterThan(0.02);
      const scale = Math.max(1, ...Array.from(ref.z, Math.abs));
      expect(maxAbs(fused.z, ref.z)).toBeLessThanOrEqual(2e-6 * scale);
      expect(maxAbs(fused.p, ref.p)).toBeLessThanOrEqual(1e-6);
      model.dispose();
    });
  }

  it('runs the LR baseline (1-wide embeddings, no cross or MLP layers) too', () => {
    const model = new CrmNet(defaultCrmConfig('lr'), fm);
    randomise(model, 5);
    const { fused, ref, pathF } = both(model, rowsAll);
    expect(pathF).toBe('fused');
    expect(maxAbs(fused.z, ref.z)).toBeLessThanOrEqual(1e-6);
    expect(maxAbs(fused.p, ref.p)).toBeLessThanOrEqual(1e-6);
    model.dispose();
  });

  it('gives the same bits at pool 1, 2 and 3 threads, and the pool really shares the blocks', () => {
    // Blocks big enough (x0 98 wide, MLP 128-64) that the workers wake before the caller has run them all.
    const model = new CrmNet(
      dcn({ crossStructure: 'parallel', batchNorm: true, embeddingDim: 16, mlp: [128, 64] }),
      fm,
    );
    randomise(model, 3);
    const rows = Int32Array.from({ length: 3000 }, (_, i) => (i * 7) % split.size);
    const bits: Uint32Array[] = [];
    let workerChunks = 0;
    for (const t of [1, 2, 3]) {
      addon.setThreads(t);
      const p = new Float32Array(rows.length);
      const z = new Float32Array(rows.length);
      const before = addon.poolStats().workerChunks;
      // A few calls: a worker that was not scheduled in time for one call has its share run by the caller.
      for (let k = 0; k < 5; k++) expect(model.inferInto(split, rows, p, { logits: z })).toBe('fused');
      if (t > 1) workerChunks += addon.poolStats().workerChunks - before;
      bits.push(new Uint32Array(p.buffer.slice(0)), new Uint32Array(z.buffer.slice(0)));
    }
    addon.setThreads(1);
    expect(workerChunks).toBeGreaterThan(0);
    for (let t = 1; t < 3; t++) {
      expect(bits[2 * t]).toEqual(bits[0]);
      expect(bits[2 * t + 1]).toEqual(bits[1]);
    }
    model.dispose();
  });

  it('predict takes the fused path over several batches and any row list, and sees weights assigned later', async () => {
    const model = new CrmNet(dcn(), fm);
    randomise(model, 21);
    const rows = Array.from(rowsAll.subarray(0, 450));
    const fused = await model.predict(split, rows, 200);
    const ref = new Float32Array(rows.length);
    model.inferInto(split, Int32Array.from(rows), ref, { path: 'tfjs' });
    expect(maxAbs(fused, ref)).toBeLessThanOrEqual(1e-6);
    // New weights (as a training epoch or a checkpoint load assigns them): the next call reads them.
    randomise(model, 22);
    const again = await model.predict(split, rows, 200);
    model.inferInto(split, Int32Array.from(rows), ref, { path: 'tfjs' });
    expect(maxAbs(again, fused)).toBeGreaterThan(1e-3);
    expect(maxAbs(again, ref)).toBeLessThanOrEqual(1e-6);
    model.dispose();
  });

  it('rejects bad rows, a wrongly sized output and a malformed split with a typed error, writing nothing', () => {
    const model = new CrmNet(dcn(), fm);
    randomise(model, 2);
    const rows = rowsAll.subarray(0, 300);
    const out = new Float32Array(rows.length).fill(-7);
    const untouched = () => expect(out.every((v) => v === -7)).toBe(true);
    const bad = Int32Array.from(rows);
    bad[290] = split.size; // the last block's row: the earlier blocks must not have been written either
    const err = (() => {
      try {
        model.inferInto(split, bad, out);
      } catch (e) {
        return e;
      }
    })() as CorellaError;
    expect(err).toBeInstanceOf(CorellaError);
    expect(err.code).toBe('BAD_CONFIG');
    expect(err.details).toMatchObject({ field: 'rows', index: 290 });
    untouched();
    bad[290] = -1;
    expect(() => model.inferInto(split, bad, out)).toThrow(/row -1 is outside split/);
    untouched();
    expect(() => model.inferInto(split, rows, new Float32Array(rows.length - 1))).toThrow(
      expect.objectContaining({ code: 'BAD_CONFIG', details: { field: 'out' } }),
    );
    expect(() => model.inferInto(split, rows, out, { logits: new Float32Array(3) })).toThrow(
      expect.objectContaining({ details: { field: 'logits' } }),
    );
    untouched();
    const short = { ...split, dense: split.dense.subarray(1) };
    expect(() => model.inferInto(short, rows, out)).toThrow(
      expect.objectContaining({ code: 'BAD_DATASET', details: { split: split.name, field: 'dense' } }),
    );
    untouched();
    model.dispose();
    expect(() => model.inferInto(split, rows, out)).toThrow(/disposed/);
    untouched();
  });

  it('the native call itself refuses what would read outside its buffers, before writing', () => {
    const model = new CrmNet(dcn(), fm);
    const found = fusedInferAddon();
    expect('addon' in found).toBe(true);
    const native = (found as { addon: CrmInferAddon }).addon;
    const plan = inferPlan(model.config, model.layout, model.inputWidth);
    const weights = model
      .namedVariables()
      .filter(({ name }) => !name.includes('moving'))
      .map(({ variable }) => variable);
    const rows = Int32Array.from([0, 1, 2, 3]);
    const out = new Float32Array(4).fill(-7);
    const call = (o: {
      plan?: Int32Array;
      weights?: Float32Array[];
      rows?: Int32Array | null;
      size?: number;
      start?: number;
      count?: number;
    }) =>
      native.crmInfer(
        o.plan ?? plan,
        o.weights ?? weights.map(liveData),
        split.categorical,
        split.sequences,
        split.dense,
        o.size ?? split.size,
        o.rows === undefined ? rows : o.rows,
        o.start ?? 0,
        o.count ?? 4,
        out,
        null,
      );
    const oob = Int32Array.from([0, 1, split.size, 3]);
    const rejected: [string, () => void, RegExp][] = [
      ['a row id outside the split', () => call({ rows: oob }), /row id is outside/],
      ['a range past the split', () => call({ rows: null, start: split.size - 2 }), /outside the split/],
      ['a split size the columns do not have', () => call({ size: split.size + 1 }), /categorical/],
      ['a weight missing', () => call({ weights: weights.slice(1).map(liveData) }), /weights/],
      [
        'a weight of the wrong length',
        () => call({ weights: [new Float32Array(3), ...weights.slice(1).map(liveData)] }),
        /length/,
      ],
      [
        'a plan whose offsets leave the table',
        () => call({ plan: plan.map((v, i) => (i === 12 ? 5 : v)) }),
        /outside the table/,
      ],
      ['a plan of another version', () => call({ plan: plan.map((v, i) => (i === 0 ? 9 : v)) }), /version/],
    ];
    for (const [what, f, message] of rejected) {
      expect(f, what).toThrow(message);
      expect(
        out.every((v) => v === -7),
        what,
      ).toBe(true);
    }
    call({});
    expect(out.every((v) => v > 0 && v < 1)).toBe(true);
    model.dispose();
  });

  it('falls back to the tfjs forward where the native kernels do not serve the backend', async () => {
    const model = new CrmNet(dcn(), fm);
    randomise(model, 8);
    const rows = rowsAll.subarray(0, 100);
    const fused = new Float32Array(rows.length);
    expect(model.inferInto(split, rows, fused)).toBe('fused');
    restoreNativeKernels();
    try {
      expect('reason' in fusedInferAddon()).toBe(true);
      const plain = new Float32Array(rows.length);
      expect(model.inferInto(split, rows, plain)).toBe('tfjs');
      expect(maxAbs(plain, fused)).toBeLessThanOrEqual(1e-6);
      const predicted = await model.predict(split, rows);
      expect(maxAbs(predicted, fused)).toBeLessThanOrEqual(1e-6);
    } finally {
      registerNativeKernels(addon);
    }
    model.dispose();
  });

  it('takes the tfjs path, unchanged, under CORELLA_TF_NATIVE=off', () => {
    // A fresh process: the addon's status is decided once per process.
    const script = fileURLToPath(new URL('./fused-infer-off.fixture.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], {
      encoding: 'utf8',
      env: { ...process.env, CORELLA_TF_NATIVE: 'off' },
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      path: string;
      accelerator: string;
      reason: string;
      maxDiff: number;
    };
    expect(res.accelerator).toBe('none');
    expect(res.path).toBe('tfjs');
    expect(res.reason).toMatch(/do not serve/);
    // predict there is the tfjs forward exactly (same batches, same ops)
    expect(res.maxDiff).toBe(0);
  }, 150_000);
});
