import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import {
  HybridPredictor,
  coldItemMask,
  entropies,
  entropy,
  routedIndices,
  routingEntropies,
} from '../../../ml/corella/routing.js';
import { calibrateThreshold } from '../../../ml/corella/calibration.js';
import { evaluateAlignment } from '../../../ml/corella/evaluation.js';
import { storableThreshold } from '../../../activities/corella-config.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

beforeAll(useCpu);

describe('entropy', () => {
  it('is the binary entropy in nats', () => {
    expect(entropy(0.5)).toBeCloseTo(Math.LN2, 12);
    expect(entropy(0)).toBe(0);
    expect(entropy(1)).toBe(0);
    const p = 0.2;
    expect(entropy(p)).toBeCloseTo(-p * Math.log(p) - (1 - p) * Math.log(1 - p), 12);
    expect(entropy(0.3)).toBeCloseTo(entropy(0.7), 12);
    expect(entropy(0.45)).toBeGreaterThan(entropy(0.3));
  });

  it('routes strictly above the threshold', () => {
    const h = entropies([0.5, 0.9, 0.6, 0.99]);
    expect(Array.from(routedIndices(h, entropy(0.6)))).toEqual([0]);
    expect(Array.from(routedIndices(h, -Infinity))).toEqual([0, 1, 2, 3]);
    expect(Array.from(routedIndices(h, Infinity))).toEqual([]);
  });
});

describe('HybridPredictor', () => {
  it('asks the LLM source for exactly the rows whose CRM entropy exceeds the threshold', async () => {
    const { dataset, llm } = acceptanceWorld(3, { train: 1500, valid: 10, test: 600 });
    const crm = new TinyCrm([3, 6], { seed: 2 });
    await trainTinyCrm(crm, dataset.splits.train, 3);
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 1 });
    const test = dataset.splits.test;
    const pCrm = await crm.predict(test);
    const h = entropies(pCrm);
    const threshold = Array.from(h).sort((a, b) => a - b)[Math.floor(0.7 * h.length)];
    const expected = Array.from(routedIndices(h, threshold));
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThan(test.size);

    const hybrid = new HybridPredictor({ crm, adapter, llm, items: dataset.items, threshold });
    const out = await hybrid.predict(test);

    const asked = llm.calls.flatMap((c) => c.rows).sort((a, b) => a - b);
    expect(asked).toEqual(expected);
    expect(llm.calls.every((c) => c.split === 'test')).toBe(true);
    expect(Array.from(out.routedRows)).toEqual(expected);
    expect(out.routedFraction).toBeCloseTo(expected.length / test.size, 12);

    // Routed rows carry the adapter's prediction, the rest the CRM's.
    const all = await llm.features(test, dataset.items, expected);
    const pAdapter = adapter.predict(all);
    const routed = new Set(expected);
    for (let i = 0; i < test.size; i++) {
      if (routed.has(i)) {
        expect(out.p[i]).toBeCloseTo(pAdapter[expected.indexOf(i)], 5);
      } else {
        expect(out.p[i]).toBe(out.pCrm[i]);
        expect(Number.isNaN(out.pLlm[i])).toBe(true);
      }
    }
    crm.dispose();
    adapter.dispose();
  });

  it('does no LLM work when nothing is routed, and all of it when everything is', async () => {
    const { dataset, llm } = acceptanceWorld(4, { train: 10, valid: 10, test: 50 });
    const crm = new TinyCrm([3, 6], { seed: 2 });
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 1 });
    const none = await new HybridPredictor({
      crm,
      adapter,
      llm,
      items: dataset.items,
      threshold: Infinity,
    }).predict(dataset.splits.test);
    expect(llm.requestedRows).toBe(0);
    expect(none.routedFraction).toBe(0);
    const rows = [3, 7, 11];
    const every = await new HybridPredictor({
      crm,
      adapter,
      llm,
      items: dataset.items,
      threshold: -Infinity,
    }).predict(dataset.splits.test, rows);
    expect(llm.calls.flatMap((c) => c.rows)).toEqual(rows);
    expect(every.routedFraction).toBe(1);
    crm.dispose();
    adapter.dispose();
  });
});

describe('cold items', () => {
  it('count as maximally uncertain when asked, so the LLM sees them first', async () => {
    const { dataset, llm } = acceptanceWorld(5, { train: 800, valid: 300, test: 300 });
    const crm = new TinyCrm([3, 6], { seed: 2 });
    await trainTinyCrm(crm, dataset.splits.train, 2);
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 1 });
    const test = dataset.splits.test;
    const cold = [4, 9, 150, 299];
    for (const r of cold) test.categorical[r * 2 + 1] = 0; // item column → the OOV row
    const all = Array.from({ length: test.size }, (_, i) => i);
    expect(Array.from(coldItemMask(test, all)).flatMap((c, i) => (c ? [i] : []))).toEqual(cold);
    const pCrm = await crm.predict(test);
    const plain = entropies(pCrm);
    const h = routingEntropies(pCrm, test, all, true);
    expect(Array.from(routingEntropies(pCrm, test, all, false))).toEqual(Array.from(plain));
    let maxWarm = 0;
    for (let i = 0; i < test.size; i++) {
      if (cold.includes(i)) expect(h[i]).toBeCloseTo(Math.LN2, 6);
      else {
        expect(h[i]).toBe(plain[i]);
        maxWarm = Math.max(maxWarm, plain[i]);
      }
    }
    expect(maxWarm).toBeLessThan(Math.LN2 - 1e-6);
    const out = await new HybridPredictor({
      crm,
      adapter,
      llm,
      items: dataset.items,
      threshold: maxWarm,
      coldItems: true,
    }).predict(test);
    expect(Array.from(out.routedRows)).toEqual(cold);
    expect(llm.calls.flatMap((c) => c.rows)).toEqual(cold);

    // Calibration with the same setting orders rows the same way: a curve point routing 5% holds every
    // cold validation row.
    const valid = dataset.splits.valid;
    const coldValid = Array.from({ length: 12 }, (_, i) => i * 25);
    for (const r of coldValid) valid.categorical[r * 2 + 1] = 0;
    const cal = await calibrateThreshold({
      crm,
      adapter,
      llm,
      split: valid,
      items: dataset.items,
      config: { coldItems: true, quantiles: [0.95], maxRoutedFraction: 1 },
    });
    const pValid = await crm.predict(valid);
    const hv = routingEntropies(
      pValid,
      valid,
      Array.from({ length: valid.size }, (_, i) => i),
      true,
    );
    const routed = Array.from(routedIndices(hv, cal.curve[0].threshold));
    for (const r of coldValid) expect(routed).toContain(r);
    crm.dispose();
    adapter.dispose();
  });
});

describe('a stored "route nothing" threshold (ln 2) routes nothing, cold rows included', () => {
  it('in the HybridPredictor, the evaluation and its buckets, as in serving', async () => {
    const { dataset, llm } = acceptanceWorld(6, { train: 600, valid: 200, test: 200 });
    const crm = new TinyCrm([3, 6], { seed: 3 });
    await trainTinyCrm(crm, dataset.splits.train, 1);
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 1 });
    const test = dataset.splits.test;
    const cold = [3, 50, 120];
    for (const r of cold) test.categorical[r * 2 + 1] = 0;
    const all = Array.from({ length: test.size }, (_, i) => i);
    const h = routingEntropies(await crm.predict(test), test, all, true);
    // Why the rule needs its own half: a cold row's ln 2 in a Float32Array is above the float64 ln 2.
    expect(h[cold[0]]).toBeGreaterThan(Math.LN2);
    const nothing = storableThreshold(Infinity);
    expect(nothing).toBe(Math.LN2);
    expect(Array.from(routedIndices(h, nothing))).toEqual([]);
    const args = { crm, adapter, llm, items: dataset.items, threshold: nothing, coldItems: true };
    const out = await new HybridPredictor(args).predict(test);
    expect(Array.from(out.routedRows)).toEqual([]);
    expect(Array.from(out.p)).toEqual(Array.from(out.pCrm));
    const ev = await evaluateAlignment({ ...args, split: test });
    expect(ev.routedFraction).toBe(0);
    expect(ev.overall.hybrid.auc).toBe(ev.overall.crm.auc);
    for (const table of ev.buckets) for (const b of table.rows) expect(b.routedFraction).toBe(0);
    // Just below ln 2 the cold rows are the first routed, as before.
    const below = Array.from(routedIndices(h, Math.LN2 - 1e-7));
    for (const r of cold) expect(below).toContain(r);
    crm.dispose();
    adapter.dispose();
  });
});

describe('LlmAdapter', () => {
  it('round-trips weights and input normalisation through serialisation', async () => {
    const { dataset, llm } = acceptanceWorld(5, { train: 40, valid: 1, test: 1 });
    const f = await llm.features(
      dataset.splits.train,
      dataset.items,
      Array.from({ length: 40 }, (_, i) => i),
    );
    const a = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [5, 3], seed: 9 });
    a.fitNormalization(f);
    const b = LlmAdapter.deserialize(a.serialize());
    expect(Array.from(b.predict(f))).toEqual(Array.from(a.predict(f)));
    const acts = tf.tidy(() =>
      a.forward(a.inputTensor(f), { activations: true }).activations.map((x) => x.value.shape),
    );
    expect(acts).toEqual([
      [40, 5],
      [40, 3],
    ]);
    expect(a.activationShapes).toEqual([
      { name: 'adapter_0', width: 5 },
      { name: 'adapter_1', width: 3 },
    ]);
    a.dispose();
    b.dispose();
  });

  it('rejects features of the wrong hidden width', async () => {
    const { dataset, llm } = acceptanceWorld(5, { train: 4, valid: 1, test: 1 });
    const f = await llm.features(dataset.splits.train, dataset.items, [0, 1]);
    const a = LlmAdapter.create({ hiddenDim: llm.hiddenDim + 1, layers: [2], seed: 9 });
    expect(() => a.predict(f)).toThrow(/hiddenDim/);
    a.dispose();
  });

  it('works on log-odds alone when the LLM source extracts no hidden state', () => {
    const logOdds = Float32Array.from([-2, -1, 0, 1, 2]);
    const f = {
      modelSha256: 'm',
      template: 't',
      hiddenDim: 0,
      sampleIds: Uint32Array.from([1, 2, 3, 4, 5]),
      pYes: logOdds.map((z) => 1 / (1 + Math.exp(-z))),
      logOdds,
      hidden: new Float32Array(0),
    };
    const a = LlmAdapter.create({ hiddenDim: 0, layers: [3], seed: 4 });
    a.fitNormalization(f);
    const p = a.predict(f);
    expect(p).toHaveLength(5);
    expect(Array.from(p).every((x) => x > 0 && x < 1)).toBe(true);
    expect(Array.from(LlmAdapter.deserialize(a.serialize()).predict(f))).toEqual(Array.from(p));
    expect(() => LlmAdapter.create({ hiddenDim: -1, layers: [3], seed: 4 })).toThrow(/hiddenDim/);
    a.dispose();
  });
});
