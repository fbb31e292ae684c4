import { beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { calibrateThreshold, calibrationPlan, sweepThresholds } from '../../../ml/corella/calibration.js';
import { calibrationRows } from '../../../ml/corella/row-plan.js';
import { entropies } from '../../../ml/corella/routing.js';
import { CorellaError } from '../../../ml/errors.js';
import { acceptanceWorld, TinyCrm, useCpu } from './fixtures.js';

beforeAll(useCpu);

/**
 * 100 samples. Rows 0–19: the CRM is unsure (p from 0.5 up to 0.538, distinct entropies, highest first) and
 * the LLM is right. Rows 20–49 (p = 0.75/0.25) and 50–99 (p = 0.97/0.03): the CRM is right, the LLM wrong.
 * So the best hybrid routes exactly rows 0–19: 20 % of the samples.
 */
function constructed() {
  const n = 100;
  const labels = new Float32Array(n);
  const pCrm = new Float32Array(n);
  const pLlm = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const y = i % 2;
    labels[i] = y;
    if (i < 20) {
      pCrm[i] = 0.5 + 0.002 * i;
      pLlm[i] = y ? 0.9 : 0.1;
    } else {
      const conf = i < 50 ? 0.75 : 0.97;
      pCrm[i] = y ? conf : 1 - conf;
      pLlm[i] = y ? 0.1 : 0.9;
    }
  }
  return { labels, pCrm, pLlm };
}

describe('threshold calibration', () => {
  it('chooses the threshold that routes exactly the samples the LLM gets right', () => {
    const { labels, pCrm, pLlm } = constructed();
    for (const metric of ['auc', 'logLoss', 'acc'] as const) {
      const cal = sweepThresholds(pCrm, pLlm, labels, { metric, maxRoutedFraction: 0.2 });
      expect(cal.chosen.routedFraction).toBe(0.2);
      // Routes entropy > threshold: rows 0–19 are above it, row 20 (p = 0.75) is not.
      const h = entropies(pCrm);
      expect(h[19]).toBeGreaterThan(cal.threshold);
      expect(h[20]).toBeLessThanOrEqual(cal.threshold);
      expect(cal.chosen.acc).toBe(1);
    }
  });

  it('respects the routed-fraction cap and returns the whole curve', () => {
    const { labels, pCrm, pLlm } = constructed();
    const cal = sweepThresholds(pCrm, pLlm, labels, { metric: 'acc', maxRoutedFraction: 0.1 });
    expect(cal.chosen.routedFraction).toBe(0.1);
    // The ten most uncertain rows (0–9) are the routed ones.
    const h = entropies(pCrm);
    expect(h[9]).toBeGreaterThan(cal.threshold);
    expect(h[10]).toBeLessThanOrEqual(cal.threshold);
    expect(cal.chosen.acc).toBeGreaterThan(cal.crmOnly.acc);
    // 21 default quantiles; ties among the 50 confident rows (and the 30 medium ones) merge some of them.
    expect(cal.curve.length).toBeGreaterThan(5);
    const fractions = cal.curve.map((c) => c.routedFraction);
    expect(fractions[0]).toBe(0);
    expect(Math.max(...fractions)).toBe(1);
    // Routing everything is the LLM alone, wrong on 80 of 100.
    expect(cal.curve.find((c) => c.routedFraction === 1)?.acc).toBeCloseTo(0.2, 12);
  });

  it('stays with the CRM when the LLM never helps', () => {
    const { labels, pCrm } = constructed();
    const wrong = labels.map((y) => (y ? 0.2 : 0.8));
    const cal = sweepThresholds(pCrm, wrong, labels, { metric: 'logLoss' });
    expect(cal.chosen.routedFraction).toBe(0);
    expect(cal.threshold).toBe(Infinity);
  });

  it('rejects a bad config naming the field', () => {
    const { labels, pCrm, pLlm } = constructed();
    expect(() => sweepThresholds(pCrm, pLlm, labels, { maxRoutedFraction: 1.5 })).toThrow(
      /maxRoutedFraction/,
    );
    expect(() => sweepThresholds(pCrm, pLlm, labels, { metric: 'f1' as 'auc' })).toThrow(CorellaError);
  });

  it('runs the LLM only on the top entropy fraction when the curve is capped', async () => {
    const { dataset, llm } = acceptanceWorld(8, { train: 10, valid: 400, test: 10 });
    const crm = new TinyCrm([3, 6], { seed: 4 });
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 2 });
    const cal = await calibrateThreshold({
      crm,
      adapter,
      llm,
      split: dataset.splits.valid,
      items: dataset.items,
      config: { curveMaxFraction: 0.25 },
    });
    expect(llm.requestedRows).toBe(100);
    expect(cal.llmRows).toBe(100);
    expect(cal.curve.map((c) => c.routed).filter((r) => r > 100)).toEqual([]);
    expect(cal.n).toBe(400);
    crm.dispose();
    adapter.dispose();
  });

  it('asks the LLM for exactly the rows calibrationPlan names: a large pool, screened by CRM entropy', async () => {
    const { dataset, llm } = acceptanceWorld(8, { train: 10, valid: 1200, test: 10 });
    const valid = dataset.splits.valid;
    const crm = new TinyCrm([3, 6], { seed: 4 });
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 2 });
    const config = { maxRows: 1000, seed: 5, poolBlock: 4, curveMaxFraction: 0.2 };
    const plan = await calibrationPlan(crm, valid, config);
    // The pool is the one calibrationRows draws, and the LLM's share is its 200 most uncertain rows.
    expect(Array.from(plan.rows)).toEqual(Array.from(calibrationRows(valid, config)));
    expect(plan.llmRows).toHaveLength(200);
    const chosen = new Set(plan.local);
    const hIn = Array.from(plan.local, (i) => plan.h[i]);
    const hOut = Array.from(plan.h).filter((_, i) => !chosen.has(i));
    expect(Math.min(...hIn)).toBeGreaterThanOrEqual(Math.max(...hOut));
    expect(Array.from(plan.llmRows)).toEqual(Array.from(plan.local, (i) => plan.rows[i]));
    const items = dataset.items;
    const cal = await calibrateThreshold({ crm, adapter, llm, split: valid, items, config });
    const asked = llm.calls.flatMap((c) => c.rows);
    expect([...asked].sort((a, b) => a - b)).toEqual(Array.from(plan.llmRows).sort((a, b) => a - b));
    expect(cal.n).toBe(1000);
    expect(cal.llmRows).toBe(200);
    expect(Math.max(...cal.curve.map((c) => c.routedFraction))).toBeLessThanOrEqual(0.2);
    crm.dispose();
    adapter.dispose();
  });
});
