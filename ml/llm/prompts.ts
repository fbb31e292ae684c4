import type { Token } from 'node-llama-cpp';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import { blockOffset } from '../data/user-blocks.js';
import { CorellaError } from '../errors.js';

/**
 * A prompt template. `text` holds `{history}` before `{target}`, so that all of a user's prompts share the
 * tokens up to the target and the scorer can evaluate that prefix once.
 */
export interface PromptTemplate {
  name: string;
  text: string;
  entry(title: string, rating: number, genres: string): string;
  /** Put between consecutive history entries (it leads the newer one). */
  separator: string;
  /** Rendered in place of the history when there is none (or none fits). */
  emptyHistory: string;
}

function stars(r: number): string {
  return Number.isInteger(r) ? `${r}` : r.toFixed(1);
}

export const TEMPLATES: Record<string, PromptTemplate> = {
  paper: {
    name: 'paper',
    text:
      'Below is the rating history of a user: {history}. Please predict whether the user will like {target} ' +
      'based on his/her rating history and the quality of the target item. You should ONLY answer no or yes. Answer:',
    entry: (title, r) => `${title} (${stars(r)} stars)`,
    separator: ',',
    emptyHistory: 'none',
  },
  'paper-genres': {
    name: 'paper-genres',
    text:
      'Below is the rating history of a user: {history}. Please predict whether the user will like {target} ' +
      'based on his/her rating history and the quality of the target item. You should ONLY answer no or yes. Answer:',
    entry: (title, r, genres) =>
      genres ? `${title} [${genres}] (${stars(r)} stars)` : `${title} (${stars(r)} stars)`,
    separator: ',',
    emptyHistory: 'none',
  },
  compact: {
    name: 'compact',
    text: 'Ratings of a user, oldest first: {history}.\nDoes the user like {target}? Answer yes or no. Answer:',
    entry: (title, r) => `${title}: ${stars(r)}/5`,
    separator: ';',
    emptyHistory: 'none',
  },
};

export function templateByName(name: string): PromptTemplate {
  const t = TEMPLATES[name];
  if (!t) {
    throw new CorellaError(
      'BAD_CONFIG',
      `unknown prompt template ${JSON.stringify(name)}; known: ${Object.keys(TEMPLATES).join(', ')}`,
      {
        details: { field: 'template' },
      },
    );
  }
  return t;
}

/** What the builder needs of the model: tokenization only. */
export interface PromptTokenizer {
  tokenize(text: string, specialTokens?: boolean, options?: 'trimLeadingSpace'): Token[];
  /** Prepended when the model wants it (SPM/LLaMA-style vocabularies). */
  bos: Token | null;
}

export interface BuiltPrompt {
  tokens: Token[];
  /** Tokens up to and including the text before the target: identical for equal histories. */
  prefixLength: number;
  historyItemsUsed: number;
}

export interface PromptBuilderOptions {
  contextSize: number;
  maxHistoryItems?: number;
  /** Samples per user block whose history windows are anchored together (1 = a sliding window). */
  historyBlock?: number;
  targetReserveTokens: number;
}

/**
 * Builds prompts at the token level from separately tokenized segments, so that (1) history truncation is by
 * tokens and exact, and (2) two prompts with the same history share their prefix token-for-token. Each later
 * segment carries its own leading space and is tokenized with trimLeadingSpace (no SPM dummy prefix).
 */
export class PromptBuilder {
  readonly template: PromptTemplate;
  private readonly head: Token[];
  private readonly mid: Token[];
  private readonly tail: Token[];
  private readonly empty: Token[];
  private readonly bos: Token[];
  private readonly pieceCache = new Map<string, Token[]>();

  constructor(
    private readonly tok: PromptTokenizer,
    template: PromptTemplate,
    private readonly opts: PromptBuilderOptions,
  ) {
    this.template = template;
    const h = template.text.indexOf('{history}');
    const t = template.text.indexOf('{target}');
    if (h < 0 || t < 0 || t < h) {
      throw new CorellaError('BAD_CONFIG', `template ${template.name}: needs {history} before {target}`);
    }
    this.bos = tok.bos === null ? [] : [tok.bos];
    this.head = tok.tokenize(template.text.slice(0, h).trimEnd(), false);
    this.mid = this.seg(template.text.slice(h + '{history}'.length, t).trimEnd());
    this.tail = this.seg(template.text.slice(t + '{target}'.length));
    this.empty = this.seg(` ${template.emptyHistory}`);
  }

  private seg(text: string): Token[] {
    return text.length === 0 ? [] : this.tok.tokenize(text, false, 'trimLeadingSpace');
  }

  private piece(text: string): Token[] {
    let p = this.pieceCache.get(text);
    if (!p) {
      p = this.seg(text);
      if (this.pieceCache.size > 200_000) this.pieceCache.clear();
      this.pieceCache.set(text, p);
    }
    return p;
  }

  /** A free-standing prompt (e.g. an item prompt), with the BOS token when the model wants one. */
  standalone(text: string): Token[] {
    return [...this.bos, ...this.tok.tokenize(text, false)];
  }

  /** Tokens that every prompt has whatever its history and target. */
  get fixedTokens(): number {
    return this.bos.length + this.head.length + this.mid.length + this.tail.length;
  }

  /**
   * history: [title, rating, genres] oldest first. Keeps the most recent entries that fit.
   * `sampleId` only names the sample in errors.
   */
  build(
    history: { title: string; rating: number; genres: string }[],
    target: string,
    sampleId?: number,
    maxItems?: number,
  ): BuiltPrompt {
    const targetToks = this.piece(` ${target}`);
    const budget = this.opts.contextSize - 1;
    const minimal = this.fixedTokens + targetToks.length + this.empty.length;
    if (minimal > budget) {
      throw new CorellaError(
        'PROMPT_TOO_LONG',
        `prompt${sampleId === undefined ? '' : ` of sample ${sampleId}`} needs ${minimal} tokens even with an empty ` +
          `history, but the context holds ${this.opts.contextSize}`,
        { details: { sampleId, tokens: minimal, contextSize: this.opts.contextSize } },
      );
    }
    // Reserve a fixed room for the target so the history cut (hence the shared prefix) does not depend on it.
    const historyBudget =
      budget - this.fixedTokens - Math.max(targetToks.length, this.opts.targetReserveTokens);
    const max = maxItems ?? this.opts.maxHistoryItems ?? history.length;
    const start = Math.max(0, history.length - max);
    // The separator leads each entry after the first, so a prompt whose window grows by one item (an anchored
    // history block) is the previous prompt's history plus one piece, token for token.
    const entry = (i: number, lead: boolean): Token[] => {
      const e = history[i];
      const text = this.template.entry(e.title, e.rating, e.genres);
      return this.piece(lead ? `${this.template.separator} ${text}` : ` ${text}`);
    };
    const pieces: Token[][] = [];
    let used = 0;
    let oldest = history.length;
    for (let i = history.length - 1; i >= start; i--) {
      const p = entry(i, true);
      if (used + p.length > historyBudget) break;
      used += p.length;
      pieces.push(p);
      oldest = i;
    }
    pieces.reverse();
    if (pieces.length > 0) pieces[0] = entry(oldest, false);
    const hist = pieces.length === 0 ? this.empty : pieces.flat();
    const prefix = [...this.bos, ...this.head, ...hist, ...this.mid];
    return {
      tokens: [...prefix, ...targetToks, ...this.tail],
      prefixLength: prefix.length,
      historyItemsUsed: pieces.length,
    };
  }

  /** Throws PROMPT_TOO_LONG when row `r`'s prompt cannot fit even with an empty history. */
  checkFits(split: EncodedSplit, items: ItemTable, r: number): void {
    this.build([], itemTitle(items, split.targetItemRows[r], split.sampleIds[r]), split.sampleIds[r]);
  }

  /**
   * Builds the prompt of row `r` of an encoded split. With `historyBlock` > 1 the window is anchored per user
   * block (see ml/data/user-blocks.ts): the block's k-th sample sees maxHistoryItems + k items.
   */
  buildForRow(split: EncodedSplit, items: ItemTable, r: number): BuiltPrompt {
    const L = split.historyLen;
    const history: { title: string; rating: number; genres: string }[] = [];
    for (let j = 0; j < L; j++) {
      const row = split.historyItemRows[r * L + j];
      if (row < 0) continue;
      const rating = split.historyRatings[r * L + j];
      if (Number.isNaN(rating)) continue;
      history.push({
        title: itemTitle(items, row, split.sampleIds[r]),
        rating,
        genres: items.genres[row] ?? '',
      });
    }
    const target = itemTitle(items, split.targetItemRows[r], split.sampleIds[r]);
    const base = this.opts.maxHistoryItems;
    const block = this.opts.historyBlock ?? 1;
    const max = base === undefined ? undefined : base + blockOffset(split, r, block);
    return this.build(history, target, split.sampleIds[r], max);
  }
}

function itemTitle(items: ItemTable, row: number, sampleId: number): string {
  const t = items.titles[row];
  if (t === undefined) {
    throw new CorellaError(
      'BAD_DATASET',
      `sample ${sampleId}: item row ${row} is not in the item table (${items.titles.length} items)`,
      {
        details: { sampleId, itemRow: row },
      },
    );
  }
  return t;
}
