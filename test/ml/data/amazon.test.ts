import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { DatasetError } from '../../../ml/errors.js';
import { ingestDataset, loadDataset, SPLITS, type CtrDataset } from '../../../ml/data/index.js';
import {
  listFiles,
  tempDir,
  writeAmazon,
  writeJsonLines,
  type AmazonMeta,
  type AmazonReview,
} from '../../helpers/datasets.js';

const r = (reviewerID: string, asin: string, overall: number, unixReviewTime: number): AmazonReview => ({
  reviewerID,
  asin,
  overall,
  unixReviewTime,
  reviewText: 'fine',
});

/**
 * Hand-computed case (k = 2, minHistory = 1, split 60/20/20):
 * - (u1,b2) is reviewed twice: the later review (t=500) is a duplicate and dropped;
 * - u4 has one review: removed by the first k-core pass;
 * - b4 has no metadata: its 2 reviews go, which leaves u5 with one review: removed by the second pass;
 * - left: u1 b1@100(5) b2@200(4) b3@300(5); u2 b1@150(3) b2@250(5) b3@350(2); u3 b1@120(5) b2@220(1);
 * - first interaction of each user has no history: 3 dropped; samples in time order:
 *   u1b2@200 (0, [b1]), u3b2@220 (0, [b1]), u2b2@250 (1, [b1]) | u1b3@300 (1, [b1,b2]) | u2b3@350 (0, [b1,b2]).
 */
const reviews: AmazonReview[] = [
  r('u1', 'b1', 5, 100),
  r('u1', 'b2', 4, 200),
  r('u1', 'b3', 5, 300),
  r('u2', 'b1', 3, 150),
  r('u2', 'b2', 5, 250),
  r('u2', 'b3', 2, 350),
  r('u3', 'b1', 5, 120),
  r('u3', 'b2', 1, 220),
  r('u3', 'b4', 5, 320),
  r('u4', 'b1', 5, 400),
  r('u1', 'b2', 3, 500),
  r('u5', 'b4', 5, 330),
  r('u5', 'b1', 4, 340),
];
const meta: (AmazonMeta | string)[] = [
  { asin: 'b1', title: 'The Quiet Garden', category: ['Books', 'Literature & Fiction'], brand: 'A. Author' },
  { asin: 'b2', title: 'Rivers of Night', category: ['Books', 'Mystery'], brand: 'B. Writer' },
  { asin: 'b99', title: 'Never Reviewed', category: ['Books'] },
  // Lines of items nobody kept are not parsed: this broken one is ignored.
  '{"asin": "b98", "title": broken',
  { asin: 'b3', title: 'Stars Over Lyon', category: ['Books', 'Science Fiction'] },
];

function samples(ds: CtrDataset) {
  const out: { u: string; item: string; label: number; hist: string[]; split: string }[] = [];
  for (const name of SPLITS) {
    const s = ds.splits[name];
    for (let i = 0; i < s.size; i++) {
      const hist = Array.from(s.historyItemRows.subarray(i * s.historyLen, (i + 1) * s.historyLen))
        .filter((x) => x >= 0)
        .map((x) => ds.items.ids[x]);
      const u = ds.featureMap.vocabularies.user_id[s.categorical[i * ds.featureMap.categorical.length]];
      out.push({ u, item: ds.items.ids[s.targetItemRows[i]], label: s.labels[i], hist, split: name });
    }
  }
  return out;
}

describe('Amazon-Books ingestion', () => {
  for (const gzip of [false, true]) {
    it(`matches the hand-computed case (${gzip ? 'gzip' : 'plain'} JSON lines)`, async () => {
      const dir = await writeAmazon(await tempDir(), reviews, meta, { gzip });
      const store = new FileArtifactStore(join(dir, 'store'));
      const m = await ingestDataset(
        { source: 'amazon-books', dir, kCore: 2, minHistory: 1, historyLen: 3, split: [0.6, 0.2, 0.2] },
        store,
      );
      expect(m.dropped).toEqual({ duplicate_review: 1, k_core: 2, missing_metadata: 2, short_history: 3 });
      expect(m.stats.train).toEqual({ size: 3, positives: 1, positiveRate: 1 / 3 });
      expect(m.stats.valid).toEqual({ size: 1, positives: 1, positiveRate: 1 });
      expect(m.stats.test).toEqual({ size: 1, positives: 0, positiveRate: 0 });
      expect(m.userCount).toBe(3);
      expect(m.itemCount).toBe(3);
      const ds = await loadDataset(store, m);
      expect(samples(ds)).toEqual([
        { u: 'u1', item: 'b2', label: 0, hist: ['b1'], split: 'train' },
        { u: 'u3', item: 'b2', label: 0, hist: ['b1'], split: 'train' },
        { u: 'u2', item: 'b2', label: 1, hist: ['b1'], split: 'train' },
        { u: 'u1', item: 'b3', label: 1, hist: ['b1', 'b2'], split: 'valid' },
        { u: 'u2', item: 'b3', label: 0, hist: ['b1', 'b2'], split: 'test' },
      ]);
      expect(ds.featureMap.vocabularies.item_id).toEqual(['<oov>', 'b1', 'b2']);
      expect(ds.items.titles).toEqual(['The Quiet Garden', 'Rivers of Night', 'Stars Over Lyon']);
      expect(ds.items.genres[2]).toBe('Books, Science Fiction');
      expect(ds.featureMap.categorical.map((f) => f.name)).toEqual(['user_id', 'item_id', 'brand']);
      expect(ds.featureMap.sequences.map((f) => f.name)).toEqual(['history', 'category']);
      // History ratings are the (deduplicated, earliest) ratings: u1's b2 was rated 4, not 3.
      const v = ds.splits.valid;
      expect(Array.from(v.historyRatings.subarray(0, 2))).toEqual([5, 4]);
    });
  }

  it('keeps the earliest of duplicate reviews whatever their file order', async () => {
    const dir = await writeAmazon(
      await tempDir(),
      [
        r('u1', 'b1', 3, 200),
        r('u1', 'b2', 4, 300),
        r('u1', 'b1', 5, 100),
        r('u2', 'b1', 2, 150),
        r('u2', 'b2', 5, 250),
      ],
      meta,
    );
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset({ source: 'amazon-books', dir, minHistory: 0, split: [1, 0, 0] }, store);
    expect(m.dropped).toEqual({ duplicate_review: 1 });
    const t = (await loadDataset(store, m)).splits.train;
    expect(Array.from(t.timestamps)).toEqual([100, 150, 250, 300]);
    expect(Array.from(t.labels)).toEqual([1, 0, 1, 0]);
    // u1's b2 sample sees b1 with the kept rating (5, from t=100), not the later 3.
    expect(t.historyRatings[3 * t.historyLen]).toBe(5);
  });

  it('applies the time window while streaming', async () => {
    const dir = await writeAmazon(await tempDir(), reviews, meta);
    const store = new FileArtifactStore(join(dir, 'store'));
    const m = await ingestDataset(
      { source: 'amazon-books', dir, minHistory: 0, timeWindow: { from: 110, to: 345 } },
      store,
    );
    // Outside [110, 345): t=100, 350, 400, 500.
    expect(m.dropped.time_window).toBe(4);
    const ds = await loadDataset(store, m);
    for (const s of SPLITS) for (const t of ds.splits[s].timestamps) expect(t >= 110 && t < 345).toBe(true);
  });

  const cases: {
    name: string;
    write: (dir: string) => Promise<unknown>;
    file: string;
    line?: number;
    field?: string;
    reason: string;
    skippable: boolean;
  }[] = [
    {
      name: 'bad JSON',
      write: (d) =>
        writeAmazon(d, [...reviews.slice(0, 4), '{"reviewerID": "u9", ', ...reviews.slice(4)], meta),
      file: 'Books_5.json',
      line: 5,
      reason: 'bad_json',
      skippable: true,
    },
    {
      name: 'out-of-range rating',
      write: (d) => writeAmazon(d, [...reviews.slice(0, 2), r('u1', 'b7', 9, 10), ...reviews.slice(2)], meta),
      file: 'Books_5.json',
      line: 3,
      field: 'overall',
      reason: 'bad_rating',
      skippable: true,
    },
    {
      name: 'missing reviewerID',
      write: (d) =>
        writeAmazon(
          d,
          [{ asin: 'b1', overall: 5, unixReviewTime: 1 } as unknown as AmazonReview, ...reviews],
          meta,
        ),
      file: 'Books_5.json',
      line: 1,
      field: 'reviewerID',
      reason: 'missing_field',
      skippable: true,
    },
    {
      name: 'invalid UTF-8',
      write: async (d) => {
        await writeAmazon(d, reviews, meta);
        const bad = Buffer.concat([
          Buffer.from(reviews.map((x) => JSON.stringify(x)).join('\n') + '\n'),
          Buffer.from([0xff, 0xfe, 0x0a]),
        ]);
        await import('node:fs/promises').then((fs) => fs.writeFile(join(d, 'Books_5.json'), bad));
      },
      file: 'Books_5.json',
      line: 14,
      reason: 'wrong_encoding',
      skippable: true,
    },
    {
      name: 'truncated gzip',
      write: async (d) => {
        await writeAmazon(d, reviews, meta, { gzip: true });
        await writeJsonLines(join(d, 'Books_5.json.gz'), reviews, { gzip: true, truncate: 120 });
      },
      file: 'Books_5.json.gz',
      reason: 'truncated_gzip',
      skippable: false,
    },
    {
      name: 'empty file',
      write: async (d) => {
        await writeAmazon(d, reviews, meta);
        await import('node:fs/promises').then((fs) => fs.writeFile(join(d, 'Books_5.json'), ''));
      },
      file: 'Books_5.json',
      reason: 'empty_file',
      skippable: false,
    },
    {
      name: 'missing metadata file',
      write: async (d) => {
        await writeAmazon(d, reviews, meta);
        await import('node:fs/promises').then((fs) => fs.rm(join(d, 'meta_Books.json')));
      },
      file: 'meta_Books.json.gz',
      reason: 'missing_file',
      skippable: false,
    },
  ];
  for (const c of cases) {
    it(`malformed: ${c.name}`, async () => {
      const dir = await tempDir();
      await c.write(dir);
      const storeDir = join(dir, 'store');
      const store = new FileArtifactStore(storeDir);
      const err = await ingestDataset({ source: 'amazon-books', dir, minHistory: 1 }, store).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DatasetError);
      const e = err as DatasetError;
      expect(e.file).toBe(join(dir, c.file));
      if (c.line !== undefined) expect(e.line).toBe(c.line);
      expect(e.field).toBe(c.field);
      expect(e.details.reason).toBe(c.reason);
      expect(await listFiles(storeDir)).toEqual([]);
      const skipped = ingestDataset({ source: 'amazon-books', dir, minHistory: 1, onBadLine: 'skip' }, store);
      if (c.skippable) expect((await skipped).dropped[c.reason]).toBe(1);
      else await expect(skipped).rejects.toBeInstanceOf(DatasetError);
    });
  }
});
