import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { DatasetSourceName, DatasetSpec } from '../activities/types.js';
import { MOVIELENS_1M_ZIP, resolveMovielens1m } from '../ml/data/download.js';
import { CorellaError } from '../ml/errors.js';

const SOURCES: DatasetSourceName[] = ['movielens-1m', 'amazon-books', 'recbole', 'synthetic-movielens'];

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Guesses the source format from the files in a folder. */
async function detectSource(dir: string): Promise<DatasetSourceName | undefined> {
  if (await exists(join(dir, 'ratings.dat'))) return 'movielens-1m';
  const { readdir } = await import('node:fs/promises');
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.some((n) => n.endsWith('.inter'))) return 'recbole';
  if (names.some((n) => /^(Books.*\.json(\.gz)?|reviews.*\.json(\.gz)?)$/.test(n))) return 'amazon-books';
  return undefined;
}

export interface ResolvedData {
  spec: DatasetSpec;
  /**
   * How it was found, for the summary: never pass synthetic data off as real. `cache` and `download` are the
   * real MovieLens-1M archive (source `movielens-1m`), downloaded now or by an earlier run.
   */
  origin: 'flag' | 'env' | 'cache' | 'download' | 'synthetic';
  /** Why the MovieLens-1M step gave no data (download failed or skipped), when it was tried. */
  downloadFailure?: string;
}

/** Seconds to wait for the archive's server to answer (CORELLA_DOWNLOAD_TIMEOUT); offline machines wait this. */
const DEFAULT_CONNECT_TIMEOUT_S = 5;
/** A download whose body stops flowing this long is abandoned (the `.part` file resumes next time). */
const STALL_TIMEOUT_S = 30;

function positiveSeconds(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${name} must be a positive number of seconds, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/**
 * fetch with a connect timeout (until the response headers arrive) and a stall timeout on the body, so an
 * offline machine or a black-holed route falls through within seconds instead of undici's defaults.
 */
export function fetchWithTimeouts(connectMs: number, stallMs = STALL_TIMEOUT_S * 1000): typeof fetch {
  return async (url, init) => {
    const ac = new AbortController();
    let timer = setTimeout(() => ac.abort(new Error(`no answer within ${connectMs / 1000} s`)), connectMs);
    timer.unref();
    const signal = init?.signal ? AbortSignal.any([init.signal, ac.signal]) : ac.signal;
    let res: Response;
    try {
      res = await fetch(url, { ...init, signal });
    } finally {
      clearTimeout(timer);
    }
    if (!res.body) return res;
    const idle = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(new Error(`download stalled for ${stallMs / 1000} s`)), stallMs);
      timer.unref();
    };
    idle();
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          idle();
          c.enqueue(chunk);
        },
        flush() {
          clearTimeout(timer);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** The truthy spellings of a boolean environment variable. */
function envFlag(name: string): boolean {
  return /^(1|true|yes|on)$/i.test(process.env[name] ?? '');
}

/**
 * MovieLens-1M from the download cache, else downloaded (CORELLA_ML1M_URL / CORELLA_ML1M_SHA256 override the
 * official archive, for mirrors and tests). Any failure is returned as one line, never thrown: the caller falls
 * through to the synthetic data.
 */
async function movielensFromCacheOrDownload(opts: {
  home: string;
  download: boolean;
  log: (line: string) => void;
}): Promise<{ dir: string; origin: 'cache' | 'download' } | { failure: string; skipped?: boolean }> {
  const url = process.env.CORELLA_ML1M_URL || MOVIELENS_1M_ZIP.url;
  const sha256 = process.env.CORELLA_ML1M_SHA256 || MOVIELENS_1M_ZIP.sha256;
  const timeoutS = positiveSeconds(
    'CORELLA_DOWNLOAD_TIMEOUT',
    process.env.CORELLA_DOWNLOAD_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT_S,
  );
  const cacheDir = join(opts.home, 'datasets');
  try {
    const found = await resolveMovielens1m({
      cacheDir,
      url,
      sha256,
      download: opts.download,
      fetch: fetchWithTimeouts(timeoutS * 1000),
      onProgress: (p) => {
        if (p.done === 0)
          opts.log(
            `MovieLens-1M: not cached; downloading ${url} (${timeoutS} s to connect; --no-download or CORELLA_NO_DOWNLOAD=1 skips this)`,
          );
      },
    });
    if (found.origin !== 'cache' && found.origin !== 'download') {
      // resolveMovielens1m consults CORELLA_DATA_DIR itself; ours was handled before this step.
      return { failure: `unexpected origin ${found.origin}` };
    }
    opts.log(
      found.origin === 'cache'
        ? `MovieLens-1M: using the cached download in ${found.dir}`
        : `MovieLens-1M: downloaded and verified (sha256 ${sha256.slice(0, 12)}…) into ${found.dir}`,
    );
    return { dir: found.dir, origin: found.origin };
  } catch (e) {
    if (!opts.download) {
      return {
        failure: 'not cached, and --no-download / CORELLA_NO_DOWNLOAD skips the download',
        skipped: true,
      };
    }
    const why = e instanceof CorellaError ? e.details.why : undefined;
    return {
      failure: typeof why === 'string' ? `${url}: ${why}` : e instanceof Error ? e.message : String(e),
    };
  }
}

/**
 * `--data-dir`, then CORELLA_DATA_DIR, then MovieLens-1M from the download cache, then downloaded (unless
 * `download` is false or CORELLA_NO_DOWNLOAD=1), then the synthetic MovieLens-style dataset generated under
 * `<home>/datasets` (announced by the caller).
 */
export async function resolveDataSource(opts: {
  dataDir?: string;
  source?: string;
  name?: string;
  home: string;
  allowSynthetic: boolean;
  download?: boolean;
  log?: (line: string) => void;
}): Promise<ResolvedData> {
  if (opts.source && !SOURCES.includes(opts.source as DatasetSourceName)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `unknown dataset source ${opts.source}; one of ${SOURCES.join(', ')}`,
    );
  }
  const dir = opts.dataDir ?? process.env.CORELLA_DATA_DIR;
  if (dir) {
    const abs = resolve(dir);
    if (!(await exists(abs))) throw new CorellaError('BAD_CONFIG', `data dir ${abs} does not exist`);
    const source = (opts.source as DatasetSourceName | undefined) ?? (await detectSource(abs));
    if (!source) {
      throw new CorellaError(
        'BAD_CONFIG',
        `cannot tell the format of ${abs}: pass --source movielens-1m|amazon-books|recbole`,
      );
    }
    return {
      spec: { source, dir: abs, ...(opts.name ? { name: opts.name } : {}) },
      origin: opts.dataDir ? 'flag' : 'env',
    };
  }
  const log = opts.log ?? (() => undefined);
  let failure: string | undefined;
  // An explicit other source (e.g. --source synthetic-movielens) is not MovieLens-1M: nothing to download.
  if (!opts.source || opts.source === 'movielens-1m') {
    const ml = await movielensFromCacheOrDownload({
      home: opts.home,
      download: opts.download !== false && !envFlag('CORELLA_NO_DOWNLOAD'),
      log,
    });
    if ('dir' in ml) {
      return {
        spec: { source: 'movielens-1m', dir: ml.dir, ...(opts.name ? { name: opts.name } : {}) },
        origin: ml.origin,
      };
    }
    failure = ml.failure;
    log(ml.skipped ? `MovieLens-1M: ${ml.failure}` : `MovieLens-1M download failed: ${ml.failure}`);
  }
  if (!opts.allowSynthetic) {
    throw new CorellaError(
      'DATA_NOT_AVAILABLE',
      'no dataset: pass --data-dir DIR (MovieLens-1M folder with ratings.dat, Amazon-Books JSON, or RecBole atomic files) or set CORELLA_DATA_DIR',
    );
  }
  const synthDir = join(opts.home, 'datasets', 'synthetic-movielens-seed42');
  return {
    spec: { source: 'synthetic-movielens', dir: synthDir },
    origin: 'synthetic',
    ...(failure ? { downloadFailure: failure } : {}),
  };
}
