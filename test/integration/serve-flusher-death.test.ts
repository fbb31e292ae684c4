import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { datasetForVersion } from '../../activities/datasets.js';
import type { RetrainResult } from '../../activities/types.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import type { FromWorker } from '../../serve/prediction-log-worker.js';
import { startServer, type RunningServer, type ServeStorage } from '../../serve/server.js';
import { Spool } from '../../serve/spool.js';
import { databaseStorage } from '../../serve/storage.js';
import { fileActivityContext } from '../helpers/activity-context.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { trainVersions } from '../helpers/trained-versions.js';

/**
 * The prediction log's flusher thread dies while `corella serve` answers a stream of real HTTP requests: the
 * request thread's drainer takes over from where the worker had got to, every request still gets its 200,
 * and every logged prediction reaches Postgres once (the counters agree: nothing counted twice either).
 */
describe('corella serve: the prediction-log flusher thread dies mid-stream', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ActivityContext;
  let trained: RetrainResult;
  let server: RunningServer | undefined;

  beforeAll(async () => {
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-flusher-death-'));
    ctx = fileActivityContext(testDb.db, dir);
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    [trained] = await trainVersions(
      ctx,
      { address: inject('temporalAddress'), namespace: inject('temporalNamespace') },
      dir,
      [tinyPipelineConfig(modelPath)],
    );
  }, 300_000);

  afterAll(async () => {
    await server?.close();
    await testDb?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('terminated between two batches of a segment: the main thread resumes there, no row lost or twice, no request fails', async () => {
    const spoolDir = join(dir, 'spool');
    let storage: ServeStorage | undefined;
    server = await startServer({
      databaseUrl: testDb.url,
      store: ctx.store,
      home: dir,
      port: 0,
      pollMs: 500,
      threshold: Infinity, // CRM only: the LLM is not what this test is about
      log: () => undefined,
      // Batches of 2 in rounds 100 ms apart: a segment holds many batches, so the kill can land inside one.
      storage: async (db) =>
        (storage = await databaseStorage(db, { spoolDir, flushIntervalMs: 100, maxBatch: 2 })),
    });
    const log = storage!.predictionLog!;
    const worker = log.flusherWorker!;
    expect(log.flusherThread).toBe('worker');

    const ds = await datasetForVersion(ctx.store, trained.datasetVersionId);
    const users = ds.featureMap.vocabularies.user_id.slice(1, 40);
    const items = ds.featureMap.vocabularies.item_id.slice(1, 80);
    const served = new Map<string, number>();
    const failures: string[] = [];
    let n = 0;
    let stop = false;
    const client = async () => {
      while (!stop) {
        const k = n++;
        const candidates = 1 + (k % 4);
        const body = {
          user: { id: users[k % users.length] },
          candidates: Array.from({ length: candidates }, (_, j) => ({
            item: items[(k * 5 + j) % items.length],
          })),
        };
        try {
          const r = await fetch(`${server!.url}/v1/score`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
          const text = await r.text();
          if (r.status !== 200) failures.push(`${r.status} ${text}`);
          else served.set((JSON.parse(text) as { requestId: string }).requestId, candidates);
        } catch (e) {
          failures.push(String(e));
        }
      }
    };
    const clients = Array.from({ length: 6 }, () => client());

    // Kill the worker right after it reports a committed batch of a segment that still has lines to store:
    // the hand-over then has to resume mid-segment (the case that would count or store rows twice).
    let killedAt: { seq: number; through: number; lines: number } | undefined;
    let servedAtKill = 0;
    worker.on('message', (m: FromWorker) => {
      if (killedAt || m.type !== 'progress' || !m.position || served.size < 40) return;
      const seg = Spool.listIn(spoolDir).find((s) => s.seq === m.position!.seq);
      const lines = seg ? Spool.read(seg).lines.length : 0;
      if (lines <= m.position.through) return;
      killedAt = { ...m.position, lines };
      servedAtKill = served.size;
      void worker.terminate();
    });
    const exit = new Promise<number>((r) => worker.once('exit', r));
    await expect.poll(() => killedAt, { timeout: 60_000, interval: 50 }).toBeDefined();
    await exit;
    // The stream goes on with the drainer on the request thread.
    await expect.poll(() => log.flusherThread, { timeout: 30_000, interval: 50 }).toBe('thread');
    const servedAtHandOver = served.size;
    await expect
      .poll(() => served.size, { timeout: 60_000, interval: 100 })
      .toBeGreaterThan(servedAtHandOver + 60);
    stop = true;
    await Promise.all(clients);
    expect(failures).toEqual([]);
    expect(servedAtKill).toBeGreaterThan(0);
    expect(log.flusherWorker).toBeUndefined();

    await expect.poll(() => log.counters().pending, { timeout: 60_000, interval: 100 }).toBe(0);
    const c = log.counters();
    expect(c).toMatchObject({ spooled: served.size, flushed: served.size, rejected: 0, skippedLines: 0 });

    const rows = await testDb.db.execute<{ request_id: string; n: number; distinct_idx: number }>(sql`
      SELECT s.request_id, count(p.idx)::int AS n, count(DISTINCT p.idx)::int AS distinct_idx
      FROM served_requests s LEFT JOIN predictions p USING (request_id)
      WHERE s.model_version_id = ${Number(trained.modelVersionId)}
      GROUP BY s.request_id`);
    const stored = new Map(rows.rows.map((r) => [r.request_id, r]));
    expect(stored.size).toBe(served.size);
    for (const [id, candidates] of served) {
      expect(stored.get(id), `request ${id}`).toMatchObject({ n: candidates, distinct_idx: candidates });
    }
    await server.close();
    server = undefined;
    expect(Spool.listIn(spoolDir)).toEqual([]);
    expect(killedAt!.through).toBeLessThan(killedAt!.lines);
  }, 240_000);
});
