import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { CorellaActivities } from '../activities/types.js';
import { GPU_ACTIVITIES } from '../activities/types.js';
import { TASK_QUEUE_CPU } from '../workflows/search-attributes.js';

// Compiled (dist/) this file is .js and so are the workflows beside it; from the sources (tsx, vitest) both
// are .ts. The worker bundles whichever it is given with webpack.
const ext = import.meta.url.endsWith('.js') ? 'js' : 'ts';
export const workflowsPath = fileURLToPath(new URL(`../workflows/index.${ext}`, import.meta.url));

/** The activities that belong on the CPU queue: everything but training and LLM work. */
export function cpuActivities(all: Partial<CorellaActivities>): Partial<CorellaActivities> {
  const out: Record<string, unknown> = { ...all };
  for (const name of GPU_ACTIVITIES) delete out[name];
  return out as Partial<CorellaActivities>;
}

/** Task queue `corella-cpu`: all workflows and the light activities. */
export function createCpuWorker(opts: {
  connection: NativeConnection;
  namespace: string;
  activities: Partial<CorellaActivities>;
  taskQueue?: string;
  extra?: Partial<WorkerOptions>;
}): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue ?? TASK_QUEUE_CPU,
    workflowsPath,
    activities: cpuActivities(opts.activities),
    shutdownGraceTime: '10s',
    // A heartbeat is also how a cancellation reaches a running activity: without this the SDK sends one at
    // most every 0.8 × heartbeatTimeout, so a terminated run kept training that long (issue 18).
    maxHeartbeatThrottleInterval: '2s',
    ...opts.extra,
  });
}
