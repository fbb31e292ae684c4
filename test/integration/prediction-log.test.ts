import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../db/connection.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../cli/services/embedded-postgres.js';
import { migrateDatabase } from '../../db/migrate.js';
import { ModelRepository, RunRepository } from '../../db/repositories/index.js';
import type { TestDatabase } from '../../db/testing.js';
import { PredictionLog } from '../../serve/prediction-log.js';
import { Spool } from '../../serve/spool.js';
import { servedEntry, servedIndex } from '../helpers/served-entries.js';
import { makeTempDir, openTestDatabase } from './db/support.js';

const CHILD = fileURLToPath(new URL('../helpers/prediction-log-child.ts', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let t: TestDatabase;
let dir = '';

async function newVersion(db: Database, tag: string): Promise<number> {
  const run = await new RunRepository(db).start({
    workflowId: `wf-plog-${tag}-${process.pid}`,
    kind: 'retrain',
  });
  return (await new ModelRepository(db).register({ sourceRunId: run.id, artifacts: {} })).version.id;
}

/** Every stored request id (as its stream index) and the candidates stored for it. */
async function stored(db: Database, version: number): Promise<Map<number, number>> {
  const r = await db.execute<{ request_id: string; n: number }>(sql`
    SELECT s.request_id, (SELECT count(*)::int FROM predictions p WHERE p.request_id = s.request_id) AS n
    FROM served_requests s WHERE s.model_version_id = ${version}`);
  return new Map(r.rows.map((row) => [servedIndex(row.request_id), row.n]));
}

beforeAll(async () => {
  t = await openTestDatabase();
  dir = await makeTempDir('corella-plog-');
});

afterAll(async () => {
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('PredictionLog', () => {
  // The worker thread is the flusher a server runs; the in-thread drainer is its fallback.
  it.each([
    ['worker', true],
    ['thread', false],
  ] as const)(
    'stores every appended entry once, counts and sets aside bad ones, and empties its spool (flusher: %s)',
    async (thread, worker) => {
      const spoolDir = join(dir, `basic-${thread}`);
      const version = await newVersion(t.db, `basic-${thread}`);
      // Request ids of its own per variant; a multiple of 70 keeps each index's threshold and history kind.
      const at = worker ? 0 : 3_500_000;
      const log = await PredictionLog.open({ db: t.db, spoolDir, flushIntervalMs: 20, maxBatch: 7, worker });
      for (let i = 0; i < 40; i++) log.append(servedEntry(at + i, version, 4));
      // Invalid at append (a NaN probability) and refused by Postgres (an unknown model version).
      log.append({
        ...servedEntry(at + 40, version),
        candidates: [{ ...servedEntry(at + 40, version).candidates[0], p: NaN }],
      });
      log.append(servedEntry(at + 41, 999_999));
      // Generous: under load the worker thread's start (it loads the TypeScript sources) took 18–20 s here.
      await expect.poll(() => log.counters().pending, { timeout: 60_000 }).toBe(0);
      // Stored from the worker thread all along: a worker that failed would have handed over to this thread.
      expect(log.flusherThread).toBe(thread);
      await log.close();
      const c = log.counters();
      expect(c).toMatchObject({ spooled: 41, flushed: 40, pending: 0, rejected: 2, skippedLines: 0 });
      const rows = await stored(t.db, version);
      expect([...rows.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => at + i));
      expect([...rows.values()].every((n) => n === 4)).toBe(true);
      const p = await t.db.execute<{ threshold: number; route: string; p_llm: number | null }>(sql`
      SELECT s.threshold, p.route, p.p_llm FROM predictions p JOIN served_requests s USING (request_id)
      WHERE p.request_id = ${servedEntry(at, version).requestId} ORDER BY p.idx`);
      expect(p.rows[0]).toEqual({ threshold: Infinity, route: 'llm', p_llm: 0.5 });
      expect(p.rows[1]).toEqual({ threshold: Infinity, route: 'crm', p_llm: null });
      // LLM-only serving logs -Infinity; both infinities survive the spool's JSON and Postgres.
      const minus = await t.db.execute<{ threshold: number }>(
        sql`SELECT threshold FROM served_requests WHERE request_id = ${servedEntry(at + 7, version).requestId}`,
      );
      expect(minus.rows[0].threshold).toBe(-Infinity);
      expect(Spool.listIn(spoolDir)).toEqual([]);
      const rejected = readFileSync(join(spoolDir, 'rejected.jsonl'), 'utf8').trim().split('\n');
      expect(rejected).toHaveLength(1);
      expect(JSON.parse(rejected[0])).toMatchObject({
        line: expect.stringContaining(servedEntry(at + 41, 1).requestId),
      });
    },
  );

  it('a Postgres outage mid-stream: serving appends on, the spool grows, and after the restart every row is stored once', async () => {
    // A server of its own: stopping the shared one would disturb the other test files.
    const dataDir = join(dir, 'pg-outage');
    let pg: EmbeddedPostgres | undefined = await startEmbeddedPostgres({ dataDir, port: 0 });
    const handle = openDatabase(pg.url, { onIdleError: () => undefined, connectionTimeoutMillis: 2_000 });
    try {
      await migrateDatabase(handle.db);
      const version = await newVersion(handle.db, 'outage');
      const log = await PredictionLog.open({
        db: handle.db,
        spoolDir: join(dir, 'outage-spool'),
        flushIntervalMs: 50,
        maxBackoffMs: 500,
        maxBatch: 25,
      });
      let i = 0;
      const appendFor = async (ms: number) => {
        const end = Date.now() + ms;
        while (Date.now() < end) {
          log.append(servedEntry(i++, version, 5));
          await sleep(3);
        }
      };
      await appendFor(1_000);
      await expect
        .poll(async () => (await stored(handle.db, version)).size, { timeout: 10_000 })
        .toBeGreaterThan(0);
      await pg.stop();
      pg = undefined;
      const beforeOutage = i;
      await appendFor(2_500);
      const during = log.counters();
      expect(i - beforeOutage).toBeGreaterThan(100);
      expect(during.lastError).not.toBeNull();
      expect(during.pending).toBeGreaterThan(100);
      pg = await startEmbeddedPostgres({ dataDir });
      await appendFor(1_000);
      await log.close();
      expect(log.flusherThread).toBe('worker'); // the outage was ridden out by the worker, not a fallback
      const rows = await stored(handle.db, version);
      expect(rows.size).toBe(i);
      for (let k = 0; k < i; k++) expect(rows.get(k), `request ${k}`).toBe(5);
      const dupes = await handle.db.execute<{ n: number }>(sql`
        SELECT count(*)::int AS n FROM (SELECT request_id, idx FROM predictions GROUP BY 1, 2 HAVING count(*) > 1) d`);
      expect(dupes.rows[0].n).toBe(0);
      expect(log.counters()).toMatchObject({
        spooled: i,
        flushed: i,
        pending: 0,
        rejected: 0,
        lastError: null,
      });
    } finally {
      await handle.close();
      await pg?.stop();
    }
  }, 300_000); // stopping and starting Postgres can take a minute each on a loaded machine

  it('a process SIGKILLed mid-stream: a new log on its spool stores every row it spooled once, skipping a torn line', async () => {
    const spoolDir = join(dir, 'killed');
    const version = await newVersion(t.db, 'killed');
    const first = 1_000_000; // request ids of their own
    const args = [CHILD, t.url, spoolDir, String(version), '6', String(first)];
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    const lastAppended = () => {
      const m = /appended (\d+)\n(?![\s\S]*appended)/.exec(out);
      return m ? Number(m[1]) : -1;
    };
    try {
      // Mid-stream: the child has spooled a good many rows and its flusher has stored some of them.
      await expect
        .poll(async () => lastAppended() > first + 1_500 && (await stored(t.db, version)).size > 100, {
          timeout: 60_000,
          interval: 100,
        })
        .toBe(true);
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`child did not stream: ${String(e)}\n${err}`);
    }
    child.kill('SIGKILL');
    await exited;
    // The rows stored meanwhile came from the child's flusher thread, killed with it in mid-flush.
    expect(out).toContain('flusher worker\n');
    const appended = lastAppended();
    // The kill can cut a write short; simulate the worst case on the newest segment.
    const segments = Spool.listIn(spoolDir);
    expect(segments.length).toBeGreaterThan(0);
    appendFileSync(segments[segments.length - 1].path, '{"v":1,"requestId":"00000000-0000-4000-8000-');

    const log = await PredictionLog.open({ db: t.db, spoolDir, flushIntervalMs: 20 });
    expect(log.counters().pending).toBeGreaterThan(0);
    await expect.poll(() => log.counters().pending, { timeout: 30_000 }).toBe(0);
    expect(log.flusherThread).toBe('worker');
    await log.close();
    expect(log.counters()).toMatchObject({ skippedLines: 1, rejected: 0, lastError: null });
    const rows = await stored(t.db, version);
    // Every request the child appended is stored whole; at most the one being appended at the kill is extra.
    for (let k = first; k <= appended; k++) expect(rows.get(k), `request ${k}`).toBe(6);
    expect(rows.size - (appended - first + 1)).toBeLessThanOrEqual(1);
    expect([...rows.keys()].every((k) => k >= first && k <= appended + 1)).toBe(true);
    expect([...rows.values()].every((n) => n === 6)).toBe(true);
    expect(Spool.listIn(spoolDir)).toEqual([]);
    expect(existsSync(join(spoolDir, 'spool.lock'))).toBe(false);
  }, 120_000);
});
