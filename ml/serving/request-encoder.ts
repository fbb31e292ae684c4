/**
 * Turns a live `ScoreRequest` into the rows the CRM and the LLM branch read offline: one `EncodedSplit`
 * row per candidate in the layout of ml/data/build.ts (categorical [user_id, item_id, ...user attributes,
 * ...item attributes]; sequences [history (item_id vocabulary), ...multi-valued item attributes]) plus
 * the text side (history entries and target titles) the prompts are built from.
 *
 * Why lookup tables built from the splits: a dataset version stores encoded samples, not the raw user and
 * item tables. Every id the CRM saw is recoverable from the sample rows (a user's attributes are the same
 * in all of their rows, an item's in all rows that target it), so serving encodes exactly as ingestion did
 * and a request rebuilt from a stored row encodes to that row, id for id.
 */
import type { CtrDataset, EncodedSplit, FeatureMap, ItemTable } from '../data/types.js';
import { SPLITS } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { HistoryEvent, ScoreRequest } from './types.js';

/** One history entry as the prompt shows it; `itemRow` −1 = not in the item table. */
export interface HistoryEntry {
  itemRow: number;
  /** Encoded item id (0 = out of the CRM's vocabulary). */
  itemId: number;
  title: string;
  genres: string;
  rating: number;
}

export interface ItemInfo {
  /** Row in the dataset's item table, −1 when the item is not there. */
  row: number;
  /** Encoded item id, 0 = OOV (cold). */
  id: number;
  /** Ids of the categorical item attributes, in feature-map order. */
  attrs: Int32Array;
  /** Ids of each multi-valued item attribute (sequence fields 1..), maxLen each, 0-padded. */
  seqs: Int32Array[];
  title: string;
  genres: string;
}

interface UserInfo {
  id: number;
  /** Dense user row of the dataset (EncodedSplit.userRows). */
  row: number;
  attrs: Int32Array;
  history: HistoryEntry[];
}

/** A request encoded for the CRM (`split`, one row per candidate) and for the prompts. */
export interface EncodedRequest {
  split: EncodedSplit;
  /** The history the rows carry (at most the dataset's history length), oldest first. */
  history: HistoryEntry[];
  targets: ItemInfo[];
  /** Per candidate: the item or the user is out of the CRM's vocabulary. */
  cold: boolean[];
  userKnown: boolean;
}

/** Feedback events kept per user beyond the dataset's history (a few windows are plenty). */
const OBSERVED_PER_USER = 256;

export class RequestEncoder {
  readonly historyLen: number;
  /** Rating of a history event that names none: the dataset's highest rating (1 for label-only data). */
  readonly defaultRating: number;
  private readonly nCat: number;
  private readonly nUserAttrs: number;
  private readonly seqWidths: number[];
  private readonly itemIndex = new Map<string, number>();
  private readonly itemVocab = new Map<string, number>();
  private readonly itemInfos: ItemInfo[];
  private readonly users = new Map<string, UserInfo>();
  private readonly userAttrVocab: Map<string, number>[];
  private readonly userAttrNames: string[];
  private readonly observed = new Map<string, HistoryEntry[]>();
  private readonly coldItemTemplate: ItemInfo;

  private readonly featureMap: FeatureMap;

  /** Keeps lookup tables only, not the splits: an engine holds a few MB, not the dataset's samples. */
  constructor(dataset: CtrDataset) {
    const fm = dataset.featureMap;
    this.featureMap = fm;
    const items = dataset.items;
    this.nCat = fm.categorical.length;
    this.historyLen = fm.sequences[0]?.maxLen ?? 0;
    this.seqWidths = fm.sequences.slice(1).map((s) => s.maxLen);
    const splits = SPLITS.map((s) => dataset.splits[s]).filter((s) => s.size > 0);
    this.nUserAttrs = userAttrCount(fm, splits);
    this.userAttrNames = fm.categorical.slice(2, 2 + this.nUserAttrs).map((f) => f.name);
    this.userAttrVocab = this.userAttrNames.map((n) => vocabIndex(fm.vocabularies[n] ?? []));
    items.ids.forEach((id, r) => this.itemIndex.set(id, r));
    (fm.vocabularies.item_id ?? []).forEach((id, i) => i > 0 && this.itemVocab.set(id, i));

    let maxRating = -Infinity;
    for (const s of splits) for (const r of s.historyRatings) if (r > maxRating) maxRating = r;
    this.defaultRating = Number.isFinite(maxRating) ? maxRating : 1;

    const nItemAttrs = this.nCat - 2 - this.nUserAttrs;
    this.coldItemTemplate = {
      row: -1,
      id: 0,
      attrs: new Int32Array(nItemAttrs),
      seqs: this.seqWidths.map((w) => new Int32Array(w)),
      title: '',
      genres: '',
    };
    this.itemInfos = this.buildItems(items, splits, nItemAttrs);
    this.buildUsers(fm, splits, items);
  }

  private buildItems(items: ItemTable, splits: EncodedSplit[], nItemAttrs: number): ItemInfo[] {
    const C = this.nCat;
    const a0 = 2 + this.nUserAttrs;
    const infos: ItemInfo[] = items.ids.map((id, r) => ({
      row: r,
      id: this.itemVocab.get(id) ?? 0,
      attrs: new Int32Array(nItemAttrs),
      seqs: this.seqWidths.map((w) => new Int32Array(w)),
      title: items.titles[r] ?? id,
      genres: items.genres[r] ?? '',
    }));
    const seen = new Uint8Array(items.ids.length);
    for (const s of splits) {
      for (let i = 0; i < s.size; i++) {
        const it = s.targetItemRows[i];
        if (it < 0 || it >= infos.length || seen[it]) continue;
        seen[it] = 1;
        const info = infos[it];
        info.attrs.set(s.categorical.subarray(i * C + a0, (i + 1) * C));
        this.seqWidths.forEach((w, k) => info.seqs[k].set(s.sequences[k + 1].subarray(i * w, (i + 1) * w)));
      }
    }
    // Items that are never a sample's target (seen only in histories): their categorical attributes are not
    // recoverable and stay OOV; a single multi-valued attribute is the item table's genre text (MovieLens
    // genres, Amazon categories are both stored as ', '-joined lists), so it is re-encoded from there.
    const seqField = this.featureMap.sequences[1];
    if (this.seqWidths.length === 1 && seqField) {
      const vocab = vocabIndex(this.featureMap.vocabularies[seqField.name] ?? []);
      for (let it = 0; it < infos.length; it++)
        if (!seen[it] && infos[it].genres)
          infos[it].seqs[0] = sequenceFromText(infos[it].genres, seqField.maxLen, vocab);
    }
    return infos;
  }

  private buildUsers(fm: FeatureMap, splits: EncodedSplit[], items: ItemTable): void {
    const C = this.nCat;
    const K = this.historyLen;
    const vocab = fm.vocabularies.user_id ?? [];
    // The latest sample of each known user (by time, then sample id) carries their latest history window.
    const latest = new Map<number, { s: EncodedSplit; i: number }>();
    for (const s of splits) {
      for (let i = 0; i < s.size; i++) {
        const uid = s.categorical[i * C];
        if (uid === 0) continue;
        const prev = latest.get(uid);
        if (
          !prev ||
          s.timestamps[i] > prev.s.timestamps[prev.i] ||
          (s.timestamps[i] === prev.s.timestamps[prev.i] && s.sampleIds[i] > prev.s.sampleIds[prev.i])
        )
          latest.set(uid, { s, i });
      }
    }
    for (const [uid, { s, i }] of latest) {
      const history: HistoryEntry[] = [];
      for (let j = 0; j < K; j++) {
        const row = s.historyItemRows[i * K + j];
        const rating = s.historyRatings[i * K + j];
        if (row < 0 || Number.isNaN(rating)) continue;
        history.push({
          itemRow: row,
          itemId: s.sequences[0][i * K + j],
          title: items.titles[row] ?? items.ids[row],
          genres: items.genres[row] ?? '',
          rating,
        });
      }
      this.users.set(vocab[uid], {
        id: uid,
        row: s.userRows[i],
        attrs: s.categorical.slice(i * C + 2, i * C + 2 + this.nUserAttrs),
        history,
      });
    }
  }

  /** Names of the categorical user attributes, in feature-map order. */
  get userAttributes(): readonly string[] {
    return this.userAttrNames;
  }

  /** Rows of the dataset's item table. */
  get itemCount(): number {
    return this.itemInfos.length;
  }

  /** The item as the model knows it; an item outside the item table has no title, so its raw id is used. */
  item(raw: string): ItemInfo {
    const r = this.itemIndex.get(raw);
    if (r !== undefined) return this.itemInfos[r];
    return { ...this.coldItemTemplate, title: raw };
  }

  /** The history used for a request that brings none: the dataset's latest window plus feedback since. */
  knownHistory(user: string): HistoryEntry[] {
    const base = this.users.get(user)?.history ?? [];
    const extra = this.observed.get(user) ?? [];
    const all = extra.length ? [...base, ...extra] : base;
    return all.length > this.historyLen ? all.slice(all.length - this.historyLen) : all;
  }

  observe(event: { user: string; item: string; rating: number; ts: number }): void {
    const info = this.item(event.item);
    let list = this.observed.get(event.user);
    if (!list) this.observed.set(event.user, (list = []));
    list.push({
      itemRow: info.row,
      itemId: info.id,
      title: info.title,
      genres: info.genres,
      rating: event.rating,
    });
    if (list.length > OBSERVED_PER_USER) list.splice(0, list.length - OBSERVED_PER_USER);
  }

  private entry(e: HistoryEvent): HistoryEntry {
    const info = this.item(e.item);
    return {
      itemRow: info.row,
      itemId: info.id,
      title: info.title,
      genres: info.genres,
      rating: e.rating ?? this.defaultRating,
    };
  }

  encode(req: ScoreRequest): EncodedRequest {
    const C = this.nCat;
    const K = this.historyLen;
    const user = this.users.get(req.user.id);
    const attrs = user ? user.attrs.slice() : new Int32Array(this.nUserAttrs);
    for (const [name, value] of Object.entries(req.user.features ?? {})) {
      const k = this.userAttrNames.indexOf(name);
      if (k < 0) {
        throw new CorellaError(
          'BAD_REQUEST',
          `user.features.${name}: not a user attribute of this model (known: ${this.userAttrNames.join(', ') || 'none'})`,
          { details: { field: `user.features.${name}` } },
        );
      }
      attrs[k] = this.userAttrVocab[k].get(String(value)) ?? 0;
    }
    let history = req.history ? req.history.map((e) => this.entry(e)) : this.knownHistory(req.user.id);
    if (history.length > K) history = history.slice(history.length - K);

    const n = req.candidates.length;
    const split: EncodedSplit = {
      name: 'test',
      size: n,
      labels: new Float32Array(n),
      sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
      timestamps: new Float64Array(n).fill(Math.floor(Date.now() / 1000)),
      userRows: new Int32Array(n).fill(user ? user.row : -1),
      categorical: new Int32Array(n * C),
      sequences: this.featureMap.sequences.map((f) => new Int32Array(n * f.maxLen)),
      dense: new Float32Array(0),
      targetItemRows: new Int32Array(n),
      historyItemRows: new Int32Array(n * K).fill(-1),
      historyRatings: new Float32Array(n * K).fill(NaN),
      historyLen: K,
    };
    const uid = user?.id ?? 0;
    const targets: ItemInfo[] = [];
    const cold: boolean[] = [];
    const hist = split.sequences[0];
    for (let r = 0; r < n; r++) {
      const t = this.item(req.candidates[r].item);
      targets.push(t);
      cold.push(t.id === 0 || uid === 0);
      split.targetItemRows[r] = t.row;
      let c = r * C;
      split.categorical[c++] = uid;
      split.categorical[c++] = t.id;
      split.categorical.set(attrs, c);
      split.categorical.set(t.attrs, c + attrs.length);
      for (let j = 0; j < history.length; j++) {
        const h = history[j];
        hist[r * K + j] = h.itemId;
        split.historyItemRows[r * K + j] = h.itemRow;
        split.historyRatings[r * K + j] = h.rating;
      }
      this.seqWidths.forEach((w, k) => split.sequences[k + 1].set(t.seqs[k], r * w));
    }
    return { split, history, targets, cold, userKnown: user !== undefined };
  }
}

/** A multi-valued attribute re-encoded from the item table's ', '-joined text (as ingestion stores genres). */
export function sequenceFromText(text: string, maxLen: number, vocab: Map<string, number>): Int32Array {
  const out = new Int32Array(maxLen);
  text
    .split(', ')
    .slice(0, maxLen)
    .forEach((t, j) => (out[j] = vocab.get(t) ?? 0));
  return out;
}

export function vocabIndex(tokens: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 1; i < tokens.length; i++) m.set(tokens[i], i);
  return m;
}

/**
 * How many categorical columns after user_id and item_id are user attributes. The layout puts user
 * attributes before item attributes but the feature map does not say where one ends, so the boundary is
 * read off the data: the user columns are constant per user and the item columns constant per item. The
 * first column that is not a function of the user starts the item attributes.
 */
function userAttrCount(fm: FeatureMap, splits: EncodedSplit[]): number {
  const C = fm.categorical.length;
  for (let c = 2; c < C; c++) {
    const byUser = new Map<number, number>();
    let perUser = true;
    for (const s of splits) {
      for (let i = 0; i < s.size && perUser; i++) {
        const u = s.userRows[i];
        const v = s.categorical[i * C + c];
        const prev = byUser.get(u);
        if (prev === undefined) byUser.set(u, v);
        else if (prev !== v) perUser = false;
      }
    }
    if (!perUser) return c - 2;
    // A column constant per user and per item (e.g. a single value) could be either; ingestion puts item
    // attributes last, so a column that is also a function of the item and is followed only by such columns
    // is read as an item attribute.
    if (isPerItem(splits, C, c) && restPerItem(splits, C, c)) return c - 2;
  }
  return C - 2;
}

function isPerItem(splits: EncodedSplit[], C: number, c: number): boolean {
  const byItem = new Map<number, number>();
  for (const s of splits) {
    for (let i = 0; i < s.size; i++) {
      const it = s.targetItemRows[i];
      const v = s.categorical[i * C + c];
      const prev = byItem.get(it);
      if (prev === undefined) byItem.set(it, v);
      else if (prev !== v) return false;
    }
  }
  return true;
}

function restPerItem(splits: EncodedSplit[], C: number, c: number): boolean {
  for (let k = c; k < C; k++) if (!isPerItem(splits, C, k)) return false;
  return true;
}
