/**
 * The prediction insert's own array literals (db/repositories/array-literal.ts) against pg's serialisation
 * of the same JS arrays, read back by a real Postgres; and recordServed's stored rows on tricky entries
 * (unicode and syntax characters in ids, null fields, ±Infinity, a batch past one INSERT's chunk).
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArrayLiteral } from '../../../db/repositories/array-literal.js';
import {
  ModelRepository,
  RunRepository,
  ServingRepository,
  type ServedRequestInput,
} from '../../../db/repositories/index.js';
import type { TestDatabase } from '../../../db/testing.js';
import { openTestDatabase } from './support.js';

let t: TestDatabase;
let version = 0;

const TRICKY = [
  'plain',
  'ünïcödé',
  '電影-42',
  '🎬 film',
  'a,b',
  'a"b',
  'a\\b',
  '\\"',
  '{x}',
  ' lead',
  'trail ',
  'NULL',
  'null',
  'tab\tx',
  'nl\nx',
  '\u00a0nbsp',
  "it's",
];

beforeAll(async () => {
  t = await openTestDatabase();
  const run = await new RunRepository(t.db).start({
    workflowId: `wf-array-literal-${process.pid}`,
    kind: 'bench',
  });
  version = (await new ModelRepository(t.db).register({ sourceRunId: run.id, artifacts: {} })).version.id;
}, 120_000);

afterAll(async () => {
  await t?.close();
});

describe('ArrayLiteral', () => {
  it('reads back in Postgres as the same text[] as pg serialises, nulls and empty string included', async () => {
    const values: (string | null)[] = [...TRICKY, '', null];
    const mine = new ArrayLiteral(values.length);
    for (const v of values) mine.nullableText(v);
    const r = await t.db.execute<{ mine: (string | null)[]; theirs: (string | null)[] }>(
      sql`SELECT ${mine.toString()}::text[] AS mine, ${sql.param(values)}::text[] AS theirs`,
    );
    expect(r.rows[0].mine).toEqual(values);
    expect(r.rows[0].mine).toEqual(r.rows[0].theirs);
  });

  it('keeps every float8 exactly, ±Infinity and nulls included', async () => {
    const values = [0.1 + 0.2, 5e-324, 1e308, -0.5, 0, 1, 0.31, Infinity, -Infinity, null];
    const mine = new ArrayLiteral(values.length);
    for (const v of values) mine.nullableNumber(v);
    const back = await t.db.execute<{ v: number | null }>(
      sql`SELECT v FROM unnest(${mine.toString()}::float8[]) WITH ORDINALITY AS x(v, i) ORDER BY i`,
    );
    expect(back.rows.map((x) => (x.v === null ? null : Number(x.v)))).toEqual(values);
  });
});

function tricky(i: number, candidates: number): ServedRequestInput {
  return {
    requestId: randomUUID(),
    at: new Date(Date.UTC(2026, 11, 1, 18, 0, 0, i)),
    modelVersionId: version,
    userId: TRICKY[i % TRICKY.length],
    history: i % 2 ? null : [{ item: 'a"b\\c,ü', rating: 4, ts: 1_700_000_000 + i }],
    budgetMs: i % 3 ? null : 150,
    threshold: i % 4 === 0 ? Infinity : i % 4 === 1 ? -Infinity : 0.37,
    candidates: Array.from({ length: candidates }, (_, k) => ({
      item: `${TRICKY[(i + k) % TRICKY.length]}#${k}`,
      p: (k % 10) / 10 + 0.01,
      pCrm: 1 / (k + 3),
      pLlm: k % 3 === 0 ? 0.9 : k % 3 === 1 ? null : undefined,
      route: k % 3 === 0 ? ('llm' as const) : k % 3 === 1 ? ('crm' as const) : ('crm-fallback' as const),
      entropy: 0.1 + k / 1000,
      latencyMs: 1.25 + i,
      cold: k % 2 === 0,
    })),
  };
}

describe('recordServed with the literal columns', () => {
  it('stores tricky entries exactly, and a replay inserts nothing', async () => {
    const repo = new ServingRepository(t.db);
    const entries = Array.from({ length: TRICKY.length + 3 }, (_, i) => tricky(i, 1 + (i % 5)));
    entries.push({ ...tricky(99, 0) }); // a request with no candidates
    const total = entries.reduce((n, e) => n + e.candidates.length, 0);
    expect(await repo.recordServed(entries)).toEqual({ requests: entries.length, predictions: total });
    expect(await repo.recordServed(entries)).toEqual({ requests: 0, predictions: 0 });

    const ids = entries.map((e) => e.requestId);
    const reqs = await t.db.execute<Record<string, unknown>>(sql`
      SELECT request_id, at, model_version_id, user_id, history, budget_ms, threshold
      FROM served_requests WHERE request_id = ANY(${sql.param(ids)}::uuid[])`);
    const byId = new Map(reqs.rows.map((r) => [r.request_id as string, r]));
    for (const e of entries) {
      const r = byId.get(e.requestId)!;
      expect(new Date(r.at as string).getTime()).toBe(e.at.getTime());
      expect(r.model_version_id).toBe(version);
      expect(r.user_id).toBe(e.userId);
      expect(r.history).toEqual(e.history);
      expect(r.budget_ms === null ? null : Number(r.budget_ms)).toBe(e.budgetMs);
      expect(Number(r.threshold)).toBe(e.threshold);
    }
    const preds = await t.db.execute<Record<string, unknown>>(sql`
      SELECT request_id, idx, at, model_version_id, user_id, item_id, p, p_crm, p_llm, route, entropy, latency_ms, cold
      FROM predictions WHERE request_id = ANY(${sql.param(ids)}::uuid[]) ORDER BY request_id, idx`);
    expect(preds.rows).toHaveLength(total);
    const got = new Map(preds.rows.map((r) => [`${r.request_id as string}/${r.idx as number}`, r]));
    for (const e of entries)
      e.candidates.forEach((c, k) => {
        const r = got.get(`${e.requestId}/${k}`)!;
        expect({
          at: new Date(r.at as string).getTime(),
          version: r.model_version_id,
          user: r.user_id,
          item: r.item_id,
          p: Number(r.p),
          pCrm: Number(r.p_crm),
          pLlm: r.p_llm === null ? null : Number(r.p_llm),
          route: r.route,
          entropy: Number(r.entropy),
          latency: Number(r.latency_ms),
          cold: r.cold,
        }).toEqual({
          at: e.at.getTime(),
          version,
          user: e.userId,
          item: c.item,
          p: c.p,
          pCrm: c.pCrm,
          pLlm: c.pLlm ?? null,
          route: c.route,
          entropy: c.entropy,
          latency: c.latencyMs,
          cold: c.cold,
        });
      });
  }, 60_000);

  it('joins each candidate to its own request across INSERT chunks (past 20,000 rows)', async () => {
    const repo = new ServingRepository(t.db);
    const entries = Array.from({ length: 403 }, (_, i) => tricky(i, 50)); // 20,150 rows: two chunks
    expect(await repo.recordServed(entries)).toEqual({ requests: 403, predictions: 20_150 });
    const r = await t.db.execute<{ bad: number; n: number }>(sql`
      SELECT count(*) FILTER (WHERE p.user_id <> s.user_id OR p.at <> s.at)::int AS bad, count(*)::int AS n
      FROM predictions p JOIN served_requests s USING (request_id)
      WHERE p.request_id = ANY(${sql.param(entries.map((e) => e.requestId))}::uuid[])`);
    expect(r.rows[0]).toEqual({ bad: 0, n: 20_150 });
    // The item of candidate k of request i names k: a candidate joined to the wrong request or slot would not.
    const items = await t.db.execute<{ bad: number }>(sql`
      SELECT count(*)::int AS bad FROM predictions
      WHERE request_id = ANY(${sql.param(entries.map((e) => e.requestId))}::uuid[])
        AND split_part(item_id, '#', 2)::int <> idx`);
    expect(items.rows[0].bad).toBe(0);
  }, 120_000);
});
