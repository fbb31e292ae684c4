/**
 * The serving engine's CRM half on a real ingested dataset and a real DCNv2: requests rebuilt from stored
 * rows encode to those rows and score as the offline CRM does; micro-batching, limits, cold paths, and the
 * LLM-less fallback.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { ServingEngine } from '../../../ml/serving/engine.js';
import { sequenceFromText, vocabIndex } from '../../../ml/serving/request-encoder.js';
import { rawUser, requestOfRow, servedWorld, type ServedWorld } from './fixtures.js';

let w: ServedWorld;
let engine: ServingEngine;

beforeAll(async () => {
  w = await servedWorld();
  engine = await ServingEngine.load(w.store, w.bundle({ llm: null }), { log: () => undefined });
}, 120_000);
afterAll(async () => {
  await engine?.dispose();
  await w?.cleanup();
});

/** Test rows whose user is in the CRM's vocabulary (so the request can name them by raw id). */
function knownUserRows(limit: number): number[] {
  const s = w.dataset.splits.test;
  const out: number[] = [];
  for (let r = 0; r < s.size && out.length < limit; r++) if (rawUser(w.dataset, 'test', r)) out.push(r);
  return out;
}

describe('ServingEngine, CRM path', () => {
  it('encodes a request rebuilt from a test row to exactly that row', () => {
    const s = w.dataset.splits.test;
    const C = w.dataset.featureMap.categorical.length;
    const rows = knownUserRows(40);
    expect(rows.length).toBeGreaterThan(10);
    for (const r of rows) {
      const enc = engine.encoder.encode(requestOfRow(w.dataset, 'test', r));
      expect(Array.from(enc.split.categorical)).toEqual(
        Array.from(s.categorical.subarray(r * C, (r + 1) * C)),
      );
      s.sequences.forEach((seq, k) => {
        const L = w.dataset.featureMap.sequences[k].maxLen;
        expect(Array.from(enc.split.sequences[k])).toEqual(Array.from(seq.subarray(r * L, (r + 1) * L)));
      });
      const K = s.historyLen;
      expect(Array.from(enc.split.historyItemRows)).toEqual(
        Array.from(s.historyItemRows.subarray(r * K, (r + 1) * K)),
      );
    }
  });

  it('scores each candidate as the offline CRM scores the row, with route crm at threshold ln 2', async () => {
    const rows = knownUserRows(30);
    const offline = await w.crm.predict(w.dataset.splits.test, rows);
    const results = await Promise.all(rows.map((r) => engine.score(requestOfRow(w.dataset, 'test', r))));
    results.forEach((res, i) => {
      const c = res.candidates[0];
      expect(Math.abs(c.p - offline[i])).toBeLessThan(1e-5);
      expect(c.pCrm).toBe(c.p);
      expect(c.route).toBe('crm');
      expect(c.pLlm).toBeUndefined();
      const p = offline[i];
      expect(c.entropy).toBeCloseTo(-p * Math.log(p) - (1 - p) * Math.log(1 - p), 5);
      expect(res.llm.routed).toBe(0);
    });
  });

  it('micro-batches concurrent requests into fewer CRM calls than requests', async () => {
    const rows = knownUserRows(20);
    const before = { ...engine.batcher.stats };
    await Promise.all(rows.map((r) => engine.score(requestOfRow(w.dataset, 'test', r))));
    const calls = engine.batcher.stats.calls - before.calls;
    expect(engine.batcher.stats.requests - before.requests).toBe(rows.length);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThan(rows.length);
  });

  it('a request without history uses the user’s latest known history, extended by observe()', async () => {
    const r = knownUserRows(1)[0];
    const user = rawUser(w.dataset, 'test', r)!;
    const item = w.dataset.items.ids[0];
    const known = engine.encoder.knownHistory(user);
    expect(known.length).toBeGreaterThan(0);
    const a = engine.encoder.encode({ user: { id: user }, candidates: [{ item }] });
    expect(a.history).toEqual(known);
    engine.observe({ user, item: w.dataset.items.ids[1], rating: 5, ts: 1 });
    const b = engine.encoder.encode({ user: { id: user }, candidates: [{ item }] });
    expect(b.history.at(-1)!.itemRow).toBe(1);
    expect(b.history.at(-1)!.rating).toBe(5);
  });

  it('marks unknown users and items cold, and the item stays on the CRM without coldItems', async () => {
    const known = w.dataset.items.ids[0];
    const res = await engine.score({
      user: { id: 'nobody-like-this' },
      candidates: [{ item: known }, { item: 'no-such-item' }],
    });
    expect(res.candidates.map((c) => c.cold)).toEqual([true, true]);
    expect(res.candidates.every((c) => c.route === 'crm' && Number.isFinite(c.p))).toBe(true);
    const enc = engine.encoder.encode({ user: { id: 'x' }, candidates: [{ item: 'no-such-item' }] });
    expect(enc.targets[0].title).toBe('no-such-item');
    expect(enc.split.categorical[0]).toBe(0);
    expect(enc.split.categorical[1]).toBe(0);
  });

  it('routes cold items when the version routes them, and with no LLM they fall back, never an error', async () => {
    const cold = await ServingEngine.load(w.store, w.bundle({ llm: null, coldItems: true, threshold: 0.6 }), {
      log: () => undefined,
    });
    try {
      const user = rawUser(w.dataset, 'test', knownUserRows(1)[0])!;
      const res = await cold.score({ user: { id: user }, candidates: [{ item: 'no-such-item' }] });
      const c = res.candidates[0];
      expect(c.cold).toBe(true);
      expect(c.entropy).toBeCloseTo(Math.LN2, 6);
      expect(c.route).toBe('crm-fallback');
      expect(c.p).toBe(c.pCrm);
      expect(res.llm).toMatchObject({
        routed: 1,
        answered: 0,
        fallbacks: 1,
        fallbackReason: 'llm-unavailable',
      });
      expect(cold.llmUnavailable).toMatch(/no LLM/);
    } finally {
      await cold.dispose();
    }
  });

  it('rejects too many candidates and too long a history with BAD_REQUEST naming the field', async () => {
    const item = w.dataset.items.ids[0];
    const many = { user: { id: 'u' }, candidates: Array.from({ length: 501 }, () => ({ item })) };
    const err = await engine.score(many).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_REQUEST');
    expect((err as CorellaError).details.field).toBe('candidates');
    expect((err as CorellaError).message).toMatch(/candidates.*501.*500/);
    const long = {
      user: { id: 'u' },
      candidates: [{ item }],
      history: Array.from({ length: 1001 }, () => ({ item })),
    };
    await expect(engine.score(long)).rejects.toMatchObject({
      code: 'BAD_REQUEST',
      details: { field: 'history' },
    });
    await expect(
      engine.score({ user: { id: 'u', features: { shoe_size: '9' } }, candidates: [{ item }] }),
    ).rejects.toMatchObject({ code: 'BAD_REQUEST', details: { field: 'user.features.shoe_size' } });
    // The limit is the engine's, not a constant: a smaller one applies.
    const small = await ServingEngine.load(w.store, w.bundle({ llm: null }), {
      limits: { maxCandidates: 3 },
    });
    try {
      await expect(
        small.score({ user: { id: 'u' }, candidates: Array.from({ length: 4 }, () => ({ item })) }),
      ).rejects.toMatchObject({ code: 'BAD_REQUEST', details: { field: 'candidates' } });
      expect((await small.score({ user: { id: 'u' }, candidates: [{ item }] })).candidates).toHaveLength(1);
    } finally {
      await small.dispose();
    }
  });

  it('a bad bundle or option is BAD_CONFIG naming the field, before anything loads', async () => {
    await expect(ServingEngine.load(w.store, w.bundle({ llm: null, threshold: NaN }))).rejects.toMatchObject({
      code: 'BAD_CONFIG',
      details: { field: 'threshold' },
    });
    await expect(
      ServingEngine.load(w.store, w.bundle({ llm: null }), { budget: { maxQueue: -1 } }),
    ).rejects.toMatchObject({ code: 'BAD_CONFIG', details: { field: 'budget.maxQueue' } });
    await expect(
      ServingEngine.load(w.store, w.bundle({ llm: null, datasetVersionId: 'f'.repeat(64) })),
    ).rejects.toMatchObject({ code: 'DATA_NOT_AVAILABLE' });
  });

  it('finds the user attributes and re-encodes genres from the item table exactly as ingestion did', () => {
    expect(engine.encoder.userAttributes).toEqual(['gender', 'age', 'occupation', 'zip']);
    // For items that are some sample's target the ids come from the rows; the text rule used for the
    // others must agree with them.
    const fm = w.dataset.featureMap;
    const field = fm.sequences[1];
    expect(field.name).toBe('genres');
    const vocab = vocabIndex(fm.vocabularies.genres);
    let checked = 0;
    w.dataset.items.ids.forEach((id, row) => {
      const info = engine.encoder.item(id);
      expect(info.row).toBe(row);
      if (info.id === 0) return;
      expect(Array.from(sequenceFromText(w.dataset.items.genres[row], field.maxLen, vocab))).toEqual(
        Array.from(info.seqs[0]),
      );
      checked++;
    });
    expect(checked).toBeGreaterThan(50);
  });

  it('user features by field name override the stored attributes', () => {
    const fm = w.dataset.featureMap;
    const r = knownUserRows(1)[0];
    const req = requestOfRow(w.dataset, 'test', r);
    const gender = fm.vocabularies.gender;
    expect(gender).toBeDefined();
    const col = fm.categorical.findIndex((f) => f.name === 'gender');
    const base = engine.encoder.encode(req).split.categorical[col];
    const other = gender.findIndex((g, i) => i > 0 && i !== base);
    const enc = engine.encoder.encode({ ...req, user: { ...req.user, features: { gender: gender[other] } } });
    expect(enc.split.categorical[col]).toBe(other);
    const oov = engine.encoder.encode({ ...req, user: { ...req.user, features: { gender: 'zzz' } } });
    expect(oov.split.categorical[col]).toBe(0);
  });
});
