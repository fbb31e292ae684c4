import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { CorellaError } from '../../../ml/errors.js';
import {
  ingestDataset,
  loadDataset,
  loadSplit,
  sampleText,
  SPLITS,
  type CtrDataset,
} from '../../../ml/data/index.js';
import { movielensLines, tempDir, writeMovielens, type MovielensLines } from '../../helpers/datasets.js';

/** Independent, object-based reference of the sample semantics (time order, history, 80/10/10). */
function reference(lines: MovielensLines, minHistory: number, K: number) {
  const rows = lines.ratings.map((l, idx) => {
    const [u, m, r, t] = l.split('::').map(Number);
    return { idx, u, m, r, t };
  });
  rows.sort((a, b) => a.t - b.t || a.idx - b.idx);
  const seen = new Map<number, number[]>();
  const samples: { u: number; m: number; label: number; history: number[]; ratings: number[] }[] = [];
  const ratingsOf = new Map<number, number[]>();
  for (const row of rows) {
    const prev = seen.get(row.u) ?? [];
    const prevR = ratingsOf.get(row.u) ?? [];
    if (prev.length >= minHistory) {
      samples.push({
        u: row.u,
        m: row.m,
        label: row.r >= 4 ? 1 : 0,
        history: prev.slice(-K),
        ratings: prevR.slice(-K),
      });
    }
    seen.set(row.u, [...prev, row.m]);
    ratingsOf.set(row.u, [...prevR, row.r]);
  }
  return samples;
}

function allSamples(ds: CtrDataset) {
  const out: { id: number; u: string; m: string; label: number; history: string[]; ratings: number[] }[] = [];
  const uField = ds.featureMap.categorical.findIndex((f) => f.name === 'user_id');
  const C = ds.featureMap.categorical.length;
  for (const name of SPLITS) {
    const s = ds.splits[name];
    for (let r = 0; r < s.size; r++) {
      const hist: string[] = [];
      const ratings: number[] = [];
      for (let j = 0; j < s.historyLen; j++) {
        const row = s.historyItemRows[r * s.historyLen + j];
        if (row >= 0) {
          hist.push(ds.items.ids[row]);
          ratings.push(s.historyRatings[r * s.historyLen + j]);
        }
      }
      const uIdx = s.categorical[r * C + uField];
      out.push({
        id: s.sampleIds[r],
        u: ds.featureMap.vocabularies.user_id[uIdx],
        m: ds.items.ids[s.targetItemRows[r]],
        label: s.labels[r],
        history: hist,
        ratings,
      });
    }
  }
  return out.sort((a, b) => a.id - b.id);
}

describe('MovieLens-1M ingestion', () => {
  it('builds time-ordered samples with the most recent earlier items as history', async () => {
    const dir = await tempDir();
    const lines = movielensLines({ users: 12, movies: 25, ratingsPerUser: 12, extraUsers: 3 });
    await writeMovielens(dir, lines);
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'movielens-1m', dir, historyLen: 4 }, store);
    const ds = await loadDataset(store, m);

    const ref = reference(lines, 5, 4);
    const got = allSamples(ds);
    expect(got.length).toBe(ref.length);
    for (let i = 0; i < ref.length; i++) {
      expect(got[i].id).toBe(i);
      // user_id may be OOV (0) in valid/test, so compare on items/labels/history only there.
      expect(got[i].m).toBe(String(ref[i].m));
      expect(got[i].label).toBe(ref[i].label);
      expect(got[i].history).toEqual(ref[i].history.map(String));
      expect(got[i].ratings).toEqual(ref[i].ratings);
    }
    expect(m.dropped.short_history).toBe(lines.ratings.length - ref.length);
    // The text side: titles of target and history, with the history's ratings.
    const titleOf = new Map(lines.movies.map((l) => [l.split('::')[0], l.split('::')[1]]));
    const last = ds.splits.test.size - 1;
    const text = sampleText(ds.splits.test, ds.items, last);
    const refLast = ref[ref.length - 1];
    expect(text.target.title).toBe(titleOf.get(String(refLast.m)));
    expect(text.history.map((h) => h.title)).toEqual(refLast.history.map((x) => titleOf.get(String(x))));
    expect(text.history.map((h) => h.rating)).toEqual(refLast.ratings);
    expect(m.stats.train.size).toBe(Math.floor(ref.length * 0.8));
    expect(m.stats.train.size + m.stats.valid.size).toBe(Math.floor(ref.length * 0.9));
    const pos = ref.filter((s) => s.label === 1).length;
    expect(m.stats.train.positives + m.stats.valid.positives + m.stats.test.positives).toBe(pos);
    // users.dat lists 3 users without ratings: they are not counted.
    expect(m.userCount).toBe(12);
    expect(m.itemCount).toBe(25);
    expect(m.inputs.map((i) => i.name).sort()).toEqual(['movies.dat', 'ratings.dat', 'users.dat']);
  });

  it('builds vocabularies from the training split only, index 0 for unseen values', async () => {
    const dir = await tempDir();
    const lines = movielensLines({ users: 10, movies: 20, ratingsPerUser: 10 });
    // A movie rated only at the very end lands in test: it must be OOV there.
    lines.movies.push('99::Late Movie (2001)::Western');
    lines.ratings.push('1::99::5::999999999');
    await writeMovielens(dir, lines);
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'movielens-1m', dir }, store);
    const ds = await loadDataset(store, m);
    const fm = ds.featureMap;
    expect(fm.vocabularies.item_id).not.toContain('99');
    expect(fm.vocabularies.genres).not.toContain('Western');
    const t = ds.splits.test;
    const C = fm.categorical.length;
    const itemField = fm.categorical.findIndex((f) => f.name === 'item_id');
    const last = t.size - 1;
    expect(ds.items.ids[t.targetItemRows[last]]).toBe('99');
    expect(t.categorical[last * C + itemField]).toBe(0);
    // Every id in train is in range and item_id vocab matches its field size.
    const itemVocab = fm.categorical[itemField].vocabSize;
    expect(itemVocab).toBe(fm.vocabularies.item_id.length);
    for (let r = 0; r < ds.splits.train.size; r++) {
      expect(ds.splits.train.categorical[r * C + itemField]).toBeGreaterThan(0);
    }
    for (const v of ds.splits.train.sequences[0]) expect(v).toBeLessThan(itemVocab);
    expect(fm.sequences[0]).toMatchObject({ name: 'history', sharesVocabWith: 'item_id' });
  });

  it('decodes Latin-1 titles, and accepts a UTF-8 re-encoded movies.dat with the same result', async () => {
    const lines = movielensLines();
    const a = await tempDir();
    const b = await tempDir();
    await writeMovielens(a, lines, { moviesEncoding: 'latin1' });
    await writeMovielens(b, lines, { moviesEncoding: 'utf8' });
    const sa = new FileArtifactStore(join(a, 'store'));
    const sb = new FileArtifactStore(join(b, 'store'));
    const ma = await ingestDataset({ source: 'movielens-1m', dir: a }, sa);
    const mb = await ingestDataset({ source: 'movielens-1m', dir: b }, sb);
    const da = await loadDataset(sa, ma);
    expect(da.items.titles[0]).toBe('Misérables, Les (1995)');
    expect(mb.itemTableArtifact).toBe(ma.itemTableArtifact);
    expect(mb.splitArtifacts).toEqual(ma.splitArtifacts);
  });

  it('marks the synthetic source in the manifest', async () => {
    const dir = await writeMovielens(await tempDir(), movielensLines());
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'synthetic-movielens', dir }, store);
    expect(m.source).toBe('synthetic-movielens');
    expect(m.params.synthetic).toBe(true);
  });

  it('refuses a split encoded with another feature map', async () => {
    const dir = await writeMovielens(await tempDir(), movielensLines());
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'movielens-1m', dir }, store);
    await expect(loadSplit(store, m, 'train', 'f'.repeat(64))).rejects.toMatchObject({
      code: 'FEATURE_MAP_MISMATCH',
    });
    // A manifest pointing at a tampered feature map (valid artifact, wrong id) is refused on load.
    const ds = await loadDataset(store, m);
    const tampered = await store.put(
      JSON.stringify({ ...ds.featureMap, dense: [{ name: 'x', kind: 'dense' }] }),
    );
    await expect(loadDataset(store, { ...m, featureMapArtifact: tampered.sha256 })).rejects.toMatchObject({
      code: 'FEATURE_MAP_MISMATCH',
    });
  });

  it('says what to pass when the folder does not exist', async () => {
    const dir = join(await tempDir(), 'nope');
    const store = new FileArtifactStore(join(dir, 'store'));
    const err = await ingestDataset({ source: 'movielens-1m', dir }, store).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect(err).toMatchObject({ code: 'DATA_NOT_AVAILABLE' });
    expect(String((err as Error).message)).toMatch(/CORELLA_DATA_DIR/);
  });
});
