import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { DatasetSourceName, DatasetSpec } from '../activities/types.js';
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
  /** How it was found, for the summary: never pass synthetic data off as real. */
  origin: 'flag' | 'env' | 'synthetic';
}

/**
 * `--data-dir`, then CORELLA_DATA_DIR, then the synthetic MovieLens-style dataset generated under
 * `<home>/datasets` (announced by the caller).
 */
export async function resolveDataSource(opts: {
  dataDir?: string;
  source?: string;
  name?: string;
  home: string;
  allowSynthetic: boolean;
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
  if (!opts.allowSynthetic) {
    throw new CorellaError(
      'DATA_NOT_AVAILABLE',
      'no dataset: pass --data-dir DIR (MovieLens-1M folder with ratings.dat, Amazon-Books JSON, or RecBole atomic files) or set CORELLA_DATA_DIR',
    );
  }
  const synthDir = join(opts.home, 'datasets', 'synthetic-movielens-seed42');
  return { spec: { source: 'synthetic-movielens', dir: synthDir }, origin: 'synthetic' };
}
