import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type { CorellaActivities, RetrainInput } from '../../activities/types.js';
import { openDatabase, type DatabaseHandle } from '../../db/connection.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { fileActivityContext } from '../helpers/activity-context.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';

/**
 * A TCP hop in front of the test's Postgres that can go away entirely (refusing connections, dropping the
 * open ones: what clients see while a postmaster is down) and come back on the same port.
 */
function outageProxy(target: { host: string; port: number }) {
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  let port = 0;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      if (server) return resolve();
      server = net.createServer((client) => {
        const upstream = net.connect(target.port, target.host);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => {
            sockets.delete(s);
            client.destroy();
            upstream.destroy();
          });
          s.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        port = (server!.address() as net.AddressInfo).port;
        resolve();
      });
    });
  const down = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });
  return { up, down, port: () => port };
}

async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApplicationFailure) return e;
    throw e;
  }
  throw new Error('expected a failure');
}

describe('a database outage is a wait, and database errors are short and typed', () => {
  let testDb: TestDatabase;
  let proxied: DatabaseHandle;
  let proxy: ReturnType<typeof outageProxy>;
  let acts: CorellaActivities;
  let dir: string;
  const savedWait = process.env.CORELLA_DB_WAIT;

  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    const url = new URL(testDb.url);
    proxy = outageProxy({ host: url.hostname, port: Number(url.port || 5432) });
    await proxy.up();
    const via = new URL(testDb.url);
    via.hostname = '127.0.0.1';
    via.port = String(proxy.port());
    proxied = openDatabase(via.toString(), { connectionTimeoutMillis: 2_000, onIdleError: () => undefined });
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-db-'));
    acts = createActivities(fileActivityContext(proxied.db, dir));
  });
  afterAll(async () => {
    if (savedWait === undefined) delete process.env.CORELLA_DB_WAIT;
    else process.env.CORELLA_DB_WAIT = savedWait;
    await proxy?.up().catch(() => undefined);
    await proxied?.close();
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('an activity waits out a 12 s outage (longer than the repositories own retries) and writes its rows once', async () => {
    delete process.env.CORELLA_DB_WAIT;
    const { runId } = await acts.startRun({
      workflowId: `outage-${randomUUID()}`,
      kind: 'recalibrate',
      config: {},
      datasetLabel: 'probe',
    });
    await proxy.down();
    const t0 = Date.now();
    const write = acts.recordMetrics({ runId, metrics: { 'probe.a': 1, 'probe.b': 2 } });
    await new Promise((r) => setTimeout(r, 12_000));
    await proxy.up();
    await write;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(12_000);
    const details = await new RunRepository(testDb.db).show(runId);
    expect(details?.metrics.map((m) => [m.key, m.value])).toEqual([
      ['probe.a', 1],
      ['probe.b', 2],
    ]);
  }, 60_000);

  it('past CORELLA_DB_WAIT it fails as DB_UNAVAILABLE naming the address, in one short line', async () => {
    process.env.CORELLA_DB_WAIT = '2s';
    const { runId } = await acts.startRun({
      workflowId: `outage-${randomUUID()}`,
      kind: 'recalibrate',
      config: {},
      datasetLabel: 'probe',
    });
    await proxy.down();
    try {
      const f = await failureOf(acts.recordMetrics({ runId, metrics: { x: 1 } }));
      expect(f.type).toBe('DB_UNAVAILABLE');
      expect(f.message).toBe(`DB_UNAVAILABLE: ECONNREFUSED 127.0.0.1:${proxy.port()}`);
      expect(f.nonRetryable).toBe(false);
    } finally {
      await proxy.up();
      delete process.env.CORELLA_DB_WAIT;
    }
  }, 60_000);

  it('a refused statement is DB_ERROR with its SQL state and constraint, never the statement or its values', async () => {
    const values = Object.fromEntries(
      Array.from({ length: 400 }, (_, i) => [`metric.${i}`, i + 0.123456789]),
    );
    const f = await failureOf(acts.recordMetrics({ runId: randomUUID(), metrics: values }));
    expect(f.type).toBe('DB_ERROR');
    expect(f.message).toMatch(/^DB_ERROR: SQLSTATE 23503 \(constraint [a-z_]+, table run_metrics\): /);
    expect(f.message).not.toMatch(/insert into|metric\.12|0\.123456789/i);
    expect(f.message.length).toBeLessThan(400);
    expect(JSON.stringify(f).length).toBeLessThan(4_000);
  }, 60_000);

  it('under a real worker, the waiting activity heartbeats: an outage 3× its heartbeat timeout costs no attempt', async () => {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `heal-db-cpu-${suffix}`, gpu: `heal-db-gpu-${suffix}` };
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    try {
      const worker = await createCpuWorker({
        connection: nc,
        namespace: inject('temporalNamespace'),
        activities: acts,
        taskQueue: queues.cpu,
      });
      const workflowId = `retrain-outage-${suffix}`;
      await worker.runUntil(async () => {
        await proxy.down();
        const input: RetrainInput = {
          dataset: { source: 'synthetic-movielens', dir: join(dir, 'never-read') },
          config: tinyPipelineConfig(join(dir, 'none.gguf')),
          configHash: suffix,
          trigger: 'test',
          queues,
          heartbeatTimeout: '3s',
        };
        const handle = await client.workflow.start('retrainWorkflow', {
          taskQueue: queues.cpu,
          workflowId,
          args: [input],
        });
        // The run row's start waits for the database while the outage lasts.
        await new Promise((r) => setTimeout(r, 10_000));
        await proxy.up();
        await expectEventually(
          async () => (await new RunRepository(testDb.db).getByWorkflowId(workflowId))?.id,
        );
        const history = await handle.fetchHistory();
        const startedAttempts = (history.events ?? [])
          .filter((e) => e.activityTaskStartedEventAttributes)
          .map((e) => e.activityTaskStartedEventAttributes!.attempt);
        const timedOut = (history.events ?? []).filter((e) => e.activityTaskTimedOutEventAttributes);
        expect(timedOut).toHaveLength(0);
        expect(startedAttempts[0]).toBe(1);
        await handle.terminate('test over');
      });
    } finally {
      await connection.close();
      await nc.close();
    }
  }, 120_000);
});

async function expectEventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 250));
  }
}
