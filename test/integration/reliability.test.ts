import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { createActivities } from '../../activities/index.js';
import type { RetrainInput, RetrainResult } from '../../activities/types.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import type { Progress } from '../../ml/progress.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { fileActivityContext } from '../helpers/activity-context.js';

/** The last heartbeat of a running activity of the given type, decoded. */
async function heartbeatOf(handle: WorkflowHandle, activity: string): Promise<Progress | undefined> {
  const d = await handle.describe();
  const a = (d.raw.pendingActivities ?? []).find((p) => p.activityType?.name === activity);
  const payload = a?.heartbeatDetails?.payloads?.[0];
  return payload ? (defaultPayloadConverter.fromPayload(payload as Payload) as Progress) : undefined;
}

describe('reliability: a killed GPU worker and a cancelled run', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ActivityContext;
  let connection: Connection;
  let client: Client;
  const children: CliProcess[] = [];
  const namespace = inject('temporalNamespace');

  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-rel-'));
    // The GPU worker processes use CORELLA_HOME=dir: the same artifact store as this test's context.
    ctx = fileActivityContext(testDb.db, dir);
    writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 2 });
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace });
  });
  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    await connection?.close();
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  function gpuWorker(queue: string): CliProcess {
    const env = cliEnv(dir, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: namespace,
      CORELLA_TF_BACKEND: 'wasm',
    });
    const c = startCli(['worker', '--queue', 'gpu', '--task-queue', queue, '--concurrency', '2'], env);
    children.push(c);
    return c;
  }

  function retrainInput(tag: string, queues: { cpu: string; gpu: string }, epochs: number): RetrainInput {
    const config = tinyPipelineConfig(join(dir, 'tiny.gguf'));
    config.crm = { ...config.crm, epochs, patience: epochs, mlp: [256, 128], embeddingDim: 16 };
    return {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 4, users: 900, items: 400, ratingsPerUser: 45 } },
      },
      config,
      configHash: tag,
      trigger: 'test',
      queues,
      heartbeatTimeout: '8s',
    };
  }

  /** A CPU worker in this process on fresh queues (the GPU worker is a child process the test controls). */
  async function withCpuWorker<T>(
    fn: (queues: { cpu: string; gpu: string }, suffix: string) => Promise<T>,
  ): Promise<T> {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `rel-cpu-${suffix}`, gpu: `rel-gpu-${suffix}` };
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    try {
      const cpu = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queues.cpu,
      });
      return await cpu.runUntil(fn(queues, suffix));
    } finally {
      await nc.close();
    }
  }

  it('SIGKILL of the GPU worker mid-training: a new worker resumes from the last checkpoint and one model version exists', async () => {
    let workflowId = '';
    const result = await withCpuWorker(async (queues, suffix) => {
      workflowId = `retrain-rel-${suffix}`;
      const first = gpuWorker(queues.gpu);
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        // Enough epochs that training outlasts a few heartbeats even on the native CRM path (~1 s an epoch
        // here), so the kill lands mid-training; without the addon it is slower, never faster.
        args: [retrainInput('kill', queues, 30)],
      });
      // Wait until at least two epochs are checkpointed, then kill the worker process outright.
      let seen: Progress | undefined;
      await expect
        .poll(
          async () => {
            const hb = await heartbeatOf(handle, 'trainCrm');
            if (hb?.stage === 'train-crm' && hb.checkpoint) seen = hb;
            return seen?.epoch ?? -1;
          },
          { timeout: 240_000, interval: 250 },
        )
        .toBeGreaterThanOrEqual(1);
      first.child.kill('SIGKILL');
      await first.exited();
      gpuWorker(queues.gpu);
      const r = (await handle.result()) as RetrainResult;
      return { r, epochAtKill: seen!.epoch! };
    });
    expect(result.r.metrics['crm.attempt']).toBeGreaterThanOrEqual(2);
    // Resumed: the retry started at or after the last epoch the killed attempt had checkpointed.
    expect(result.r.metrics['crm.startEpoch']).toBeGreaterThanOrEqual(result.epochAtKill);
    expect(result.r.metrics['crm.startEpoch']).toBeGreaterThan(0);
    const runs = new RunRepository(testDb.db);
    expect((await runs.getByWorkflowId(workflowId))?.status).toBe('completed');
    expect(await new ModelRepository(testDb.db).list()).toHaveLength(1);
  }, 600_000);

  it('LoRA mode: SIGKILL of the GPU worker mid joint training resumes from the last epoch checkpoint', async () => {
    const models = new ModelRepository(testDb.db);
    const before = (await models.list()).length;
    let workflowId = '';
    const result = await withCpuWorker(async (queues, suffix) => {
      workflowId = `retrain-rel-lora-${suffix}`;
      const input = retrainInput('kill-lora', queues, 2);
      input.dataset.params = { synthetic: { seed: 4, users: 80, items: 120, ratingsPerUser: 30 } };
      input.config = {
        ...input.config,
        llm: { ...input.config.llm, finetune: { method: 'lora', layers: 1, rank: 2 } },
        // Enough LoRA epochs (each a full pass over 128 prompts in tfjs) that the kill lands mid-stage-2.
        joint: {
          ...input.config.joint,
          stage2: { samples: 128, epochs: 24, batchSize: 32 },
          stage3: { samples: 32, epochs: 1, batchSize: 32 },
        },
      };
      const first = gpuWorker(queues.gpu);
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [input],
      });
      let seen: Progress | undefined;
      await expect
        .poll(
          async () => {
            const hb = await heartbeatOf(handle, 'trainJoint');
            if (hb?.stage === 'stage2' && hb.checkpoint) seen = hb;
            return seen?.done ?? 0;
          },
          { timeout: 300_000, interval: 250 },
        )
        .toBeGreaterThanOrEqual(1);
      first.child.kill('SIGKILL');
      await first.exited();
      gpuWorker(queues.gpu);
      const r = (await handle.result()) as RetrainResult;
      return { r, doneAtKill: seen!.done! };
    });
    const m = result.r.metrics;
    // The retry resumed after the last stage-2 epoch the killed attempt checkpointed (or later, in stage 3).
    expect(m['joint.attempt']).toBeGreaterThanOrEqual(2);
    const joint = Object.entries(m).filter(([k]) => k.startsWith('joint.'));
    expect(
      m['joint.resumedFrom.stage2'] ?? m['joint.resumedFrom.stage3'],
      JSON.stringify(joint),
    ).toBeDefined();
    if (m['joint.resumedFrom.stage2'] !== undefined)
      expect(m['joint.resumedFrom.stage2']).toBeGreaterThanOrEqual(result.doneAtKill);
    expect(m['eval.test.llm.auc']).toBeGreaterThan(0);
    expect((await new RunRepository(testDb.db).getByWorkflowId(workflowId))?.status).toBe('completed');
    const versions = await models.list();
    expect(versions.length).toBe(before + 1);
    expect(versions.find((v) => String(v.id) === result.r.modelVersionId)?.artifacts.llmLora).toMatch(
      /^[0-9a-f]{64}$/,
    );
  }, 600_000);

  it('cancelling a run during training stops it within the heartbeat timeout and registers nothing', async () => {
    const models = new ModelRepository(testDb.db);
    const before = (await models.list()).length;
    let workflowId = '';
    await withCpuWorker(async (queues, suffix) => {
      workflowId = `retrain-cancel-${suffix}`;
      const worker = gpuWorker(queues.gpu);
      const handle = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [retrainInput('cancel', queues, 50)],
      });
      await expect
        .poll(async () => (await heartbeatOf(handle, 'trainCrm'))?.stage, {
          timeout: 240_000,
          interval: 250,
        })
        .toBe('train-crm');
      const t0 = Date.now();
      await handle.cancel();
      // The workflow waits for its activities to acknowledge the cancellation (on their next heartbeat), so
      // its end means training has stopped.
      await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
      expect(Date.now() - t0).toBeLessThan(20_000);
      worker.child.kill('SIGTERM');
      await worker.exited();
    });
    expect((await new RunRepository(testDb.db).getByWorkflowId(workflowId))?.status).toBe('cancelled');
    expect((await models.list()).length).toBe(before);
  }, 600_000);
});
