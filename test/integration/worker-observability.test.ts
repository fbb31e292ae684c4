import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import type { recalibrateWorkflow } from '../../workflows/index.js';
import { freeLoopbackPort } from '../../workers/metrics.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';

/** A real `corella worker` process: its /metrics (ours plus the SDK core's) and its JSON log lines. */
describe('worker metrics and JSON logs', () => {
  let home: string;
  let testDb: TestDatabase;
  let worker: CliProcess | undefined;

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'corella-obs-'));
    testDb = await createTestDatabase(inject('databaseUrl'));
  });
  afterAll(async () => {
    if (worker && worker.child.exitCode === null) {
      worker.child.kill('SIGTERM');
      await worker.exited();
    }
    await testDb?.close();
    await rm(home, { recursive: true, force: true });
  }, 90_000);

  it('exports activity durations and the Temporal runtime metrics, and logs JSON lines carrying workflow and activity ids', async () => {
    const suffix = randomBytes(4).toString('hex');
    const taskQueue = `obs-cpu-${suffix}`;
    const workflowId = `obs-recalibrate-${suffix}`;
    const port = await freeLoopbackPort();
    const namespace = inject('temporalNamespace');
    worker = startCli(
      ['worker', '--queue', 'cpu', '--task-queue', taskQueue],
      cliEnv(home, {
        DATABASE_URL: testDb.url,
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        TEMPORAL_NAMESPACE: namespace,
        CORELLA_METRICS_ADDRESS: `127.0.0.1:${port}`,
        CORELLA_LOG_FORMAT: 'json',
        CORELLA_LOG_LEVEL: 'DEBUG',
      }),
    );
    const w = worker;
    const deadline = Date.now() + 150_000;
    while (!/worker cpu running/.test(w.stderr())) {
      if (w.child.exitCode !== null || Date.now() > deadline)
        throw new Error(`worker did not start:\n${w.stderr()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const url = `http://127.0.0.1:${port}/metrics`;
    expect(w.stderr()).toContain(`metrics at ${url}`);

    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const client = new Client({ connection, namespace });
      const handle = await client.workflow.start<typeof recalibrateWorkflow>('recalibrateWorkflow', {
        taskQueue,
        workflowId,
        args: [{ queues: { cpu: taskQueue, gpu: taskQueue } }],
      });
      // An empty registry: the first activity fails with its typed error, the workflow records it and fails.
      await handle.result().catch(() => undefined);
    } finally {
      await connection.close();
    }

    const res = await fetch(url);
    expect(res.status).toBe(200);
    const text = await res.text();
    const samples = text.split('\n').filter((l) => l && !l.startsWith('#'));
    const ours = samples.filter((l) => l.startsWith('corella_worker_activity_seconds_count{'));
    expect(ours.length, text).toBeGreaterThan(0);
    expect(
      ours.some((l) => /outcome="failed"/.test(l) && Number(l.split(' ').pop()) >= 1),
      ours.join('\n'),
    ).toBe(true);
    expect(samples.some((l) => l.startsWith('corella_worker_process_'))).toBe(true);
    // The SDK core's own metrics, relayed from its exporter: task latencies and polls.
    const sdk = samples.filter((l) => l.startsWith('temporal_'));
    expect(sdk.length, text.slice(0, 2000)).toBeGreaterThan(0);
    expect(sdk.some((l) => l.startsWith('temporal_workflow_task_execution_latency'))).toBe(true);
    expect(sdk.some((l) => /^temporal_(activity_poll|workflow_task_queue_poll|num_pollers)/.test(l))).toBe(
      true,
    );
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);

    // Give the last log lines a moment to flush, then read them as JSON.
    await new Promise((r) => setTimeout(r, 500));
    const json = w
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json.length).toBeGreaterThan(0);
    const activityLines = json.filter((j) => j.workflowId === workflowId && typeof j.activityId === 'string');
    expect(activityLines.length, w.stderr().slice(-3000)).toBeGreaterThan(0);
    expect(activityLines[0]).toMatchObject({ activityType: expect.any(String), level: expect.any(String) });
    expect(
      json.some(
        (j) => j.workflowId === workflowId && j.workflowType === 'recalibrateWorkflow' && !j.activityId,
      ),
    ).toBe(true);
    // Apart from the CLI's own notice lines, stderr is JSON: no text lines from the SDK logger or core.
    const other = w
      .stderr()
      .split('\n')
      .filter((l) => l && !l.startsWith('{') && !/^(worker cpu running|corella:)/.test(l));
    expect(other.filter((l) => /\b(INFO|DEBUG|WARN)\b/.test(l))).toEqual([]);

    w.child.kill('SIGTERM');
    expect((await w.exited()).code).toBe(0);
  }, 240_000);
});
