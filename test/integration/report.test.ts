import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type { RetrainInput, RetrainResult } from '../../activities/types.js';
import { CalibrationRepository } from '../../db/repositories/calibrations.js';
import { EvaluationRepository } from '../../db/repositories/evaluations.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { ServingRepository } from '../../db/repositories/serving.js';
import type { StoredAlignment } from '../../ml/report/index.js';
import { escapeHtml } from '../../ml/report/html.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { openPage, screenshotDir } from '../helpers/chromium.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { useE2eHome } from '../helpers/activity-context.js';

/** What the report shows, read by Chromium from the rendered page (the SVG marks and the table cells). */
interface Probe {
  charts: string[];
  marks: Record<string, number>;
  cells: Record<string, string>;
  headline: Record<string, string>;
  status: string;
}

// Runs in the page: counts each named mark group's children (one SVG path per drawn mark).
const PROBE = `(() => {
  if (document.readyState !== 'complete') return false;
  const names = ['curve_auc_points_marks', 'curve_logLoss_points_marks', 'curve_auc_chosen_layer_0_marks',
    'curve_auc_budget_layer_0_marks', 'buckets_auc_marks', 'buckets_logLoss_marks', 'reliability_points_marks'];
  const marks = {};
  for (const n of names) marks[n] = [...document.querySelectorAll('g.' + n)].reduce((s, g) => s + g.querySelectorAll(':scope > path, :scope > line').length, 0);
  marks.shift_bars_marks = document.querySelectorAll('g.shift_bars_marks > path').length;
  marks.training_loss_lines = document.querySelectorAll('g.training_loss_marks > path').length;
  const cells = {};
  document.querySelectorAll('#summary-table td[data-key]').forEach((td) => (cells[td.dataset.key] = td.textContent.trim()));
  const headline = {};
  document.querySelectorAll('[data-key^="headline."]').forEach((b) => (headline[b.dataset.key.slice(9)] = b.textContent.trim()));
  const charts = [...document.querySelectorAll('figure[data-chart] svg')].map((s) => s.closest('figure').dataset.chart);
  return charts.length > 0 && { charts, marks, cells, headline, status: document.getElementById('run-status').textContent };
})()`;

describe('the HTML report of a real pipeline run', () => {
  const home = useE2eHome('corella-report-');

  it('is an artifact of the run whose charts and summary table show what Postgres holds', async () => {
    const { testDb, dir, ctx } = home;
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `report-cpu-${suffix}`, gpu: `report-gpu-${suffix}` };
    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 9, users: 80, items: 120, ratingsPerUser: 30 } },
      },
      config: tinyPipelineConfig(modelPath),
      configHash: 'report',
      trigger: 'test',
      queues,
    };
    const activities = createActivities(ctx);
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    let result: RetrainResult;
    try {
      const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
      const gpu = await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu });
      result = await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await new Client({ connection: conn, namespace }).workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId: `retrain-report-${suffix}`,
            args: [input],
          });
          const r = (await h.result()) as RetrainResult;
          // Serving logs traffic of the new version over two hours; then a recalibration of that version.
          const version = Number(r.modelVersionId);
          const hour = Date.UTC(2026, 11, 1, 8);
          await new ServingRepository(testDb.db).recordServed(
            [0, 0, 1].map((h, k) => ({
              requestId: randomUUID(),
              at: new Date(hour + h * 3_600_000 + k * 1000),
              modelVersionId: version,
              userId: `u${k}`,
              history: null,
              budgetMs: null,
              threshold: r.threshold,
              candidates: [0, 1, 2, 3].map((i) => ({
                item: `i${i}`,
                p: 0.5,
                pCrm: 0.5,
                pLlm: i < h + 1 ? 0.4 : null,
                route: i < h + 1 ? ('llm' as const) : ('crm' as const),
                entropy: 0.6,
                latencyMs: 1,
                cold: false,
              })),
            })),
          );
          await new Client({ connection: conn, namespace }).workflow.execute('recalibrateWorkflow', {
            taskQueue: queues.cpu,
            workflowId: `recalibrate-report-${suffix}`,
            args: [{ modelVersionId: r.modelVersionId, maxRoutedFraction: 0.25, queues }],
          });
          return r;
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }

    // The report is an artifact produced by the run, named in its summary, with an .html copy to open.
    const runs = new RunRepository(testDb.db);
    const details = (await runs.show(result.runId))!;
    expect(result.reportArtifact).toMatch(/^[0-9a-f]{64}$/);
    expect(details.run.summary?.reportArtifact).toBe(result.reportArtifact);
    const artifact = details.artifacts.find((a) => a.sha256 === result.reportArtifact);
    expect(artifact).toMatchObject({ mediaType: 'text/html', producingRunId: result.runId });
    const html = readFileSync(result.reportPath!, 'utf8');
    expect((await ctx.store.get(result.reportArtifact!)).toString('utf8')).toBe(html);
    expect(html).not.toMatch(/<script|<link|src="http/);
    // Rendered as the run's last step: it already shows how the run ends.
    expect(html).toContain('id="run-status">completed<');
    // The run knows its code version; the report shows it with the dataset version and the LLM's sha256.
    expect(details.run.codeVersion).toMatch(/^(git:[0-9a-f]{40}(-dirty)?|corella@\S+)$/);
    expect(html).toContain(details.run.codeVersion!);
    expect(html).toContain(details.run.datasetVersionId!);
    expect(html).toContain(
      (await new RunRepository(testDb.db).get(result.runId))!.config.configHash as string,
    );
    // Curves per epoch are stored as stepped metrics.
    const steps = (key: string) => details.metrics.filter((m) => m.key === key && m.step >= 1).length;
    expect(steps('crm.train.loss')).toBeGreaterThanOrEqual(1);
    expect(steps('joint.stage2.loss')).toBe(1);

    // What Postgres holds about the run.
    const [cal] = await new CalibrationRepository(testDb.db).listForRun(result.runId);
    const evals = await new EvaluationRepository(testDb.db).listForRun(result.runId);
    const alignment = evals.find((e) => e.kind === 'alignment')!.payload as unknown as StoredAlignment;
    const shift = evals.find((e) => e.kind === 'boundary-shift')?.payload as
      Record<'before' | 'after', Record<string, number | null>> | undefined;

    const shots = screenshotDir();
    const page = await openPage(pathToFileURL(result.reportPath!).href, join(dir, 'profile'), {
      width: 1280,
      height: 1000,
    });
    let probe: Probe;
    try {
      probe = await page.waitFor<Probe>(PROBE, 30_000);
      await page.screenshot(join(shots, 'report.png'), { fullPage: true });
    } finally {
      await page.close();
    }
    console.log(`report screenshot: ${join(shots, 'report.png')}`);

    expect(probe.charts).toEqual(['calibration', 'buckets', 'boundary-shift', 'training', 'reliability']);
    // One point per calibration curve point, one chosen threshold, one budget line.
    const curvePoints = cal.curve.filter((p) => Number.isFinite(p.auc) && Number.isFinite(p.logLoss)).length;
    expect(curvePoints).toBeGreaterThan(2);
    expect(probe.marks.curve_auc_points_marks).toBe(curvePoints);
    expect(probe.marks.curve_logLoss_points_marks).toBe(curvePoints);
    expect(probe.marks.curve_auc_chosen_layer_0_marks).toBe(1);
    expect(probe.marks.curve_auc_budget_layer_0_marks).toBe(1);
    // The gain check's verdict stands under the curve, as stored with the chosen point.
    const reason = cal.curve.find((p) => typeof p.reason === 'string')?.reason;
    expect(reason, 'the pipeline calibrates with requireGain, which records why').toBeTruthy();
    expect(html).toContain(`Why this threshold: ${escapeHtml(reason!)}.`);
    // One bar per bucket and model (CRM, LLM branch, hybrid).
    const buckets = alignment.buckets[0].rows.length;
    expect(buckets).toBeGreaterThan(1);
    expect(probe.marks.buckets_auc_marks).toBe(buckets * 3);
    expect(probe.marks.buckets_logLoss_marks).toBe(buckets * 3);
    // Boundary shift: one bar per measure and moment (before/after stage 2) that has a value.
    expect(shift).toBeDefined();
    const measures = ['agreement', 'logitCorrelation', 'meanAbsDiff', 'alignLoss'];
    const shiftBars = measures.reduce(
      (s, k) =>
        s +
        (['before', 'after'] as const).filter(
          (w) => typeof shift![w][k] === 'number' && Number.isFinite(shift![w][k]),
        ).length,
      0,
    );
    expect(probe.marks.shift_bars_marks).toBe(shiftBars);
    expect(probe.marks.reliability_points_marks).toBeGreaterThan(1);
    expect(probe.marks.training_loss_lines).toBeGreaterThanOrEqual(2);

    // The summary table shows Postgres' numbers: overall and every bucket of every scheme.
    const expectRow = (
      key: string,
      row: { n: number } & Record<'crm' | 'llm' | 'hybrid', Record<string, number>>,
    ) => {
      expect(probe.cells[`${key}.n`], `${key}.n`).toBe(String(row.n));
      for (const m of ['crm', 'llm', 'hybrid'] as const) {
        for (const f of ['auc', 'logLoss']) {
          expect(probe.cells[`${key}.${m}.${f}`], `${key}.${m}.${f}`).toBe(row[m][f].toFixed(4));
        }
      }
    };
    expectRow('overall', { n: alignment.n, ...alignment.overall } as never);
    for (const table of alignment.buckets) {
      const scheme = table.scheme.kind === 'quantile' ? `q${table.scheme.buckets}` : table.scheme.kind;
      for (const row of table.rows) expectRow(`${scheme}.${row.bucket}`, row as never);
    }
    expect(probe.cells['overall.hybridMinusCrm.auc']).toMatch(
      /^[+−]\d\.\d{4} \[[+−]\d\.\d{4}, [+−]\d\.\d{4}\]$/,
    );
    const metric = (k: string) => details.metrics.find((m) => m.key === k && m.step === 0)!.value;
    expect(probe.headline['eval.test.hybrid.auc']).toBe(metric('eval.test.hybrid.auc').toFixed(4));

    // The CLI: runs show prints the report path; report renders it again; runs compare works on the rows.
    const env = cliEnv(dir, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: namespace,
    });
    const show = startCli(['runs', 'show', result.runId], env);
    expect((await show.exited()).code, show.stderr()).toBe(0);
    expect(show.stdout()).toContain(`report: ${result.reportPath}`);
    const out = join(dir, 'again.html');
    const again = startCli(['report', result.runId, '--out', out, '--json'], env);
    expect((await again.exited()).code, again.stderr()).toBe(0);
    const rendered = JSON.parse(again.stdout()) as { reportArtifact: string; path: string };
    expect(rendered.path).toBe(out);
    expect(existsSync(out)).toBe(true);
    expect(readFileSync(out, 'utf8')).toContain('id="run-status">completed<');
    expect((await runs.get(result.runId))!.summary?.reportArtifact).toBe(rendered.reportArtifact);

    // The recalibration's report: the served routed fraction per hour and the version's threshold history.
    const recal = startCli(['report', `recalibrate-report-${suffix}`, '--json'], env);
    expect((await recal.exited()).code, recal.stderr()).toBe(0);
    const recalPath = (JSON.parse(recal.stdout()) as { path: string }).path;
    const recalPage = await openPage(pathToFileURL(recalPath).href, join(dir, 'profile-recal'));
    let served: Record<string, number>;
    try {
      served = await recalPage.waitFor<Record<string, number>>(
        `document.readyState === 'complete' && document.querySelector('figure[data-chart="serving"] svg') && Object.fromEntries(['serving_routed_points_marks', 'serving_threshold_points_marks'].map((n) => [n, document.querySelectorAll('g.' + n + ' > path').length]))`,
      );
      await recalPage.screenshot(join(shots, 'report-recalibration.png'), { fullPage: true });
    } finally {
      await recalPage.close();
    }
    const calRepo = new CalibrationRepository(testDb.db);
    const recalRun = (await runs.getByWorkflowId(`recalibrate-report-${suffix}`))!;
    const thresholdIds = new Set(
      [
        ...(await calRepo.listForModelVersion(Number(result.modelVersionId))),
        ...(await calRepo.listForRun(recalRun.id)),
      ].map((c) => c.id),
    );
    expect(served.serving_routed_points_marks).toBe(2);
    // The retrain's calibration and the recalibration's own.
    expect(thresholdIds.size).toBe(2);
    expect(served.serving_threshold_points_marks).toBe(thresholdIds.size);

    const cmp = startCli(['runs', 'compare', result.runId, result.runId], env);
    expect((await cmp.exited()).code, cmp.stderr()).toBe(0);
    expect(cmp.stdout()).toContain('configs are identical');
    expect(cmp.stdout()).toContain('eval.test.hybrid.auc');
  }, 300_000);
});
