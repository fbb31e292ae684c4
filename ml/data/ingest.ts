import { stat } from 'node:fs/promises';
import { CorellaError } from '../errors.js';
import type { ArtifactStore } from '../artifacts/store.js';
import { throwIfAborted, yieldToEventLoop, type LongRunOptions } from '../progress.js';
import { BadLineSink, type OnBadLine } from './bad-lines.js';
import { buildCtrDataset, type LabelRule } from './build.js';
import { canonicalHash, canonicalJson } from '../canonical.js';
import { applyKCore, applyTimeWindow, type TimeWindow } from './filters.js';
import { readSource } from './sources.js';
import { encodeSplit } from './split-codec.js';
import { SPLITS, type DatasetManifest, type DatasetSource, type SplitName } from './types.js';

export interface IngestOptions {
  source: DatasetSource;
  /** Local folder holding the source files. */
  dir: string;
  /** RecBole base name (`<name>.inter`, ...); defaults to the folder name. */
  name?: string;
  /** Default: MovieLens rating ≥ 4, Amazon rating = 5, RecBole its `label` column or rating ≥ 4. */
  labelRule?: LabelRule;
  /** History items per sample (default 30). */
  historyLen?: number;
  /** Samples with fewer earlier interactions are dropped (default 5; 0 with a predefined split). */
  minHistory?: number;
  /** Default 'error'. */
  onBadLine?: OnBadLine;
  /** k-core filter on users and items (off when absent or ≤ 1). */
  kCore?: number;
  /** Keep interactions with from ≤ timestamp < to (seconds). */
  timeWindow?: TimeWindow;
  /** Train/valid/test shares by global time (default [0.8, 0.1, 0.1]); ignored with a predefined split. */
  split?: [number, number, number];
}

export const DEFAULT_HISTORY_LEN = 30;
/** Bumped whenever the encoding of samples changes, so old and new encodings never share a version id. */
export const INGEST_FORMAT = 'corella-ingest/2';
export const DEFAULT_MIN_HISTORY = 5;

export function defaultLabelRule(source: DatasetSource): LabelRule {
  return source === 'amazon-books' ? { kind: 'eq', value: 5 } : { kind: 'min', threshold: 4 };
}

/** Named store entry holding the manifest of a dataset version. */
export function manifestName(versionId: string): string {
  return `datasets/${versionId}.json`;
}

function validateOptions(o: IngestOptions): void {
  const bad = (msg: string) => new CorellaError('BAD_CONFIG', `ingestDataset: ${msg}`);
  const posInt = (v: number | undefined, min: number) => v === undefined || (Number.isInteger(v) && v >= min);
  if (!posInt(o.historyLen, 1)) throw bad('historyLen must be an integer ≥ 1');
  if (!posInt(o.minHistory, 0)) throw bad('minHistory must be an integer ≥ 0');
  if (!posInt(o.kCore, 0)) throw bad('kCore must be an integer ≥ 0');
  if (o.onBadLine !== undefined && o.onBadLine !== 'error' && o.onBadLine !== 'skip') {
    throw bad(`onBadLine must be 'error' or 'skip'`);
  }
  if (o.split && (o.split.length !== 3 || o.split.some((x) => !(x >= 0)) || !(o.split[0] > 0))) {
    throw bad('split must be three non-negative shares with a positive train share');
  }
  if (o.labelRule && o.labelRule.kind !== 'min' && o.labelRule.kind !== 'eq')
    throw bad('unknown labelRule kind');
}

async function assertDir(dir: string): Promise<void> {
  try {
    if ((await stat(dir)).isDirectory()) return;
  } catch {
    // fall through
  }
  throw new CorellaError(
    'DATA_NOT_AVAILABLE',
    `dataset folder ${dir} does not exist: pass a local folder (--data-dir or CORELLA_DATA_DIR) holding the source files`,
    { details: { dir } },
  );
}

/**
 * Parses, validates and encodes a dataset, then stores feature map, item table and one binary file per
 * split. Everything that can fail on bad input happens before the first store write, so a failed
 * ingestion leaves the store untouched. Same files + same parameters → same versionId and same bytes.
 */
export async function ingestDataset(
  opts: IngestOptions,
  store: ArtifactStore,
  run: LongRunOptions = {},
): Promise<DatasetManifest> {
  validateOptions(opts);
  await assertDir(opts.dir);
  const progress = async (stage: string, done: number, total?: number) => {
    throwIfAborted(run.signal);
    await run.onProgress?.({ stage, done, total });
    await yieldToEventLoop();
  };
  const dropped: Record<string, number> = {};
  const sink = new BadLineSink(opts.onBadLine ?? 'error', dropped);

  await progress('ingest:parse', 0);
  const raw = await readSource(opts, sink, run);
  const windowed = applyTimeWindow(raw.interactions, opts.timeWindow, sink);
  raw.interactions = applyKCore(windowed, opts.kCore, sink);

  const predefined = raw.interactions.split !== undefined;
  const params = {
    name: opts.source === 'recbole' ? (opts.name ?? null) : null,
    labelRule: raw.interactions.label
      ? { kind: 'column' }
      : (opts.labelRule ?? defaultLabelRule(opts.source)),
    historyLen: opts.historyLen ?? DEFAULT_HISTORY_LEN,
    minHistory: opts.minHistory ?? (predefined ? 0 : DEFAULT_MIN_HISTORY),
    onBadLine: opts.onBadLine ?? 'error',
    kCore: opts.kCore ?? 0,
    timeWindow: opts.timeWindow ?? null,
    split: predefined ? 'predefined' : (opts.split ?? [0.8, 0.1, 0.1]),
    synthetic: opts.source === 'synthetic-movielens',
  };

  await progress('ingest:build', 1);
  const built = buildCtrDataset(
    raw,
    {
      historyLen: params.historyLen,
      minHistory: params.minHistory,
      split: opts.split ?? [0.8, 0.1, 0.1],
      labelRule: opts.labelRule ?? defaultLabelRule(opts.source),
    },
    { dir: opts.dir },
  );
  sink.drop('short_history', built.shortHistory);

  const encoded = {} as Record<SplitName, Buffer>;
  for (const name of SPLITS) {
    await progress('ingest:encode', SPLITS.indexOf(name), SPLITS.length);
    encoded[name] = encodeSplit(built.splits[name], built.featureMap.id);
  }
  const featureMapJson = canonicalJson(built.featureMap);
  const itemTableJson = canonicalJson(built.items);
  const versionId = canonicalHash({
    format: INGEST_FORMAT,
    source: opts.source,
    params,
    inputs: raw.inputs.map((i) => i.sha256),
  });

  // Nothing above wrote to the store; from here on only writes remain.
  await progress('ingest:write', 0, 5);
  const fm = await store.put(featureMapJson);
  const it = await store.put(itemTableJson);
  const splitArtifacts = {} as Record<SplitName, string>;
  for (const name of SPLITS) splitArtifacts[name] = (await store.put(encoded[name])).sha256;
  const sortedDropped: Record<string, number> = {};
  for (const k of Object.keys(dropped).sort()) sortedDropped[k] = dropped[k];
  const manifest: DatasetManifest = {
    versionId,
    source: opts.source,
    params,
    inputs: raw.inputs,
    featureMapArtifact: fm.sha256,
    itemTableArtifact: it.sha256,
    splitArtifacts,
    stats: built.stats,
    dropped: sortedDropped,
    userCount: built.userCount,
    itemCount: built.itemCount,
  };
  await store.putNamed(manifestName(versionId), canonicalJson(manifest));
  await progress('ingest:done', 5, 5);
  return manifest;
}
