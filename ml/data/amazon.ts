import { join } from 'node:path';
import { DatasetError } from '../errors.js';
import { throwIfAborted, type LongRunOptions } from '../progress.js';
import type { BadLineSink } from './bad-lines.js';
import { applyKCore, inWindow, type TimeWindow } from './filters.js';
import { fileExists } from './input-files.js';
import { streamLines } from './json-lines.js';
import { filterInteractions, growF32, growF64, growI32, type Interactions, type RawDataset } from './raw.js';

export const AMAZON_REVIEW_FILES = ['Books_5.json.gz', 'Books_5.json', 'Books.json.gz', 'Books.json'];
export const AMAZON_META_FILES = ['meta_Books.json.gz', 'meta_Books.json'];

async function findFirst(dir: string, names: string[], what: string): Promise<string> {
  for (const n of names) if (await fileExists(join(dir, n))) return join(dir, n);
  throw new DatasetError(`missing ${what} file: expected one of ${names.join(', ')}`, {
    file: join(dir, names[0]),
    reason: 'missing_file',
  });
}

const PROGRESS_EVERY = 200_000;
const ASIN_RE = /"asin"\s*:\s*"((?:[^"\\]|\\.)*)"/;

function excerpt(s: string): string {
  return s.slice(0, 80);
}

function parseJson(text: string | undefined, file: string, lineNo: number, sink: BadLineSink): unknown {
  if (text === undefined) {
    sink.bad('wrong_encoding', 'line is not valid UTF-8', { file, line: lineNo });
    return undefined;
  }
  try {
    const v: unknown = JSON.parse(text);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v;
  } catch {
    // reported below
  }
  sink.bad('bad_json', 'line is not a JSON object', { file, line: lineNo, excerpt: excerpt(text) });
  return undefined;
}

/**
 * Amazon Review Data (2018), Books. Reviews (`reviewerID`, `asin`, `overall`, `unixReviewTime`) are
 * streamed once, keeping only compact typed columns of reviews inside the time window. Then:
 * duplicate reviews of the same item by the same user keep the earliest; k-core filtering; the
 * metadata file is streamed keeping only the asins still needed (only those lines are JSON-parsed);
 * items without metadata (or without a title) are dropped, and k-core is applied again since that can
 * push users/items below k. Memory follows the retained reviews and items, not file size.
 * Features: item `brand` (categorical) and `category` (sequence); no user attributes.
 */
export async function readAmazon(
  dir: string,
  opts: { kCore?: number; timeWindow?: TimeWindow },
  sink: BadLineSink,
  run: LongRunOptions,
): Promise<RawDataset> {
  const reviewsPath = await findFirst(dir, AMAZON_REVIEW_FILES, 'Amazon reviews');
  const metaPath = await findFirst(dir, AMAZON_META_FILES, 'Amazon metadata');

  const userIndex = new Map<string, number>();
  const itemIndex = new Map<string, number>();
  const userIds: string[] = [];
  const itemIds: string[] = [];
  const users = growI32();
  const items = growI32();
  const ratings = growF32();
  const times = growF64();
  let outside = 0;
  const reviewsInput = await streamLines(reviewsPath, async ({ text, lineNo }) => {
    if (lineNo % PROGRESS_EVERY === 0) {
      throwIfAborted(run.signal);
      await run.onProgress?.({ stage: 'ingest:parse', done: lineNo, message: 'reviews' });
    }
    const o = parseJson(text, reviewsPath, lineNo, sink) as Record<string, unknown> | undefined;
    if (!o) return;
    const where = (field: string) => ({ file: reviewsPath, line: lineNo, field, excerpt: excerpt(text!) });
    const { reviewerID, asin, overall, unixReviewTime } = o;
    if (typeof reviewerID !== 'string' || reviewerID === '') {
      sink.bad('missing_field', 'reviewerID is missing or not a string', where('reviewerID'));
      return;
    }
    if (typeof asin !== 'string' || asin === '') {
      sink.bad('missing_field', 'asin is missing or not a string', where('asin'));
      return;
    }
    if (typeof overall !== 'number' || !Number.isFinite(overall)) {
      sink.bad('bad_rating', 'overall is missing or not a number', where('overall'));
      return;
    }
    if (overall < 1 || overall > 5) {
      sink.bad('bad_rating', `overall ${overall} is outside 1..5`, where('overall'));
      return;
    }
    if (typeof unixReviewTime !== 'number' || !Number.isInteger(unixReviewTime) || unixReviewTime < 0) {
      sink.bad(
        'bad_timestamp',
        'unixReviewTime is missing or not a non-negative integer',
        where('unixReviewTime'),
      );
      return;
    }
    if (!inWindow(unixReviewTime, opts.timeWindow)) {
      outside++;
      return;
    }
    let u = userIndex.get(reviewerID);
    if (u === undefined) {
      u = userIds.length;
      userIndex.set(reviewerID, u);
      userIds.push(reviewerID);
    }
    let it = itemIndex.get(asin);
    if (it === undefined) {
      it = itemIds.length;
      itemIndex.set(asin, it);
      itemIds.push(asin);
    }
    users.push(u);
    items.push(it);
    ratings.push(overall);
    times.push(unixReviewTime);
  });
  sink.drop('time_window', outside);
  if (users.length === 0) {
    throw new DatasetError('no usable reviews', { file: reviewsPath, reason: 'empty_file' });
  }
  let inter: Interactions = {
    n: users.length,
    user: users.toArray(),
    item: items.toArray(),
    rating: ratings.toArray(),
    timestamp: times.toArray(),
  };
  inter = dedupeReviews(inter, userIds.length, itemIds.length, sink);
  inter = applyKCore(inter, opts.kCore, sink);

  // Metadata of the items still needed.
  const needed = new Uint8Array(itemIds.length);
  for (let i = 0; i < inter.n; i++) needed[inter.item[i]] = 1;
  const title = new Map<number, string>();
  const brand = new Map<number, string>();
  const category = new Map<number, string[]>();
  const metaInput = await streamLines(metaPath, async ({ text, lineNo }) => {
    if (lineNo % PROGRESS_EVERY === 0) {
      throwIfAborted(run.signal);
      await run.onProgress?.({ stage: 'ingest:parse', done: lineNo, message: 'metadata' });
    }
    // Only lines of needed items are parsed; the asin is found textually first.
    const quick = text === undefined ? undefined : ASIN_RE.exec(text)?.[1];
    if (quick !== undefined) {
      const it = itemIndex.get(quick);
      if (it === undefined || !needed[it] || title.has(it)) return;
    }
    const o = parseJson(text, metaPath, lineNo, sink) as Record<string, unknown> | undefined;
    if (!o) return;
    if (typeof o.asin !== 'string') {
      sink.bad('missing_field', 'asin is missing or not a string', {
        file: metaPath,
        line: lineNo,
        field: 'asin',
        excerpt: excerpt(text!),
      });
      return;
    }
    const it = itemIndex.get(o.asin);
    if (it === undefined || !needed[it] || title.has(it)) return;
    const t = typeof o.title === 'string' ? o.title.trim() : '';
    if (t === '') return; // counted below as missing metadata
    title.set(it, t);
    if (typeof o.brand === 'string') brand.set(it, o.brand.trim());
    if (Array.isArray(o.category)) {
      category.set(
        it,
        o.category
          .filter((c): c is string => typeof c === 'string')
          .map((c) => c.trim())
          .filter((c) => c !== ''),
      );
    }
  });

  // Items without a title cannot be shown to the LLM: drop their reviews, then restore the k-core.
  const keep = new Uint8Array(inter.n);
  let missing = 0;
  for (let i = 0; i < inter.n; i++) {
    if (title.has(inter.item[i])) keep[i] = 1;
    else missing++;
  }
  sink.drop('missing_metadata', missing);
  if (missing) inter = applyKCore(filterInteractions(inter, keep), opts.kCore, sink);

  return compact(
    {
      source: 'amazon-books',
      inputs: [reviewsInput, metaInput],
      userIds,
      itemIds,
      itemTitles: itemIds.map((_, i) => title.get(i) ?? ''),
      itemGenres: itemIds.map((_, i) => (category.get(i) ?? []).join(', ')),
      userAttrs: [],
      itemAttrs: [
        { name: 'brand', kind: 'categorical', values: itemIds.map((_, i) => brand.get(i) ?? '') },
        { name: 'category', kind: 'sequence', values: itemIds.map((_, i) => category.get(i) ?? []) },
      ],
      interactions: inter,
      hasRating: true,
    },
    reviewsPath,
  );
}

/**
 * Keeps, for every (user, item) pair, the earliest review (file order breaks ties). Reviews are grouped
 * by user with a counting sort and repeated items found with a per-item "last user" marker, so memory is
 * O(reviews + items) rather than a hash entry per pair.
 */
function dedupeReviews(inter: Interactions, nUsers: number, nItems: number, sink: BadLineSink): Interactions {
  const off = new Int32Array(nUsers + 1);
  for (let i = 0; i < inter.n; i++) off[inter.user[i] + 1]++;
  for (let u = 0; u < nUsers; u++) off[u + 1] += off[u];
  const byUser = new Int32Array(inter.n);
  const fill = off.slice(0, nUsers);
  for (let i = 0; i < inter.n; i++) byUser[fill[inter.user[i]]++] = i;
  const lastUser = new Int32Array(nItems).fill(-1);
  const keptAt = new Int32Array(nItems);
  const keep = new Uint8Array(inter.n);
  let dups = 0;
  for (let u = 0; u < nUsers; u++) {
    for (let k = off[u]; k < off[u + 1]; k++) {
      const i = byUser[k];
      const it = inter.item[i];
      if (lastUser[it] !== u) {
        lastUser[it] = u;
        keptAt[it] = i;
        keep[i] = 1;
        continue;
      }
      dups++;
      const j = keptAt[it];
      if (inter.timestamp[i] < inter.timestamp[j]) {
        keep[j] = 0;
        keep[i] = 1;
        keptAt[it] = i;
      }
    }
  }
  sink.drop('duplicate_review', dups);
  return dups ? filterInteractions(inter, keep) : inter;
}

/** Renumbers users and items to those still referenced (first-appearance order is preserved). */
function compact(raw: RawDataset, file: string): RawDataset {
  const inter = raw.interactions;
  if (inter.n === 0) {
    throw new DatasetError('no reviews left after filtering (k-core, time window, metadata)', {
      file,
      reason: 'no_samples',
    });
  }
  const remap = (n: number, col: Int32Array) => {
    const used = new Uint8Array(n);
    for (const v of col) used[v] = 1;
    const map = new Int32Array(n).fill(-1);
    const kept: number[] = [];
    for (let i = 0; i < n; i++) if (used[i]) map[i] = kept.push(i) - 1;
    for (let i = 0; i < col.length; i++) col[i] = map[col[i]];
    return kept;
  };
  const u = remap(raw.userIds.length, inter.user);
  const it = remap(raw.itemIds.length, inter.item);
  const pickAttr = (a: RawDataset['itemAttrs'][number]): RawDataset['itemAttrs'][number] =>
    a.kind === 'categorical'
      ? { ...a, values: it.map((i) => a.values[i]) }
      : { ...a, values: it.map((i) => a.values[i]) };
  return {
    ...raw,
    userIds: u.map((i) => raw.userIds[i]),
    itemIds: it.map((i) => raw.itemIds[i]),
    itemTitles: it.map((i) => raw.itemTitles[i]),
    itemGenres: it.map((i) => raw.itemGenres[i]),
    itemAttrs: raw.itemAttrs.map(pickAttr),
  };
}
