import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { datasetForVersion } from '../../activities/datasets.js';
import { createActivities } from '../../activities/index.js';
import { recalibrateOnServed } from '../../activities/recalibrate-served.js';
import type {
  PipelineConfig,
  RecalibrateInput,
  RecalibrateResult,
  RetrainResult,
} from '../../activities/types.js';
import {
  MODEL_NOTIFY_CHANNEL,
  parseModelNotification,
  type ModelNotification,
} from '../../db/notifications.js';
import {
  CalibrationRepository,
  ModelRepository,
  RunRepository,
  ServingRepository,
} from '../../db/repositories/index.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { mulberry32 } from '../../ml/random.js';
import { entropy } from '../../ml/corella/routing.js';
import type { CtrDataset } from '../../ml/data/index.js';
import { PredictionLog, type PredictionLogEntry } from '../../serve/prediction-log.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { trainVersions } from '../helpers/trained-versions.js';
import { fileActivityContext } from '../helpers/activity-context.js';

/** The threshold the version was calibrated to, and the share of traffic it routed then. */
const T0 = 0.6;
const CALIBRATED_SHARE = 0.2;
const BUDGET = 0.3;

/**
 * Served traffic after a planted shift: 70% of candidates now have CRM probabilities near 0.5, so their
 * entropy (> 0.67) is above T0 and the server routed them all to the LLM, which answered them well; the
 * rest are confident CRM answers (right 85% of the time), never routed, without an LLM answer.
 */
function shiftedTraffic(ds: CtrDataset, versionId: number, requests: number, slate: number) {
  const rng = mulberry32(21);
  const users = ds.featureMap.vocabularies.user_id.slice(1);
  const items = ds.items.ids;
  const at0 = Date.now() - 2 * 3_600_000;
  const entries: PredictionLogEntry[] = [];
  const labels = new Map<string, number>();
  for (let r = 0; r < requests; r++) {
    const requestId = randomUUID();
    const candidates: PredictionLogEntry['candidates'] = [];
    for (let k = 0; k < slate; k++) {
      const y = rng() < 0.5 ? 1 : 0;
      const item = items[(r * slate + k * 7) % items.length];
      labels.set(`${requestId}/${item}`, y);
      if (rng() < 0.7) {
        const pCrm = 0.42 + 0.16 * rng();
        const pLlm = y ? 0.65 + 0.3 * rng() : 0.05 + 0.3 * rng();
        candidates.push({
          item,
          p: pLlm,
          pCrm,
          pLlm,
          route: 'llm',
          entropy: entropy(pCrm),
          cold: false,
          latencyMs: 30,
        });
      } else {
        const seen = rng() < 0.85 ? y : 1 - y;
        const pCrm = seen ? 0.8 + 0.15 * rng() : 0.05 + 0.15 * rng();
        candidates.push({
          item,
          p: pCrm,
          pCrm,
          route: 'crm',
          entropy: entropy(pCrm),
          cold: false,
          latencyMs: 2,
        });
      }
    }
    entries.push({
      requestId,
      at: at0 + r * 1_000,
      modelVersionId: versionId,
      user: users[r % users.length],
      history: null,
      budgetMs: 200,
      threshold: T0,
      candidates,
    });
  }
  return { entries, labels };
}

describe('recalibration on served traffic', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ActivityContext;
  let trained: RetrainResult;
  let config: PipelineConfig;

  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-served-recal-'));
    ctx = fileActivityContext(testDb.db, dir);
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    config = tinyPipelineConfig(modelPath);
    [trained] = await trainVersions(
      ctx,
      { address: inject('temporalAddress'), namespace: inject('temporalNamespace') },
      dir,
      [config],
    );
  }, 300_000);

  afterAll(async () => {
    await testDb?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a planted shift in live entropies brings the threshold back under the LLM budget; without feedback it is DATA_NOT_AVAILABLE', async () => {
    const versionId = Number(trained.modelVersionId);
    const models = new ModelRepository(testDb.db);
    // The version as calibrated before the shift: T0, which routed 20% of the calibration rows.
    await new CalibrationRepository(testDb.db).record({
      runId: trained.runId,
      metric: 'planted',
      threshold: T0,
      curve: [{ threshold: T0, llmShare: CALIBRATED_SHARE }],
      modelVersionId: versionId,
    });
    expect((await models.get(versionId))?.calibratedThreshold).toBe(T0);

    // Served traffic reaches Postgres through the real prediction log.
    const ds = await datasetForVersion(ctx.store, trained.datasetVersionId);
    const { entries, labels } = shiftedTraffic(ds, versionId, 100, 4);
    const log = await PredictionLog.open({ db: testDb.db, spoolDir: join(dir, 'spool') });
    for (const e of entries) log.append(e);
    await log.close();
    expect(log.counters()).toMatchObject({ flushed: 100, pending: 0, rejected: 0 });

    const suffix = randomUUID().slice(0, 8);
    const queue = `served-recal-${suffix}`;
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const listener = new pg.Client({ connectionString: testDb.url });
    await listener.connect();
    const notes: ModelNotification[] = [];
    listener.on('notification', (m) => {
      const n = parseModelNotification(m.payload);
      if (n) notes.push(n);
    });
    await listener.query(`LISTEN ${MODEL_NOTIFY_CHANNEL}`);
    const runs = new RunRepository(testDb.db);
    let result: RecalibrateResult;
    try {
      const worker = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queue,
      });
      result = await worker.runUntil(async () => {
        // No feedback yet: nothing to calibrate on, and a clear error says so.
        const input: RecalibrateInput = {
          source: 'served',
          modelVersionId: String(versionId),
          windowDays: 1,
          queues: { cpu: queue },
        };
        const failed = await new Client({ connection: conn, namespace }).workflow
          .execute('recalibrateWorkflow', {
            taskQueue: queue,
            workflowId: `recal-nofb-${suffix}`,
            args: [input],
          })
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(failed).toBeInstanceOf(WorkflowFailedError);
        const app = (failed as WorkflowFailedError).cause?.cause as { type?: string; message?: string };
        expect(app.type).toBe('DATA_NOT_AVAILABLE');
        expect(app.message).toContain(`model version ${versionId} received feedback in the last 1 days`);
        expect((await models.get(versionId))?.calibratedThreshold).toBe(T0);

        // The outcomes arrive (POST /v1/feedback stores them like this).
        const serving = new ServingRepository(testDb.db);
        for (const e of entries) {
          for (const c of e.candidates) {
            await serving.recordFeedback({
              requestId: e.requestId,
              user: e.user,
              item: c.item,
              label: labels.get(`${e.requestId}/${c.item}`)!,
              ts: new Date(Number(e.at) + 60_000),
            });
          }
        }

        // A schedule made through the CLI with --source served runs the recalibration.
        const env = cliEnv(dir, {
          DATABASE_URL: testDb.url,
          TEMPORAL_ADDRESS: inject('temporalAddress'),
          TEMPORAL_NAMESPACE: namespace,
        });
        const scheduleId = `served-${suffix}`;
        const create = startCli(
          [
            ['schedule', 'create', '--id', scheduleId, '--every', '24h', '--task-queue', queue],
            ['--source', 'served', '--model', String(versionId), '--max-routed', String(BUDGET)],
            ['--window-days', '1', '--shadow-rows', '40'],
          ].flat(),
          env,
        );
        expect((await create.exited()).code, create.stderr()).toBe(0);
        const trigger = startCli(['schedule', 'trigger', scheduleId], env);
        expect((await trigger.exited()).code, trigger.stderr()).toBe(0);
        await expect
          .poll(
            async () => (await runs.list({ kind: 'recalibrate' })).find((r) => r.status !== 'failed')?.status,
            {
              timeout: 180_000,
              interval: 1_000,
            },
          )
          .toBe('completed');
        const del = startCli(['schedule', 'delete', scheduleId], env);
        expect((await del.exited()).code, del.stderr()).toBe(0);
        const run = (await runs.list({ kind: 'recalibrate' })).find((r) => r.status === 'completed')!;
        expect(run.config).toMatchObject({ source: 'served', shadowRows: 40, maxRoutedFraction: BUDGET });
        return run.summary as unknown as RecalibrateResult;
      });
    } finally {
      await listener.end();
      await conn.close();
      await nc.close();
    }

    // Live traffic routed ~70% against the 20% it was calibrated for; the new threshold routes within budget.
    expect(result.source).toBe('served');
    expect(result.drift!.liveRoutedFraction).toBeGreaterThan(0.6);
    expect(result.drift!.calibratedRoutedFraction).toBe(CALIBRATED_SHARE);
    expect(result.drift!.overBudget).toBe(true);
    expect(result.drift!.newRoutedFraction).toBeLessThanOrEqual(BUDGET);
    expect(result.drift!.newRoutedFraction).toBeGreaterThan(0.1);
    expect(result.applied).toBe(true);
    expect(result.previousThreshold).toBe(T0);
    expect(result.threshold).toBeGreaterThan(T0);
    expect(result.metrics.windowRows).toBe(400);
    // Unrouted rows without an LLM answer, shadow-scored offline by the real engine and tiny GGUF.
    expect(result.metrics.shadowScored).toBe(40);
    for (const k of ['auc', 'logLoss', 'acc'] as const)
      expect(Number.isFinite(result.served![k]), k).toBe(true);
    expect(result.served!.auc).toBeGreaterThan(0.6);

    // Re-routing the logged entropies with the new threshold: within budget.
    const all = entries.flatMap((e) => e.candidates);
    const routed = all.filter((c) => c.entropy > result.threshold).length / all.length;
    expect(routed).toBeLessThanOrEqual(BUDGET);
    expect(routed).toBeCloseTo(result.drift!.newRoutedFraction, 6);

    // The version moved (with its calibration), and servers were told.
    const after = await new ModelRepository(testDb.db).get(versionId);
    expect(after?.calibratedThreshold).toBeCloseTo(result.threshold, 9);
    const cal = await new CalibrationRepository(testDb.db).get(Number(result.calibrationId));
    expect(cal?.modelVersionId).toBe(versionId);
    expect(notes).toContainEqual({
      modelName: after!.modelName,
      alias: null,
      versionId,
      kind: 'threshold',
      threshold: after!.calibratedThreshold,
    });
  }, 400_000);
  it('a retried attempt decides as the first did, after the first already applied its threshold', async () => {
    // Runs after the test above: the served rows and their feedback are in place.
    const versionId = Number(trained.modelVersionId);
    const models = new ModelRepository(testDb.db);
    await models.setThreshold(versionId, T0);
    const run = await new RunRepository(testDb.db).start({
      workflowId: `recal-retry-${randomUUID()}`,
      kind: 'recalibrate',
    });
    const input = {
      source: 'served' as const,
      runId: run.id,
      windowDays: 1,
      maxRoutedFraction: BUDGET,
      shadowRows: 0,
    };
    const first = await recalibrateOnServed(ctx, input, (await models.get(versionId))!, config, {});
    expect(first).toMatchObject({ applied: true, previousThreshold: T0 });
    expect(first.drift?.calibratedRoutedFraction).toBe(CALIBRATED_SHARE);
    // The version now carries the new threshold; the retry must still see T0 as the one it replaces.
    const again = await recalibrateOnServed(ctx, input, (await models.get(versionId))!, config, {});
    expect(again).toMatchObject({
      applied: true,
      previousThreshold: T0,
      threshold: first.threshold,
      calibrationId: first.calibrationId,
    });
    expect(again.drift).toEqual(first.drift);
    expect((await models.get(versionId))?.calibratedThreshold).toBeCloseTo(first.threshold, 9);
    expect(await new CalibrationRepository(testDb.db).listForRun(run.id)).toHaveLength(1);
  }, 120_000);
});
