/**
 * The CoReLLa figures of a finished pipeline run (e.g. the main job, `corella up`), read back from Postgres
 * and the artifact store: overall and per-bucket scores, calibration, the boundary shift, and bootstrap 95%
 * intervals of the hybrid-minus-CRM and LLM-minus-CRM test AUC differences.
 *
 *   CORELLA_HOME=… npx tsx bench/run-report.ts <run id | workflow id> [--bootstrap 2000]
 *
 * The test pool may be drawn in user blocks (llm.historyBlock), whose rows are correlated: the interval
 * resamples whole users (cluster bootstrap) as well as single rows, and reports both.
 */
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { datasetForVersion } from '../activities/datasets.js';
import { withDatabase } from '../cli/database.js';
import { corellaHome } from '../cli/services/paths.js';
import { CalibrationRepository } from '../db/repositories/calibrations.js';
import { EvaluationRepository } from '../db/repositories/evaluations.js';
import { RunRepository } from '../db/repositories/runs.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { auc } from '../ml/metrics/index.js';
import { aucDiffInterval } from '../ml/report/stats.js';

const id = process.argv[2];
if (!id) {
  process.stderr.write('usage: npx tsx bench/run-report.ts <run id | workflow id> [--bootstrap N]\n');
  process.exit(2);
}
const bi = process.argv.indexOf('--bootstrap');
const rounds = bi > 0 ? Number(process.argv[bi + 1]) : 2000;
const r4 = (x: number) => Number(x.toFixed(4));

interface Predictions {
  rows: number[];
  labels: number[];
  pCrm: number[];
  pLlm: number[];
  pHybrid: number[];
}

/** Percentile interval of auc(a) − auc(pCrm) over resamples of `groups` (ml/report/stats, O(rows) a round). */
function bootstrap(p: Predictions, a: number[], groups: number[][], seed: number, unit: 'user' | 'row') {
  const iv = aucDiffInterval(p.labels, a, p.pCrm, groups, { rounds, seed, unit });
  return iv && { lo95: r4(iv.lo95), hi95: r4(iv.hi95), rounds: iv.rounds };
}

const report = await withDatabase(async (db) => {
  const runs = new RunRepository(db);
  const run = /^[0-9a-f-]{36}$/.test(id) ? await runs.get(id) : await runs.getByWorkflowId(id);
  if (!run) throw new Error(`no run ${id} in this database`);
  const evals = await new EvaluationRepository(db).listForRun(run.id);
  const cals = await new CalibrationRepository(db).listForRun(run.id);
  const alignment = evals.find((e) => e.kind === 'alignment')?.payload as Record<string, unknown> | undefined;
  const shift = evals.find((e) => e.kind === 'boundary-shift')?.payload;
  if (!alignment) throw new Error(`run ${run.id} has no alignment evaluation (status ${run.status})`);
  const store = new FileArtifactStore(join(corellaHome(), 'artifacts'));
  const preds = JSON.parse(
    (await store.get(alignment.predictionsArtifact as string)).toString('utf8'),
  ) as Predictions;
  const ds = await datasetForVersion(store, run.datasetVersionId!);
  const byUser = new Map<number, number[]>();
  preds.rows.forEach((r, i) => {
    const u = ds.splits.test.userRows[r];
    const g = byUser.get(u);
    if (g) g.push(i);
    else byUser.set(u, [i]);
  });
  const single = preds.rows.map((_, i) => [i]);
  const users = [...byUser.values()];
  const y = Float32Array.from(preds.labels);
  const aucOf = (p: number[]) => r4(auc(y, Float32Array.from(p)));
  return {
    bench: 'run-report',
    run: {
      id: run.id,
      workflowId: run.workflowId,
      status: run.status,
      startedAt: run.startedAt,
      endedAt: run.endedAt,
    },
    testRows: preds.rows.length,
    testUsers: users.length,
    auc: { crm: aucOf(preds.pCrm), llmBranch: aucOf(preds.pLlm), hybrid: aucOf(preds.pHybrid) },
    overall: alignment.overall,
    threshold: alignment.threshold,
    routedFraction: alignment.routedFraction,
    buckets: alignment.buckets,
    calibration: cals.map((c) => ({
      threshold: c.threshold,
      metric: c.metric,
      // Stored points carry the routed share as llmShare, and the gain check's reason on the chosen one.
      routedFraction: c.curve.find((p) => p.threshold === c.threshold)?.llmShare,
      reason: c.curve.find((p) => typeof p.reason === 'string')?.reason,
    })),
    boundaryShift: shift,
    hybridMinusCrmAuc: {
      point: r4(auc(y, Float32Array.from(preds.pHybrid)) - auc(y, Float32Array.from(preds.pCrm))),
      rowBootstrap: bootstrap(preds, preds.pHybrid, single, 1, 'row'),
      userBootstrap: bootstrap(preds, preds.pHybrid, users, 2, 'user'),
    },
    llmMinusCrmAuc: {
      point: r4(auc(y, Float32Array.from(preds.pLlm)) - auc(y, Float32Array.from(preds.pCrm))),
      userBootstrap: bootstrap(preds, preds.pLlm, users, 3, 'user'),
    },
    machine: { loadAvg1m: loadavg()[0] },
  };
});
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
process.exit(0);
