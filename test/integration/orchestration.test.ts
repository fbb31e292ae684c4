import { randomUUID } from 'node:crypto';
import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bookkeepingActivities } from '../../activities/bookkeeping.js';
import { createActivities } from '../../activities/index.js';
import { withTypedFailures } from '../../activities/failures.js';
import type { CorellaActivities, RetrainInput, RetrainProgress } from '../../activities/types.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase } from '../../db/testing.js';
import { stubStages } from '../helpers/stub-stages.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { datasetVersions } from '../../db/schema/index.js';
import { listFiles, movielensLines, writeMovielens } from '../helpers/datasets.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import type { ActivityContext } from '../../activities/context.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { followProgress } from '../../cli/follow-progress.js';
import { otherOpenRuns } from '../../cli/open-runs.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';

describe('retrainWorkflow on a real Temporal dev server and a real Postgres', () => {
  let connection: Connection;
  let client: Client;
  let dbClose: () => Promise<void>;
  let dbUrl: string;
  let ctx: ActivityContext;
  let runs: RunRepository;
  let storeDir: string;
  const namespace = inject('temporalNamespace');

  beforeAll(async () => {
    installWorkerRuntime();
    const testDb = await createTestDatabase(inject('databaseUrl'));
    dbClose = testDb.close;
    dbUrl = testDb.url;
    storeDir = await mkdtemp(join(tmpdir(), 'corella-store-'));
    ctx = {
      db: testDb.db,
      store: new FileArtifactStore(storeDir),
      home: storeDir,
      close: async () => undefined,
    };
    runs = new RunRepository(testDb.db);
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace });
  });

  afterAll(async () => {
    await connection?.close();
    await dbClose?.();
    await rm(storeDir, { recursive: true, force: true });
  });

  /** Workers on queues unique to one test, so parallel test files never take each other's tasks. */
  async function withWorkers<T>(
    activities: Partial<CorellaActivities>,
    fn: (queues: { cpu: string; gpu: string }) => Promise<T>,
  ): Promise<T> {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `test-cpu-${suffix}`, gpu: `test-gpu-${suffix}` };
    const { createCpuWorker } = await import('../../workers/cpu.js');
    const { createGpuWorker, gpuActivities } = await import('../../workers/gpu.js');
    const { NativeConnection } = await import('@temporalio/worker');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
    const hasGpuWork = Object.keys(gpuActivities(activities)).length > 0;
    const gpu = hasGpuWork
      ? await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu })
      : undefined;
    try {
      return await cpu.runUntil(gpu ? gpu.runUntil(fn(queues)) : fn(queues));
    } finally {
      await nc.close();
    }
  }

  function input(queues: { cpu: string; gpu: string }, tag: string): RetrainInput {
    return {
      dataset: { source: 'movielens-1m', dir: '/nonexistent' },
      config: {},
      configHash: tag,
      trigger: 'test',
      queues,
    };
  }

  it('runs every stage in order and records a completed run with metrics in Postgres', async () => {
    const calls: string[] = [];
    const activities = withTypedFailures({
      ...bookkeepingActivities(ctx),
      ...stubStages(calls),
    }) as CorellaActivities;
    const workflowId = `retrain-test-${randomUUID()}`;
    const result = await withWorkers(activities, async (queues) => {
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [input(queues, 'ok')],
      });
      const res = await handle.result();
      const progress = await handle.query<RetrainProgress>('progress');
      expect(progress.stage).toBe('done');
      return res as { runId: string; modelVersionId: string; metrics: Record<string, number> };
    });
    expect(calls.slice(0, 1)).toEqual(['ingestDataset']);
    expect(new Set(calls.slice(1, 3))).toEqual(new Set(['trainCrm', 'extractLlmFeatures']));
    expect(calls.slice(3)).toEqual([
      'trainJoint',
      'calibrateThreshold',
      'evaluateAlignment',
      'registerModelVersion',
      'renderReport',
    ]);
    expect(result.modelVersionId).toBe('mv-1');
    const details = await runs.show(workflowId);
    expect(details?.run.status).toBe('completed');
    expect(details?.run.endedAt).toBeInstanceOf(Date);
    const metricKeys = details?.metrics.map((m) => m.key) ?? [];
    expect(metricKeys).toContain('crm.valid.auc');
    expect(metricKeys).toContain('eval.test.hybrid.auc');
    expect(details?.metrics.find((m) => m.key === 'calibration.routedFraction')?.value).toBeCloseTo(0.15);
  });

  it('fails the workflow at once with the typed error of a failing stage, and the run row says so', async () => {
    const calls: string[] = [];
    const activities = withTypedFailures({
      ...bookkeepingActivities(ctx),
      ...stubStages(calls, 'ingest'),
    }) as CorellaActivities;
    const workflowId = `retrain-test-${randomUUID()}`;
    const err = await withWorkers(activities, async (queues) => {
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [input(queues, 'bad')],
      });
      return handle.result().then(
        () => undefined,
        (e: unknown) => e,
      );
    });
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause?.cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).type).toBe('BAD_DATASET');
    expect((cause as ApplicationFailure).message).toContain('ratings.dat:7');
    // Non-retryable: exactly one attempt, and nothing after the failing stage ran.
    expect(calls).toEqual(['ingestDataset']);
    const row = await runs.getByWorkflowId(workflowId);
    expect(row?.status).toBe('failed');
    expect(row?.error).toContain('ratings.dat:7');
  });

  it('rejects a duplicate start with the same workflow id while the first is running', async () => {
    const activities = withTypedFailures({ ...bookkeepingActivities(ctx) }) as CorellaActivities;
    const workflowId = `retrain-test-${randomUUID()}`;
    await withWorkers(activities, async (queues) => {
      // No stage activities are registered on these queues, so the run stays in `ingest` until cancelled.
      const first = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [input(queues, 'dup')],
      });
      await expect(
        client.workflow.start('retrainWorkflow', {
          taskQueue: queues.cpu,
          workflowId,
          args: [input(queues, 'dup')],
        }),
      ).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
      await expect
        .poll(async () => (await first.query<RetrainProgress>('progress')).stage, { timeout: 20_000 })
        .toBe('ingest');
      await first.cancel();
      await expect(first.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    });
    const row = await runs.getByWorkflowId(workflowId);
    expect(row?.status).toBe('cancelled');
  });

  it('real activities: a malformed dataset fails the run at once, with no dataset version row and no artifact', async () => {
    const dataDir = join(storeDir, 'bad-movielens');
    const lines = movielensLines({ users: 6, movies: 10, ratingsPerUser: 8 });
    lines.ratings[4] = '1::3::9::978300999'; // rating 9 is out of range, on line 5
    await writeMovielens(dataDir, lines);
    const realStore = join(storeDir, 'real-artifacts');
    const realCtx: ActivityContext = { ...ctx, store: new FileArtifactStore(realStore) };
    const workflowId = `retrain-test-${randomUUID()}`;
    const started = Date.now();
    const err = await withWorkers(createActivities(realCtx), async (queues) => {
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [{ ...input(queues, 'malformed'), dataset: { source: 'movielens-1m', dir: dataDir } }],
      });
      return handle.result().then(
        () => undefined,
        (e: unknown) => e,
      );
    });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause?.cause as ApplicationFailure;
    expect(cause.type).toBe('BAD_DATASET');
    expect(cause.message).toMatch(/ratings\.dat:5/);
    const row = await runs.getByWorkflowId(workflowId);
    expect(row?.status).toBe('failed');
    expect(row?.datasetVersionId).toBeNull();
    const versions = await ctx.db.select().from(datasetVersions);
    expect(versions).toEqual([]);
    expect(await listFiles(realStore)).toEqual([]);
  });

  it('a stage no worker takes: the follower says the run is waiting for a worker, and other commands list the run as open', async () => {
    const calls: string[] = [];
    // Ingest has a worker; the gpu queue has none, so trainCrm stays scheduled (a busy or absent gpu worker).
    const activities = withTypedFailures({
      ...bookkeepingActivities(ctx),
      ingestDataset: stubStages(calls).ingestDataset,
    }) as CorellaActivities;
    const workflowId = `retrain-test-${randomUUID()}`;
    await withWorkers(activities, async (queues) => {
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [input(queues, 'waiting')],
      });
      const lines: string[] = [];
      const stop = followProgress(handle, (l) => lines.push(l), { intervalMs: 200, waitingNoteMs: 1_500 });
      try {
        await expect
          .poll(() => lines.find((l) => l.includes('trainCrm: waiting')), { timeout: 30_000, interval: 200 })
          .toMatch(/^ {4}trainCrm: waiting \d+ s for a worker; those of its queue are busy/);
        await new Promise((r) => setTimeout(r, 1_500));
      } finally {
        await stop();
      }
      // Said once per activity attempt, not at every poll: stage 1's two gpu activities wait side by side.
      const waiting = lines.filter((l) => l.includes('waiting')).map((l) => l.trim().split(':')[0]);
      expect(waiting.sort()).toEqual(['extractLlmFeatures', 'trainCrm']);
      expect(lines).toContain('  stage: train-crm+llm-features');

      // Visibility is eventually consistent: the stage attribute may lag the history by a moment.
      await expect
        .poll(
          async () =>
            (await otherOpenRuns(client, `not-${workflowId}`, 1_000)).find(
              (r) => r.workflowId === workflowId,
            ),
          {
            timeout: 10_000,
          },
        )
        .toMatchObject({ type: 'retrainWorkflow', stage: 'train-crm+llm-features' });
      expect((await otherOpenRuns(client, workflowId, 1_000)).map((r) => r.workflowId)).not.toContain(
        workflowId,
      );
      // The note's advice, from the command line: `corella runs cancel` returns once the workflow has closed.
      const env = cliEnv(storeDir, {
        DATABASE_URL: dbUrl,
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        TEMPORAL_NAMESPACE: namespace,
      });
      const cancel = startCli(['runs', 'cancel', workflowId, '--json'], env);
      const exit = await cancel.exited();
      expect(exit.code, cancel.stderr()).toBe(0);
      expect(JSON.parse(cancel.stdout())).toEqual({ workflowId, status: 'CANCELLED' });
      await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
      // Cancelling it again is refused as bad input (exit 4), naming its status, with no stack trace.
      const again = startCli(['runs', 'cancel', workflowId], env);
      expect((await again.exited()).code).toBe(4);
      expect(again.stderr()).toContain(`${workflowId} is cancelled, not running: nothing to cancel`);
      expect(again.stderr()).not.toMatch(/\n\s+at /);
      const unknown = startCli(['runs', 'cancel', `retrain-no-such-${randomUUID()}`], env);
      expect((await unknown.exited()).code).toBe(4);
      expect(unknown.stderr()).toContain('runs cancel: no run or workflow retrain-no-such-');
    });
    expect(calls).toEqual(['ingestDataset']);
    expect((await runs.getByWorkflowId(workflowId))?.status).toBe('cancelled');
  });
});
