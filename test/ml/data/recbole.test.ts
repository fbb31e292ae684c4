import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { DatasetError } from '../../../ml/errors.js';
import { ingestDataset, loadDataset } from '../../../ml/data/index.js';
import {
  atomicText,
  listFiles,
  movielensLines,
  recboleTables,
  tempDir,
  writeMovielens,
  writeRecbole,
  type AtomicTable,
} from '../../helpers/datasets.js';

describe('RecBole atomic files', () => {
  it('gives the same samples as the equivalent MovieLens files', async () => {
    const opts = { seed: 5, users: 10, movies: 20, ratingsPerUser: 11 };
    const rb = await writeRecbole(await tempDir(), 'ml', recboleTables(opts));
    const ml = await writeMovielens(await tempDir(), movielensLines(opts));
    const sr = new FileArtifactStore(join(rb, 'store'));
    const sm = new FileArtifactStore(join(ml, 'store'));
    const mr = await ingestDataset({ source: 'recbole', dir: rb, name: 'ml' }, sr);
    const mm = await ingestDataset({ source: 'movielens-1m', dir: ml }, sm);
    expect(mr.stats).toEqual(mm.stats);
    const dr = await loadDataset(sr, mr);
    const dm = await loadDataset(sm, mm);
    expect(dr.splits.test.labels).toEqual(dm.splits.test.labels);
    const ids = (d: typeof dr, rows: Int32Array) => Array.from(rows, (r) => (r < 0 ? '' : d.items.ids[r]));
    expect(ids(dr, dr.splits.test.historyItemRows)).toEqual(ids(dm, dm.splits.test.historyItemRows));
    expect(dr.featureMap.categorical.map((f) => f.name)).toEqual([
      'user_id',
      'item_id',
      'age',
      'gender',
      'occupation',
      'zip_code',
      'release_year',
    ]);
    expect(dr.featureMap.sequences.map((f) => f.name)).toEqual(['history', 'genre']);
    // Titles come from the movie_title field.
    expect(dr.items.titles[dr.items.ids.indexOf('1')]).toBe('Misérables, Les');
    expect(dr.items.genres[dr.items.ids.indexOf('1')]).toMatch(/, /);
  });

  it('keeps a predefined split as given, uses the label column, allows empty histories', async () => {
    const t = recboleTables({ seed: 2, users: 8, movies: 15, ratingsPerUser: 10, withLabel: true });
    const rows = [...t.inter.rows].sort((a, b) => Number(a[3]) - Number(b[3]));
    const part = (from: number, to: number): AtomicTable => ({
      header: t.inter.header,
      rows: rows.slice(from, to),
    });
    const n = rows.length;
    const dir = await writeRecbole(await tempDir(), 'x', {
      'train.inter': part(0, n - 20),
      'valid.inter': part(n - 20, n - 8),
      'test.inter': part(n - 8, n),
      item: t.item,
      user: t.user,
    });
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'recbole', dir, name: 'x' }, store);
    expect([m.stats.train.size, m.stats.valid.size, m.stats.test.size]).toEqual([n - 20, 12, 8]);
    expect(m.params.split).toBe('predefined');
    expect(m.params.minHistory).toBe(0);
    expect(m.dropped.short_history ?? 0).toBe(0);
    const labelCol = t.inter.header.indexOf('label:float');
    const expectedPos = rows.slice(n - 8).filter((r) => r[labelCol] === 1).length;
    expect(m.stats.test.positives).toBe(expectedPos);
    const ds = await loadDataset(store, m);
    // The very first interaction has no history at all.
    const first = ds.splits.train;
    expect(Array.from(first.historyItemRows.subarray(0, first.historyLen)).every((v) => v === -1)).toBe(true);
    // minHistory can still be asked for explicitly.
    const strict = await ingestDataset({ source: 'recbole', dir, name: 'x', minHistory: 3 }, store);
    expect(strict.stats.train.size).toBeLessThan(m.stats.train.size);
  });

  const base = () => recboleTables({ seed: 3, users: 6, movies: 12, ratingsPerUser: 8 });
  const cases: {
    name: string;
    tables: (t: Record<string, AtomicTable>) => Record<string, AtomicTable | string | Buffer>;
    file: string;
    line?: number;
    field?: string;
    reason: string;
    skippable?: boolean;
  }[] = [
    {
      name: 'header field without a type',
      tables: (t) => ({ ...t, inter: atomicText(t.inter).replace('rating:float', 'rating') }),
      file: 'r.inter',
      line: 1,
      field: 'rating',
      reason: 'bad_header',
    },
    {
      name: 'wrong field count',
      tables: (t) => ({
        ...t,
        inter: { ...t.inter, rows: t.inter.rows.map((r, i) => (i === 2 ? r.slice(0, 3) : r)) },
      }),
      file: 'r.inter',
      line: 4,
      reason: 'field_count',
      skippable: true,
    },
    {
      name: 'non-numeric rating',
      tables: (t) => ({
        ...t,
        inter: { ...t.inter, rows: t.inter.rows.map((r, i) => (i === 4 ? [r[0], r[1], 'x', r[3]] : r)) },
      }),
      file: 'r.inter',
      line: 6,
      field: 'rating',
      reason: 'bad_rating',
      skippable: true,
    },
    {
      name: 'unknown item id',
      tables: (t) => ({
        ...t,
        inter: { ...t.inter, rows: t.inter.rows.map((r, i) => (i === 1 ? [r[0], '999', r[2], r[3]] : r)) },
      }),
      file: 'r.inter',
      line: 3,
      field: 'item_id',
      reason: 'unknown_item',
      skippable: true,
    },
    {
      name: 'duplicate item id',
      tables: (t) => ({ ...t, item: { ...t.item, rows: [...t.item.rows, t.item.rows[0]] } }),
      file: 'r.item',
      line: 14,
      field: 'item_id',
      reason: 'duplicate_id',
      skippable: true,
    },
    {
      name: 'missing rating and label columns',
      tables: (t) => ({
        ...t,
        inter: {
          header: ['user_id:token', 'item_id:token', 'timestamp:float'],
          rows: t.inter.rows.map((r) => [r[0], r[1], r[3]]),
        },
      }),
      file: 'r.inter',
      line: 1,
      field: 'rating',
      reason: 'missing_column',
    },
    {
      name: 'empty file',
      tables: (t) => ({ ...t, inter: '' }),
      file: 'r.inter',
      reason: 'empty_file',
    },
    {
      name: 'wrong encoding',
      tables: (t) => ({ ...t, item: Buffer.from(atomicText(t.item), 'latin1') }),
      file: 'r.item',
      line: 2,
      reason: 'wrong_encoding',
    },
    {
      name: 'predefined split with a missing part',
      tables: (t) => ({ 'train.inter': t.inter, 'test.inter': t.inter, item: t.item }),
      file: 'r.valid.inter',
      reason: 'missing_file',
    },
  ];
  for (const c of cases) {
    it(`malformed: ${c.name}`, async () => {
      const dir = await writeRecbole(await tempDir(), 'r', c.tables(base()));
      const storeDir = join(dir, 'store');
      const err = await ingestDataset(
        { source: 'recbole', dir, name: 'r' },
        new FileArtifactStore(storeDir),
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatasetError);
      expect(err).toMatchObject({
        file: join(dir, c.file),
        line: c.line,
        field: c.field,
        details: { reason: c.reason },
      });
      expect(await listFiles(storeDir)).toEqual([]);
      const skipped = ingestDataset(
        { source: 'recbole', dir, name: 'r', onBadLine: 'skip', minHistory: 1 },
        new FileArtifactStore(storeDir),
      );
      if (c.skippable) expect((await skipped).dropped[c.reason]).toBe(1);
      else await expect(skipped).rejects.toBeInstanceOf(DatasetError);
    });
  }
});
