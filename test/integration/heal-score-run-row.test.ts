import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type { BatchScoreInput } from '../../activities/types.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { fileActivityContext } from '../helpers/activity-context.js';

describe('a batch score keeps a run row with its root cause, as retrain and recalibrate do', () => {
  let testDb: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-score-'));
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a malformed input line fails the run row with BAD_DATASET naming the line, not "Activity task failed"', async () => {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `heal-score-cpu-${suffix}`, gpu: `heal-score-gpu-${suffix}` };
    const namespace = inject('temporalNamespace');
    const ctx = fileActivityContext(testDb.db, dir);
    const good = JSON.stringify({ user: '1', item: '2' });
    const { sha256: inputSha256 } = await ctx.store.put(`${good}\n{"user": \n${good}\n`);
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace });
    const workflowId = `score-heal-${suffix}`;
    try {
      const worker = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queues.cpu,
      });
      const input: BatchScoreInput = { inputSha256, inputName: 'requests.jsonl', model: 'champion', queues };
      const failure = await worker.runUntil(
        client.workflow.execute('scoreWorkflow', { taskQueue: queues.cpu, workflowId, args: [input] }).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );
      expect(failure).toBeInstanceOf(WorkflowFailedError);
    } finally {
      await connection.close();
      await nc.close();
    }
    const row = await new RunRepository(testDb.db).getByWorkflowId(workflowId);
    expect(row).toMatchObject({ kind: 'score', status: 'failed' });
    expect(row?.error).toMatch(/^BAD_DATASET: requests\.jsonl:2/);
    expect(row?.endedAt).not.toBeNull();
  }, 180_000);
});
