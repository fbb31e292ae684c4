import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { CorellaActivities } from '../activities/types.js';
import { GPU_ACTIVITIES } from '../activities/types.js';
import { TASK_QUEUE_GPU } from '../workflows/search-attributes.js';

export function gpuActivities(all: Partial<CorellaActivities>): Partial<CorellaActivities> {
  const out: Record<string, unknown> = {};
  for (const name of GPU_ACTIVITIES) if (all[name]) out[name] = all[name];
  return out as Partial<CorellaActivities>;
}

/**
 * Task queue `corella-gpu`: training and LLM activities. One activity at a time per GPU by default, since
 * a second model on the same device would only contend for its memory.
 */
export function createGpuWorker(opts: {
  connection: NativeConnection;
  namespace: string;
  activities: Partial<CorellaActivities>;
  concurrency?: number;
  taskQueue?: string;
  extra?: Partial<WorkerOptions>;
}): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue ?? TASK_QUEUE_GPU,
    activities: gpuActivities(opts.activities),
    maxConcurrentActivityTaskExecutions: opts.concurrency ?? Number(process.env.CORELLA_GPU_CONCURRENCY ?? 1),
    shutdownGraceTime: '30s',
    // A heartbeat is also how a cancellation reaches a running activity: without this the SDK sends one at
    // most every 0.8 × heartbeatTimeout, so a terminated run kept training that long (issue 18).
    maxHeartbeatThrottleInterval: '2s',
    ...opts.extra,
  });
}
