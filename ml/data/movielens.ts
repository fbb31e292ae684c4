import { join } from 'node:path';
import { DatasetError } from '../errors.js';
import type { BadLineSink } from './bad-lines.js';
import { excerptOf, isBlank, parseNumber, splitFields } from './byte-lines.js';
import { assertNoNul, isValidUtf8, readInputFile, type LoadedFile } from './input-files.js';
import { growF32, growF64, growI32, type RawDataset } from './raw.js';
import type { DatasetSource } from './types.js';

/** Characters of the zip code kept as the `zip` feature: a coarse region, not an identifier. */
export const ZIP_PREFIX_LEN = 3;

const YEAR_RE = /\((\d{4})\)\s*$/;

/**
 * MovieLens-1M folder: ratings.dat, movies.dat (Latin-1), users.dat, all `::`-separated.
 * Genres become a sequence field (`genres`, every genre of the movie, not just the first) and the year
 * in the title a categorical field (`year`).
 */
export async function readMovielens(
  dir: string,
  source: DatasetSource,
  sink: BadLineSink,
): Promise<RawDataset> {
  const movies = await readInputFile(join(dir, 'movies.dat'), 'MovieLens movies.dat');
  const users = await readInputFile(join(dir, 'users.dat'), 'MovieLens users.dat');
  const ratings = await readInputFile(join(dir, 'ratings.dat'), 'MovieLens ratings.dat');

  const m = parseMovies(movies, sink);
  const u = parseUsers(users, sink);
  const inter = parseRatings(ratings, m.index, u.index, sink);

  return {
    source,
    inputs: [movies.input, users.input, ratings.input],
    userIds: u.ids,
    itemIds: m.ids,
    itemTitles: m.titles,
    itemGenres: m.genres.map((g) => g.join(', ')),
    userAttrs: [
      { name: 'gender', kind: 'categorical', values: u.gender },
      { name: 'age', kind: 'categorical', values: u.age },
      { name: 'occupation', kind: 'categorical', values: u.occupation },
      { name: 'zip', kind: 'categorical', values: u.zip },
    ],
    itemAttrs: [
      { name: 'year', kind: 'categorical', values: m.years },
      { name: 'genres', kind: 'sequence', values: m.genres },
    ],
    interactions: inter,
    hasRating: true,
  };
}

/**
 * The original movies.dat is Latin-1; copies re-encoded to UTF-8 are common, so a file that is valid
 * UTF-8 with non-ASCII bytes is read as UTF-8 (Latin-1 text is practically never valid UTF-8).
 * UTF-16 (NUL bytes) is rejected.
 */
function decodeMovies(f: LoadedFile): string {
  assertNoNul(f, 'Latin-1');
  let ascii = true;
  for (let i = 0; i < f.buf.length; i++) {
    if (f.buf[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (!ascii && isValidUtf8(f.buf)) return f.buf.toString('utf8').replace(/^\uFEFF/, '');
  return f.buf.toString('latin1');
}

function textLines(text: string): string[] {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) if (lines[i].endsWith('\r')) lines[i] = lines[i].slice(0, -1);
  return lines;
}

function isPositiveInt(s: string): boolean {
  return /^\d+$/.test(s);
}

function parseMovies(f: LoadedFile, sink: BadLineSink) {
  const ids: string[] = [];
  const titles: string[] = [];
  const years: string[] = [];
  const genres: string[][] = [];
  const index = new Map<number, number>();
  const lines = textLines(decodeMovies(f));
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const where = { file: f.path, line: i + 1, excerpt: line.slice(0, 80) };
    const parts = line.split('::');
    if (parts.length !== 3) {
      sink.bad('field_count', `expected 3 fields MovieID::Title::Genres, found ${parts.length}`, where);
      continue;
    }
    const [id, title, g] = parts;
    if (!isPositiveInt(id)) {
      sink.bad('bad_id', 'MovieID is not a non-negative integer', { ...where, field: 'MovieID' });
      continue;
    }
    const num = Number(id);
    if (index.has(num)) {
      sink.bad('duplicate_id', `duplicate MovieID ${id}`, { ...where, field: 'MovieID' });
      continue;
    }
    if (title.trim() === '') {
      sink.bad('bad_value', 'empty Title', { ...where, field: 'Title' });
      continue;
    }
    index.set(num, ids.length);
    ids.push(String(num));
    titles.push(title.trim());
    years.push(YEAR_RE.exec(title)?.[1] ?? '');
    genres.push(
      g
        .split('|')
        .map((s) => s.trim())
        .filter((s) => s !== '' && s !== '(no genres listed)'),
    );
  }
  if (ids.length === 0) throw new DatasetError('no movies in file', { file: f.path, reason: 'empty_file' });
  return { ids, titles, years, genres, index };
}

const GENDERS = new Set(['M', 'F']);

function parseUsers(f: LoadedFile, sink: BadLineSink) {
  assertNoNul(f, 'ASCII');
  const ids: string[] = [];
  const gender: string[] = [];
  const age: string[] = [];
  const occupation: string[] = [];
  const zip: string[] = [];
  const index = new Map<number, number>();
  const lines = textLines(f.buf.toString('latin1'));
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const where = { file: f.path, line: i + 1, excerpt: line.slice(0, 80) };
    const parts = line.split('::');
    if (parts.length !== 5) {
      sink.bad(
        'field_count',
        `expected 5 fields UserID::Gender::Age::Occupation::Zip-code, found ${parts.length}`,
        where,
      );
      continue;
    }
    const [id, g, a, o, z] = parts.map((p) => p.trim());
    if (!isPositiveInt(id)) {
      sink.bad('bad_id', 'UserID is not a non-negative integer', { ...where, field: 'UserID' });
      continue;
    }
    const num = Number(id);
    if (index.has(num)) {
      sink.bad('duplicate_id', `duplicate UserID ${id}`, { ...where, field: 'UserID' });
      continue;
    }
    if (!GENDERS.has(g)) {
      sink.bad('bad_value', `Gender must be M or F, got ${JSON.stringify(g)}`, { ...where, field: 'Gender' });
      continue;
    }
    if (!isPositiveInt(a)) {
      sink.bad('bad_value', 'Age is not an integer code', { ...where, field: 'Age' });
      continue;
    }
    if (!isPositiveInt(o)) {
      sink.bad('bad_value', 'Occupation is not an integer code', { ...where, field: 'Occupation' });
      continue;
    }
    index.set(num, ids.length);
    ids.push(String(num));
    gender.push(g);
    age.push(String(Number(a)));
    occupation.push(String(Number(o)));
    zip.push(z.slice(0, ZIP_PREFIX_LEN));
  }
  if (ids.length === 0) throw new DatasetError('no users in file', { file: f.path, reason: 'empty_file' });
  return { ids, gender, age, occupation, zip, index };
}

/** Ids below this use a dense lookup table instead of a Map (the MovieLens ids are small integers). */
const DENSE_ID_LIMIT = 1 << 22;

function denseIndex(index: Map<number, number>): Int32Array | undefined {
  let max = 0;
  for (const k of index.keys()) max = Math.max(max, k);
  if (max >= DENSE_ID_LIMIT) return undefined;
  const out = new Int32Array(max + 1).fill(-1);
  for (const [k, v] of index) out[k] = v;
  return out;
}

function lookup(dense: Int32Array | undefined, index: Map<number, number>, id: number): number {
  if (dense) return id < dense.length ? dense[id] : -1;
  return index.get(id) ?? -1;
}

/**
 * The hot loop of MovieLens ingestion: no closures or strings per line (esbuild/tsx wraps every
 * function expression, which made per-line closures the main cost), ids resolved through dense tables.
 */
function parseRatings(
  f: LoadedFile,
  movieIndex: Map<number, number>,
  userIndex: Map<number, number>,
  sink: BadLineSink,
): RawDataset['interactions'] {
  assertNoNul(f, 'ASCII');
  const buf = f.buf;
  const users = growI32();
  const items = growI32();
  const ratings = growF32();
  const times = growF64();
  const bounds = new Int32Array(8);
  const nItems = Math.max(1, movieIndex.size);
  const denseMovies = denseIndex(movieIndex);
  const denseUsers = denseIndex(userIndex);
  // Duplicate (user, movie) detection: a bitmap when small enough, else a Set.
  const pairs = userIndex.size * nItems;
  const bitmap = pairs <= 1 << 28 ? new Uint8Array((pairs >> 3) + 1) : undefined;
  const seen = bitmap ? undefined : new Set<number>();
  const where = (lineNo: number, start: number, end: number, field?: string) => ({
    file: f.path,
    line: lineNo,
    field,
    excerpt: excerptOf(buf, start, end),
  });

  const n = buf.length;
  let start = 0;
  let lineNo = 0;
  while (start < n) {
    let nl = buf.indexOf(10, start);
    if (nl < 0) nl = n;
    let end = nl;
    if (end > start && buf[end - 1] === 13) end--;
    lineNo++;
    const lineStart = start;
    start = nl + 1;
    if (isBlank(buf, lineStart, end)) continue;
    const nf = splitFields(buf, lineStart, end, 58, 58, bounds);
    if (nf !== 4) {
      sink.bad(
        'field_count',
        `expected 4 fields UserID::MovieID::Rating::Timestamp, found ${nf}`,
        where(lineNo, lineStart, end),
      );
      continue;
    }
    const uid = parseNumber(buf, bounds[0], bounds[1]);
    if (!Number.isInteger(uid) || uid < 0) {
      sink.bad('bad_id', 'UserID is not a non-negative integer', where(lineNo, lineStart, end, 'UserID'));
      continue;
    }
    const mid = parseNumber(buf, bounds[2], bounds[3]);
    if (!Number.isInteger(mid) || mid < 0) {
      sink.bad('bad_id', 'MovieID is not a non-negative integer', where(lineNo, lineStart, end, 'MovieID'));
      continue;
    }
    const rating = parseNumber(buf, bounds[4], bounds[5]);
    if (Number.isNaN(rating)) {
      sink.bad('bad_rating', 'Rating is not a number', where(lineNo, lineStart, end, 'Rating'));
      continue;
    }
    if (rating < 1 || rating > 5) {
      sink.bad('bad_rating', `Rating ${rating} is outside 1..5`, where(lineNo, lineStart, end, 'Rating'));
      continue;
    }
    const ts = parseNumber(buf, bounds[6], bounds[7]);
    if (!Number.isFinite(ts) || ts < 0) {
      sink.bad(
        'bad_timestamp',
        'Timestamp is not a non-negative number',
        where(lineNo, lineStart, end, 'Timestamp'),
      );
      continue;
    }
    const u = lookup(denseUsers, userIndex, uid);
    if (u < 0) {
      sink.bad('unknown_user', `UserID ${uid} is not in users.dat`, where(lineNo, lineStart, end, 'UserID'));
      continue;
    }
    const it = lookup(denseMovies, movieIndex, mid);
    if (it < 0) {
      sink.bad(
        'unknown_item',
        `MovieID ${mid} is not in movies.dat`,
        where(lineNo, lineStart, end, 'MovieID'),
      );
      continue;
    }
    const key = u * nItems + it;
    const dup = bitmap ? (bitmap[key >> 3] >> (key & 7)) & 1 : seen!.has(key) ? 1 : 0;
    if (dup) {
      sink.bad(
        'duplicate_id',
        `duplicate rating of MovieID ${mid} by UserID ${uid}`,
        where(lineNo, lineStart, end, 'MovieID'),
      );
      continue;
    }
    if (bitmap) bitmap[key >> 3] |= 1 << (key & 7);
    else seen!.add(key);
    users.push(u);
    items.push(it);
    ratings.push(rating);
    times.push(ts);
  }
  if (users.length === 0)
    throw new DatasetError('no usable ratings in file', { file: f.path, reason: 'empty_file' });
  return {
    n: users.length,
    user: users.toArray(),
    item: items.toArray(),
    rating: ratings.toArray(),
    timestamp: times.toArray(),
  };
}
