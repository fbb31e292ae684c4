import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { CrmNet } from '../../../ml/crm/model.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { sigmoidCrossEntropy } from '../../../ml/crm/loss.js';
import { disposeCrmBatch } from '../../../ml/crm/batch.js';
import type { CrmConfig } from '../../../ml/crm/types.js';
import { CorellaError } from '../../../ml/errors.js';
import { initTf } from '../../../ml/tf/backend.js';
import { syntheticDataset } from './fixtures.js';

const ds = syntheticDataset({ rows: 200, dense: 2, maxLen: 5 });
const fm = ds.featureMap;
const split = ds.splits.train;
const rows = [0, 1, 2, 3, 4, 5, 6, 7];

function weights(model: CrmNet, name: string): Float32Array {
  const v = model.namedVariables().find((e) => e.name === name);
  if (!v) throw new Error(`no variable ${name}`);
  return v.variable.dataSync() as Float32Array;
}

function randomise(model: CrmNet, seed: number): void {
  let s = seed;
  for (const { variable } of model.namedVariables()) {
    const data = Float32Array.from(
      { length: variable.size },
      () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296 - 0.5,
    );
    variable.assign(tf.tensor(data, variable.shape));
  }
}

const dcn = (o: Partial<CrmConfig> = {}) =>
  defaultCrmConfig('dcnv2', { embeddingDim: 3, crossLayers: 2, mlp: [6, 4], ...o });

describe('CrmNet', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });

  const structures: Partial<CrmConfig>[] = [
    { crossStructure: 'stacked' },
    { crossStructure: 'parallel' },
    { crossStructure: 'crossnet_only', mlp: [] },
    { crossStructure: 'stacked', lowRank: { rank: 2, experts: 3 }, batchNorm: true, dropout: 0.2 },
  ];
  for (const o of structures) {
    it(`forward shapes and activations: ${JSON.stringify(o)}`, () => {
      const model = new CrmNet(dcn(o), fm);
      const batch = model.makeBatch(split, rows);
      // x0 = 4 categorical + 1 pooled sequence, 3 wide each, + 2 dense
      expect(model.inputWidth).toBe(5 * 3 + 2);
      for (const training of [false, true]) {
        const out = tf.tidy(() => {
          const f = model.forward(batch, { training, activations: true });
          return { logits: f.logits.shape, acts: f.activations.map((a) => [a.name, a.value.shape]) };
        });
        expect(out.logits).toEqual([rows.length]);
        expect(out.acts).toEqual(model.activationShapes.map((s) => [s.name, [rows.length, s.width]]));
      }
      const expectedNames = [
        ...Array.from({ length: 2 }, (_, i) => `cross_${i}`),
        ...(o.crossStructure === 'crossnet_only' ? [] : (o.mlp ?? [6, 4]).map((_, i) => `mlp_${i}`)),
      ];
      expect(model.activationShapes.map((s) => s.name)).toEqual(expectedNames);
      disposeCrmBatch(batch);
      model.dispose();
    });
  }

  it('builds x0 from field rows, the masked mean of the history rows of the shared item table, and dense values', () => {
    const model = new CrmNet(dcn(), fm);
    const batch = model.makeBatch(split, rows);
    const x0 = tf.tidy(() => model.embed(batch).arraySync());
    const table = weights(model, 'embedding');
    const D = 3;
    const row = (r: number) => Array.from(table.subarray(r * D, (r + 1) * D));
    const offsets = [0, fm.categorical[0].vocabSize];
    offsets.push(
      offsets[1] + fm.categorical[1].vocabSize,
      offsets[1] + fm.categorical[1].vocabSize + fm.categorical[2].vocabSize,
    );
    rows.forEach((r, i) => {
      const expected: number[] = [];
      for (let f = 0; f < 4; f++) expected.push(...row(offsets[f] + split.categorical[r * 4 + f]));
      const hist = Array.from(split.sequences[0].subarray(r * 5, r * 5 + 5)).filter((h) => h !== 0);
      const pooled = [0, 0, 0];
      // history ids index the item_id vocabulary (field 1)
      for (const h of hist) row(offsets[1] + h).forEach((v, d) => (pooled[d] += v / hist.length));
      expected.push(...pooled, split.dense[r * 2], split.dense[r * 2 + 1]);
      expected.forEach((v, j) => expect(x0[i][j]).toBeCloseTo(v, 5));
    });
    disposeCrmBatch(batch);
    model.dispose();
  });

  it('maps out-of-vocabulary ids to the field OOV row, the same in prepared and hand-built batches', () => {
    const model = new CrmNet(dcn(), fm);
    const oov = { ...split, categorical: split.categorical.slice(), sequences: [split.sequences[0].slice()] };
    oov.categorical[0] = 10_000; // user_id of row 0
    oov.sequences[0].set([999, 0, 0, 0, 0], 0);
    const prepared = model.makeBatch(oov, [0, 1]);
    const handBuilt = {
      categorical: prepared.categorical,
      sequences: prepared.sequences,
      dense: prepared.dense,
      labels: prepared.labels,
    };
    const [a, b] = tf.tidy(() => [model.embed(prepared).arraySync(), model.embed(handBuilt).arraySync()]);
    const table = weights(model, 'embedding');
    expect(a[0].slice(0, 3)).toEqual(Array.from(table.subarray(0, 3)).map((v) => expect.closeTo(v, 6)));
    // a history made only of an unknown id pools the item OOV row
    const itemOff = fm.categorical[0].vocabSize;
    expect(a[0].slice(12, 15)).toEqual(
      Array.from(table.subarray(itemOff * 3, itemOff * 3 + 3)).map((v) => expect.closeTo(v, 6)),
    );
    a.forEach((r, i) => r.forEach((v, j) => expect(b[i][j]).toBeCloseTo(v, 6)));
    disposeCrmBatch(prepared);
    model.dispose();
  });

  it('cross layers compute x_{l+1} = x0 ⊙ (x_l W_l + b_l) + x_l (hand computation)', () => {
    const model = new CrmNet(dcn({ crossStructure: 'crossnet_only', mlp: [] }), fm);
    randomise(model, 11);
    const batch = model.makeBatch(split, rows);
    const { x0, acts } = tf.tidy(() => {
      const f = model.forward(batch, { training: false, activations: true });
      return { x0: model.embed(batch).arraySync(), acts: f.activations.map((a) => a.value.arraySync()) };
    });
    const n = model.inputWidth;
    let xl = x0;
    for (let l = 0; l < 2; l++) {
      const W = weights(model, `cross_${l}/w`);
      const b = weights(model, `cross_${l}/b`);
      const next = xl.map((x, r) =>
        x.map((xi, i) => {
          let z = b[i];
          for (let j = 0; j < n; j++) z += x[j] * W[j * n + i];
          return x0[r][i] * z + xi;
        }),
      );
      next.forEach((x, r) => x.forEach((v, i) => expect(acts[l][r][i]).toBeCloseTo(v, 4)));
      xl = next;
    }
    disposeCrmBatch(batch);
    model.dispose();
  });

  it('the LR baseline is a linear function of 1-wide field weights and dense values', () => {
    const model = new CrmNet(defaultCrmConfig('lr', { embeddingDim: 8, mlp: [5] }), fm);
    expect(model.config).toMatchObject({ embeddingDim: 1, crossLayers: 0, mlp: [] });
    expect(model.activationShapes).toEqual([]);
    randomise(model, 5);
    const batch = model.makeBatch(split, rows);
    const [x0, logits] = tf.tidy(() => [
      model.embed(batch).arraySync(),
      model.forward(batch, { training: false }).logits.arraySync(),
    ]);
    const w = weights(model, 'output/w');
    const b = weights(model, 'output/b')[0];
    x0.forEach((x, r) =>
      expect(logits[r]).toBeCloseTo(
        x.reduce((s, v, j) => s + v * w[j], b),
        5,
      ),
    );
    disposeCrmBatch(batch);
    model.dispose();
  });

  it('the regularizer is l2 × mean squared norm of the batch categorical rows', () => {
    const model = new CrmNet(dcn({ l2Embedding: 0.01 }), fm);
    const batch = model.makeBatch(split, rows);
    const x0 = tf.tidy(() => model.embed(batch).arraySync());
    const expected =
      (0.01 * x0.reduce((s, x) => s + x.slice(0, 12).reduce((t, v) => t + v * v, 0), 0)) / rows.length;
    const reg = model.regularizer(batch)!;
    expect(reg.dataSync()[0]).toBeCloseTo(expected, 7);
    reg.dispose();
    disposeCrmBatch(batch);
    model.dispose();
  });

  for (const o of [
    {},
    { lowRank: { rank: 2, experts: 2 }, batchNorm: true, crossStructure: 'parallel' as const },
  ]) {
    it(`gradients match finite differences: ${JSON.stringify(o)}`, () => {
      const model = new CrmNet(dcn({ l2Embedding: 0.01, ...o }), fm);
      randomise(model, 3);
      const batch = model.makeBatch(split, rows);
      const lossFn = () => {
        const f = model.forward(batch, { training: true });
        return tf.add(sigmoidCrossEntropy(f.logits, batch.labels), model.regularizer(batch)!) as tf.Scalar;
      };
      const lossValue = () => tf.tidy(() => lossFn().dataSync()[0]);
      const vars = model.trainableVariables();
      const { value, grads } = tf.variableGrads(lossFn, vars);
      value.dispose();
      const eps = 1e-3;
      let checked = 0;
      for (const { name, variable } of model.namedVariables().filter((v) => v.trainable)) {
        const g = grads[variable.name].dataSync();
        const data = (variable.dataSync() as Float32Array).slice();
        // the largest-gradient entries carry signal above float32 noise; check a few per variable
        const order = Array.from(g.keys())
          .sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]))
          .slice(0, 3);
        for (const k of order) {
          const orig = data[k];
          data[k] = orig + eps;
          variable.assign(tf.tensor(data, variable.shape));
          const up = lossValue();
          data[k] = orig - eps;
          variable.assign(tf.tensor(data, variable.shape));
          const down = lossValue();
          data[k] = orig;
          variable.assign(tf.tensor(data, variable.shape));
          const fd = (up - down) / (2 * eps);
          expect(Math.abs(fd - g[k]), `${name}[${k}] analytic ${g[k]} vs numeric ${fd}`).toBeLessThanOrEqual(
            2e-3 + 0.03 * Math.abs(g[k]),
          );
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(10);
      tf.dispose(grads);
      disposeCrmBatch(batch);
      model.dispose();
    });
  }

  it('rejects a split whose columns do not match the feature map, naming the field', () => {
    const model = new CrmNet(dcn(), fm);
    const broken = { ...split, categorical: split.categorical.subarray(0, split.categorical.length - 1) };
    let err: unknown;
    try {
      model.makeBatch(broken, [0]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_DATASET');
    expect((err as CorellaError).details).toMatchObject({ split: 'train', field: 'categorical' });
    expect(() => model.makeBatch(split, [split.size])).toThrow(/outside split train/);
    model.dispose();
  });

  it('rejects bad configs with a typed error naming the field', () => {
    expect(() => new CrmNet(dcn({ dropout: 1.5 }), fm)).toThrow(CorellaError);
    expect(() => new CrmNet(dcn({ mlp: [4, 0] }), fm)).toThrow(/mlp\[1\]/);
    expect(() => new CrmNet(dcn({ crossStructure: 'stacked', mlp: [] }), fm)).toThrow(/mlp/);
  });
});
