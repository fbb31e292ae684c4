import { beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { evaluateAlignment } from '../../../ml/corella/evaluation.js';
import { evaluateHybrid } from '../../../ml/corella/hybrid-evaluation.js';
import { entropies } from '../../../ml/corella/routing.js';
import { acceptanceWorld, TinyCrm, useCpu } from './fixtures.js';

beforeAll(useCpu);

describe('evaluateHybrid: the hybrid against the CRM with the LLM on routed rows only', () => {
  it('scores as the full evaluation does, asks the LLM for the routed rows alone, and bounds the gain', async () => {
    const { dataset, llm } = acceptanceWorld(3, { train: 10, valid: 10, test: 600 });
    const test = dataset.splits.test;
    const crm = new TinyCrm([3, 6], { seed: 4 });
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 2 });
    const rows = Int32Array.from({ length: 500 }, (_, i) => i + 50);
    // A threshold that routes about a quarter of the rows.
    const h = entropies(await crm.predict(test, rows));
    const threshold = Float32Array.from(h).sort()[Math.floor(0.75 * h.length)];
    const common = { crm, adapter, llm, items: dataset.items, threshold, split: test, rows };
    const full = await evaluateAlignment(common);

    const before = llm.requestedRows;
    const wide = await evaluateHybrid(common);
    const asked = llm.requestedRows - before;
    expect(wide.n).toBe(500);
    expect(wide.routed).toBe(Math.round(full.routedFraction * 500));
    expect(wide.routed).toBeGreaterThan(100);
    expect(wide.routed).toBeLessThan(150);
    expect(asked).toBe(wide.routed);
    expect(wide.routedFraction).toBeCloseTo(full.routedFraction, 12);
    expect(wide.crm.auc).toBeCloseTo(full.overall.crm.auc, 6);
    expect(wide.hybrid.auc).toBeCloseTo(full.overall.hybrid.auc, 6);
    expect(wide.hybrid.logLoss).toBeCloseTo(full.overall.hybrid.logLoss, 6);
    expect(wide.gain).toBeDefined();
    const g = wide.gain!;
    expect(g.auc).toBeCloseTo(wide.hybrid.auc - wide.crm.auc, 12);
    expect(g.lo95).toBeLessThanOrEqual(g.auc);
    expect(g.hi95).toBeGreaterThanOrEqual(g.auc);
    expect(g.hi95 - g.lo95).toBeGreaterThan(0);
    expect(g.rounds).toBe(1000);

    // Nothing routed: the LLM is never asked, and the hybrid is the CRM.
    const none = await evaluateHybrid({ ...common, threshold: Math.LN2 });
    expect(llm.requestedRows - before).toBe(asked);
    expect(none.routed).toBe(0);
    expect(none.hybrid.auc).toBe(none.crm.auc);
    expect(none.gain?.auc).toBe(0);
    crm.dispose();
    adapter.dispose();
  });
});
