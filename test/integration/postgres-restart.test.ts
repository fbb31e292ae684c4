import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { createActivities } from '../../activities/index.js';
import type { RetrainInput, RetrainResult } from '../../activities/types.js';
import { openDatabase } from '../../db/connection.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../cli/services/embedded-postgres.js';
import { migrateDatabase } from '../../db/migrate.js';
import { calibrations, datasetVersions, modelVersions, runMetrics, runs } from '../../db/schema/index.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

describe('a Postgres restart in the middle of a run', () => {
  let dir = '';
  let pg: EmbeddedPostgres | undefined;
  afterAll(async () => {
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the run completes with no row lost or duplicated', async () => {
    installWorkerRuntime();
    dir = await mkdtemp(join(tmpdir(), 'corella-pgr-'));
    // A server of its own: restarting the shared one would disturb the other test files.
    const dataDir = join(dir, 'pg');
    pg = await startEmbeddedPostgres({ dataDir, port: 0 });
    const handle = openDatabase(pg.url, { onIdleError: () => undefined });
    await migrateDatabase(handle.db);
    const ctx: ActivityContext = {
      db: handle.db,
      store: new FileArtifactStore(join(dir, 'artifacts')),
      home: dir,
      close: () => handle.close(),
    };
    const model = join(dir, 'tiny.gguf');
    writeTinyGguf(model, { seed: 8 });
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `pgr-cpu-${suffix}`, gpu: `pgr-gpu-${suffix}` };
    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'data'),
        params: { synthetic: { seed: 6, users: 80, items: 120, ratingsPerUser: 30 } },
      },
      config: tinyPipelineConfig(model),
      configHash: 'pg-restart',
      queues,
    };
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const activities = createActivities(ctx);
    let result: RetrainResult;
    try {
      const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
      const gpu = await createGpuWorker({
        connection: nc,
        namespace,
        activities,
        taskQueue: queues.gpu,
        concurrency: 2,
      });
      result = await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await new Client({ connection: conn, namespace }).workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId: `retrain-pgr-${suffix}`,
            args: [input],
          });
          // Once the dataset version is written, stop Postgres for a few seconds mid-run.
          await expect
            .poll(async () => (await handle.db.select().from(datasetVersions)).length, {
              timeout: 120_000,
              interval: 200,
            })
            .toBe(1);
          await pg!.stop();
          await new Promise((r) => setTimeout(r, 4_000));
          pg = await startEmbeddedPostgres({ dataDir });
          return (await h.result()) as RetrainResult;
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }
    expect(result.alias).toBe('champion');
    const runRows = await handle.db.select().from(runs);
    expect(runRows.map((r) => r.status)).toEqual(['completed']);
    expect(await handle.db.select().from(datasetVersions)).toHaveLength(1);
    expect(await handle.db.select().from(modelVersions)).toHaveLength(1);
    expect(await handle.db.select().from(calibrations)).toHaveLength(1);
    const metrics = await handle.db.select().from(runMetrics);
    const keys = metrics.map((m) => `${m.key}@${m.step}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of ['dataset.users', 'crm.test.auc', 'eval.test.hybrid.auc'])
      expect(keys).toContain(`${k}@0`);
    await ctx.close();
  }, 600_000);
});
