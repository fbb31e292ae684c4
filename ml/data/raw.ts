import type { DatasetSource, SplitName } from './types.js';

/** A user- or item-side attribute, one raw value per user/item ('' = unknown, encoded as OOV). */
export interface CategoricalAttr {
  name: string;
  kind: 'categorical';
  values: string[];
}

/** A multi-valued attribute (genres, categories): a list of raw tokens per user/item. */
export interface SequenceAttr {
  name: string;
  kind: 'sequence';
  values: string[][];
}

export type Attr = CategoricalAttr | SequenceAttr;

export interface InputFile {
  name: string;
  sha256: string;
  bytes: number;
}

/** Split codes used by `Interactions.split` for predefined splits. */
export const SPLIT_CODE: Record<SplitName, number> = { train: 0, valid: 1, test: 2 };

/** Interactions column-wise, indices into RawDataset.userIds / itemIds. */
export interface Interactions {
  n: number;
  user: Int32Array;
  item: Int32Array;
  /** NaN when the source has no rating. */
  rating: Float32Array;
  timestamp: Float64Array;
  /** Explicit 0/1 labels (RecBole `label` column); absent when the label comes from a rating rule. */
  label?: Float32Array;
  /** Predefined split per interaction (SPLIT_CODE); absent when the split is by global time. */
  split?: Uint8Array;
}

/**
 * What every source parser produces: the parsed, validated files in a source-neutral shape, before
 * labels, histories, splits and vocabularies are derived by `buildCtrDataset`.
 */
export interface RawDataset {
  source: DatasetSource;
  inputs: InputFile[];
  userIds: string[];
  itemIds: string[];
  itemTitles: string[];
  /** Human-readable genres/categories per item for prompts ('' when unknown). */
  itemGenres: string[];
  userAttrs: Attr[];
  itemAttrs: Attr[];
  interactions: Interactions;
  /** True when ratings are real (history carries ratings); false when only labels are known. */
  hasRating: boolean;
}

/** Growable typed array used while parsing, so memory follows what is kept rather than file size. */
export class Growable<T extends Int32Array | Float32Array | Float64Array | Uint8Array> {
  private buf: T;
  length = 0;

  constructor(
    private readonly make: (n: number) => T,
    initial = 1024,
  ) {
    this.buf = make(initial);
  }

  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = this.make(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }

  /** A right-sized copy. */
  toArray(): T {
    return this.buf.slice(0, this.length) as T;
  }
}

export const growI32 = (): Growable<Int32Array> => new Growable((n) => new Int32Array(n));
export const growF32 = (): Growable<Float32Array> => new Growable((n) => new Float32Array(n));
export const growF64 = (): Growable<Float64Array> => new Growable((n) => new Float64Array(n));
export const growU8 = (): Growable<Uint8Array> => new Growable((n) => new Uint8Array(n));

/** Keeps the interactions whose mask byte is 1. */
export function filterInteractions(inter: Interactions, keep: Uint8Array): Interactions {
  let m = 0;
  for (let i = 0; i < inter.n; i++) m += keep[i];
  const out: Interactions = {
    n: m,
    user: new Int32Array(m),
    item: new Int32Array(m),
    rating: new Float32Array(m),
    timestamp: new Float64Array(m),
  };
  if (inter.label) out.label = new Float32Array(m);
  if (inter.split) out.split = new Uint8Array(m);
  let j = 0;
  for (let i = 0; i < inter.n; i++) {
    if (!keep[i]) continue;
    out.user[j] = inter.user[i];
    out.item[j] = inter.item[i];
    out.rating[j] = inter.rating[i];
    out.timestamp[j] = inter.timestamp[i];
    if (out.label) out.label[j] = inter.label![i];
    if (out.split) out.split[j] = inter.split![i];
    j++;
  }
  return out;
}
