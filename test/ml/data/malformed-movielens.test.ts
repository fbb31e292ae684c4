import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { DatasetError } from '../../../ml/errors.js';
import { ingestDataset } from '../../../ml/data/index.js';
import {
  listFiles,
  movielensLines,
  tempDir,
  writeMovielens,
  type MovielensLines,
} from '../../helpers/datasets.js';

interface Case {
  name: string;
  mutate: (l: MovielensLines) => void;
  write?: Parameters<typeof writeMovielens>[2];
  file: string;
  line?: number;
  field?: string;
  reason: string;
  /** Reason still fatal with onBadLine: 'skip' (whole-file problems). */
  fatal?: boolean;
}

/** Replaces field `idx` of a `::`-separated line. */
function setField(line: string, idx: number, value: string): string {
  const parts = line.split('::');
  parts[idx] = value;
  return parts.join('::');
}

const cases: Case[] = [
  {
    name: 'wrong field count',
    mutate: (l) => (l.ratings[3] = '1::2::3'),
    file: 'ratings.dat',
    line: 4,
    reason: 'field_count',
  },
  {
    name: 'non-numeric rating',
    mutate: (l) => (l.ratings[5] = setField(l.ratings[5], 2, 'four')),
    file: 'ratings.dat',
    line: 6,
    field: 'Rating',
    reason: 'bad_rating',
  },
  {
    name: 'out-of-range rating',
    mutate: (l) => (l.ratings[6] = setField(l.ratings[6], 2, '7')),
    file: 'ratings.dat',
    line: 7,
    field: 'Rating',
    reason: 'bad_rating',
  },
  {
    name: 'non-numeric timestamp',
    mutate: (l) => (l.ratings[2] = setField(l.ratings[2], 3, 'yesterday')),
    file: 'ratings.dat',
    line: 3,
    field: 'Timestamp',
    reason: 'bad_timestamp',
  },
  {
    name: 'unknown movie id',
    mutate: (l) => (l.ratings[8] = setField(l.ratings[8], 1, '4242')),
    file: 'ratings.dat',
    line: 9,
    field: 'MovieID',
    reason: 'unknown_item',
  },
  {
    name: 'unknown user id',
    mutate: (l) => (l.ratings[9] = setField(l.ratings[9], 0, '777')),
    file: 'ratings.dat',
    line: 10,
    field: 'UserID',
    reason: 'unknown_user',
  },
  {
    name: 'duplicate rating',
    mutate: (l) => l.ratings.splice(11, 0, l.ratings[10]),
    file: 'ratings.dat',
    line: 12,
    field: 'MovieID',
    reason: 'duplicate_id',
  },
  {
    name: 'duplicate movie id',
    mutate: (l) => (l.movies[4] = setField(l.movies[4], 0, '2')),
    file: 'movies.dat',
    line: 5,
    field: 'MovieID',
    reason: 'duplicate_id',
  },
  {
    name: 'duplicate user id',
    mutate: (l) => l.users.push(l.users[0]),
    file: 'users.dat',
    line: 13,
    field: 'UserID',
    reason: 'duplicate_id',
  },
  {
    name: 'bad gender',
    mutate: (l) => (l.users[1] = setField(l.users[1], 1, 'X')),
    file: 'users.dat',
    line: 2,
    field: 'Gender',
    reason: 'bad_value',
  },
  {
    name: 'empty file',
    mutate: (l) => (l.ratings = []),
    file: 'ratings.dat',
    reason: 'empty_file',
    fatal: true,
  },
  {
    name: 'missing file',
    mutate: () => undefined,
    write: { omit: ['users'] },
    file: 'users.dat',
    reason: 'missing_file',
    fatal: true,
  },
  {
    name: 'wrong encoding (UTF-16)',
    mutate: () => undefined,
    write: { moviesEncoding: 'utf16le' },
    file: 'movies.dat',
    line: 1,
    reason: 'wrong_encoding',
    fatal: true,
  },
];

describe('malformed MovieLens input', () => {
  for (const c of cases) {
    it(`${c.name}: DatasetError naming file, line and field; nothing stored`, async () => {
      const dir = await tempDir();
      const lines = movielensLines();
      c.mutate(lines);
      await writeMovielens(dir, lines, c.write);
      const storeDir = join(dir, 'store');
      const store = new FileArtifactStore(storeDir);
      const err = await ingestDataset({ source: 'movielens-1m', dir }, store).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatasetError);
      const e = err as DatasetError;
      expect(e.file).toBe(join(dir, c.file));
      expect(e.line).toBe(c.line);
      expect(e.field).toBe(c.field);
      expect(e.details.reason).toBe(c.reason);
      expect(e.retryable).toBe(false);
      expect(e.message).toContain(c.file);
      if (c.line !== undefined && !c.fatal) expect(e.excerpt).toBeTruthy();
      expect(await listFiles(storeDir)).toEqual([]);

      // With onBadLine: 'skip' the line is counted under its reason instead (whole-file errors stay fatal).
      const skipped = ingestDataset({ source: 'movielens-1m', dir, onBadLine: 'skip' }, store);
      if (c.fatal) {
        await expect(skipped).rejects.toBeInstanceOf(DatasetError);
        expect(await listFiles(storeDir)).toEqual([]);
      } else {
        const m = await skipped;
        expect(m.dropped[c.reason]).toBe(1);
      }
    });
  }
});
