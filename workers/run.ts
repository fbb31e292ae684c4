import type { Worker } from '@temporalio/worker';
import type { CorellaActivities } from '../activities/types.js';
import { connectWorker, type TemporalTarget } from './connection.js';
import { createCpuWorker } from './cpu.js';
import { createGpuWorker, gpuActivities } from './gpu.js';
import { installWorkerObservability } from './runtime.js';

export type QueueKind = 'cpu' | 'gpu';

export interface RunningWorkers {
  /** Resolves when every worker has shut down; rejects if one crashed. */
  done: Promise<void>;
  /** The Prometheus endpoint, when CORELLA_METRICS_ADDRESS asked for one. */
  metricsUrl?: string;
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
  const obs = await installWorkerObservability();
  const extra = obs.metrics ? { interceptors: { activity: [obs.metrics.interceptor()] } } : undefined;
  let connection;
  try {
    connection = await connectWorker(opts.target);
  } catch (e) {
    await obs.close();
    throw e;
  }
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
              extra,
            })
          : await createGpuWorker({
              connection,
              namespace: opts.target.namespace,
              activities: opts.activities,
              concurrency: opts.gpuConcurrency,
              taskQueue: opts.taskQueues?.gpu,
              extra,
            }),
      );
    }
  } catch (e) {
    await connection.close();
    await obs.close();
    throw e;
  }
  const done = Promise.all(workers.map((w) => w.run())).then(
    async () => {
      await connection.close();
      await obs.close();
    },
    async (e: unknown) => {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await connection.close();
      await obs.close();
      throw e;
    },
  );
  return {
    done,
    metricsUrl: obs.endpoint?.url,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done.catch(() => undefined);
    },
  };
}
