import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type { RetrainInput, RetrainProgress, RetrainResult } from '../../activities/types.js';
import { CalibrationRepository } from '../../db/repositories/calibrations.js';
import { DatasetRepository } from '../../db/repositories/datasets.js';
import { EvaluationRepository } from '../../db/repositories/evaluations.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import type { RunRow } from '../../db/schema/index.js';
import { useE2eHome } from '../helpers/activity-context.js';

describe('retrainWorkflow end to end with every real activity', () => {
  const home = useE2eHome('corella-e2e-');

  it('ingests synthetic data, trains, extracts LLM features, calibrates, evaluates and registers a champion', async () => {
    const { testDb, dir, ctx } = home;
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    const config = tinyPipelineConfig(modelPath);
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `e2e-cpu-${suffix}`, gpu: `e2e-gpu-${suffix}` };
    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 9, users: 80, items: 120, ratingsPerUser: 30 } },
      },
      config,
      configHash: 'e2e',
      trigger: 'test',
      queues,
    };
    const workflowId = `retrain-e2e-${suffix}`;
    const activities = createActivities(ctx);
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const namespace = inject('temporalNamespace');
    const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
    const gpu = await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection: conn, namespace });
    let result: RetrainResult;
    let progress: RetrainProgress;
    let recalibration: RunRow | undefined;
    const runs = new RunRepository(testDb.db);
    try {
      [result, progress] = await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await client.workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId,
            args: [input],
          });
          const r = (await h.result()) as RetrainResult;
          const p = await h.query<RetrainProgress>('progress');

          // A Temporal Schedule, made and triggered through the CLI, runs recalibrateWorkflow on the champion.
          const env = cliEnv(dir, {
            DATABASE_URL: testDb.url,
            TEMPORAL_ADDRESS: inject('temporalAddress'),
            TEMPORAL_NAMESPACE: namespace,
          });
          const scheduleId = `recal-${suffix}`;
          for (const args of [
            [
              'schedule',
              'create',
              '--id',
              scheduleId,
              '--every',
              '24h',
              '--task-queue',
              queues.cpu,
              '--max-routed',
              '0.25',
            ],
            ['schedule', 'trigger', scheduleId],
          ]) {
            const c = startCli(args, env);
            expect((await c.exited()).code, c.stderr()).toBe(0);
          }
          await expect
            .poll(async () => (await runs.list({ kind: 'recalibrate' }))[0]?.status, {
              timeout: 240_000,
              interval: 1_000,
            })
            .toBe('completed');
          recalibration = (await runs.list({ kind: 'recalibrate' }))[0];
          const del = startCli(['schedule', 'delete', scheduleId], env);
          expect((await del.exited()).code, del.stderr()).toBe(0);
          return [r, p] as const;
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }

    expect(progress.stage).toBe('done');
    expect(progress.completed).toEqual([
      'ingest',
      'train-crm+llm-features',
      'joint-training',
      'calibration',
      'alignment-evaluation',
      'registration',
      'report',
    ]);
    expect(result.alias).toBe('champion');
    for (const k of [
      'crm.test.auc',
      'lr.test.auc',
      'eval.test.crm.auc',
      'eval.test.llm.auc',
      'eval.test.hybrid.auc',
      'calibration.hybrid.auc',
    ]) {
      expect(result.metrics[k], k).toBeGreaterThan(0);
      expect(result.metrics[k], k).toBeLessThanOrEqual(1);
    }
    expect(result.metrics['calibration.routedFraction']).toBeLessThanOrEqual(0.3);
    expect(result.threshold).toBeGreaterThanOrEqual(0);

    const run = await runs.show(workflowId);
    expect(run?.run.status).toBe('completed');
    expect(run?.run.datasetVersionId).toBe(result.datasetVersionId);
    const version = await new DatasetRepository(testDb.db).getVersion(result.datasetVersionId);
    expect(version?.source).toBe('synthetic-movielens');

    const models = new ModelRepository(testDb.db);
    const mv = await models.get(Number(result.modelVersionId));
    expect(mv?.calibratedThreshold).toBeCloseTo(result.threshold, 6);
    expect(Object.keys(mv?.artifacts ?? {}).sort()).toEqual([
      'adapter',
      'calibrationCurve',
      'crmModel',
      'llmModel',
    ]);
    expect(String((await models.champion())?.id)).toBe(result.modelVersionId);
    const cals = await new CalibrationRepository(testDb.db).listForModelVersion(mv!.id);
    expect(cals).toHaveLength(1);
    expect(cals[0].curve.length).toBeGreaterThan(2);
    // The gain check says why on the chosen point of the stored curve (routed or not), matching the run.
    const decided = cals[0].curve.filter((p) => typeof p.reason === 'string');
    expect(decided).toHaveLength(1);
    expect(decided[0].threshold).toBe(cals[0].threshold);
    expect(decided[0].llmShare).toBe(result.metrics['calibration.routedFraction']);
    expect(decided[0].reason).toMatch(/cleared its noise|beat the CRM/);
    const evals = await new EvaluationRepository(testDb.db).listForRun(run!.run.id);
    expect(evals.map((e) => e.kind).sort()).toEqual(['alignment', 'boundary-shift']);
    const alignment = evals.find((e) => e.kind === 'alignment')!.payload as {
      buckets: { rows: unknown[] }[];
    };
    expect(alignment.buckets.length).toBe(2);

    // The scheduled recalibration stored a new calibration under the routing budget it was given.
    expect(recalibration?.status).toBe('completed');
    const recal = await new CalibrationRepository(testDb.db).listForRun(recalibration!.id);
    expect(recal).toHaveLength(1);
    const summary = recalibration!.summary as { threshold: number; applied: boolean; modelVersionId: string };
    expect(summary.modelVersionId).toBe(result.modelVersionId);
    expect(recal[0].threshold).toBeCloseTo(summary.threshold, 9);
    expect(recal[0].curve.filter((p) => typeof p.reason === 'string')).toHaveLength(1);
    const after = await models.get(Number(result.modelVersionId));
    expect(after?.calibratedThreshold).toBeCloseTo(summary.applied ? summary.threshold : result.threshold, 9);
  }, 600_000);
});
