import type { Worker } from '@temporalio/worker';
import type { CorellaActivities } from '../activities/types.js';
import { connectWorker, type TemporalTarget } from './connection.js';
import { createCpuWorker } from './cpu.js';
import { createGpuWorker, gpuActivities } from './gpu.js';
import { installWorkerRuntime } from './runtime.js';

export type QueueKind = 'cpu' | 'gpu';

export interface RunningWorkers {
  /** Resolves when every worker has shut down; rejects if one crashed. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

/** Starts the workers of the given queues on one connection; `shutdown()` drains them gracefully. */
export async function runWorkers(opts: {
  queues: QueueKind[];
  target: TemporalTarget;
  activities: Partial<CorellaActivities>;
  gpuConcurrency?: number;
  /** Task queue names per kind, when not corella-cpu / corella-gpu. */
  taskQueues?: { cpu?: string; gpu?: string };
}): Promise<RunningWorkers> {
  installWorkerRuntime();
  const connection = await connectWorker(opts.target);
  const workers: Worker[] = [];
  try {
    for (const q of opts.queues) {
      if (q === 'gpu' && Object.keys(gpuActivities(opts.activities)).length === 0) continue;
      workers.push(
        q === 'cpu'
          ? await createCpuWorker({
              connection,
              namespace: opts.target.namespace,
              activities: opts.activities,
              taskQueue: opts.taskQueues?.cpu,
            })
          : await createGpuWorker({
              connection,
              namespace: opts.target.namespace,
              activities: opts.activities,
              concurrency: opts.gpuConcurrency,
              taskQueue: opts.taskQueues?.gpu,
            }),
      );
    }
  } catch (e) {
    await connection.close();
    throw e;
  }
  const done = Promise.all(workers.map((w) => w.run())).then(
    async () => {
      await connection.close();
    },
    async (e: unknown) => {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await connection.close();
      throw e;
    },
  );
  return {
    done,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done.catch(() => undefined);
    },
  };
}
