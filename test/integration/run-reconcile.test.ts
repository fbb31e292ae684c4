import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bookkeepingActivities } from '../../activities/bookkeeping.js';
import type { ActivityContext } from '../../activities/context.js';
import { withTypedFailures } from '../../activities/failures.js';
import type { CorellaActivities, RetrainInput } from '../../activities/types.js';
import { reconcileRuns } from '../../cli/reconcile.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';

describe('run rows of workflows ended from outside are reconciled with Temporal', () => {
  let dir: string;
  let testDb: TestDatabase;
  let connection: Connection;
  let client: Client;
  let runs: RunRepository;
  const namespace = inject('temporalNamespace');

  beforeAll(async () => {
    installWorkerRuntime();
    dir = await mkdtemp(join(tmpdir(), 'corella-reconcile-'));
    testDb = await createTestDatabase(inject('databaseUrl'));
    runs = new RunRepository(testDb.db);
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace });
  });
  afterAll(async () => {
    await connection?.close();
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * A CPU worker with the bookkeeping activities and an ingest that never ends, on a queue of its own: a run
   * stays in `ingest` (row `running`) until it is ended from outside.
   */
  async function withBookkeepingWorker<T>(fn: (queue: string) => Promise<T>): Promise<T> {
    const ctx: ActivityContext = {
      db: testDb.db,
      store: new FileArtifactStore(join(dir, 'store')),
      home: dir,
      close: async () => undefined,
    };
    const activities: Partial<CorellaActivities> = withTypedFailures({
      ...bookkeepingActivities(ctx),
      // Never finishes: heartbeats until Temporal says the workflow is gone, which cancels it.
      async ingestDataset() {
        const activity = Context.current();
        for (;;) {
          activity.heartbeat();
          await activity.sleep(200);
        }
      },
    });
    const queue = `test-reconcile-${randomUUID().slice(0, 8)}`;
    const { createCpuWorker } = await import('../../workers/cpu.js');
    const { NativeConnection } = await import('@temporalio/worker');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    try {
      const worker = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queue });
      return await worker.runUntil(fn(queue));
    } finally {
      await nc.close();
    }
  }

  function input(queue: string): RetrainInput {
    return {
      dataset: { source: 'movielens-1m', dir: '/nonexistent' },
      config: {},
      configHash: 'reconcile',
      trigger: 'test',
      queues: { cpu: queue, gpu: `${queue}-gpu` },
      // Heartbeats are sent often enough that the ingest stub learns of the end within about a second.
      heartbeatTimeout: '2s',
    };
  }

  async function rowRunning(workflowId: string): Promise<void> {
    await expect
      .poll(async () => (await runs.getByWorkflowId(workflowId))?.status, { timeout: 20_000 })
      .toBe('running');
  }

  it('a terminated run becomes `terminated` through `corella runs show` and `runs list`, once', async () => {
    const workflowId = `retrain-terminated-${randomUUID()}`;
    await withBookkeepingWorker(async (queue) => {
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queue,
        workflowId,
        args: [input(queue)],
      });
      await rowRunning(workflowId);
      await handle.terminate('operator pulled the plug');
      await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    });
    // The gap being closed: the workflow's own finishRun never ran.
    const stale = await runs.getByWorkflowId(workflowId);
    expect(stale?.status).toBe('running');

    const env = cliEnv(dir, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: namespace,
    });
    const show = startCli(['runs', 'show', workflowId, '--json'], env);
    const shown = await show.exited();
    expect(shown.code, show.stderr()).toBe(0);
    const details = JSON.parse(show.stdout()) as {
      run: { status: string; error: string | null; endedAt: string | null; summary: Record<string, unknown> };
    };
    expect(details.run.status).toBe('terminated');
    expect(details.run.error).toContain('operator pulled the plug');
    expect(details.run.endedAt).not.toBeNull();
    expect(details.run.summary.reconciliation).toMatchObject({
      status: 'terminated',
      temporalStatus: 'TERMINATED',
      reason: 'operator pulled the plug',
    });
    expect(show.stderr()).toMatch(/running → terminated/);

    // Idempotent: a second pass (runs list) finds nothing to do and leaves the row exactly as it was.
    const before = await runs.getByWorkflowId(workflowId);
    const list = startCli(['runs', 'list', '--json'], env);
    const listed = await list.exited();
    expect(listed.code, list.stderr()).toBe(0);
    const rows = JSON.parse(list.stdout()) as { workflowId: string; status: string }[];
    expect(rows.find((r) => r.workflowId === workflowId)?.status).toBe('terminated');
    expect(list.stderr()).not.toMatch(/running →/);
    expect(await runs.getByWorkflowId(workflowId)).toEqual(before);

    // Temporal lets a terminated id be started again: the row is reopened as a new attempt.
    const reopened = await runs.start({ workflowId, kind: 'retrain' });
    expect(reopened.status).toBe('running');
    expect(reopened.attempt).toBe(2);
    await runs.fail(reopened.id, 'test over');
  }, 120_000);

  it('a timed-out run becomes `timed_out`; a live run and a workflow unknown to Temporal are left alone', async () => {
    const timedOutId = `retrain-timeout-${randomUUID()}`;
    const liveId = `retrain-live-${randomUUID()}`;
    const unknown = await runs.start({ workflowId: `retrain-unknown-${randomUUID()}`, kind: 'retrain' });
    await withBookkeepingWorker(async (queue) => {
      const timed = await client.workflow.start('retrainWorkflow', {
        taskQueue: queue,
        workflowId: timedOutId,
        args: [input(queue)],
        workflowExecutionTimeout: '3s',
      });
      const live = await client.workflow.start('retrainWorkflow', {
        taskQueue: queue,
        workflowId: liveId,
        args: [input(queue)],
      });
      await rowRunning(timedOutId);
      await rowRunning(liveId);
      await expect(timed.result()).rejects.toBeInstanceOf(WorkflowFailedError);

      const settled = await reconcileRuns(testDb.db, client);
      expect(settled.map((r) => [r.workflowId, r.status])).toEqual([[timedOutId, 'timed_out']]);
      expect(settled[0].temporalStatus).toBe('TIMED_OUT');
      await live.terminate('test over');
    });
    const timedOut = await runs.getByWorkflowId(timedOutId);
    expect(timedOut?.status).toBe('timed_out');
    expect(timedOut?.error).toMatch(/timed out in Temporal/);
    expect((await runs.get(unknown.id))?.status).toBe('running');
    expect((await runs.getByWorkflowId(liveId))?.status).toBe('running');
  }, 120_000);
});
