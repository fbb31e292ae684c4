/**
 * Fixture writers for dataset ingestion tests: small, deterministic files in the MovieLens-1M,
 * Amazon Review Data (2018) and RecBole atomic formats. Tests take the generated lines, corrupt one on
 * purpose when they test bad input, and write them with these helpers.
 */
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateRawSync, gzipSync } from 'node:zlib';
import { Prng } from '../../ml/random.js';

/** Deterministic random numbers so fixtures do not depend on Math.random. */
export function rng(seed: number): () => number {
  const p = new Prng(seed);
  return () => p.next();
}

export async function tempDir(prefix = 'corella-data-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Every file under `dir` (recursively); [] when the folder does not exist. */
export async function listFiles(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// MovieLens-1M

export interface MovielensLines {
  ratings: string[];
  movies: string[];
  users: string[];
}

export interface MovielensFixtureOptions {
  seed?: number;
  users?: number;
  movies?: number;
  ratingsPerUser?: number;
  /** Users listed in users.dat without any rating (the real folder holds a subset of raters). */
  extraUsers?: number;
}

const GENRES = ['Action', 'Comedy', 'Drama', 'Horror', 'Romance', 'Sci-Fi', "Children's", 'Thriller'];

/**
 * Lines of a small MovieLens folder. Movie 1's title carries a Latin-1 character ("é") so encoding
 * handling is exercised. Each user rates `ratingsPerUser` distinct movies at increasing timestamps.
 */
export function movielensLines(o: MovielensFixtureOptions = {}): MovielensLines {
  const r = rng(o.seed ?? 1);
  const nUsers = o.users ?? 12;
  const nMovies = o.movies ?? 25;
  const per = Math.min(o.ratingsPerUser ?? 12, nMovies);
  const movies: string[] = [];
  for (let m = 1; m <= nMovies; m++) {
    const g = [GENRES[m % GENRES.length], GENRES[(m * 3) % GENRES.length]];
    const title = m === 1 ? 'Misérables, Les (1995)' : `Movie ${m} (${1950 + (m % 50)})`;
    movies.push(`${m}::${title}::${[...new Set(g)].join('|')}`);
  }
  const users: string[] = [];
  for (let u = 1; u <= nUsers + (o.extraUsers ?? 0); u++) {
    users.push(
      `${u}::${u % 2 ? 'M' : 'F'}::${[1, 18, 25, 35][u % 4]}::${u % 21}::${String(10000 + u * 137).slice(0, 5)}`,
    );
  }
  const ratings: string[] = [];
  for (let u = 1; u <= nUsers; u++) {
    const pool = Array.from({ length: nMovies }, (_, i) => i + 1);
    let t = 978_300_000 + u * 1000;
    for (let k = 0; k < per; k++) {
      const j = Math.floor(r() * pool.length);
      const m = pool.splice(j, 1)[0];
      t += 1 + Math.floor(r() * 500);
      ratings.push(`${u}::${m}::${1 + Math.floor(r() * 5)}::${t}`);
    }
  }
  return { ratings, movies, users };
}

export type TextEncoding = 'latin1' | 'utf8' | 'utf16le';

export async function writeMovielens(
  dir: string,
  lines: MovielensLines,
  opts: { moviesEncoding?: TextEncoding; omit?: ('ratings' | 'movies' | 'users')[] } = {},
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const write = async (name: 'ratings' | 'movies' | 'users', enc: TextEncoding) => {
    if (opts.omit?.includes(name)) return;
    const text = lines[name].length ? lines[name].join('\n') + '\n' : '';
    await writeFile(join(dir, `${name}.dat`), Buffer.from(text, enc));
  };
  await write('movies', opts.moviesEncoding ?? 'latin1');
  await write('users', 'latin1');
  await write('ratings', 'latin1');
  return dir;
}

// ---------------------------------------------------------------------------------------------------
// Amazon Review Data (2018)

export interface AmazonReview {
  reviewerID: string;
  asin: string;
  overall: number;
  unixReviewTime: number;
  [k: string]: unknown;
}

export interface AmazonMeta {
  asin: string;
  title?: string;
  category?: string[];
  brand?: string;
  [k: string]: unknown;
}

export async function writeJsonLines(
  path: string,
  lines: (object | string)[],
  opts: { gzip?: boolean; truncate?: number } = {},
): Promise<string> {
  const text = lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
  let buf = Buffer.from(text, 'utf8');
  if (opts.gzip) buf = gzipSync(buf);
  if (opts.truncate !== undefined) buf = buf.subarray(0, opts.truncate);
  await writeFile(path, buf);
  return path;
}

/**
 * Writes `<dir>/Books_5.json[.gz]` and `<dir>/meta_Books.json[.gz]`, the file names the ingestion
 * looks for.
 */
export async function writeAmazon(
  dir: string,
  reviews: (AmazonReview | string)[],
  meta: (AmazonMeta | string)[],
  opts: { gzip?: boolean } = {},
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const ext = opts.gzip ? '.json.gz' : '.json';
  await writeJsonLines(join(dir, `Books_5${ext}`), reviews, { gzip: opts.gzip });
  await writeJsonLines(join(dir, `meta_Books${ext}`), meta, { gzip: opts.gzip });
  return dir;
}

// ---------------------------------------------------------------------------------------------------
// RecBole atomic files

export interface AtomicTable {
  /** Typed header fields, e.g. 'user_id:token'. */
  header: string[];
  rows: (string | number)[][];
}

export function atomicText(t: AtomicTable): string {
  return [t.header.join('\t'), ...t.rows.map((r) => r.join('\t'))].join('\n') + '\n';
}

/** Writes `<dir>/<name>.<suffix>` for each table, suffix e.g. 'inter', 'item', 'train.inter'. */
export async function writeRecbole(
  dir: string,
  name: string,
  tables: Record<string, AtomicTable | string | Buffer>,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [suffix, t] of Object.entries(tables)) {
    const body = typeof t === 'string' || Buffer.isBuffer(t) ? t : atomicText(t);
    await writeFile(join(dir, `${name}.${suffix}`), body);
  }
  return dir;
}

/** A small RecBole dataset derived from the MovieLens fixture (same users, items, times). */
export function recboleTables(
  o: MovielensFixtureOptions & { withLabel?: boolean } = {},
): Record<string, AtomicTable> {
  const ml = movielensLines(o);
  const inter: AtomicTable = {
    header: [
      'user_id:token',
      'item_id:token',
      'rating:float',
      'timestamp:float',
      ...(o.withLabel ? ['label:float'] : []),
    ],
    rows: ml.ratings.map((l) => {
      const [u, m, r, t] = l.split('::');
      return [u, m, r, t, ...(o.withLabel ? [Number(r) >= 3 ? 1 : 0] : [])];
    }),
  };
  const item: AtomicTable = {
    header: ['item_id:token', 'movie_title:token_seq', 'release_year:token', 'genre:token_seq'],
    rows: ml.movies.map((l) => {
      const [m, title, g] = l.split('::');
      return [
        m,
        title.replace(/ \(\d{4}\)$/, ''),
        /\((\d{4})\)$/.exec(title)?.[1] ?? '',
        g.replace(/\|/g, ' '),
      ];
    }),
  };
  const user: AtomicTable = {
    header: ['user_id:token', 'age:token', 'gender:token', 'occupation:token', 'zip_code:token'],
    rows: ml.users.map((l) => {
      const [u, g, a, oc, z] = l.split('::');
      return [u, a, g, oc, z];
    }),
  };
  return { inter, item, user };
}

// ---------------------------------------------------------------------------------------------------
// Zip archives (MovieLens is distributed as ml-1m.zip)

/** A plain zip archive with deflated entries, e.g. { 'ml-1m/ratings.dat': Buffer }. */
export function makeZip(files: Record<string, Buffer>): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const nameBuf = Buffer.from(name, 'utf8');
    const comp = deflateRawSync(data);
    const crc = crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(comp.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(8, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(comp.length, 20);
    cd.writeUInt32LE(data.length, 24);
    cd.writeUInt16LE(nameBuf.length, 28);
    cd.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, comp);
    central.push(cd, nameBuf);
    offset += 30 + nameBuf.length + comp.length;
  }
  const cdBuf = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(Object.keys(files).length, 8);
  eocd.writeUInt16LE(Object.keys(files).length, 10);
  eocd.writeUInt32LE(cdBuf.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cdBuf, eocd]);
}
