import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import {
  GENRE_WORDS,
  generateSyntheticMovielens,
  ingestDataset,
  loadDataset,
  SPLITS,
} from '../../../ml/data/index.js';
import { tempDir } from '../../helpers/datasets.js';

const SMALL = { users: 300, items: 200, ratingsPerUser: 20 };
const FILES = ['ratings.dat', 'movies.dat', 'users.dat'];

describe('synthetic MovieLens generator', () => {
  it('gives identical bytes for the same seed and different bytes for another seed', async () => {
    const a = await tempDir();
    const b = await tempDir();
    const c = await tempDir();
    await generateSyntheticMovielens(a, { ...SMALL, seed: 11 });
    await generateSyntheticMovielens(b, { ...SMALL, seed: 11 });
    await generateSyntheticMovielens(c, { ...SMALL, seed: 12 });
    for (const f of FILES) {
      const fa = await readFile(join(a, f));
      expect(fa.length).toBeGreaterThan(0);
      expect((await readFile(join(b, f))).equals(fa)).toBe(true);
      expect((await readFile(join(c, f))).equals(fa)).toBe(false);
    }
  });

  it('has long-tail popularity and titles built from genre words with a year', async () => {
    const dir = await tempDir();
    const g = await generateSyntheticMovielens(dir, { ...SMALL, seed: 3 });
    const ratings = (await readFile(join(dir, 'ratings.dat'), 'latin1')).trim().split('\n');
    expect(ratings.length).toBe(g.ratings);
    const counts = new Map<string, number>();
    for (const l of ratings) {
      const m = l.split('::')[1];
      counts.set(m, (counts.get(m) ?? 0) + 1);
    }
    const sorted = [...counts.values()].sort((x, y) => y - x);
    const top = sorted.slice(0, Math.ceil(g.items / 10)).reduce((s, x) => s + x, 0);
    expect(top / ratings.length).toBeGreaterThan(0.3);
    const movies = (await readFile(join(dir, 'movies.dat'), 'latin1')).trim().split('\n');
    expect(movies.length).toBe(g.items);
    const allWords = Object.values(GENRE_WORDS).flat();
    for (const l of movies) {
      const [, title, genres] = l.split('::');
      expect(title).toMatch(/ \((19|20)\d\d\)$/);
      expect(allWords.some((w) => title.includes(w))).toBe(true);
      expect(genres.split('|').every((x) => x in GENRE_WORDS)).toBe(true);
    }
  });

  it('plants cold items whose labels follow the title text, not ids or listed genres', async () => {
    const dir = await tempDir();
    const g = await generateSyntheticMovielens(dir, { ...SMALL, seed: 5 });
    expect(g.plantedItemIds.length).toBeGreaterThan(0);
    const movies = new Map(
      (await readFile(join(dir, 'movies.dat'), 'latin1'))
        .trim()
        .split('\n')
        .map((l) => l.split('::'))
        .map(([id, title, genres]) => [id, { title, genres: genres.split('|') }]),
    );
    for (const id of g.plantedItemIds) {
      const text = g.plantedTextGenre[id];
      const m = movies.get(id)!;
      expect(GENRE_WORDS[text].some((w) => m.title.includes(w))).toBe(true);
      expect(m.genres).not.toContain(text);
    }

    const store = new FileArtifactStore(join(dir, 'store'));
    const manifest = await ingestDataset({ source: 'synthetic-movielens', dir }, store);
    expect(manifest.source).toBe('synthetic-movielens');
    const ds = await loadDataset(store, manifest);
    // Every synthetic user rates something, so user rows follow users.dat order (row r = user r + 1).
    expect(manifest.userCount).toBe(g.users);
    const planted = new Set(g.plantedItemIds);
    const C = ds.featureMap.categorical.length;
    const itemCol = ds.featureMap.categorical.findIndex((f) => f.name === 'item_id');
    let n = 0;
    let agree = 0;
    let positives = 0;
    const perSplit: Record<string, number> = {};
    for (const name of SPLITS) {
      const s = ds.splits[name];
      for (let r = 0; r < s.size; r++) {
        const id = ds.items.ids[s.targetItemRows[r]];
        if (!planted.has(id)) continue;
        perSplit[name] = (perSplit[name] ?? 0) + 1;
        // Cold: unknown to the CRM's item vocabulary.
        expect(s.categorical[r * C + itemCol]).toBe(0);
        const likes = g.favouriteGenres[String(s.userRows[r] + 1)].includes(g.plantedTextGenre[id]);
        n++;
        positives += s.labels[r];
        if ((s.labels[r] === 1) === likes) agree++;
      }
    }
    expect(perSplit.train ?? 0).toBe(0);
    expect(perSplit.test).toBeGreaterThan(20);
    expect(agree / n).toBeGreaterThan(0.9);
    expect(positives / n).toBeGreaterThan(0.3);
    expect(positives / n).toBeLessThan(0.7);
  });
});
