import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { CorellaError } from '../../ml/errors.js';
import { NAMESPACE_DEFAULT, SEARCH_ATTRIBUTES } from '../../workflows/search-attributes.js';
import { choosePort, freePort, listensOn, preferredPort } from './ports.js';
import { repoRoot } from './paths.js';
import {
  isAlive,
  processCommandLine,
  readProcessRecord,
  removeProcessRecord,
  terminate,
  writeProcessRecord,
} from './process-file.js';
import { findTemporalCli } from './temporal-cli.js';

export interface TemporalServer {
  address: string;
  namespace: string;
  uiUrl: string | undefined;
  pid: number | undefined;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  /** Folder for the SQLite state, the log and the process record. */
  dir: string;
  namespace?: string;
  port?: number;
  uiPort?: number;
  headless?: boolean;
  /** Keep state in SQLite (default) or in memory (tests). */
  persistent?: boolean;
}

/** Polls until the frontend answers for our namespace. */
async function waitReady(address: string, namespace: string, timeoutMs: number, pid?: number): Promise<void> {
  const port = Number(address.split(':').pop());
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (pid !== undefined && !isAlive(pid)) {
      throw new CorellaError(
        'SERVICE_UNAVAILABLE',
        `the Temporal dev server (pid ${pid}) exited during start-up`,
      );
    }
    try {
      const conn = await Connection.connect({ address, connectTimeout: 2_000 });
      try {
        await conn.workflowService.describeNamespace({ namespace });
        // An answer from a server that is not ours (another stack took the port first) is not ready: ours
        // will fail to bind and exit, and the caller starts it again on another port.
        if (pid === undefined || (await listensOn(pid, port)) !== false) return;
        last = new Error(`port ${port} answers, but not from pid ${pid}`);
      } finally {
        await conn.close();
      }
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new CorellaError(
    'SERVICE_UNAVAILABLE',
    `the Temporal server at ${address} did not become ready in ${timeoutMs} ms: ${String(last)}`,
  );
}

/**
 * Starts (or adopts, after a crash of the process that started it) a `temporal server start-dev`
 * with our namespace and search attributes registered.
 */
export async function startTemporalDevServer(opts: DevServerOptions): Promise<TemporalServer> {
  const namespace = opts.namespace ?? NAMESPACE_DEFAULT;
  await mkdir(opts.dir, { recursive: true });
  const recordPath = join(opts.dir, 'server.json');
  const dbFile = join(opts.dir, 'temporal.sqlite');

  // An orphan from a SIGKILLed parent still holds the SQLite file: adopt it when healthy, else stop it.
  const prev = await readProcessRecord(recordPath);
  if (prev && isAlive(prev.pid)) {
    const cmd = (await processCommandLine(prev.pid))?.joined ?? '';
    if (cmd.includes('start-dev') && cmd.includes(opts.dir)) {
      const address = `127.0.0.1:${prev.port}`;
      try {
        await waitReady(address, namespace, 5_000, prev.pid);
        return makeHandle(address, namespace, prev.uiPort, prev.pid, recordPath);
      } catch {
        await terminate(prev.pid);
      }
    }
  }
  await removeProcessRecord(recordPath);

  const cli = await findTemporalCli({ install: true });
  // A port found free can be taken by another process before our server binds it; the server then exits
  // at start-up (waitReady never accepts another server's answer), and we try again on freshly chosen ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnDevServer(cli, opts, namespace, recordPath, dbFile);
    } catch (e) {
      const exited = e instanceof CorellaError && /exited during start-up/.test(e.message);
      if (!exited || attempt >= 3) throw e;
    }
  }
}

async function spawnDevServer(
  cli: string,
  opts: DevServerOptions,
  namespace: string,
  recordPath: string,
  dbFile: string,
): Promise<TemporalServer> {
  // Port 0 asks for any free port (tests); otherwise the preferred one or the next free one after it.
  const port =
    opts.port === 0
      ? await freePort()
      : await choosePort(opts.port ?? preferredPort(opts.dir, 7233, join(repoRoot, '.corella', 'temporal')));
  const headless = opts.headless ?? false;
  const uiPort = headless
    ? undefined
    : opts.uiPort === 0
      ? await freePort()
      : await choosePort(opts.uiPort ?? port + 1000);
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--namespace', namespace];
  if (opts.persistent ?? true) args.push('--db-filename', dbFile);
  if (uiPort !== undefined) args.push('--ui-port', String(uiPort));
  else args.push('--headless');
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES))
    args.push('--search-attribute', `${name}=${type}`);
  args.push('--log-level', 'warn');
  // The record path in argv lets a later start recognise this process as ours.
  args.push('--dynamic-config-value', `corella.dir="${opts.dir}"`);

  const log = await open(join(opts.dir, 'server.log'), 'a');
  const child = spawn(cli, args, { stdio: ['ignore', log.fd, log.fd], detached: false });
  await log.close();
  const pid = child.pid;
  if (pid === undefined) throw new CorellaError('SERVICE_UNAVAILABLE', `could not start ${cli}`);
  await writeProcessRecord(recordPath, { pid, port, uiPort, startedAt: new Date().toISOString() });
  const address = `127.0.0.1:${port}`;
  try {
    await waitReady(address, namespace, 60_000, pid);
  } catch (e) {
    await terminate(pid);
    await removeProcessRecord(recordPath);
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `${(e as Error).message} (log: ${join(opts.dir, 'server.log')})`,
      {
        cause: e,
      },
    );
  }
  return makeHandle(address, namespace, uiPort, pid, recordPath);
}

function makeHandle(
  address: string,
  namespace: string,
  uiPort: number | undefined,
  pid: number,
  recordPath: string,
): TemporalServer {
  return {
    address,
    namespace,
    pid,
    uiUrl: uiPort !== undefined ? `http://127.0.0.1:${uiPort}/namespaces/${namespace}/workflows` : undefined,
    async stop() {
      await terminate(pid);
      await removeProcessRecord(recordPath);
    },
  };
}

/** The address of a dev server another process started under `dir`, if it is still running. */
export async function findRunningDevServer(
  dir: string,
): Promise<{ address: string; uiPort?: number } | undefined> {
  const rec = await readProcessRecord(join(dir, 'server.json'));
  if (!rec || !isAlive(rec.pid)) return undefined;
  return { address: `127.0.0.1:${rec.port}`, uiPort: rec.uiPort };
}
