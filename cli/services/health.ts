import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pg from 'pg';
import { isAlive } from './process-file.js';
import type { SupervisedService } from './supervisor.js';

/**
 * Alive and not a zombie. A daemonised postmaster's parent is init, and a container's PID 1 is often not a
 * real init that reaps: a SIGKILLed postmaster then stays a zombie that `kill(pid, 0)` still reports alive.
 */
export async function isRunning(pid: number): Promise<boolean> {
  if (!isAlive(pid)) return false;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S …": the state follows the last ')' (comm may itself contain parentheses).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true; // no /proc (macOS): kill(pid, 0) is all we have
  }
}

/** The postmaster's pid from the first line of its pid file; undefined when the file is gone. */
async function postmasterPid(dataDir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** `SELECT 1` on a fresh connection, bounded by `timeoutMs`. */
export async function postgresAnswers(url: string, timeoutMs = 5_000): Promise<boolean> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The frontend answers DescribeNamespace for our namespace within `timeoutMs`. */
export async function temporalAnswers(
  address: string,
  namespace: string,
  timeoutMs = 5_000,
): Promise<boolean> {
  let conn: Connection | undefined;
  try {
    conn = await Connection.connect({ address, connectTimeout: timeoutMs });
    await conn.withDeadline(Date.now() + timeoutMs, () =>
      conn!.workflowService.describeNamespace({ namespace }),
    );
    return true;
  } catch {
    return false;
  } finally {
    await conn?.close().catch(() => undefined);
  }
}

/**
 * Checks mostly by pid (cheap, and a SIGKILL is seen within one interval), and every `probeEvery`th time by
 * asking the server, which catches a live process that stopped answering.
 */
function probing(
  pid: () => Promise<number | undefined>,
  answers: () => Promise<boolean>,
  probeEvery: number,
): SupervisedService['check'] {
  let n = 0;
  return async () => {
    const p = await pid();
    if (p === undefined || !(await isRunning(p))) return 'dead';
    if (n++ % probeEvery !== 0) return 'ok';
    return (await answers()) ? 'ok' : 'unresponsive';
  };
}

/** The embedded Postgres on `dataDir`, restarted by `restart` (pg_ctl start on the same data dir). */
export function embeddedPostgresService(opts: {
  dataDir: string;
  url: () => string;
  restart: () => Promise<void>;
}): SupervisedService {
  return {
    name: 'Postgres',
    check: probing(
      () => postmasterPid(opts.dataDir),
      () => postgresAnswers(opts.url()),
      5,
    ),
    restart: opts.restart,
  };
}

/** The Temporal dev server we started, restarted by `restart` on the same SQLite file. */
export function temporalDevService(opts: {
  pid: () => number | undefined;
  address: () => string;
  namespace: string;
  restart: () => Promise<void>;
}): SupervisedService {
  return {
    name: 'Temporal dev server',
    check: probing(
      async () => opts.pid(),
      () => temporalAnswers(opts.address(), opts.namespace),
      5,
    ),
    restart: opts.restart,
  };
}
