import { DatasetError } from '../errors.js';
import { featureMapId } from './feature-map.js';
import type { Attr, Interactions, RawDataset } from './raw.js';
import { SPLITS } from './types.js';
import type {
  CategoricalField,
  EncodedSplit,
  FeatureMap,
  ItemTable,
  SequenceField,
  SplitName,
  SplitStats,
} from './types.js';

export type LabelRule = { kind: 'min'; threshold: number } | { kind: 'eq'; value: number };

export interface BuildParams {
  historyLen: number;
  minHistory: number;
  split: [number, number, number];
  labelRule: LabelRule;
}

export interface BuiltDataset {
  featureMap: FeatureMap;
  items: ItemTable;
  splits: Record<SplitName, EncodedSplit>;
  stats: Record<SplitName, SplitStats>;
  /** Samples dropped for having fewer than `minHistory` earlier interactions. */
  shortHistory: number;
  userCount: number;
  itemCount: number;
}

/** Vocabulary row 0: out-of-vocabulary values and padding. */
export const OOV_TOKEN = '<oov>';
/** Multi-valued item attributes (genres) keep at most this many values per item. */
export const MAX_ATTR_SEQ_LEN = 8;

export const HISTORY_FIELD = 'history';

/**
 * Stable ordering of interactions by timestamp (ties keep input order). Packs (timestamp, index) into one
 * float64 key when that is exact, since a numeric typed-array sort is far faster than a comparator sort.
 */
export function timeOrder(ts: Float64Array, n: number): Int32Array {
  const SHIFT = 2 ** 21;
  let packable = n < SHIFT;
  for (let i = 0; packable && i < n; i++) {
    const t = ts[i];
    if (!Number.isInteger(t) || t < 0 || t >= 2 ** 32) packable = false;
  }
  const order = new Int32Array(n);
  if (packable) {
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = ts[i] * SHIFT + i;
    keys.sort();
    for (let i = 0; i < n; i++) order[i] = keys[i] % SHIFT;
    return order;
  }
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => ts[a] - ts[b] || a - b);
  order.set(idx);
  return order;
}

export function labelOf(inter: Interactions, rule: LabelRule, i: number): number {
  if (inter.label) return inter.label[i];
  const r = inter.rating[i];
  return (rule.kind === 'min' ? r >= rule.threshold : r === rule.value) ? 1 : 0;
}

interface Vocab {
  tokens: string[];
  index: Map<string, number>;
}

function makeVocab(values: Iterable<string>): Vocab {
  const uniq = new Set<string>();
  for (const v of values) if (v !== '') uniq.add(v);
  const tokens = [OOV_TOKEN, ...[...uniq].sort()];
  const index = new Map<string, number>();
  for (let i = 1; i < tokens.length; i++) index.set(tokens[i], i);
  return { tokens, index };
}

function* marked<T>(values: T[], mark: Uint8Array): Generator<T> {
  for (let i = 0; i < values.length; i++) if (mark[i]) yield values[i];
}

interface EncodedAttr {
  field: CategoricalField | SequenceField;
  vocab: Vocab;
  /** Categorical: one id per entity. */
  ids?: Int32Array;
  /** Sequence: maxLen ids per entity, 0-padded. */
  seq?: Int32Array;
}

function encodeAttr(attr: Attr, mark: Uint8Array): EncodedAttr {
  if (attr.kind === 'categorical') {
    const vocab = makeVocab(marked(attr.values, mark));
    const ids = new Int32Array(attr.values.length);
    for (let i = 0; i < ids.length; i++) ids[i] = vocab.index.get(attr.values[i]) ?? 0;
    return { field: { name: attr.name, kind: 'categorical', vocabSize: vocab.tokens.length }, vocab, ids };
  }
  const vocab = makeVocab(
    (function* () {
      for (const list of marked(attr.values, mark)) yield* list;
    })(),
  );
  let maxLen = 1;
  for (const list of marked(attr.values, mark))
    maxLen = Math.max(maxLen, Math.min(list.length, MAX_ATTR_SEQ_LEN));
  const seq = new Int32Array(attr.values.length * maxLen);
  for (let i = 0; i < attr.values.length; i++) {
    const list = attr.values[i];
    for (let j = 0; j < Math.min(list.length, maxLen); j++)
      seq[i * maxLen + j] = vocab.index.get(list[j]) ?? 0;
  }
  return { field: { name: attr.name, kind: 'sequence', vocabSize: vocab.tokens.length, maxLen }, vocab, seq };
}

/**
 * Derives CTR samples from parsed interactions:
 * - interactions are ordered stably by time; a sample's history is its user's most recent earlier
 *   interactions in that order (from any split), at most `historyLen`, oldest first;
 * - samples with fewer than `minHistory` earlier interactions are dropped;
 * - the split is the predefined one when given, otherwise the first split[0] share of samples in time
 *   order is train, the next split[1] valid, the rest test;
 * - vocabularies are built from the training samples only (their users, target items and history items).
 * Feature layout: categorical [user_id, item_id, ...user attributes, ...categorical item attributes];
 * sequences [history (shares item_id's vocabulary), ...multi-valued item attributes such as genres].
 */
export function buildCtrDataset(raw: RawDataset, p: BuildParams, source: { dir: string }): BuiltDataset {
  const inter = raw.interactions;
  const n = inter.n;
  const K = p.historyLen;
  const nUsers = raw.userIds.length;
  const nItems = raw.itemIds.length;
  const order = timeOrder(inter.timestamp, n);

  // Per-user interaction lists in time order (CSR) and each interaction's position in its user's list.
  const userOff = new Int32Array(nUsers + 1);
  for (let i = 0; i < n; i++) userOff[inter.user[i] + 1]++;
  for (let u = 0; u < nUsers; u++) userOff[u + 1] += userOff[u];
  const fill = new Int32Array(nUsers);
  const userSeq = new Int32Array(n);
  const pos = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    const i = order[k];
    const u = inter.user[i];
    pos[i] = fill[u];
    userSeq[userOff[u] + fill[u]++] = i;
  }

  const kept: number[] = [];
  for (let k = 0; k < n; k++) if (pos[order[k]] >= p.minHistory) kept.push(order[k]);
  const shortHistory = n - kept.length;
  if (kept.length === 0) {
    throw new DatasetError(`no samples left: every interaction has fewer than ${p.minHistory} earlier ones`, {
      file: source.dir,
      reason: 'no_samples',
    });
  }

  // Sample id = position among kept samples in global time order.
  const bySplit: Record<SplitName, number[]> = { train: [], valid: [], test: [] };
  const sampleIdOf = new Int32Array(n);
  if (inter.split) {
    for (let s = 0; s < kept.length; s++) bySplit[SPLITS[inter.split[kept[s]]]].push(kept[s]);
  } else {
    const total = p.split[0] + p.split[1] + p.split[2];
    const cut1 = Math.floor((kept.length * p.split[0]) / total);
    const cut2 = Math.floor((kept.length * (p.split[0] + p.split[1])) / total);
    for (let s = 0; s < kept.length; s++)
      bySplit[s < cut1 ? 'train' : s < cut2 ? 'valid' : 'test'].push(kept[s]);
  }
  for (let s = 0; s < kept.length; s++) sampleIdOf[kept[s]] = s;
  if (bySplit.train.length === 0) {
    throw new DatasetError('the training split is empty', { file: source.dir, reason: 'no_samples' });
  }

  // What the training split sees decides the vocabularies.
  const userMark = new Uint8Array(nUsers);
  const itemMark = new Uint8Array(nItems);
  for (const i of bySplit.train) {
    userMark[inter.user[i]] = 1;
    itemMark[inter.item[i]] = 1;
    const base = userOff[inter.user[i]];
    for (let j = Math.max(0, pos[i] - K); j < pos[i]; j++) itemMark[inter.item[userSeq[base + j]]] = 1;
  }
  const userId = encodeAttr({ name: 'user_id', kind: 'categorical', values: raw.userIds }, userMark);
  const itemId = encodeAttr({ name: 'item_id', kind: 'categorical', values: raw.itemIds }, itemMark);
  const userAttrs = raw.userAttrs.map((a) => encodeAttr(a, userMark));
  const itemAttrs = raw.itemAttrs.map((a) => encodeAttr(a, itemMark));
  const userCats = [userId, ...userAttrs.filter((a) => a.ids)];
  const itemCats = [itemId, ...itemAttrs.filter((a) => a.ids)];
  const itemSeqs = itemAttrs.filter((a) => a.seq);

  const categorical = [
    userId.field,
    itemId.field,
    ...userCats.slice(1).map((a) => a.field),
    ...itemCats.slice(1).map((a) => a.field),
  ] as CategoricalField[];
  const historyField: SequenceField = {
    name: HISTORY_FIELD,
    kind: 'sequence',
    vocabSize: itemId.vocab.tokens.length,
    maxLen: K,
    sharesVocabWith: 'item_id',
  };
  const sequences = [historyField, ...itemSeqs.map((a) => a.field as SequenceField)];
  const vocabularies: Record<string, string[]> = {};
  for (const a of [...userCats, ...itemCats, ...itemSeqs]) vocabularies[a.field.name] = a.vocab.tokens;
  const fmBody = { categorical, sequences, dense: [], vocabularies };
  const featureMap: FeatureMap = { id: featureMapId(fmBody), ...fmBody };

  // Dense user rows: users with at least one interaction, in user table order.
  const userRowOf = new Int32Array(nUsers).fill(-1);
  let userCount = 0;
  for (let u = 0; u < nUsers; u++) if (userOff[u + 1] > userOff[u]) userRowOf[u] = userCount++;

  // Per-interaction label and the value shown in histories (rating, or label for label-only data).
  const label = new Float32Array(n);
  const histValue = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    label[i] = labelOf(inter, p.labelRule, i);
    histValue[i] = raw.hasRating ? inter.rating[i] : label[i];
  }
  const seqWidths = itemSeqs.map((a) => (a.field.kind === 'sequence' ? a.field.maxLen : 1));
  const encodeSplit = (name: SplitName, rows: number[]): EncodedSplit => {
    const size = rows.length;
    const C = categorical.length;
    const split: EncodedSplit = {
      name,
      size,
      labels: new Float32Array(size),
      sampleIds: new Uint32Array(size),
      timestamps: new Float64Array(size),
      userRows: new Int32Array(size),
      categorical: new Int32Array(size * C),
      sequences: sequences.map((f) => new Int32Array(size * f.maxLen)),
      dense: new Float32Array(0),
      targetItemRows: new Int32Array(size),
      historyItemRows: new Int32Array(size * K).fill(-1),
      historyRatings: new Float32Array(size * K).fill(NaN),
      historyLen: K,
    };
    // Locals instead of property chains: this loop runs size × historyLen times.
    const hist = split.sequences[0];
    const { labels, sampleIds, timestamps, userRows, targetItemRows, categorical: cat } = split;
    const { historyItemRows, historyRatings } = split;
    const iUser = inter.user;
    const iItem = inter.item;
    const iTime = inter.timestamp;
    const userIdIds = userId.ids!;
    const itemIdIds = itemId.ids!;
    const userAttrIds = userCats.slice(1).map((x) => x.ids!);
    const itemAttrIds = itemCats.slice(1).map((x) => x.ids!);
    for (let r = 0; r < size; r++) {
      const i = rows[r];
      const u = iUser[i];
      const it = iItem[i];
      labels[r] = label[i];
      sampleIds[r] = sampleIdOf[i];
      timestamps[r] = iTime[i];
      userRows[r] = userRowOf[u];
      targetItemRows[r] = it;
      let c = r * C;
      cat[c++] = userIdIds[u];
      cat[c++] = itemIdIds[it];
      for (let a = 0; a < userAttrIds.length; a++) cat[c++] = userAttrIds[a][u];
      for (let a = 0; a < itemAttrIds.length; a++) cat[c++] = itemAttrIds[a][it];
      const base = userOff[u];
      const p1 = pos[i];
      const h0 = p1 > K ? p1 - K : 0;
      let at = r * K;
      for (let j = h0; j < p1; j++, at++) {
        const hi = userSeq[base + j];
        const hItem = iItem[hi];
        historyItemRows[at] = hItem;
        historyRatings[at] = histValue[hi];
        hist[at] = itemIdIds[hItem];
      }
      for (let s = 0; s < itemSeqs.length; s++) {
        const w = seqWidths[s];
        const src = itemSeqs[s].seq!;
        const dst = split.sequences[s + 1];
        for (let j = 0; j < w; j++) dst[r * w + j] = src[it * w + j];
      }
    }
    return split;
  };

  const splits = {} as Record<SplitName, EncodedSplit>;
  const stats = {} as Record<SplitName, SplitStats>;
  for (const name of SPLITS) {
    splits[name] = encodeSplit(name, bySplit[name]);
    let positives = 0;
    for (const l of splits[name].labels) positives += l;
    const size = splits[name].size;
    stats[name] = { size, positives, positiveRate: size ? positives / size : 0 };
  }
  const items: ItemTable = { ids: raw.itemIds, titles: raw.itemTitles, genres: raw.itemGenres };
  return { featureMap, items, splits, stats, shortHistory, userCount, itemCount: nItems };
}
