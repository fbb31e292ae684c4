import { CorellaError } from '../errors.js';
import { readAmazon } from './amazon.js';
import type { LongRunOptions } from '../progress.js';
import type { BadLineSink } from './bad-lines.js';
import type { IngestOptions } from './ingest.js';
import { readMovielens } from './movielens.js';
import type { RawDataset } from './raw.js';
import { readRecbole } from './recbole.js';

/** Dispatches to the parser of a source; every parser returns a validated RawDataset. */
export async function readSource(
  opts: IngestOptions,
  sink: BadLineSink,
  run: LongRunOptions,
): Promise<RawDataset> {
  switch (opts.source) {
    case 'movielens-1m':
    case 'synthetic-movielens':
      return readMovielens(opts.dir, opts.source, sink);
    case 'amazon-books':
      return readAmazon(opts.dir, { kCore: opts.kCore, timeWindow: opts.timeWindow }, sink, run);
    case 'recbole':
      return readRecbole(opts.dir, opts.name, sink);
    default:
      throw new CorellaError('BAD_CONFIG', `dataset source ${opts.source} is not supported yet`);
  }
}
