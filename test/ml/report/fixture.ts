import { mulberry32 } from '../../../ml/random.js';
import { bucketOf, quantileEdges } from '../../../ml/metrics/index.js';
import { bucketTable } from '../../../ml/corella/evaluation.js';
import { entropies } from '../../../ml/corella/routing.js';
import type { ReportSource } from '../../../ml/report/index.js';

/** A report source shaped like a real run's stored rows, with seeded synthetic predictions. */
export function fixtureSource(opts: { n?: number; champion?: boolean } = {}): ReportSource {
  const n = opts.n ?? 300;
  const rng = mulberry32(7);
  const labels = Float32Array.from({ length: n }, () => (rng() < 0.4 ? 1 : 0));
  const noisy = (y: number, s: number) =>
    Math.min(0.99, Math.max(0.01, 0.4 + (y - 0.4) * s + (rng() - 0.5) * 0.6));
  const pCrm = Float32Array.from(labels, (y) => noisy(y, 0.5));
  const pLlm = Float32Array.from(labels, (y) => noisy(y, 0.4));
  const h = entropies(pCrm);
  const threshold = quantileEdges(h, 5)[3];
  const pHybrid = Float32Array.from(pCrm, (p, i) => (h[i] > threshold ? pLlm[i] : p));
  const users = Float64Array.from({ length: n }, (_, i) => Math.floor(i / 5));
  const tables = [{ kind: 'quantile' as const, buckets: 5 }, { kind: 'paper3' as const }].map((s) =>
    JSON.parse(JSON.stringify(bucketTable(h, pCrm, pLlm, pHybrid, labels, threshold, s))),
  );
  void bucketOf;
  const ctr = (p: Float32Array) => {
    const t = bucketTable(h, p, p, p, labels, threshold, { kind: 'quantile', buckets: 1 }).rows[0].crm;
    return { auc: t.auc, logLoss: t.logLoss, acc: t.acc };
  };
  const curve = [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3].map((f, i) => ({
    threshold: 0.69 - i * 0.02,
    routedFraction: f,
    auc: 0.7 + 0.01 * i - 0.002 * i * i,
    logLoss: 0.6 - 0.005 * i,
  }));
  const runId = '11111111-2222-4333-8444-555555555555';
  const metrics = [
    ...[1, 2, 3].flatMap((e) => [
      { key: 'crm.train.loss', step: e, value: 0.7 - 0.05 * e },
      { key: 'crm.valid.auc', step: e, value: 0.6 + 0.03 * e },
    ]),
    ...[1, 2].map((e) => ({ key: 'joint.stage2.loss', step: e, value: 0.9 - 0.1 * e })),
    { key: 'joint.stage2.valid.crm.auc', step: 0, value: 0.71 },
    { key: 'joint.stage3.loss', step: 1, value: 0.66 },
    { key: 'joint.stage3.valid.llm.auc', step: 0, value: 0.64 },
    { key: 'eval.test.hybrid.auc', step: 0, value: 0.72 },
    { key: 'eval.test.crm.auc', step: 0, value: 0.7 },
    { key: 'calibration.hybrid.auc', step: 0, value: 0.73 },
    { key: 'calibration.threshold', step: 0, value: curve[4].threshold },
  ];
  return {
    run: {
      id: runId,
      workflowId: 'retrain-synthetic-abc',
      kind: 'retrain',
      status: 'completed',
      attempt: 1,
      startedAt: '2026-12-01T08:00:00.000Z',
      endedAt: '2026-12-01T08:10:00.000Z',
      codeVersion: 'abc1234',
      datasetVersionId: 'dv-1',
      config: {
        dataset: { source: 'synthetic-movielens' },
        config: { crm: { epochs: 3 }, calibration: { maxRoutedFraction: 0.2 } },
        configHash: 'feedbeef',
        trigger: 'test',
      },
    },
    metrics,
    calibration: { metric: 'auc', threshold: curve[4].threshold, maxRoutedFraction: 0.2, curve },
    alignment: {
      split: 'test',
      n,
      threshold,
      routedFraction: 0.2,
      overall: { crm: ctr(pCrm), llm: ctr(pLlm), hybrid: ctr(pHybrid) },
      buckets: tables,
    },
    predictions: { labels, pCrm, pLlm, pHybrid, users, entropy: h },
    boundaryShift: {
      before: { n: 40, agreement: 0.6, logitCorrelation: 0.2, meanAbsDiff: 0.3, alignLoss: 1.2 },
      after: { n: 40, agreement: 0.8, logitCorrelation: 0.5, meanAbsDiff: 0.2, alignLoss: 0.4 },
    },
    model: {
      id: 2,
      aliases: ['champion'],
      calibratedThreshold: curve[4].threshold,
      artifacts: { llmModel: 'a'.repeat(64) },
      metrics: {},
      sourceRunId: runId,
    },
    champion: opts.champion
      ? {
          id: 1,
          aliases: [],
          calibratedThreshold: 0.5,
          artifacts: {},
          metrics: { 'eval.test.hybrid.auc': 0.7, 'calibration.hybrid.auc': 0.71 },
          sourceRunId: '99999999-2222-4333-8444-555555555555',
          since: '2026-11-30T00:00:00.000Z',
        }
      : undefined,
    bootstrapRounds: 200,
  };
}
