import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  resolveDatabase,
  startEmbeddedPostgres,
  DEFAULT_SYSTEM_USER,
  type EmbeddedPostgres,
} from '../../../cli/services/embedded-postgres.js';
import { openDatabase } from '../../../db/connection.js';
import { withRetry } from '../../../db/retry.js';
import { CorellaError } from '../../../ml/errors.js';
import { makeTempDir } from './support.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/start-embedded.ts', import.meta.url));

let root: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  root = await makeTempDir('corella-embedded-pg-');
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

async function started(dataDir: string, options: { port?: number; log?: (l: string) => void } = {}) {
  const server = await startEmbeddedPostgres({ dataDir, port: options.port, log: options.log });
  cleanups.push(() => server.stop());
  return server;
}

async function query<T extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

async function postmasterPid(dataDir: string): Promise<number | undefined> {
  try {
    return Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (alive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
}

function spawnStarter(
  dataDir: string,
  marker: string,
): Promise<{ child: ChildProcess; info: EmbeddedPostgres }> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, dataDir, marker], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(async () => child.kill('SIGKILL'));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve({ child, info: JSON.parse(line) as EmbeddedPostgres });
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`starter exited with ${code}: ${err}`)));
  });
}

describe('embedded Postgres', () => {
  it('persists data across stop/start, initialising only once and reusing its port', async () => {
    const dataDir = join(root, 'persist');
    const lines: string[] = [];
    const first = await started(dataDir, { port: 0, log: (l) => lines.push(l) });
    expect(first.owned).toBe(true);
    expect(new URL(first.url).pathname).toBe('/corella');
    await query(first.url, 'CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)');
    await first.stop();
    await first.stop(); // idempotent
    expect(await postmasterPid(dataDir)).toBeUndefined();

    const second = await started(dataDir, { log: (l) => lines.push(l) });
    expect(second.port).toBe(first.port);
    expect(await query<{ v: number }>(second.url, 'SELECT v FROM kept')).toEqual([{ v: 42 }]);
    expect(lines.filter((l) => l.startsWith('initialising'))).toHaveLength(1);
    await second.stop();
  });

  it('chooses another free port when the preferred one is taken, and remembers it', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen({ port: 0, host: '127.0.0.1' }, r));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const taken = (blocker.address() as { port: number }).port;
    // Reuses the cluster of the previous test (an initdb costs seconds on a loaded 2-core machine).
    const dataDir = join(root, 'persist');
    const server = await started(dataDir, { port: taken });
    expect(server.port).not.toBe(taken);
    expect(await query(server.url, 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
    await server.stop();
    const again = await started(dataDir);
    expect(again.port).toBe(server.port);
    await again.stop();
  });

  it('survives a SIGKILLed starter: reuses a live owner, adopts the orphan, keeps the data', async () => {
    const dataDir = join(root, 'sigkill');
    const { child, info } = await spawnStarter(dataDir, 'from-child');
    expect(info.owned).toBe(true);
    const pid = await postmasterPid(dataDir);
    expect(pid).toBeGreaterThan(0);

    // While the child lives it owns the server: we may use it but must not stop it.
    const guest = await started(dataDir);
    expect(guest.owned).toBe(false);
    expect(guest.port).toBe(info.port);
    await guest.stop();
    expect(alive(pid!)).toBe(true);

    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(alive(pid!)).toBe(true); // the orphaned postmaster is still running

    const adopter = await started(dataDir);
    expect(adopter.owned).toBe(true);
    expect(await query(adopter.url, 'SELECT note FROM marks')).toEqual([{ note: 'from-child' }]);
    await adopter.stop();
    await waitGone(pid!);
    expect(alive(pid!)).toBe(false);
    expect(await postmasterPid(dataDir)).toBeUndefined();
  });

  it('two processes starting the same fresh data dir at once share one server', async () => {
    const dataDir = join(root, 'concurrent');
    const [a, b] = await Promise.all([spawnStarter(dataDir, 'a'), spawnStarter(dataDir, 'b')]);
    expect(a.info.port).toBe(b.info.port);
    // Exactly one of them started (and owns) it; the other reused it.
    expect([a.info.owned, b.info.owned].sort()).toEqual([false, true]);
    const reader = await started(dataDir);
    expect(
      (await query<{ note: string }>(reader.url, 'SELECT note FROM marks ORDER BY note')).map((r) => r.note),
    ).toEqual(['a', 'b']);
    const owner = a.info.owned ? a.child : b.child;
    const exited = new Promise((r) => owner.once('exit', r));
    owner.kill('SIGTERM');
    await exited;
    expect(await postmasterPid(dataDir)).toBeUndefined();
  });

  it('a starter stopped by SIGTERM shuts the server down cleanly', async () => {
    const dataDir = join(root, 'sigkill'); // the previous test's cluster
    const { child } = await spawnStarter(dataDir, 'x');
    const pid = await postmasterPid(dataDir);
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    await waitGone(pid!);
    expect(alive(pid!)).toBe(false);
    expect(await postmasterPid(dataDir)).toBeUndefined();
  });

  it('recovers from a stale postmaster.pid and from a SIGKILLed postmaster', async () => {
    const dataDir = join(root, 'sigkill');
    const first = await started(dataDir, { port: 0 });
    await query(first.url, 'CREATE TABLE t (v int); INSERT INTO t VALUES (7)');
    const pid = (await postmasterPid(dataDir))!;
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
    // postmaster.pid is left behind, naming a dead process.
    expect(await postmasterPid(dataDir)).toBe(pid);
    const second = await started(dataDir);
    expect(await query(second.url, 'SELECT v FROM t')).toEqual([{ v: 7 }]);
    await second.stop();

    // A pid file naming a live process that is not postgres (pid reuse): ours, the test runner.
    const s = await stat(dataDir);
    await writeFile(
      join(dataDir, 'postmaster.pid'),
      `${process.pid}\n${dataDir}\n0\n${second.port}\n\n127.0.0.1\n0 0\nready\n`,
    );
    const { chown } = await import('node:fs/promises');
    await chown(join(dataDir, 'postmaster.pid'), s.uid, s.gid);
    const third = await started(dataDir);
    expect(await query(third.url, 'SELECT v FROM t')).toEqual([{ v: 7 }]);
    await third.stop();
  });

  it('runs postgres unprivileged: as the corella-pg system user when root, else as ourselves', async () => {
    const dataDir = join(root, 'persist');
    const server = await started(dataDir, { port: 0 });
    const pid = (await postmasterPid(dataDir))!;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
    const owner = (await stat(dataDir)).uid;
    expect(owner).toBe(uid);
    if (process.getuid!() === 0) {
      expect(uid).not.toBe(0);
      const passwd = await readFile('/etc/passwd', 'utf8');
      expect(passwd).toMatch(new RegExp(`^${DEFAULT_SYSTEM_USER}:x:${uid}:`, 'm'));
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    } else {
      expect(uid).toBe(process.getuid!());
    }
    await server.stop();
  });

  it('a pool survives a Postgres restart: idle errors are caught, withRetry rides out the downtime', async () => {
    const dataDir = join(root, 'persist');
    const server = await started(dataDir);
    const idleErrors: Error[] = [];
    const handle = openDatabase(server.url, { onIdleError: (e) => idleErrors.push(e) });
    cleanups.push(() => handle.close());
    await Promise.all([handle.pool.query('SELECT 1'), handle.pool.query('SELECT 1')]);
    expect(handle.pool.idleCount).toBeGreaterThan(0);

    await server.stop(); // fast shutdown terminates the idle pooled connections
    await expect(handle.pool.query('SELECT 1')).rejects.toThrow();
    expect(idleErrors.length).toBeGreaterThan(0);

    const retries: number[] = [];
    const restart = new Promise<EmbeddedPostgres>((r) => setTimeout(() => r(started(dataDir)), 300));
    const rows = await withRetry(async () => (await handle.db.execute(sql`SELECT v FROM kept`)).rows, {
      baseDelayMs: 100,
      attempts: 30,
      onRetry: (_e, attempt) => retries.push(attempt),
    });
    expect(rows).toEqual([{ v: 42 }]);
    expect(retries.length).toBeGreaterThan(0);
    await (await restart).stop();
    await handle.close();
  });

  it('refuses a non-empty directory that is not a cluster, touching nothing', async () => {
    const dataDir = join(root, 'not-a-cluster');
    await mkdir(dataDir, { recursive: true });
    await writeFile(join(dataDir, 'notes.txt'), 'mine');
    const err = await startEmbeddedPostgres({ dataDir, port: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_CONFIG');
    expect((err as Error).message).toContain(dataDir);
    expect(await readFile(join(dataDir, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('resolveDatabase prefers DATABASE_URL and starts nothing', async () => {
    const dataDir = join(root, 'never-created');
    const r = await resolveDatabase({ dataDir, env: { DATABASE_URL: 'postgres://u:p@db.example:5432/x' } });
    expect(r).toMatchObject({ url: 'postgres://u:p@db.example:5432/x', embedded: false });
    await r.stop();
    await expect(stat(dataDir)).rejects.toThrow();
  });
});
