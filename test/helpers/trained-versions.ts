import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { ActivityContext } from '../../activities/context.js';
import { createActivities } from '../../activities/index.js';
import type { PipelineConfig, RetrainInput, RetrainResult } from '../../activities/types.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';

export interface TemporalTarget {
  address: string;
  namespace: string;
}

/** The synthetic dataset every serving test trains on (small enough for seconds, real enough to route). */
export function syntheticDataset(dir: string): RetrainInput['dataset'] {
  return {
    source: 'synthetic-movielens',
    dir: join(dir, 'datasets', 'synthetic'),
    params: { synthetic: { seed: 9, users: 80, items: 120, ratingsPerUser: 30 } },
  };
}

/**
 * Trains and registers model versions with the real retrainWorkflow (every real activity, a real worker pair
 * on the given Temporal), one per config, in order: the first becomes champion, later ones challengers.
 */
export async function trainVersions(
  ctx: ActivityContext,
  temporal: TemporalTarget,
  dir: string,
  configs: PipelineConfig[],
): Promise<RetrainResult[]> {
  installWorkerRuntime();
  const suffix = randomUUID().slice(0, 8);
  const queues = { cpu: `tv-cpu-${suffix}`, gpu: `tv-gpu-${suffix}` };
  const activities = createActivities(ctx);
  const nc = await NativeConnection.connect({ address: temporal.address });
  const conn = await Connection.connect({ address: temporal.address });
  try {
    const cpu = await createCpuWorker({
      connection: nc,
      namespace: temporal.namespace,
      activities,
      taskQueue: queues.cpu,
    });
    const gpu = await createGpuWorker({
      connection: nc,
      namespace: temporal.namespace,
      activities,
      taskQueue: queues.gpu,
    });
    const client = new Client({ connection: conn, namespace: temporal.namespace });
    return await cpu.runUntil(
      gpu.runUntil(async () => {
        const out: RetrainResult[] = [];
        for (const [i, config] of configs.entries()) {
          const input: RetrainInput = {
            dataset: syntheticDataset(dir),
            config,
            configHash: `tv-${suffix}-${i}`,
            trigger: 'test',
            queues,
          };
          const h = await client.workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId: `retrain-tv-${suffix}-${i}`,
            args: [input],
          });
          out.push((await h.result()) as RetrainResult);
        }
        return out;
      }),
    );
  } finally {
    await conn.close();
    await nc.close();
  }
}
