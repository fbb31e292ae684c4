import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { bucketTable, evaluateAlignment, runAblations } from '../../../ml/corella/evaluation.js';
import { boundaryShift } from '../../../ml/corella/boundary.js';
import { entropies } from '../../../ml/corella/routing.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-eval-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('per-bucket table', () => {
  // 150 samples in three entropy levels of 50; the LLM is right only on the most uncertain level.
  const n = 150;
  const labels = Float32Array.from({ length: n }, (_, i) => i % 2);
  const level = (i: number) => Math.floor(i / 50);
  const conf = [0.95, 0.8, 0.52];
  const pCrm = Float32Array.from(
    { length: n },
    (_, i) =>
      (labels[i] ? conf[level(i)] : 1 - conf[level(i)]) + (level(i) === 2 ? (labels[i] ? -0.04 : 0.04) : 0),
  );
  const pLlm = Float32Array.from({ length: n }, (_, i) =>
    level(i) === 2 ? (labels[i] ? 0.9 : 0.1) : labels[i] ? 0.3 : 0.7,
  );
  const h = entropies(pCrm);
  // Between the medium and the uncertain level: routes exactly the uncertain third.
  const threshold = (h[50] + h[100]) / 2;
  const pHybrid = Float32Array.from({ length: n }, (_, i) => (h[i] > threshold ? pLlm[i] : pCrm[i]));

  it('splits by CRM entropy and scores the three predictors per bucket', () => {
    const t = bucketTable(h, pCrm, pLlm, pHybrid, labels, threshold, { kind: 'paper3' });
    expect(t.rows.map((r) => r.label)).toEqual(['confident', 'medium', 'uncertain']);
    expect(t.rows.map((r) => r.n)).toEqual([50, 50, 50]);
    const [confident, , uncertain] = t.rows;
    expect(confident.routedFraction).toBe(0);
    expect(uncertain.routedFraction).toBe(1);
    // On the uncertain third the CRM is always wrong, the LLM and hence the hybrid always right.
    expect(uncertain.crm.acc).toBe(0);
    expect(uncertain.llm.acc).toBe(1);
    expect(uncertain.hybrid.acc).toBe(1);
    expect(confident.hybrid.acc).toBe(1);
    expect(confident.llm.acc).toBe(0);
  });

  it('makes quantile buckets that cover every sample once', () => {
    const t = bucketTable(h, pCrm, pLlm, pHybrid, labels, threshold, { kind: 'quantile', buckets: 5 });
    expect(t.rows.reduce((a, r) => a + r.n, 0)).toBe(n);
    for (let b = 1; b < t.rows.length; b++) expect(t.rows[b].lo).toBe(t.rows[b - 1].hi);
  });

  it('reports boundary-shift figures', () => {
    const s = boundaryShift([0.9, 0.2, 0.6, 0.4], [0.8, 0.3, 0.3, 0.45], 1.5);
    expect(s.agreement).toBe(0.75);
    expect(s.meanAbsDiff).toBeCloseTo((0.1 + 0.1 + 0.3 + 0.05) / 4, 6);
    expect(s.logitCorrelation).toBeGreaterThan(0.5);
    expect(boundaryShift([0.2, 0.8], [0.8, 0.2], 0).logitCorrelation).toBeCloseTo(-1, 6);
  });
});

describe('evaluateAlignment and ablations', () => {
  it('scores every evaluated row with all three predictors', async () => {
    const { dataset, llm } = acceptanceWorld(12, { train: 600, valid: 10, test: 300 });
    const crm = new TinyCrm([3, 6], { seed: 3 });
    await trainTinyCrm(crm, dataset.splits.train, 2);
    const adapter = LlmAdapter.create({ hiddenDim: llm.hiddenDim, layers: [4], seed: 1 });
    const rows = Array.from({ length: 120 }, (_, i) => 2 * i);
    const ev = await evaluateAlignment({
      crm,
      adapter,
      llm,
      split: dataset.splits.test,
      items: dataset.items,
      threshold: 0.6,
      rows,
    });
    expect(llm.requestedRows).toBe(120);
    expect(ev.n).toBe(120);
    expect(ev.buckets.map((b) => b.scheme.kind)).toEqual(['quantile', 'paper3']);
    const routed = Array.from(entropies(ev.predictions.pCrm)).filter((x) => x > 0.6).length;
    expect(ev.routedFraction).toBeCloseTo(routed / 120, 12);
    crm.dispose();
    adapter.dispose();
  });

  it('runs every ablation variant from one stage-1 CRM', async () => {
    const { dataset, llm } = acceptanceWorld(13, { train: 700, valid: 200, test: 200 });
    let stage1Runs = 0;
    const results = await runAblations({
      dataset,
      llm,
      store: new FileArtifactStore(join(dir, 'ablation')),
      newCrm: () => new TinyCrm([3, 6], { seed: 3 }),
      trainStage1: async () => {
        stage1Runs++;
        const crm = new TinyCrm([3, 6], { seed: 3 });
        await trainTinyCrm(crm, dataset.splits.train, 2);
        return crm;
      },
      joint: {
        stage2: { samples: 200, epochs: 1, batchSize: 100, learningRate: 0.01 },
        stage3: { samples: 200, epochs: 1, batchSize: 100, learningRate: 0.01 },
        adapter: { layers: [4] },
        alignment: { sharedDim: 2 },
        validationSamples: 50,
      },
    });
    expect(stage1Runs).toBe(1);
    expect(results.map((r) => r.variant)).toEqual([
      'full',
      'no_stage1',
      'no_stage2',
      'no_stage3',
      'no_align',
      'crm_only',
      'llm_only',
    ]);
    const by = Object.fromEntries(results.map((r) => [r.variant, r]));
    expect(by.crm_only.test.routedFraction).toBe(0);
    expect(by.llm_only.test.routedFraction).toBe(1);
    expect(by.crm_only.test.hybrid.auc).toBe(by.full.test.crm.auc);
    expect(by.llm_only.test.hybrid.auc).toBe(by.full.test.llm.auc);
    expect(by.no_stage2.boundaryShift).toBeUndefined();
    expect(by.full.boundaryShift).toBeDefined();
    // The stage-1 CRM (restored for no_stage2, which never changes it) beats an untrained one.
    expect(by.no_stage2.test.crm.auc).toBeGreaterThan(by.no_stage1.test.crm.auc);
  });
});
