import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { datasetForVersion } from '../../activities/datasets.js';
import { openDatabase, type DatabaseHandle } from '../../db/connection.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../cli/services/embedded-postgres.js';
import { migrateDatabase } from '../../db/migrate.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { trainVersions } from '../helpers/trained-versions.js';

interface Served {
  requestId: string;
  candidates: number;
}

/**
 * The prediction log under failures, against `corella serve` as users run it (a child process, the real
 * embedded Postgres stopped and started under it): serving goes on, and every logged prediction ends up in
 * Postgres exactly once.
 */
describe('corella serve keeps serving and logging through a Postgres outage and its own SIGKILL', () => {
  let dir = '';
  let pg: EmbeddedPostgres | undefined;
  let handle: DatabaseHandle | undefined;
  const children: CliProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    await handle?.close();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('an outage mid-stream, then a SIGKILL with rows still spooled: nothing lost, nothing twice', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-serve-dur-'));
    const dataDir = join(dir, 'pg');
    pg = await startEmbeddedPostgres({ dataDir, port: 0 });
    handle = openDatabase(pg.url, { onIdleError: () => undefined });
    await migrateDatabase(handle.db);
    const ctx: ActivityContext = {
      db: handle.db,
      store: new FileArtifactStore(join(dir, 'artifacts')),
      home: dir,
      close: async () => undefined,
    };
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    const [v] = await trainVersions(
      ctx,
      { address: inject('temporalAddress'), namespace: inject('temporalNamespace') },
      dir,
      [tinyPipelineConfig(modelPath)],
    );
    const ds = await datasetForVersion(ctx.store, v.datasetVersionId);
    const users = ds.featureMap.vocabularies.user_id.slice(1, 30);
    const items = ds.featureMap.vocabularies.item_id.slice(1, 60);

    const env = cliEnv(dir, { DATABASE_URL: pg.url });
    const startServe = async () => {
      const c = startCli(['serve', '--port', '0', '--model', v.modelVersionId], env);
      children.push(c);
      const { url } = await c.ready(120_000);
      await expect
        .poll(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.status, { timeout: 60_000 })
        .toBe(200);
      return { c, url };
    };
    const served: Served[] = [];
    let n = 0;
    const score = async (url: string) => {
      const k = n++;
      const body = {
        user: { id: users[k % users.length] },
        candidates: [0, 1, 2].map((j) => ({ item: items[(k * 3 + j) % items.length] })),
      };
      const r = await fetch(`${url}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      }).catch((e: unknown) => {
        throw new Error(`request ${k} failed (${String(e)}); server stderr:\n${children.at(-1)?.stderr()}`);
      });
      expect(r.status, await r.clone().text()).toBe(200);
      const j = (await r.json()) as { requestId: string; candidates: unknown[] };
      served.push({ requestId: j.requestId, candidates: j.candidates.length });
    };
    const stored = async () => {
      const [row] = (
        await handle!.db.execute<{ requests: string; predictions: string; distinct: string }>(
          sql`select (select count(*) from served_requests) as requests,
                     (select count(*) from predictions) as predictions,
                     (select count(distinct (request_id, idx)) from predictions) as distinct`,
        )
      ).rows;
      return {
        requests: Number(row.requests),
        predictions: Number(row.predictions),
        distinct: Number(row.distinct),
      };
    };

    // 1. A stream; Postgres stopped in the middle; serving continues; Postgres back; everything lands once.
    let { c, url } = await startServe();
    for (let i = 0; i < 30; i++) await score(url);
    await pg.stop();
    for (let i = 0; i < 40; i++) await score(url);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { database: string }).database).toBe('unreachable');
    pg = await startEmbeddedPostgres({ dataDir });
    for (let i = 0; i < 30; i++) await score(url);
    const expectedAfter = (list: Served[]) => ({
      requests: list.length,
      predictions: list.reduce((a, s) => a + s.candidates, 0),
    });
    await expect
      .poll(async () => (await stored()).predictions, { timeout: 60_000, interval: 250 })
      .toBe(expectedAfter(served).predictions);
    let counts = await stored();
    expect(counts.requests).toBe(expectedAfter(served).requests);
    expect(counts.distinct).toBe(counts.predictions);

    // 2. Postgres down again, rows spooled, the server SIGKILLed; a new server replays them exactly once.
    await pg.stop();
    for (let i = 0; i < 25; i++) await score(url);
    c.child.kill('SIGKILL');
    await c.exited();
    pg = await startEmbeddedPostgres({ dataDir });
    ({ c, url } = await startServe());
    await expect
      .poll(async () => (await stored()).predictions, { timeout: 60_000, interval: 250 })
      .toBe(expectedAfter(served).predictions);
    counts = await stored();
    expect(counts.requests).toBe(served.length);
    expect(counts.distinct).toBe(counts.predictions);
    const ids = (
      await handle.db.execute<{ request_id: string }>(sql`select request_id from served_requests`)
    ).rows.map((r) => r.request_id);
    expect(new Set(ids)).toEqual(new Set(served.map((s) => s.requestId)));
    c.child.kill('SIGTERM');
    expect((await c.exited()).code).toBe(0);
  }, 400_000);
});
