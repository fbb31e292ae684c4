/**
 * The serving engine's flat lookup tables (string-index.ts, the CSR user histories and item rows of
 * request-encoder.ts, observed-history.ts, split-pool.ts) against the Map-and-object layout they replace,
 * rebuilt here from the same real ingested dataset: every known user's history, every item's ids, the cold
 * paths, feedback appended since the dataset version, and pooled splits that must not leak one request's
 * rows into the next.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPLITS, type CtrDataset, type EncodedSplit } from '../../../ml/data/types.js';
import { mulberry32 } from '../../../ml/random.js';
import { concatSplits } from '../../../ml/serving/crm-batcher.js';
import { ServingEngine } from '../../../ml/serving/engine.js';
import { OBSERVED_PER_USER, ObservedHistories } from '../../../ml/serving/observed-history.js';
import { newSplit, RequestEncoder } from '../../../ml/serving/request-encoder.js';
import { SplitPool } from '../../../ml/serving/split-pool.js';
import { StringIndex } from '../../../ml/serving/string-index.js';
import type { ScoreRequest } from '../../../ml/serving/types.js';
import { servedWorld, type ServedWorld } from './fixtures.js';

let w: ServedWorld;

beforeAll(async () => {
  w = await servedWorld({ users: 60, items: 90 });
}, 120_000);
afterAll(async () => {
  await w?.cleanup();
});

/** The layout the flat tables replace: a Map from raw user id to the objects of their latest window. */
function referenceHistories(ds: CtrDataset) {
  const C = ds.featureMap.categorical.length;
  const vocab = ds.featureMap.vocabularies.user_id;
  const latest = new Map<number, { s: EncodedSplit; i: number }>();
  for (const name of SPLITS) {
    const s = ds.splits[name];
    for (let i = 0; i < s.size; i++) {
      const uid = s.categorical[i * C];
      if (uid === 0) continue;
      const prev = latest.get(uid);
      if (
        !prev ||
        s.timestamps[i] > prev.s.timestamps[prev.i] ||
        (s.timestamps[i] === prev.s.timestamps[prev.i] && s.sampleIds[i] > prev.s.sampleIds[prev.i])
      )
        latest.set(uid, { s, i });
    }
  }
  const out = new Map<string, { uid: number; userRow: number; entries: object[] }>();
  for (const [uid, { s, i }] of latest) {
    const K = s.historyLen;
    const entries: object[] = [];
    for (let j = 0; j < K; j++) {
      const row = s.historyItemRows[i * K + j];
      const rating = s.historyRatings[i * K + j];
      if (row < 0 || Number.isNaN(rating)) continue;
      entries.push({
        itemRow: row,
        itemId: s.sequences[0][i * K + j],
        title: ds.items.titles[row] ?? ds.items.ids[row],
        genres: ds.items.genres[row] ?? '',
        rating,
      });
    }
    out.set(vocab[uid], { uid, userRow: s.userRows[i], entries });
  }
  return out;
}

function randomRequest(ds: CtrDataset, rnd: () => number, n: number, user: string): ScoreRequest {
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  return {
    user: { id: user },
    candidates: Array.from({ length: n }, () => ({
      item: rnd() < 0.1 ? `cold-${rnd()}` : pick(ds.items.ids),
    })),
  };
}

/** Every column of a split the CRM or the prompts read, as plain arrays. */
function columns(s: EncodedSplit) {
  return {
    size: s.size,
    labels: Array.from(s.labels),
    sampleIds: Array.from(s.sampleIds),
    userRows: Array.from(s.userRows),
    categorical: Array.from(s.categorical),
    sequences: s.sequences.map((q) => Array.from(q)),
    targetItemRows: Array.from(s.targetItemRows),
    historyItemRows: Array.from(s.historyItemRows),
    historyRatings: Array.from(s.historyRatings),
    historyLen: s.historyLen,
    dense: Array.from(s.dense),
  };
}

describe('StringIndex', () => {
  it('answers as a Map<string, number> does, duplicates included (the last wins), and -1 for the rest', () => {
    const rnd = mulberry32(11);
    const alphabet = ['a', 'b', '1', '2', 'é', '文', '😀', ' ', ''];
    const word = () =>
      Array.from({ length: Math.floor(rnd() * 6) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join(
        '',
      );
    const keys = Array.from({ length: 3000 }, word);
    const values = Int32Array.from(keys, () => Math.floor(rnd() * 1e6));
    const index = new StringIndex(keys, values);
    const ref = new Map<string, number>();
    keys.forEach((k, i) => ref.set(k, values[i]));
    expect(index.size).toBe(ref.size);
    for (const [k, v] of ref) expect(index.get(k)).toBe(v);
    let absent = 0;
    for (let i = 0; i < 3000; i++) {
      const q = word() + word();
      if (!ref.has(q)) {
        expect(index.get(q)).toBe(-1);
        expect(index.has(q)).toBe(false);
        absent++;
      } else expect(index.get(q)).toBe(ref.get(q));
    }
    expect(absent).toBeGreaterThan(100);
    // Positions by default, and an empty index answers -1.
    expect(new StringIndex(['x', 'y']).get('y')).toBe(1);
    expect(new StringIndex([]).get('x')).toBe(-1);
  });
});

describe('RequestEncoder flat tables on a real ingested dataset', () => {
  it('every known user has exactly the latest window the Map-of-objects layout held', () => {
    const enc = new RequestEncoder(w.dataset);
    const ref = referenceHistories(w.dataset);
    expect(ref.size).toBeGreaterThan(30);
    expect(enc.userCount).toBe(ref.size);
    const C = w.dataset.featureMap.categorical.length;
    for (const [user, r] of ref) {
      expect(enc.knownHistory(user)).toEqual(r.entries);
      const e = enc.encode({ user: { id: user }, candidates: [{ item: w.dataset.items.ids[0] }] });
      expect(e.userKnown).toBe(true);
      expect(e.split.categorical[0]).toBe(r.uid);
      expect(e.split.userRows[0]).toBe(r.userRow);
      expect(e.history).toEqual(r.entries);
      expect(e.split.categorical.length).toBe(C);
    }
  });

  it('every item row has the ids, attributes and text the per-item objects held', () => {
    const enc = new RequestEncoder(w.dataset);
    const ds = w.dataset;
    const fm = ds.featureMap;
    const C = fm.categorical.length;
    const nUserAttrs = enc.userAttributes.length;
    // Reference: attributes from the first sample targeting the item, as the old per-item objects were built.
    const firstTarget = new Map<number, { s: EncodedSplit; i: number }>();
    for (const name of SPLITS) {
      const s = ds.splits[name];
      for (let i = 0; i < s.size; i++)
        if (!firstTarget.has(s.targetItemRows[i])) firstTarget.set(s.targetItemRows[i], { s, i });
    }
    let targeted = 0;
    ds.items.ids.forEach((raw, row) => {
      const info = enc.item(raw);
      expect(info.row).toBe(row);
      expect(info.id).toBe(Math.max(0, fm.vocabularies.item_id.indexOf(raw)));
      expect(info.title).toBe(ds.items.titles[row] ?? raw);
      expect(info.genres).toBe(ds.items.genres[row] ?? '');
      const t = firstTarget.get(row);
      if (!t) return;
      targeted++;
      expect(Array.from(info.attrs)).toEqual(
        Array.from(t.s.categorical.subarray(t.i * C + 2 + nUserAttrs, (t.i + 1) * C)),
      );
      fm.sequences.slice(1).forEach((f, k) => {
        expect(Array.from(info.seqs[k])).toEqual(
          Array.from(t.s.sequences[k + 1].subarray(t.i * f.maxLen, (t.i + 1) * f.maxLen)),
        );
      });
    });
    expect(targeted).toBeGreaterThan(40);
  });

  it('unknown users and items still take the cold path', () => {
    const enc = new RequestEncoder(w.dataset);
    const ds = w.dataset;
    const C = ds.featureMap.categorical.length;
    const K = enc.historyLen;
    const known = ds.items.ids[3];
    const e = enc.encode({ user: { id: 'nobody' }, candidates: [{ item: known }, { item: 'no-such-item' }] });
    expect(e.userKnown).toBe(false);
    expect(e.cold).toEqual([true, true]);
    expect(Array.from(e.split.userRows)).toEqual([-1, -1]);
    expect(e.split.categorical[0]).toBe(0);
    expect(e.split.categorical[C]).toBe(0);
    expect(e.split.categorical[C + 1]).toBe(0);
    expect(Array.from(e.split.categorical.subarray(C + 2, 2 * C))).toEqual(new Array(C - 2).fill(0));
    expect(Array.from(e.split.targetItemRows)).toEqual([3, -1]);
    expect(e.history).toEqual([]);
    expect(Array.from(e.split.historyItemRows)).toEqual(new Array(2 * K).fill(-1));
    expect(e.target(1)).toMatchObject({ row: -1, id: 0, title: 'no-such-item', genres: '' });
    // A known user with an unknown item: the user's ids, the item cold.
    const user = [...referenceHistories(ds).keys()][0];
    const k = enc.encode({ user: { id: user }, candidates: [{ item: 'no-such-item' }] });
    expect(k.cold).toEqual([true]);
    expect(k.split.categorical[0]).not.toBe(0);
    expect(k.split.categorical[1]).toBe(0);
    // A supplied history naming an unknown item keeps its raw id as the prompt title.
    const s = enc.encode({
      user: { id: user },
      candidates: [{ item: known }],
      history: [{ item: ds.items.ids[1], rating: 2 }, { item: 'mystery' }],
    });
    expect(s.history).toEqual([
      expect.objectContaining({ itemRow: 1, rating: 2, title: ds.items.titles[1] }),
      { itemRow: -1, itemId: 0, title: 'mystery', genres: '', rating: enc.defaultRating },
    ]);
  });

  it('feedback appended since the dataset version reaches the history, past the ring’s growth and limit', () => {
    const enc = new RequestEncoder(w.dataset);
    const ds = w.dataset;
    const K = enc.historyLen;
    const [user, ref] = [...referenceHistories(ds)].find(([, r]) => r.entries.length > 3)!;
    // Three events, one of an item outside the item table: the window ends with them, in order.
    enc.observe({ user, item: ds.items.ids[5], rating: 1, ts: 1 });
    enc.observe({ user, item: 'new-release', rating: 4, ts: 2 });
    enc.observe({ user, item: ds.items.ids[6], rating: 5, ts: 3 });
    const expected = [
      ...ref.entries,
      enc.historyEntry(5, enc.item(ds.items.ids[5]).id, 1),
      { itemRow: -1, itemId: 0, title: 'new-release', genres: '', rating: 4 },
      enc.historyEntry(6, enc.item(ds.items.ids[6]).id, 5),
    ].slice(-K);
    expect(enc.knownHistory(user)).toEqual(expected);
    const e = enc.encode({
      user: { id: user },
      candidates: [{ item: ds.items.ids[0] }, { item: ds.items.ids[1] }],
    });
    expect(e.history).toEqual(expected);
    // Every row carries the same history columns.
    expect(Array.from(e.split.historyItemRows.subarray(K, 2 * K))).toEqual(
      Array.from(e.split.historyItemRows.subarray(0, K)),
    );
    // A user the dataset does not know gets a history from feedback alone, and is still a cold user.
    enc.observe({ user: 'newcomer', item: ds.items.ids[2], rating: 3, ts: 4 });
    const n = enc.encode({ user: { id: 'newcomer' }, candidates: [{ item: ds.items.ids[0] }] });
    expect(n.userKnown).toBe(false);
    expect(n.history).toEqual([enc.historyEntry(2, enc.item(ds.items.ids[2]).id, 3)]);
    // Many more events than the ring keeps: the window is the last K of them all.
    const items = Array.from({ length: 300 }, (_, i) =>
      i % 7 === 0 ? `cold-${i}` : ds.items.ids[i % ds.items.ids.length],
    );
    items.forEach((item, i) => enc.observe({ user, item, rating: (i % 5) + 1, ts: 10 + i }));
    const last = items.slice(-K).map((item, k) => {
      const i = items.length - K + k;
      const info = enc.item(item);
      return enc.historyEntry(info.row, info.id, (i % 5) + 1, info.row < 0 ? item : undefined);
    });
    expect(enc.knownHistory(user)).toEqual(last);
  });

  it('the observed ring keeps the last OBSERVED_PER_USER events of each user, oldest first', () => {
    const o = new ObservedHistories();
    const out = { rows: new Int32Array(1), ids: new Int32Array(1), ratings: new Float32Array(1) };
    for (let i = 0; i < OBSERVED_PER_USER + 44; i++)
      o.add('u', { row: i % 3 === 0 ? -1 : i, id: i }, i, `raw-${i}`);
    o.add('v', { row: 7, id: 70 }, 2, 'x');
    expect(o.size).toBe(2);
    expect(o.count('u')).toBe(OBSERVED_PER_USER);
    expect(o.count('nobody')).toBe(0);
    for (let k = 0; k < OBSERVED_PER_USER; k++) {
      const i = k + 44;
      const title = o.read('u', k, out, 0);
      expect([out.rows[0], out.ids[0], out.ratings[0], title]).toEqual([
        i % 3 === 0 ? -1 : i,
        i,
        i,
        i % 3 === 0 ? `raw-${i}` : undefined,
      ]);
    }
    expect(o.read('v', 0, out, 0)).toBeUndefined();
    expect([out.rows[0], out.ids[0], out.ratings[0]]).toEqual([7, 70, 2]);
  });
});

describe('pooled splits', () => {
  it('a reused split encodes exactly as a fresh one: nothing of the previous request leaks into it', () => {
    const pool = new SplitPool((n) => newSplit(w.dataset.featureMap, n), { perSize: 1 });
    const pooled = new RequestEncoder(w.dataset, { pool });
    const fresh = new RequestEncoder(w.dataset);
    const users = [...referenceHistories(w.dataset).keys()];
    const rnd = mulberry32(5);
    let reused = 0;
    for (let round = 0; round < 60; round++) {
      const n = [1, 7, 7, 50][round % 4];
      // Alternate long known histories, supplied short ones, cold users and user features.
      const user = round % 5 === 0 ? `cold-user-${round}` : users[Math.floor(rnd() * users.length)];
      const req = randomRequest(w.dataset, rnd, n, user);
      if (round % 3 === 1)
        req.history = [{ item: w.dataset.items.ids[round % 10], rating: 3 }, { item: 'odd' }];
      if (round % 7 === 2) req.user.features = { gender: w.dataset.featureMap.vocabularies.gender[1] };
      const before = pool.stats.reused;
      const a = pooled.encode(req);
      const b = fresh.encode(req);
      reused += pool.stats.reused - before;
      expect({ ...columns(a.split), timestamps: 0 }).toEqual({ ...columns(b.split), timestamps: 0 });
      expect(a.history).toEqual(b.history);
      expect(a.cold).toEqual(b.cold);
      pool.release(a.split);
    }
    expect(reused).toBeGreaterThan(40);
  });

  it('the engine scores the same with its pool as a fresh split would, and reuses its splits', async () => {
    const engine = await ServingEngine.load(w.store, w.bundle({ llm: null }), { log: () => undefined });
    try {
      const reference = new RequestEncoder(w.dataset);
      const users = [...referenceHistories(w.dataset).keys()];
      const rnd = mulberry32(9);
      const reqs = Array.from({ length: 40 }, (_, k) =>
        randomRequest(w.dataset, rnd, k % 2 ? 50 : 3, users[Math.floor(rnd() * users.length)]),
      );
      const served = [];
      for (const r of reqs) served.push(await engine.score(r));
      const offline = await w.crm.predict(
        concatSplits(reqs.map((r) => reference.encode(r).split)),
        undefined,
        4096,
      );
      let at = 0;
      for (const res of served)
        for (const c of res.candidates) expect(Math.abs(c.pCrm - offline[at++])).toBeLessThan(1e-6);
      expect(engine.splits.stats.reused).toBeGreaterThan(30);
    } finally {
      await engine.dispose();
    }
  });
});

describe('pooled micro-batches', () => {
  it('concurrent requests batched into reused joined splits score as each row does offline', async () => {
    const engine = await ServingEngine.load(w.store, w.bundle({ llm: null }), { log: () => undefined });
    try {
      const reference = new RequestEncoder(w.dataset);
      const users = [...referenceHistories(w.dataset).keys()];
      const rnd = mulberry32(21);
      for (let round = 0; round < 6; round++) {
        // The same total row count every round (4 + 9 + 20), different users and items.
        const reqs = [4, 9, 20].map((n) =>
          randomRequest(w.dataset, rnd, n, users[Math.floor(rnd() * users.length)]),
        );
        const served = await Promise.all(reqs.map((r) => engine.score(r)));
        const offline = await w.crm.predict(concatSplits(reqs.map((r) => reference.encode(r).split)));
        let at = 0;
        for (const res of served)
          for (const c of res.candidates) expect(Math.abs(c.pCrm - offline[at++])).toBeLessThan(1e-6);
      }
      const joined = engine.batcher.joinedSplits;
      expect(joined.created + joined.reused).toBeGreaterThanOrEqual(5);
      expect(joined.reused).toBeGreaterThanOrEqual(4);
    } finally {
      await engine.dispose();
    }
  });
});
