import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { sha256File } from '../artifacts/store.js';
import { CorellaError, DatasetError } from '../errors.js';
import { throwIfAborted, type LongRunOptions } from '../progress.js';
import { fileExists } from './input-files.js';
import { readZip } from './zip-reader.js';

/** The official GroupLens archive; sha256 pinned (GroupLens publishes md5 c4d9eecfca2ab87c1945afe126590906). */
export const MOVIELENS_1M_ZIP = {
  url: 'https://files.grouplens.org/datasets/movielens/ml-1m.zip',
  sha256: 'a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20',
  bytes: 5_917_549,
};

const WANTED = new Set(['ratings.dat', 'movies.dat', 'users.dat', 'README']);
const HOW_TO =
  'pass a local MovieLens-1M folder (ratings.dat, movies.dat, users.dat) with --data-dir or CORELLA_DATA_DIR, ' +
  'or use the synthetic-movielens source';

export interface DownloadOptions extends LongRunOptions {
  /** Cache folder: holds ml-1m.zip(.part) and the extracted folder. */
  cacheDir: string;
  url?: string;
  sha256?: string;
  fetch?: typeof fetch;
}

function offline(url: string, cause: unknown): CorellaError {
  const why =
    cause instanceof Error
      ? cause.cause instanceof Error
        ? cause.cause.message
        : cause.message
      : String(cause);
  return new CorellaError('DATA_NOT_AVAILABLE', `could not download ${url} (${why}): ${HOW_TO}`, {
    retryable: false,
    // `why` alone lets a caller with its own fallback (corella up) say what failed without the advice.
    details: { url, why },
    cause,
  });
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * Downloads (resuming a partial `.part` file with an HTTP Range request) into the cache, verifies the
 * sha256 and returns the path of the verified archive.
 */
async function downloadVerified(o: DownloadOptions, url: string, sha256: string): Promise<string> {
  const zip = join(o.cacheDir, basename(new URL(url).pathname) || 'download.zip');
  if ((await fileExists(zip)) && (await sha256File(zip)) === sha256) return zip;
  const part = `${zip}.part`;
  const have = await sizeOf(part);
  const doFetch = o.fetch ?? fetch;
  let res: Response;
  try {
    res = await doFetch(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {}, signal: o.signal });
  } catch (e) {
    throwIfAborted(o.signal);
    throw offline(url, e);
  }
  if (res.status === 206 || res.status === 200) {
    const append = res.status === 206 && have > 0;
    if (!res.body) throw offline(url, new Error('empty response body'));
    try {
      await pipeline(
        Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>),
        createWriteStream(part, { flags: append ? 'a' : 'w' }),
      );
    } catch (e) {
      throwIfAborted(o.signal);
      // What arrived stays in the .part file: the next call resumes from there.
      throw offline(url, e);
    }
  } else if (res.status !== 416) {
    // 416: the range starts at the end, i.e. the .part file is already complete.
    throw offline(url, new Error(`HTTP ${res.status}`));
  }
  const actual = await sha256File(part);
  if (actual !== sha256) {
    await rm(part, { force: true });
    throw new DatasetError(`downloaded archive has sha256 ${actual}, expected ${sha256}; removed it, retry`, {
      file: part,
      reason: 'checksum_mismatch',
    });
  }
  await rename(part, zip);
  return zip;
}

/**
 * A folder with the MovieLens-1M files from the cache, downloading and extracting the official archive
 * first when needed. Offline (or any download failure) is a DATA_NOT_AVAILABLE error saying what to
 * pass instead.
 */
export async function fetchMovielens1m(o: DownloadOptions): Promise<string> {
  const url = o.url ?? MOVIELENS_1M_ZIP.url;
  const sha256 = o.sha256 ?? MOVIELENS_1M_ZIP.sha256;
  const dir = join(o.cacheDir, `ml-1m-${sha256.slice(0, 12)}`);
  if (await fileExists(join(dir, '.complete'))) return dir;
  await mkdir(o.cacheDir, { recursive: true });
  await o.onProgress?.({ stage: 'dataset:download', done: 0, message: url });
  const zip = await downloadVerified(o, url, sha256);
  const entries = readZip(await readFile(zip), zip, (name) => WANTED.has(basename(name)));
  for (const f of ['ratings.dat', 'movies.dat', 'users.dat']) {
    if (!entries.some((e) => basename(e.name) === f)) {
      throw new DatasetError(`archive has no ${f}`, { file: zip, reason: 'missing_file' });
    }
  }
  // Extract into a temp folder, then rename: a crash never leaves a half-extracted dataset.
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  for (const e of entries) await writeFile(join(tmp, basename(e.name)), e.data);
  await writeFile(join(tmp, '.complete'), `${sha256}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  await o.onProgress?.({ stage: 'dataset:download', done: 1, total: 1 });
  return dir;
}

/** Where MovieLens-1M data comes from, in the documented order: explicit folder, env, cache, download. */
export async function resolveMovielens1m(
  o: Omit<DownloadOptions, 'cacheDir'> & { dataDir?: string; cacheDir?: string; download?: boolean },
): Promise<{ dir: string; origin: 'local' | 'env' | 'cache' | 'download' }> {
  if (o.dataDir) return { dir: o.dataDir, origin: 'local' };
  const env = process.env.CORELLA_DATA_DIR;
  if (env) return { dir: env, origin: 'env' };
  if (!o.cacheDir) throw new CorellaError('DATA_NOT_AVAILABLE', `no dataset configured: ${HOW_TO}`);
  const url = o.url ?? MOVIELENS_1M_ZIP.url;
  const cached = join(o.cacheDir, `ml-1m-${(o.sha256 ?? MOVIELENS_1M_ZIP.sha256).slice(0, 12)}`);
  if (await fileExists(join(cached, '.complete'))) return { dir: cached, origin: 'cache' };
  if (o.download === false)
    throw new CorellaError('DATA_NOT_AVAILABLE', `MovieLens-1M is not cached: ${HOW_TO}`);
  return { dir: await fetchMovielens1m({ ...o, cacheDir: o.cacheDir, url }), origin: 'download' };
}
