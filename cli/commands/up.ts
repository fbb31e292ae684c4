import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import type { RetrainResult } from '../../activities/types.js';
import { migrateUrl } from '../../activities/context.js';
import { openDatabase } from '../../db/connection.js';
import { reconcileRuns } from '../reconcile.js';
import { failureExitCode, failureMessage } from '../failure.js';
import { resultThroughOutages } from '../await-result.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { startServer, type RunningServer } from '../../serve/server.js';
import { databaseStorage } from '../../serve/storage.js';
import { connectClient, workflowUiUrl } from '../client.js';
import { prepareRun, type PreparedRun } from '../prepare-run.js';
import { makeOutput, type Output } from '../output.js';
import { followProgress } from '../follow-progress.js';
import { summaryTable } from '../run-summary.js';
import { listenForStop } from '../stop-signal.js';
import { corellaHome, readyDatabase, repoRoot } from '../services/paths.js';
import { lockHome } from '../services/home-lock.js';
import { startStack, type Stack } from '../services/stack.js';
import { Supervisor, type SupervisedWorker } from '../services/supervisor.js';
import type { upSpec } from '../specs/up.js';
import { parseAddress } from '../../workers/address.js';
import { startRetrain } from '../start-retrain.js';
import { noteOpenRuns } from '../open-runs.js';

/** Starts one `corella worker` child per queue, so the embedded default is one process tree. */
function spawnWorker(queue: 'cpu' | 'gpu', env: NodeJS.ProcessEnv): ChildProcess {
  // The IPC channel closes when this process dies, even by SIGKILL: the worker then shuts itself down.
  return spawn(process.execPath, [join(repoRoot, 'bin', 'corella.mjs'), 'worker', '--queue', queue], {
    env: metricsEnv(queue, env),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

/** Both workers of one machine cannot bind one metrics port: the gpu worker takes CORELLA_METRICS_ADDRESS + 1. */
function metricsEnv(queue: 'cpu' | 'gpu', env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const spec = env.CORELLA_METRICS_ADDRESS?.trim();
  if (!spec || queue === 'cpu') return env;
  const { host, port } = parseAddress(spec);
  return port === 0 ? env : { ...env, CORELLA_METRICS_ADDRESS: `${host}:${port + 1}` };
}

/** For the summary: synthetic data is never passed off as real, and a download says so. */
function describeOrigin(data: PreparedRun['data']): string {
  if (data.origin === 'synthetic') return '(SYNTHETIC, generated)';
  if (data.origin === 'download') return `(downloaded MovieLens-1M, ${data.spec.dir})`;
  if (data.origin === 'cache') return `(MovieLens-1M download cached in ${data.spec.dir})`;
  return `(${data.spec.dir})`;
}

function announceSynthetic(out: Output): void {
  const text = [
    'NO REAL DATASET: none configured, and MovieLens-1M is neither cached nor',
    'downloadable here. Using the SYNTHETIC MovieLens-style dataset (generated,',
    'seeded; not real data). Pass --data-dir or set CORELLA_DATA_DIR to a real',
    'MovieLens-1M / Amazon-Books / RecBole folder for real results.',
  ];
  const rule = '*'.repeat(84);
  out.info(['', rule, ...text.map((l) => `*  ${l.padEnd(80)}*`), rule, ''].join('\n'));
}

/** Run rows a previous stack left `running` although their workflow closed (e.g. terminated) are settled. */
async function reconcileAtStart(stack: Stack, out: Output): Promise<void> {
  const handle = openDatabase(stack.databaseUrl);
  try {
    const tc = await connectClient({ address: stack.temporal.address, namespace: stack.temporal.namespace });
    try {
      for (const r of await reconcileRuns(handle.db, tc.client)) {
        out.info(`run ${r.runId.slice(0, 8)} (${r.workflowId}): running → ${r.status}: ${r.note}`);
      }
    } finally {
      await tc.close();
    }
  } catch (e) {
    out.warn(`could not reconcile running runs with Temporal: ${(e as Error).message}`);
  } finally {
    await handle.close();
  }
}

function waitUntil(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      }
    }, 200);
  });
}

/**
 * `corella up`: the embedded default. Postgres, a Temporal dev server and one worker process per queue, then
 * the retrain pipeline (unless --no-run), a summary, and with --keep-alive everything stays up until Ctrl-C.
 */
export async function up({ values }: ArgsOf<typeof upSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  if (values.serve && !values['keep-alive'] && !values['no-run'])
    throw new UsageError('--serve needs --keep-alive (or --no-run): the service runs until Ctrl-C');
  if (!/^\d+$/.test(values['serve-port'])) throw new UsageError('--serve-port must be a port number');
  const home = corellaHome();
  let prepared: PreparedRun | undefined;
  if (!values['no-run']) {
    prepared = await prepareRun(values, home, out.info);
    if (prepared.data.origin === 'synthetic') announceSynthetic(out);
  }

  // From here on a signal must stop what was started, so it is heard before anything starts (a SIGTERM
  // during startStack used to kill us with Postgres and the dev server left running).
  let interrupted = false;
  let halt = (): void => undefined;
  const stop = listenForStop(() => {
    interrupted = true;
    halt();
    out.info('shutting down…');
  });
  let unlock: () => Promise<void>;
  try {
    unlock = await lockHome(home);
  } catch (e) {
    stop.dispose();
    throw e;
  }
  let stack: Stack;
  try {
    stack = await startStack({ log: out.info });
  } catch (e) {
    await unlock();
    stop.dispose();
    throw e;
  }
  if (stop.requested) {
    await stack.stop();
    await unlock();
    stop.dispose();
    if (prepared) out.warn('interrupted while the stack was starting: the run was not started');
    return prepared ? EXIT.runFailed : EXIT.ok;
  }
  const workers: SupervisedWorker[] = [];
  // Workers that die are restarted; Postgres and the dev server are probed and restarted when they die.
  const supervisor = new Supervisor({
    log: out.info,
    onServiceRestarted: async () => {
      // A service that came back on another port: workers must reconnect with the new address.
      if (env.DATABASE_URL === stack.databaseUrl && env.TEMPORAL_ADDRESS === stack.temporal.address) return;
      env.DATABASE_URL = stack.databaseUrl;
      env.TEMPORAL_ADDRESS = stack.temporal.address;
      await readyDatabase(home, stack.databaseUrl);
      out.info(`services moved (Temporal ${stack.temporal.address}): restarting the workers`);
      await Promise.all(workers.map((w) => w.restart()));
    },
  });
  const env: NodeJS.ProcessEnv = { ...process.env };
  let server: RunningServer | undefined;
  halt = () => supervisor.halt();
  try {
    await migrateUrl(stack.databaseUrl);
    await reconcileAtStart(stack, out);
    Object.assign(env, {
      DATABASE_URL: stack.databaseUrl,
      TEMPORAL_ADDRESS: stack.temporal.address,
      TEMPORAL_NAMESPACE: stack.temporal.namespace,
      CORELLA_HOME: home,
    });
    for (const queue of ['cpu', 'gpu'] as const)
      workers.push(supervisor.watchWorker(queue, () => spawnWorker(queue, env)));
    for (const service of stack.services) supervisor.watchService(service);
    // Something that cannot come back ends `up` with exit 3 rather than a stack that claims to be up.
    let down: Error | undefined;
    void supervisor.failed.then((e) => {
      down = e;
      out.warn(`corella up: ${e.message}`);
    });
    const dead = (): boolean => down !== undefined;
    const ready = {
      ready: true,
      ...(await readyDatabase(home, stack.databaseUrl)),
      temporalAddress: stack.temporal.address,
      namespace: stack.temporal.namespace,
      ui: stack.temporal.uiUrl,
      workerPids: workers.map((w) => w.pid()),
    };
    // One machine-readable line, so scripts and tests know when and where the stack is up.
    out.info(`corella-ready ${JSON.stringify(ready)}`);
    if (stack.temporal.uiUrl) out.info(`Temporal UI: ${stack.temporal.uiUrl}`);

    if (prepared) {
      const code = await runRetrain(prepared, stack, out, () => interrupted, dead);
      if (dead()) return EXIT.unavailable;
      if (code !== EXIT.ok || !values['keep-alive']) return code;
    }
    if (values.serve) {
      server = await startServer({
        databaseUrl: stack.databaseUrl,
        store: openArtifactStore(home),
        home,
        port: Number(values['serve-port']),
        storage: (db) => databaseStorage(db, { spoolDir: join(home, 'serve-spool') }),
        log: (m) => out.info(`serve: ${m}`),
      });
      out.info(`corella serve: ${server.url} (POST /v1/score, /v1/feedback; GET /readyz, /metrics)`);
    }
    out.info(
      `Postgres, Temporal${server ? ', workers and the scoring service' : ' and workers'} are up; Ctrl-C stops everything`,
    );
    await waitUntil(() => interrupted || dead());
    return dead() ? EXIT.unavailable : EXIT.ok;
  } finally {
    await server?.close();
    await supervisor.stop();
    await stack.stop();
    await unlock();
    stop.dispose();
  }
}

async function runRetrain(
  prepared: PreparedRun,
  stack: Stack,
  out: Output,
  interrupted: () => boolean,
  dead: () => boolean = () => false,
): Promise<number> {
  const { data } = prepared;
  const tc = await connectClient({
    address: stack.temporal.address,
    namespace: stack.temporal.namespace,
    uiBase: stack.temporal.uiUrl,
  });
  try {
    const { workflowId: id, started, handle } = await startRetrain(tc.client, prepared, 'corella up');
    out.info(started ? `started ${id}` : `${id} was already started (running or completed): following it`);
    const ui = workflowUiUrl(stack.temporal.uiUrl, tc.namespace, id);
    if (ui) out.info(`run in the Temporal UI: ${ui}`);
    for (const l of await noteOpenRuns(tc.client, id, (w) =>
      workflowUiUrl(stack.temporal.uiUrl, tc.namespace, w),
    ))
      out.info(l);
    const stopFollowing = followProgress(handle, out.info, {
      withDeadline: (deadline, fn) => tc.client.connection.withDeadline(deadline, fn),
    });
    let result: RetrainResult;
    try {
      result = await resultThroughOutages<RetrainResult>(handle, {
        log: out.info,
        stop: () =>
          dead()
            ? 'the stack went down before the run finished'
            : interrupted()
              ? 'interrupted before the run finished (it continues when the stack is started again)'
              : undefined,
      });
    } catch (e) {
      if (e instanceof WorkflowFailedError) {
        const cause = failureMessage(e);
        out.result(
          { workflowId: id, failed: cause, ui },
          () => `run ${id} FAILED: ${cause}${ui ? `\n${ui}` : ''}`,
        );
        return failureExitCode(e);
      }
      if (dead()) return EXIT.unavailable;
      throw e;
    } finally {
      await stopFollowing();
    }
    out.result({ ...result, datasetSource: data.spec.source, datasetOrigin: data.origin, ui }, () =>
      [
        '',
        `dataset: ${data.spec.source} ${describeOrigin(data)}`,
        summaryTable(result),
        ui ? `Temporal UI: ${ui}` : '',
      ].join('\n'),
    );
    return EXIT.ok;
  } finally {
    await tc.close();
  }
}
