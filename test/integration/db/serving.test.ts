import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MODEL_NOTIFY_CHANNEL,
  parseModelNotification,
  type ModelNotification,
} from '../../../db/notifications.js';
import {
  ModelRepository,
  RunRepository,
  ServingRepository,
  type ServedRequestInput,
} from '../../../db/repositories/index.js';
import type { TestDatabase } from '../../../db/testing.js';
import { CorellaError } from '../../../ml/errors.js';
import { openTestDatabase } from './support.js';

let t: TestDatabase;
let serving: ServingRepository;
let models: ModelRepository;
let versionA = 0;
let versionB = 0;
let seq = 0;

async function newVersion(): Promise<number> {
  seq += 1;
  const run = await new RunRepository(t.db).start({
    workflowId: `wf-serving-${process.pid}-${seq}`,
    kind: 'retrain',
  });
  const { version } = await models.register({ sourceRunId: run.id, artifacts: {} });
  return version.id;
}

function entry(over: Partial<ServedRequestInput> = {}, items = ['i1', 'i2', 'i3']): ServedRequestInput {
  return {
    requestId: randomUUID(),
    at: new Date(),
    modelVersionId: versionA,
    userId: 'u1',
    history: [{ item: 'h1', rating: 5, ts: 100 }],
    budgetMs: 200,
    threshold: 0.5,
    candidates: items.map((item, i) => ({
      item,
      p: 0.1 * (i + 1),
      pCrm: 0.1 * (i + 1),
      pLlm: i === 0 ? 0.3 : undefined,
      route: i === 0 ? 'llm' : 'crm',
      entropy: 0.2 + 0.1 * i,
      latencyMs: 1.5,
      cold: false,
    })),
    ...over,
  };
}

async function count(table: string): Promise<number> {
  const r = await t.db.execute<{ n: number }>(sql.raw(`SELECT count(*)::int AS n FROM ${table}`));
  return r.rows[0].n;
}

function caught(fn: () => Promise<unknown>): Promise<CorellaError> {
  return fn().then(
    () => {
      throw new Error('expected a CorellaError');
    },
    (e: unknown) => {
      expect(e).toBeInstanceOf(CorellaError);
      return e as CorellaError;
    },
  );
}

beforeAll(async () => {
  t = await openTestDatabase();
  serving = new ServingRepository(t.db);
  models = new ModelRepository(t.db);
  versionA = await newVersion();
  versionB = await newVersion();
});

afterAll(async () => {
  await t?.close();
});

describe('the prediction log tables', () => {
  it('store a batch once: a replayed batch inserts nothing, a partly replayed one only the new rows', async () => {
    const before = await count('predictions');
    const batch = [entry(), entry({ userId: 'u2', threshold: Infinity, history: null, budgetMs: null })];
    expect(await serving.recordServed(batch)).toEqual({ requests: 2, predictions: 6 });
    expect(await serving.recordServed(batch)).toEqual({ requests: 0, predictions: 0 });
    const more = [...batch, entry({}, ['x'])];
    expect(await serving.recordServed(more)).toEqual({ requests: 1, predictions: 1 });
    expect((await count('predictions')) - before).toBe(7);
    const r = await t.db.execute<{ threshold: number; history: unknown; budget_ms: number | null }>(
      sql`SELECT threshold, history, budget_ms FROM served_requests WHERE request_id = ${batch[1].requestId}`,
    );
    // CRM-only mode logs an infinite threshold; it must survive the round trip.
    expect(r.rows[0]).toEqual({ threshold: Infinity, history: null, budget_ms: null });
    const p = await t.db.execute<{ route: string; p_llm: number | null; idx: number }>(
      sql`SELECT route, p_llm, idx FROM predictions WHERE request_id = ${batch[0].requestId} ORDER BY idx`,
    );
    expect(p.rows).toEqual([
      { route: 'llm', p_llm: 0.3, idx: 0 },
      { route: 'crm', p_llm: null, idx: 1 },
      { route: 'crm', p_llm: null, idx: 2 },
    ]);
  });

  it('reject a bad entry by field name and store nothing of its batch', async () => {
    const before = [await count('served_requests'), await count('predictions')];
    const bad = entry();
    (bad.candidates[1] as { route: string }).route = 'gpu';
    const e = await caught(() => serving.recordServed([entry(), bad]));
    expect(e.message).toContain('entries[1].candidates[1].route');
    expect(e.details.field).toBe('entries[1].candidates[1].route');
    const e2 = await caught(() => serving.recordServed([entry({ requestId: 'not-a-uuid' })]));
    expect(e2.details.field).toBe('entries[0].requestId');
    const e3 = await caught(() =>
      serving.recordServed([{ ...entry(), candidates: [{ ...entry().candidates[0], p: 1.5 }] }]),
    );
    expect(e3.details.field).toBe('entries[0].candidates[0].p');
    expect([await count('served_requests'), await count('predictions')]).toEqual(before);
  });

  it('an entry naming an unknown model version fails the whole transaction', async () => {
    const before = await count('served_requests');
    await expect(serving.recordServed([entry(), entry({ modelVersionId: 999_999 })])).rejects.toThrow();
    expect(await count('served_requests')).toBe(before);
  });
});

describe('feedback', () => {
  it('is stored once per (user, item, ts), from a label or a rating', async () => {
    const ts = new Date('2026-11-01T10:00:00Z');
    const a = await serving.recordFeedback({ user: 'fu', item: 'fi', label: 1, ts });
    expect(a.created).toBe(true);
    expect(a.row).toMatchObject({ userId: 'fu', itemId: 'fi', label: 1, rating: null, requestId: null });
    const again = await serving.recordFeedback({ user: 'fu', item: 'fi', label: 1, ts: ts.toISOString() });
    expect(again).toMatchObject({ created: false, row: { id: a.row.id } });
    // Seconds since epoch, as history events carry them; rating 3 is a negative under the MovieLens rule.
    const b = await serving.recordFeedback({
      user: 'fu',
      item: 'fj',
      rating: 3,
      ts: ts.getTime() / 1000 + 5,
    });
    expect(b.row).toMatchObject({ label: 0, rating: 3 });
    expect(b.row.ts.getTime()).toBe(ts.getTime() + 5_000);
    const c = await serving.recordFeedback(
      { user: 'fu', item: 'fk', rating: 5, ts: ts.getTime() / 1000 + 9 },
      { labelRule: { kind: 'eq', value: 5 } },
    );
    expect(c.row.label).toBe(1);
    const rows = await serving.feedbackSince(new Date(ts.getTime() + 1_000));
    expect(rows.map((r) => r.itemId)).toEqual(['fj', 'fk']);
    expect((await serving.feedbackSince(new Date(0), { by: 'receivedAt' })).length).toBeGreaterThanOrEqual(3);
    expect(
      (await serving.feedbackSince(new Date(ts.getTime() + 1_000), { limit: 1 })).map((r) => r.itemId),
    ).toEqual(['fj']);
    const e = await caught(() => serving.feedbackSince(ts, { limit: 0 }));
    expect(e.details.field).toBe('limit');
  });

  it('bad feedback gets a typed error naming the field, and nothing is stored', async () => {
    const before = await count('feedback');
    const ts = new Date();
    const cases: [Record<string, unknown>, string][] = [
      [{ user: 'u', item: 'i', label: 2, ts }, 'label'],
      [{ user: 'u', item: 'i', ts }, 'label'],
      [{ user: '', item: 'i', label: 1, ts }, 'user'],
      [{ user: 'u', item: 7, label: 1, ts }, 'item'],
      [{ user: 'u', item: 'i', label: 1, ts: 'yesterday' }, 'ts'],
      [{ user: 'u', item: 'i', rating: Number.NaN, ts }, 'rating'],
      [{ user: 'u', item: 'i', label: 1, ts, requestId: 'r-1' }, 'requestId'],
    ];
    for (const [input, field] of cases) {
      const e = await caught(() => serving.recordFeedback(input as never));
      expect(e.details.field, JSON.stringify(input)).toBe(field);
      expect(e.message).toContain(field);
    }
    expect(await count('feedback')).toBe(before);
  });
});

describe('the recalibration window', () => {
  it('joins predictions with their feedback by request id + item, else by user + item after the prediction', async () => {
    const now = new Date('2026-11-20T12:00:00Z');
    const day = 86_400_000;
    const recent = entry({ at: new Date(now.getTime() - day), userId: 'wu', modelVersionId: versionB }, [
      'a',
      'b',
      'c',
      'd',
    ]);
    const old = entry({ at: new Date(now.getTime() - 20 * day), userId: 'wu', modelVersionId: versionB }, [
      'a',
    ]);
    const otherVersion = entry(
      { at: new Date(now.getTime() - day), userId: 'wu', modelVersionId: versionA },
      ['a'],
    );
    await serving.recordServed([recent, old, otherVersion]);
    const t0 = recent.at.getTime();
    // a: labelled by request id (twice: the earliest wins); b: by user + item after the prediction;
    // c: feedback before the prediction does not count; d: no feedback.
    await serving.recordFeedback({
      requestId: recent.requestId,
      user: 'wu',
      item: 'a',
      label: 1,
      ts: new Date(t0 + 1_000),
    });
    await serving.recordFeedback({
      requestId: recent.requestId,
      user: 'wu',
      item: 'a',
      label: 0,
      ts: new Date(t0 + 9_000),
    });
    await serving.recordFeedback({ user: 'wu', item: 'b', label: 0, ts: new Date(t0 + 2_000) });
    await serving.recordFeedback({ user: 'wu', item: 'c', label: 1, ts: new Date(t0 - 2_000) });

    const rows = await serving.recalibrationWindow({ modelVersionId: versionB, windowDays: 7, now });
    expect(rows.map((r) => [r.requestId, r.itemId, r.label])).toEqual([
      [recent.requestId, 'a', 1],
      [recent.requestId, 'b', 0],
    ]);
    expect(rows[0]).toMatchObject({
      idx: 0,
      route: 'llm',
      pLlm: 0.3,
      threshold: 0.5,
      history: recent.history,
      cold: false,
    });
    expect(rows[1].pLlm).toBeNull();
    // The 20-day-old prediction of item a is labelled by the user+item rule (feedback after it), but lies
    // outside a 7-day window; a 30-day window takes it.
    await serving.recordFeedback({ user: 'wu', item: 'a', label: 1, ts: new Date(old.at.getTime() + day) });
    expect(await serving.recalibrationWindow({ modelVersionId: versionB, windowDays: 7, now })).toHaveLength(
      2,
    );
    const wide = await serving.recalibrationWindow({ modelVersionId: versionB, windowDays: 30, now });
    expect(wide.map((r) => [r.requestId, r.itemId])).toContainEqual([old.requestId, 'a']);
    expect(wide).toHaveLength(3);
    const e = await caught(() => serving.recalibrationWindow({ modelVersionId: versionB, windowDays: 0 }));
    expect(e.details.field).toBe('windowDays');
  });
});

describe('model notifications', () => {
  it('a promotion and a threshold update each notify once; no-op changes are silent', async () => {
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    const got: ModelNotification[] = [];
    listener.on('notification', (m) => {
      if (m.channel !== MODEL_NOTIFY_CHANNEL) return;
      const n = parseModelNotification(m.payload);
      if (n) got.push(n);
    });
    try {
      await listener.query(`LISTEN ${MODEL_NOTIFY_CHANNEL}`);
      const v = await newVersion();
      await models.promote(v, { actor: 'test', reason: 'notify' });
      await expect.poll(() => got.length).toBe(1);
      expect(got[0]).toEqual({ modelName: 'corella', alias: 'champion', versionId: v, kind: 'alias' });

      await models.setThreshold(v, 0.42);
      await expect.poll(() => got.length).toBe(2);
      expect(got[1]).toEqual({
        modelName: 'corella',
        alias: null,
        versionId: v,
        kind: 'threshold',
        threshold: 0.42,
      });

      // Neither of these changes anything, so neither notifies; a later real change shows we were listening.
      await models.promote(v, { actor: 'test' });
      await models.setThreshold(v, 0.42);
      await models.removeAlias('corella', 'champion', { actor: 'test' });
      await expect.poll(() => got.length).toBe(3);
      expect(got[2]).toMatchObject({ alias: 'champion', versionId: v, kind: 'alias-removed' });
    } finally {
      await listener.end();
    }
  });

  it('a rolled-back change sends nothing', async () => {
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    const got: string[] = [];
    listener.on('notification', (m) => got.push(m.payload ?? ''));
    try {
      await listener.query(`LISTEN ${MODEL_NOTIFY_CHANNEL}`);
      const v = await newVersion();
      await t.db
        .transaction(async (tx) => {
          await tx.execute(sql`UPDATE model_versions SET calibrated_threshold = 0.9 WHERE id = ${v}`);
          throw new Error('roll back');
        })
        .catch(() => undefined);
      await models.setThreshold(v, 0.1);
      await expect.poll(() => got.length).toBe(1);
      expect(JSON.parse(got[0])).toMatchObject({ versionId: v, threshold: 0.1 });
    } finally {
      await listener.end();
    }
  });
});
