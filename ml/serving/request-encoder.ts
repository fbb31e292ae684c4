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
import { ObservedHistories } from './observed-history.js';
import type { SplitPool } from './split-pool.js';
import { StringIndex } from './string-index.js';
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

/**
 * A request encoded for the CRM (`split`, one row per candidate) and, on demand, for the prompts.
 *
 * Why on demand: most requests never reach the LLM, and a history entry or item object per request would
 * be garbage the young generation has to clear at 200 requests/s. `history` is read off the split's first
 * row (every row carries the same history), so it must be read before the split is handed back to a
 * `SplitPool`; the engine reads it, once, when something is routed. `target(i)` reads the item tables.
 */
export class EncodedRequest {
  private historyEntries: HistoryEntry[] | undefined;

  constructor(
    readonly split: EncodedSplit,
    /** Per candidate: the item or the user is out of the CRM's vocabulary. */
    readonly cold: boolean[],
    readonly userKnown: boolean,
    private readonly encoder: RequestEncoder,
    private readonly candidates: readonly { item: string }[],
    /** Length of the history the rows carry (at most the dataset's history length). */
    readonly historyLength: number,
    /** Raw ids (the prompt titles) of history entries outside the item table, by position; usually none. */
    private readonly coldTitles: (string | undefined)[] | undefined,
    /** The history when there is no row to read it from (no candidates). */
    emptyHistory?: HistoryEntry[],
  ) {
    this.historyEntries = emptyHistory;
  }

  /** The history the rows carry, oldest first. */
  get history(): HistoryEntry[] {
    if (this.historyEntries) return this.historyEntries;
    const s = this.split;
    const out: HistoryEntry[] = [];
    for (let j = 0; j < this.historyLength; j++)
      out.push(
        this.encoder.historyEntry(
          s.historyItemRows[j],
          s.sequences[0][j],
          s.historyRatings[j],
          this.coldTitles?.[j],
        ),
      );
    return (this.historyEntries = out);
  }

  /** Candidate i as the model knows it. */
  target(i: number): ItemInfo {
    return this.encoder.item(this.candidates[i].item);
  }

  get targets(): ItemInfo[] {
    return this.candidates.map((c) => this.encoder.item(c.item));
  }
}

/**
 * The known users, one slot each, flat: what a request without its own history reads. Histories are CSR
 * (a user's entries are `histStart[u] .. histStart[u + 1]`, oldest first), so the whole table is a handful
 * of typed arrays however many users there are.
 */
interface UserTable {
  index: StringIndex;
  /** Encoded user id per slot. */
  ids: Int32Array;
  /** Dense user row of the dataset (EncodedSplit.userRows) per slot. */
  rows: Int32Array;
  /** slots × user attributes. */
  attrs: Int32Array;
  histStart: Int32Array;
  histRows: Int32Array;
  histIds: Int32Array;
  histRatings: Float32Array;
}

/** A history window being assembled (the encoder's scratch, reused by every request). */
interface HistoryScratch {
  rows: Int32Array;
  ids: Int32Array;
  ratings: Float32Array;
}

export class RequestEncoder {
  readonly historyLen: number;
  /** Rating of a history event that names none: the dataset's highest rating (1 for label-only data). */
  readonly defaultRating: number;
  private readonly nCat: number;
  private readonly nUserAttrs: number;
  private readonly nItemAttrs: number;
  /** Widths of the multi-valued item attributes (sequence fields 1..). */
  private readonly seqWidths: number[];
  private readonly items: ItemTable;
  /** Raw item id → item-table row. */
  private readonly itemIndex: StringIndex;
  /** Per item row: encoded id (0 = OOV), categorical attributes (rows × nItemAttrs), sequence fields. */
  private readonly itemIds: Int32Array;
  private readonly itemAttrs: Int32Array;
  private readonly itemSeqs: Int32Array[];
  private readonly users: UserTable;
  private readonly userAttrVocab: StringIndex[];
  private readonly userAttrNames: string[];
  private readonly observed = new ObservedHistories();
  private readonly scratch: HistoryScratch;
  private readonly userAttrScratch: Int32Array;
  private readonly pool: SplitPool | undefined;
  private readonly featureMap: FeatureMap;

  /**
   * Keeps lookup tables only, not the splits: an engine holds a few MB, not the dataset's samples. With a
   * `pool`, encoded splits come from it (the engine hands them back once scored).
   */
  constructor(dataset: CtrDataset, opts: { pool?: SplitPool } = {}) {
    const fm = dataset.featureMap;
    this.featureMap = fm;
    this.pool = opts.pool;
    const items = dataset.items;
    this.items = items;
    this.nCat = fm.categorical.length;
    this.historyLen = fm.sequences[0]?.maxLen ?? 0;
    this.seqWidths = fm.sequences.slice(1).map((s) => s.maxLen);
    const splits = SPLITS.map((s) => dataset.splits[s]).filter((s) => s.size > 0);
    this.nUserAttrs = userAttrCount(fm, splits);
    this.nItemAttrs = this.nCat - 2 - this.nUserAttrs;
    this.userAttrNames = fm.categorical.slice(2, 2 + this.nUserAttrs).map((f) => f.name);
    this.userAttrVocab = this.userAttrNames.map((n) => vocabStringIndex(fm.vocabularies[n] ?? []));
    this.itemIndex = new StringIndex(items.ids);

    let maxRating = -Infinity;
    for (const s of splits) for (const r of s.historyRatings) if (r > maxRating) maxRating = r;
    this.defaultRating = Number.isFinite(maxRating) ? maxRating : 1;

    const nItems = items.ids.length;
    const vocab = vocabStringIndex(fm.vocabularies.item_id ?? []);
    this.itemIds = new Int32Array(nItems);
    for (let r = 0; r < nItems; r++) this.itemIds[r] = Math.max(0, vocab.get(items.ids[r]));
    this.itemAttrs = new Int32Array(nItems * this.nItemAttrs);
    this.itemSeqs = this.seqWidths.map((w) => new Int32Array(nItems * w));
    this.buildItems(splits);
    this.users = this.buildUsers(fm, splits);
    const K = this.historyLen;
    this.scratch = { rows: new Int32Array(K), ids: new Int32Array(K), ratings: new Float32Array(K) };
    this.userAttrScratch = new Int32Array(this.nUserAttrs);
  }

  private buildItems(splits: EncodedSplit[]): void {
    const C = this.nCat;
    const A = this.nItemAttrs;
    const a0 = 2 + this.nUserAttrs;
    const nItems = this.itemIds.length;
    const seen = new Uint8Array(nItems);
    for (const s of splits) {
      for (let i = 0; i < s.size; i++) {
        const it = s.targetItemRows[i];
        if (it < 0 || it >= nItems || seen[it]) continue;
        seen[it] = 1;
        this.itemAttrs.set(s.categorical.subarray(i * C + a0, (i + 1) * C), it * A);
        this.seqWidths.forEach((w, k) =>
          this.itemSeqs[k].set(s.sequences[k + 1].subarray(i * w, (i + 1) * w), it * w),
        );
      }
    }
    // Items that are never a sample's target (seen only in histories): their categorical attributes are not
    // recoverable and stay OOV; a single multi-valued attribute is the item table's genre text (MovieLens
    // genres, Amazon categories are both stored as ', '-joined lists), so it is re-encoded from there.
    const seqField = this.featureMap.sequences[1];
    if (this.seqWidths.length === 1 && seqField) {
      const vocab = vocabIndex(this.featureMap.vocabularies[seqField.name] ?? []);
      const w = this.seqWidths[0];
      for (let it = 0; it < nItems; it++) {
        const genres = this.items.genres[it] ?? '';
        if (!seen[it] && genres)
          this.itemSeqs[0].set(sequenceFromText(genres, seqField.maxLen, vocab), it * w);
      }
    }
  }

  private buildUsers(fm: FeatureMap, splits: EncodedSplit[]): UserTable {
    const C = this.nCat;
    const K = this.historyLen;
    const A = this.nUserAttrs;
    const vocab = fm.vocabularies.user_id ?? [];
    // The latest sample of each known user (by time, then sample id) carries their latest history window.
    // Found per encoded user id in typed arrays: split number and row of the latest sample so far.
    const nIds = vocab.length;
    const bestSplit = new Int32Array(nIds).fill(-1);
    const bestRow = new Int32Array(nIds);
    splits.forEach((s, si) => {
      for (let i = 0; i < s.size; i++) {
        const uid = s.categorical[i * C];
        if (uid === 0 || uid >= nIds) continue;
        const ps = bestSplit[uid];
        if (ps >= 0) {
          const p = splits[ps];
          const pr = bestRow[uid];
          const later =
            s.timestamps[i] > p.timestamps[pr] ||
            (s.timestamps[i] === p.timestamps[pr] && s.sampleIds[i] > p.sampleIds[pr]);
          if (!later) continue;
        }
        bestSplit[uid] = si;
        bestRow[uid] = i;
      }
    });
    const uids: number[] = [];
    for (let uid = 1; uid < nIds; uid++) if (bestSplit[uid] >= 0) uids.push(uid);
    const n = uids.length;
    const t: UserTable = {
      index: new StringIndex(
        uids.map((uid) => vocab[uid]),
        Int32Array.from(uids, (_, u) => u),
      ),
      ids: Int32Array.from(uids),
      rows: new Int32Array(n),
      attrs: new Int32Array(n * A),
      histStart: new Int32Array(n + 1),
      histRows: new Int32Array(0),
      histIds: new Int32Array(0),
      histRatings: new Float32Array(0),
    };
    const rows = new Int32Array(n * K);
    const ids = new Int32Array(n * K);
    const ratings = new Float32Array(n * K);
    let at = 0;
    uids.forEach((uid, u) => {
      const s = splits[bestSplit[uid]];
      const i = bestRow[uid];
      t.rows[u] = s.userRows[i];
      t.attrs.set(s.categorical.subarray(i * C + 2, i * C + 2 + A), u * A);
      for (let j = 0; j < K; j++) {
        const row = s.historyItemRows[i * K + j];
        const rating = s.historyRatings[i * K + j];
        if (row < 0 || Number.isNaN(rating)) continue;
        rows[at] = row;
        ids[at] = s.sequences[0][i * K + j];
        ratings[at] = rating;
        at++;
      }
      t.histStart[u + 1] = at;
    });
    // Trimmed to the entries there are: a copy, so the n × K scratch is not kept.
    t.histRows = rows.slice(0, at);
    t.histIds = ids.slice(0, at);
    t.histRatings = ratings.slice(0, at);
    return t;
  }

  /** Names of the categorical user attributes, in feature-map order. */
  get userAttributes(): readonly string[] {
    return this.userAttrNames;
  }

  /** Rows of the dataset's item table. */
  get itemCount(): number {
    return this.itemIds.length;
  }

  /** Known users (those whose raw id a dataset version lets the engine recover). */
  get userCount(): number {
    return this.users.ids.length;
  }

  /**
   * The item as the model knows it (a new object with views into the tables; for prompts and tests, not
   * the CRM path). An item outside the item table has no title, so its raw id is used.
   */
  item(raw: string): ItemInfo {
    const r = this.itemIndex.get(raw);
    if (r < 0) {
      return {
        row: -1,
        id: 0,
        attrs: new Int32Array(this.nItemAttrs),
        seqs: this.seqWidths.map((w) => new Int32Array(w)),
        title: raw,
        genres: '',
      };
    }
    const A = this.nItemAttrs;
    return {
      row: r,
      id: this.itemIds[r],
      attrs: this.itemAttrs.subarray(r * A, (r + 1) * A),
      seqs: this.seqWidths.map((w, k) => this.itemSeqs[k].subarray(r * w, (r + 1) * w)),
      title: this.items.titles[r] ?? raw,
      genres: this.items.genres[r] ?? '',
    };
  }

  /** A history entry as the prompts read it; `coldTitle` is the raw id of an item outside the item table. */
  historyEntry(itemRow: number, itemId: number, rating: number, coldTitle?: string): HistoryEntry {
    const it = this.items;
    return {
      itemRow,
      itemId,
      title: itemRow >= 0 ? (it.titles[itemRow] ?? it.ids[itemRow]) : (coldTitle ?? ''),
      genres: itemRow >= 0 ? (it.genres[itemRow] ?? '') : '',
      rating,
    };
  }

  /** The history used for a request that brings none: the dataset's latest window plus feedback since. */
  knownHistory(user: string): HistoryEntry[] {
    const titles: (string | undefined)[] = [];
    const h = this.knownInto(user, this.scratch, titles);
    const s = this.scratch;
    return Array.from({ length: h }, (_, j) =>
      this.historyEntry(s.rows[j], s.ids[j], s.ratings[j], titles[j]),
    );
  }

  observe(event: { user: string; item: string; rating: number; ts: number }): void {
    const r = this.itemIndex.get(event.item);
    const item = r < 0 ? { row: -1, id: 0 } : { row: r, id: this.itemIds[r] };
    this.observed.add(event.user, item, event.rating, event.item);
  }

  /**
   * The last `historyLen` events of the user's known history (dataset window, then observed feedback)
   * into `out`; returns how many. Raw titles of entries outside the item table go to `titles` by position.
   */
  private knownInto(user: string, out: HistoryScratch, titles: (string | undefined)[] | undefined): number {
    const K = this.historyLen;
    const u = this.users.index.get(user);
    const t = this.users;
    const b0 = u >= 0 ? t.histStart[u] : 0;
    const nBase = u >= 0 ? t.histStart[u + 1] - b0 : 0;
    const nObs = this.observed.count(user);
    const total = nBase + nObs;
    const skip = Math.max(0, total - K);
    let at = 0;
    for (let k = skip; k < nBase; k++, at++) {
      out.rows[at] = t.histRows[b0 + k];
      out.ids[at] = t.histIds[b0 + k];
      out.ratings[at] = t.histRatings[b0 + k];
    }
    for (let k = Math.max(0, skip - nBase); k < nObs; k++, at++) {
      const title = this.observed.read(user, k, out, at);
      if (title !== undefined && titles) titles[at] = title;
    }
    return at;
  }

  /** The request's own history (its last `historyLen` events) into `out`; returns how many. */
  private suppliedInto(
    history: readonly HistoryEvent[],
    out: HistoryScratch,
    titles: (string | undefined)[],
  ): number {
    const from = Math.max(0, history.length - this.historyLen);
    let at = 0;
    for (let k = from; k < history.length; k++, at++) {
      const e = history[k];
      const r = this.itemIndex.get(e.item);
      out.rows[at] = r;
      out.ids[at] = r < 0 ? 0 : this.itemIds[r];
      out.ratings[at] = e.rating ?? this.defaultRating;
      if (r < 0) titles[at] = e.item;
    }
    return at;
  }

  encode(req: ScoreRequest): EncodedRequest {
    const C = this.nCat;
    const K = this.historyLen;
    const A = this.nUserAttrs;
    const IA = this.nItemAttrs;
    const u = this.users.index.get(req.user.id);
    const attrs = this.userAttrScratch;
    for (let k = 0; k < A; k++) attrs[k] = u >= 0 ? this.users.attrs[u * A + k] : 0;
    if (req.user.features) {
      for (const name in req.user.features) {
        const k = this.userAttrNames.indexOf(name);
        if (k < 0) {
          throw new CorellaError(
            'BAD_REQUEST',
            `user.features.${name}: not a user attribute of this model (known: ${this.userAttrNames.join(', ') || 'none'})`,
            { details: { field: `user.features.${name}` } },
          );
        }
        attrs[k] = Math.max(0, this.userAttrVocab[k].get(String(req.user.features[name])));
      }
    }
    const titles: (string | undefined)[] = [];
    const hs = this.scratch;
    const h = req.history
      ? this.suppliedInto(req.history, hs, titles)
      : this.knownInto(req.user.id, hs, titles);
    const coldTitles = titles.length > 0 ? titles : undefined;

    const n = req.candidates.length;
    const split = this.pool ? this.pool.acquire(n) : newSplit(this.featureMap, n);
    split.timestamps.fill(Math.floor(Date.now() / 1000));
    split.userRows.fill(u >= 0 ? this.users.rows[u] : -1);
    const uid = u >= 0 ? this.users.ids[u] : 0;
    const cold: boolean[] = new Array<boolean>(n);
    const hist = split.sequences[0];
    const cat = split.categorical;
    // Plain loops rather than set(subarray(...)): a subarray is a new object, and this runs per candidate.
    const hRows = hs.rows;
    const hIds = hs.ids;
    const hRatings = hs.ratings;
    const histRows = split.historyItemRows;
    const histRatings = split.historyRatings;
    const itemAttrs = this.itemAttrs;
    for (let r = 0; r < n; r++) {
      const t = this.itemIndex.get(req.candidates[r].item);
      const id = t < 0 ? 0 : this.itemIds[t];
      cold[r] = id === 0 || uid === 0;
      split.targetItemRows[r] = t;
      let c = r * C;
      cat[c++] = uid;
      cat[c++] = id;
      for (let k = 0; k < A; k++) cat[c++] = attrs[k];
      for (let k = 0; k < IA; k++) cat[c++] = t < 0 ? 0 : itemAttrs[t * IA + k];
      if (hist) {
        const o = r * K;
        for (let j = 0; j < h; j++) {
          hist[o + j] = hIds[j];
          histRows[o + j] = hRows[j];
          histRatings[o + j] = hRatings[j];
        }
        for (let j = h; j < K; j++) {
          hist[o + j] = 0;
          histRows[o + j] = -1;
          histRatings[o + j] = NaN;
        }
      }
      for (let k = 0; k < this.seqWidths.length; k++) {
        const w = this.seqWidths[k];
        const seq = split.sequences[k + 1];
        const src = this.itemSeqs[k];
        for (let j = 0; j < w; j++) seq[r * w + j] = t < 0 ? 0 : src[t * w + j];
      }
    }
    const empty =
      n === 0
        ? Array.from({ length: h }, (_, j) =>
            this.historyEntry(hs.rows[j], hs.ids[j], hs.ratings[j], titles[j]),
          )
        : undefined;
    return new EncodedRequest(split, cold, u >= 0, this, req.candidates, h, coldTitles, empty);
  }
}

/** An empty split of `n` rows in the layout of `fm` (padding: history rows −1, ratings NaN). */
export function newSplit(fm: FeatureMap, n: number): EncodedSplit {
  const K = fm.sequences[0]?.maxLen ?? 0;
  return {
    name: 'test',
    size: n,
    labels: new Float32Array(n),
    sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
    timestamps: new Float64Array(n),
    userRows: new Int32Array(n),
    categorical: new Int32Array(n * fm.categorical.length),
    sequences: fm.sequences.map((f) => new Int32Array(n * f.maxLen)),
    dense: new Float32Array(0),
    targetItemRows: new Int32Array(n),
    historyItemRows: new Int32Array(n * K).fill(-1),
    historyRatings: new Float32Array(n * K).fill(NaN),
    historyLen: K,
  };
}

function vocabStringIndex(tokens: string[]): StringIndex {
  // Index 0 is the OOV row: not a key (as vocabIndex skips it).
  return new StringIndex(
    tokens.slice(1),
    Int32Array.from(tokens.slice(1), (_, i) => i + 1),
  );
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
