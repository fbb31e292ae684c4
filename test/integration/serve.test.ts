import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { llmConfigOf, calibrationConfigOf } from '../../activities/corella-config.js';
import { datasetForVersion } from '../../activities/datasets.js';
import type { PipelineConfig, RetrainResult } from '../../activities/types.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { LlmAdapter } from '../../ml/corella/adapter.js';
import { HybridPredictor } from '../../ml/corella/routing.js';
import { loadCrm } from '../../ml/crm/index.js';
import type { CtrDataset } from '../../ml/data/index.js';
import { LlmFeatureExtractor } from '../../ml/llm/index.js';
import type { ScoreRequest } from '../../ml/serving/types.js';
import { startServer, type RunningServer } from '../../serve/server.js';
import { databaseStorage } from '../../serve/storage.js';
import { ServingRepository } from '../../db/repositories/serving.js';
import { sql } from 'drizzle-orm';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { trainVersions } from '../helpers/trained-versions.js';
import { fileActivityContext } from '../helpers/activity-context.js';

interface ScoreBody {
  requestId: string;
  modelVersion: string;
  candidates: { item: string; p: number; route: string; entropy: number }[];
  llm: { routed: number; answered: number; fallbacks: number; fallbackReason?: string };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json: json as Record<string, unknown>, text };
}

/** The request that asks about test-split row `r` exactly as the offline pipeline saw it. */
function requestForRow(ds: CtrDataset, r: number): ScoreRequest | undefined {
  const split = ds.splits.test;
  const C = ds.featureMap.categorical.length;
  const userCode = split.categorical[r * C];
  if (userCode === 0) return undefined; // a user the CRM never saw has no raw id in the vocabulary
  const user = ds.featureMap.vocabularies.user_id[userCode];
  const L = split.historyLen;
  const history: { item: string; rating: number }[] = [];
  for (let j = 0; j < L; j++) {
    const row = split.historyItemRows[r * L + j];
    if (row < 0 || Number.isNaN(split.historyRatings[r * L + j])) continue;
    history.push({ item: ds.items.ids[row], rating: split.historyRatings[r * L + j] });
  }
  return { user: { id: user }, candidates: [{ item: ds.items.ids[split.targetItemRows[r]] }], history };
}

describe('corella serve: a real server over a trained model version', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ActivityContext;
  let config: PipelineConfig;
  let trained: RetrainResult[];
  const servers: RunningServer[] = [];

  beforeAll(async () => {
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-serve-'));
    ctx = fileActivityContext(testDb.db, dir);
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    config = tinyPipelineConfig(modelPath);
    // A second version of another CRM seed, registered as challenger, for the promotion test.
    const second: PipelineConfig = { ...config, crm: { ...config.crm, seed: 17 } };
    trained = await trainVersions(
      ctx,
      { address: inject('temporalAddress'), namespace: inject('temporalNamespace') },
      dir,
      [config, second],
    );
  }, 300_000);

  afterAll(async () => {
    for (const s of servers) await s.close();
    await testDb?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const start = async (o: Partial<Parameters<typeof startServer>[0]> = {}) => {
    const s = await startServer({
      databaseUrl: testDb.url,
      store: ctx.store,
      home: dir,
      port: 0,
      pollMs: 500,
      log: () => undefined,
      ...o,
    });
    servers.push(s);
    return s;
  };

  it('answers like the offline HybridPredictor on the same rows (route and p)', async () => {
    const v = trained[0];
    const ds = await datasetForVersion(ctx.store, v.datasetVersionId);
    const models = new ModelRepository(testDb.db);
    const stored = (await models.get(Number(v.modelVersionId)))!;
    const crm = await loadCrm(ctx.store, stored.artifacts.crmModel!, ds.featureMap);
    const adapter = LlmAdapter.deserialize(await ctx.store.get(stored.artifacts.adapter!));
    const llm = await LlmFeatureExtractor.open(llmConfigOf(config, dir), ctx.store);
    try {
      const rows: number[] = [];
      const requests: ScoreRequest[] = [];
      for (let r = 0; r < ds.splits.test.size && rows.length < 60; r++) {
        const req = requestForRow(ds, r);
        if (req) {
          rows.push(r);
          requests.push(req);
        }
      }
      const predictor = (threshold: number) =>
        new HybridPredictor({
          crm,
          adapter,
          llm,
          items: ds.items,
          threshold,
          coldItems: calibrationConfigOf(config).coldItems,
        });
      // Calibration on a random-weight LLM (rightly) routes nothing; a threshold at the 70th percentile of
      // the CRM's entropies on these rows (as a recalibration would set it) sends about 30% of them to the
      // LLM, so both routes are compared. Set before the server starts, which reads it with the version.
      const entropies = (await predictor(stored.calibratedThreshold!).predict(ds.splits.test, rows)).entropy;
      // Midway between two neighbouring entropies, so no row sits on the threshold (the server's float64
      // entropy and the predictor's float32 one may round differently there).
      const sorted = Float64Array.from(entropies).sort();
      const k = Math.floor(sorted.length * 0.7);
      const threshold = (sorted[k - 1] + sorted[k]) / 2;
      await models.setThreshold(Number(v.modelVersionId), threshold);
      const mv = (await models.get(Number(v.modelVersionId)))!;
      // A generous deadline: this test is about equal answers, the budget has its own test (and the machine
      // may be busy).
      const server = await start({ model: v.modelVersionId, budget: { defaultBudgetMs: 60_000 } });
      const offline = await predictor(mv.calibratedThreshold!).predict(ds.splits.test, rows);
      expect(
        offline.routedRows.length,
        'some rows must be routed for the test to mean anything',
      ).toBeGreaterThan(0);
      for (let i = 0; i < rows.length; i++) {
        const res = await post(`${server.url}/v1/score`, requests[i]);
        expect(res.status, res.text).toBe(200);
        const body = res.json as unknown as ScoreBody;
        expect(body.modelVersion).toBe(v.modelVersionId);
        const c = body.candidates[0];
        const routed = offline.entropy[i] > mv.calibratedThreshold!;
        expect(c.route, `row ${rows[i]}`).toBe(routed ? 'llm' : 'crm');
        expect(c.entropy).toBeCloseTo(offline.entropy[i], 5);
        expect(c.p).toBeCloseTo(offline.p[i], 4);
      }
    } finally {
      crm.dispose();
      adapter.dispose();
      await llm.dispose();
    }
  }, 240_000);

  it('a deadline and a full queue give crm-fallback, never an error', async () => {
    const v = trained[0];
    // Threshold −1 routes every candidate, so every one needs the LLM.
    const server = await start({
      model: v.modelVersionId,
      threshold: -1,
      budget: { maxConcurrency: 1, maxQueue: 0, defaultBudgetMs: 5_000 },
    });
    const ds = await datasetForVersion(ctx.store, v.datasetVersionId);
    const req = requestForRow(ds, 0) ?? requestForRow(ds, 1)!;
    const slate = { ...req, candidates: ds.items.ids.slice(0, 40).map((item) => ({ item })) };

    const late = await post(`${server.url}/v1/score`, { ...slate, budgetMs: 0 });
    expect(late.status, late.text).toBe(200);
    const lateBody = late.json as unknown as ScoreBody;
    expect(lateBody.candidates.every((c) => c.route === 'crm-fallback')).toBe(true);
    expect(lateBody.llm.fallbackReason).toBe('deadline');

    // One slot and no queue: of several concurrent requests, the ones that find the slot taken fall back.
    const many = await Promise.all(Array.from({ length: 4 }, () => post(`${server.url}/v1/score`, slate)));
    for (const r of many) expect(r.status, r.text).toBe(200);
    const reasons = many.map((r) => (r.json as unknown as ScoreBody).llm.fallbackReason);
    expect(reasons).toContain('queue-full');
    expect(many.some((r) => (r.json as unknown as ScoreBody).candidates.some((c) => c.route === 'llm'))).toBe(
      true,
    );
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/corella_serve_llm_fallbacks_total\{reason="queue-full"\} [1-9]/);
    expect(metrics).toMatch(/corella_serve_llm_fallbacks_total\{reason="deadline"\} [1-9]/);
  }, 120_000);

  it('a promotion during a steady stream: no failed request, each response from one whole version', async () => {
    const [a, b] = trained;
    const models = new ModelRepository(testDb.db);
    // The registry may have promoted either by its metric: start from a known champion.
    await models.promote(Number(a.modelVersionId), { actor: 'test', reason: 'start of the swap test' });
    // CRM-only (threshold +∞): both versions' answers are then exact functions of the request.
    const server = await start({ model: 'champion', threshold: Infinity });
    const ds = await datasetForVersion(ctx.store, a.datasetVersionId);
    const req = requestForRow(ds, 0) ?? requestForRow(ds, 1)!;
    const slate = { ...req, candidates: ds.items.ids.slice(0, 50).map((item) => ({ item })) };
    const reference = new Map<string, number[]>();
    for (const v of [a, b]) {
      const pinned = await start({ model: v.modelVersionId, threshold: Infinity });
      const r = await post(`${pinned.url}/v1/score`, slate);
      reference.set(
        v.modelVersionId,
        (r.json as unknown as ScoreBody).candidates.map((c) => c.p),
      );
    }
    expect(reference.get(a.modelVersionId)).not.toEqual(reference.get(b.modelVersionId));

    let stop = false;
    const results: { status: number; body?: ScoreBody }[] = [];
    const stream = (async () => {
      const deadline = Date.now() + 60_000;
      while (!stop && Date.now() < deadline) {
        const r = await post(`${server.url}/v1/score`, slate);
        results.push({ status: r.status, body: r.json as unknown as ScoreBody });
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    await models.promote(Number(b.modelVersionId), { actor: 'test', reason: 'hot swap under load' });
    await expect
      .poll(() => results.at(-1)?.body?.modelVersion, { timeout: 30_000, interval: 100 })
      .toBe(b.modelVersionId);
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await stream;

    expect(results.length).toBeGreaterThan(10);
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    const versions = new Set(results.map((r) => r.body!.modelVersion));
    expect([...versions].sort()).toEqual([a.modelVersionId, b.modelVersionId].sort());
    for (const r of results) {
      const ps = r.body!.candidates.map((c) => c.p);
      expect(ps).toEqual(reference.get(r.body!.modelVersion));
    }
    // Versions switch once: old answers never come back after the first new one.
    const firstNew = results.findIndex((r) => r.body!.modelVersion === b.modelVersionId);
    expect(results.slice(firstNew).every((r) => r.body!.modelVersion === b.modelVersionId)).toBe(true);
  }, 180_000);

  it('an applied recalibration (a new threshold on the followed version) is picked up live', async () => {
    const v = trained[0];
    const models = new ModelRepository(testDb.db);
    const before = (await models.get(Number(v.modelVersionId)))!.calibratedThreshold!;
    // A long poll: only the NOTIFY can make the swap this fast.
    const server = await start({ model: v.modelVersionId, pollMs: 600_000 });
    const readyThreshold = async () =>
      ((await (await fetch(`${server.url}/readyz`)).json()) as { model: { threshold: number } }).model
        .threshold;
    expect(await readyThreshold()).toBeCloseTo(before, 9);
    const next = before > 0.3 ? before - 0.05 : before + 0.05;
    try {
      await models.setThreshold(Number(v.modelVersionId), next);
      await expect.poll(readyThreshold, { timeout: 20_000, interval: 100 }).toBeCloseTo(next, 9);
      const r = await post(`${server.url}/v1/score`, { user: { id: 'u1' }, candidates: [{ item: 'i1' }] });
      expect((r.json as { threshold: number }).threshold).toBeCloseTo(next, 9);
    } finally {
      await models.setThreshold(Number(v.modelVersionId), before);
    }
  }, 60_000);

  it('rejects bad requests with a 400 or 413 that says what is wrong, and never a stack trace', async () => {
    const server = await start({ model: trained[0].modelVersionId, limits: { maxCandidates: 20 } });
    const url = `${server.url}/v1/score`;
    const ok = { user: { id: 'u1' }, candidates: [{ item: 'i1' }] };
    const cases: [string, unknown, number, RegExp][] = [
      ['malformed JSON', '{"user": {"id": "u1"}, "candidates": [', 400, /JSON/i],
      ['wrong type', { ...ok, candidates: [{ item: 7 }] }, 400, /candidates\[0\]\.item/],
      ['unknown field', { ...ok, candiates: [] }, 400, /candiates: unknown field/],
      ['unknown nested field', { ...ok, user: { id: 'u1', age: 3 } }, 400, /user\.age: unknown field/],
      ['missing field', { user: { id: 'u1' } }, 400, /candidates/],
      [
        '10× the slate limit',
        { ...ok, candidates: Array.from({ length: 200 }, (_, i) => ({ item: `i${i}` })) },
        400,
        /candidates: must NOT have more than 20 items/,
      ],
      ['a string budget', { ...ok, budgetMs: '5' }, 400, /budgetMs/],
      ['a huge body', { ...ok, history: [{ item: 'x'.repeat(2 * 1024 * 1024) }] }, 413, /too large/],
    ];
    for (const [name, body, status, message] of cases) {
      const r = await post(url, body);
      expect(r.status, name).toBe(status);
      const err = (r.json as { error?: { message?: string } }).error;
      expect(err?.message, name).toMatch(message);
      expect(r.text, name).not.toMatch(/\s+at\s+\S+\s\(|node_modules/);
    }
    const fb = await post(`${server.url}/v1/feedback`, { user: 'u1', item: 'i1', ts: 1, label: 3 });
    expect(fb.status).toBe(400);
  }, 60_000);

  it('stores feedback once, folds it into the user history, logs predictions and exports metrics', async () => {
    const v = trained[0];
    const server = await start({
      model: v.modelVersionId,
      storage: (db) => databaseStorage(db, { spoolDir: join(dir, 'spool-feedback') }),
    });
    const ds = await datasetForVersion(ctx.store, v.datasetVersionId);
    const user = ds.featureMap.vocabularies.user_id[1];
    const items = ds.featureMap.vocabularies.item_id.slice(1, 6);
    const slate = { user: { id: user }, candidates: items.map((item) => ({ item })) };
    const before = await post(`${server.url}/v1/score`, slate);
    expect(before.status, before.text).toBe(200);
    const requestId = (before.json as unknown as ScoreBody).requestId;

    const now = Math.floor(Date.now() / 1000);
    const fb = { requestId, user, item: items[0], rating: 5, ts: now };
    const first = await post(`${server.url}/v1/feedback`, fb);
    expect(first.status, first.text).toBe(201);
    const again = await post(`${server.url}/v1/feedback`, fb);
    expect(again.status).toBe(200);
    expect(again.json).toEqual({ stored: false });
    const rows = await new ServingRepository(testDb.db).feedbackSince(new Date((now - 10) * 1000));
    expect(rows.filter((r) => r.userId === user && r.itemId === items[0])).toHaveLength(1);
    expect(rows[0].label).toBe(1);

    // The request carries no history: the stored one plus the new feedback is used, so the CRM's input (and
    // its answer for the other candidates) moves.
    const after = await post(`${server.url}/v1/score`, slate);
    const pBefore = (before.json as unknown as ScoreBody).candidates.map((c) => c.p);
    const pAfter = (after.json as unknown as ScoreBody).candidates.map((c) => c.p);
    expect(pAfter).not.toEqual(pBefore);

    await expect
      .poll(
        async () =>
          Number(
            (
              await testDb.db.execute<{ n: string }>(
                sql`select count(*) as n from predictions where request_id = ${requestId}`,
              )
            ).rows[0].n,
          ),
        { timeout: 20_000 },
      )
      .toBe(items.length);

    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', model: { version: v.modelVersionId } });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    for (const re of [
      /corella_serve_requests_total\{endpoint="\/v1\/score",status="200"\} [1-9]/,
      /corella_serve_requests_total\{endpoint="\/v1\/feedback",status="201"\} 1/,
      /corella_serve_request_seconds_bucket\{le="0.01",endpoint="\/v1\/score"\}/,
      // Under load a routed candidate can miss its deadline: the request then counts as crm-fallback.
      /corella_serve_route_seconds_count\{route="(crm|llm|crm-fallback)"\} [1-9]/,
      /corella_serve_candidates_total\{route="crm"\} [1-9]/,
      /corella_serve_llm_queue_depth 0/,
      /corella_serve_routed_fraction [0-9.]+/,
      new RegExp(`corella_serve_model_version\\{version="${v.modelVersionId}"\\} 1`),
      /corella_serve_prediction_log_pending \d+/,
    ])
      expect(metrics).toMatch(re);
  }, 60_000);

  it('needs a token to bind beyond loopback, and every /v1 route then checks it', async () => {
    await expect(start({ host: '0.0.0.0', model: trained[0].modelVersionId })).rejects.toThrow(
      /CORELLA_SERVE_TOKEN/,
    );
    const server = await start({ host: '0.0.0.0', token: 's3cret-token', model: trained[0].modelVersionId });
    const url = server.url.replace('0.0.0.0', '127.0.0.1');
    const body = { user: { id: 'u1' }, candidates: [{ item: 'i1' }] };
    expect((await post(`${url}/v1/score`, body)).status).toBe(401);
    expect((await post(`${url}/v1/score`, body, { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await post(`${url}/v1/score`, body, { authorization: 'Bearer s3cret-token' })).status).toBe(200);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  }, 60_000);
});
