import { join } from 'node:path';
import { createActivities } from '../../activities/index.js';
import { createActivityContext } from '../../activities/context.js';
import { resolveDatabase } from '../services/embedded-postgres.js';
import { runWorkers, type QueueKind, type RunningWorkers } from '../../workers/run.js';
import { NAMESPACE_DEFAULT } from '../../workflows/search-attributes.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { resolveTemporalAddress } from '../client.js';
import { makeOutput } from '../output.js';
import { corellaHome } from '../services/paths.js';
import type { workerSpec } from '../specs/worker.js';

/** `corella worker --queue cpu|gpu`: one worker process, e.g. on a GPU machine pointed at a cluster. */
export async function worker({ values }: ArgsOf<typeof workerSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const queues = (values.queue ?? '').split(',').filter(Boolean);
  if (queues.length === 0 || queues.some((q) => q !== 'cpu' && q !== 'gpu')) {
    throw new UsageError('--queue must be cpu, gpu or cpu,gpu');
  }
  if (values['task-queue'] && queues.length !== 1)
    throw new UsageError('--task-queue names one queue: give one --queue');
  const concurrency = values.concurrency !== undefined ? Number(values.concurrency) : undefined;
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0)) {
    throw new UsageError('--concurrency must be a positive integer');
  }
  // Stop requests may arrive while we are still connecting: remember them and act once workers exist.
  let stopping = false;
  let running: RunningWorkers | undefined;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (running) void running.shutdown();
    // A worker whose parent is gone must not linger, whatever it is blocked on.
    setTimeout(() => process.exit(EXIT.ok), 60_000).unref();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // Started by `corella up` with an IPC channel: follow the parent down, whatever way it dies.
  if (process.send) {
    process.once('disconnect', stop);
    if (!process.connected) stop();
  }

  const home = corellaHome();
  const db = await resolveDatabase({ dataDir: join(home, 'pg') });
  const ctx = await createActivityContext({ databaseUrl: db.url, home });
  try {
    if (stopping) return EXIT.ok;
    const { address } = await resolveTemporalAddress(home);
    const namespace = process.env.TEMPORAL_NAMESPACE ?? NAMESPACE_DEFAULT;
    running = await runWorkers({
      queues: queues as QueueKind[],
      target: { address, namespace },
      activities: createActivities(ctx),
      gpuConcurrency: concurrency,
      taskQueues: values['task-queue']
        ? Object.fromEntries(queues.map((q) => [q, values['task-queue'] as string]))
        : undefined,
    });
    if (stopping) await running.shutdown();
    else
      out.info(
        `worker ${queues.join('+')} running against ${address} (namespace ${namespace})${running.metricsUrl ? `, metrics at ${running.metricsUrl}` : ''}; Ctrl-C stops it`,
      );
    await running.done;
    return EXIT.ok;
  } finally {
    await ctx.close();
    await db.stop();
  }
}
