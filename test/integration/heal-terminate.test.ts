import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type { RetrainInput } from '../../activities/types.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { DEFAULT_HEARTBEAT_TIMEOUT } from '../../workflows/retrain.js';
import { fileActivityContext } from '../helpers/activity-context.js';
import { pendingActivity } from '../helpers/heal-up.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

describe('an activity stops within a heartbeat once its workflow is terminated', () => {
  let testDb: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-term-'));
    writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 2 });
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('terminating a run mid-training frees the GPU worker within seconds, at the default heartbeat timeout', async () => {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `heal-term-cpu-${suffix}`, gpu: `heal-term-gpu-${suffix}` };
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace });
    const acts = createActivities(fileActivityContext(testDb.db, dir));
    try {
      const cpu = await createCpuWorker({
        connection: nc,
        namespace,
        activities: acts,
        taskQueue: queues.cpu,
      });
      const gpu = await createGpuWorker({
        connection: nc,
        namespace,
        activities: acts,
        taskQueue: queues.gpu,
      });
      const config = tinyPipelineConfig(join(dir, 'tiny.gguf'));
      config.crm = { ...config.crm, epochs: 200, patience: 200, mlp: [256, 128], embeddingDim: 16 };
      // No heartbeatTimeout: the workflow's default, which is what `up` runs with.
      const input: RetrainInput = {
        dataset: {
          source: 'synthetic-movielens',
          dir: join(dir, 'datasets', 'synthetic'),
          params: { synthetic: { seed: 4, users: 600, items: 300, ratingsPerUser: 40 } },
        },
        config,
        configHash: suffix,
        trigger: 'test',
        queues,
      };
      const elapsed = await cpu.runUntil(
        gpu.runUntil(async () => {
          const workflowId = `retrain-term-${suffix}`;
          const handle = await client.workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId,
            args: [input],
          });
          const deadline = Date.now() + 300_000;
          for (;;) {
            const a = await pendingActivity(client, workflowId, 'trainCrm');
            if (a?.state === 2 && a.heartbeats) break;
            if (Date.now() > deadline) throw new Error('trainCrm never ran');
            await new Promise((r) => setTimeout(r, 250));
          }
          // Training is in flight on the GPU worker; terminate the workflow from outside.
          expect(gpu.getStatus().numInFlightActivities).toBeGreaterThan(0);
          const t0 = Date.now();
          await handle.terminate('test: terminated mid-training');
          while (gpu.getStatus().numInFlightActivities > 0) {
            if (Date.now() - t0 > 120_000)
              throw new Error('training still running 2 minutes after terminate');
            await new Promise((r) => setTimeout(r, 100));
          }
          return Date.now() - t0;
        }),
      );
      console.log(
        `heal-terminate: training stopped ${elapsed} ms after terminate (heartbeat timeout ${DEFAULT_HEARTBEAT_TIMEOUT})`,
      );
      // A heartbeat every 2 s at most (the workers' throttle) carries the news; before, it was 0.8 × 2 min
      // (96 s). Quiet it takes a few seconds; a fresh-clone CI at load 12-15 on 2 cores measured 15 s, so the
      // bound is set between that and the old 96 s.
      expect(elapsed).toBeLessThan(40_000);
    } finally {
      await connection.close();
      await nc.close();
    }
  }, 400_000);
});
