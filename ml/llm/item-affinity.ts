/**
 * Item-affinity features for the LLM branch: how close the LLM places the target item to the items the user
 * rated above (and below) their own average.
 *
 * The LLM reads each item's text once through a short item prompt (default `Movie: {title}. Genre:`); the
 * final hidden state there is what the model is about to say about the item, which makes it a genre-bearing
 * item vector. Vectors are centred on the mean of a fixed reference set of catalogue items (raw hidden
 * states share one dominant direction that would swamp any cosine) and scaled to unit length.
 *
 * Why: the prompt's own final hidden state has to encode "does this target fit that history" in one
 * vector, which a 135M model frozen in llama.cpp barely does. Comparing item vectors directly keeps what the
 * LLM knows about item text (the reason the LLM branch exists: cold items the CRM has no id signal for)
 * and costs one short prompt per distinct item, cached.
 */
import { z } from 'zod';
import { parseSection } from '../config/issues.js';
import { blockOffset } from '../data/user-blocks.js';
import type { EncodedSplit } from '../data/types.js';

export const DEFAULT_ITEM_PROMPT = 'Movie: {title}. Genre:';

/** `llm.itemAffinity`: `true` takes the defaults, `false` (or unset) is off. */
export const itemAffinitySchema = z.strictObject({
  prompt: z
    .string()
    .refine((p) => p.includes('{title}'), { message: 'must contain {title}' })
    .default(DEFAULT_ITEM_PROMPT)
    .describe("Item prompt; '{title}' becomes the item's title."),
  referenceItems: z
    .number()
    .int()
    .min(1)
    .default(256)
    .describe('Catalogue items embedded to estimate the centre of the item vectors.'),
  /**
   * Most recent history items compared with the target (default: the prompt's own window). Item vectors are
   * cached per item, so a longer window costs little beyond the first sight of each item.
   */
  historyItems: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe("Most recent history items compared with the target (default: the prompt's own window)."),
});

export const itemAffinityInputSchema = z.union([z.boolean(), itemAffinitySchema]);

export type ItemAffinityConfig = z.input<typeof itemAffinitySchema>;
export type ResolvedItemAffinity = z.output<typeof itemAffinitySchema>;

/** Appended after the prompt's hidden state, in this order. */
export const AFFINITY_FEATURES = ['affinityLiked', 'affinityDisliked', 'affinityRatingWeighted'] as const;

export function resolveItemAffinity(
  c: ItemAffinityConfig | boolean | undefined,
): ResolvedItemAffinity | undefined {
  if (c === undefined || c === false) return undefined;
  const parsed = parseSection(itemAffinityInputSchema, c === true ? {} : c, 'llm config', ['itemAffinity']);
  return typeof parsed === 'boolean' ? undefined : parsed;
}

export function itemPromptText(prompt: string, title: string): string {
  return prompt.split('{title}').join(title);
}

/** The history entries of row `r` that its prompt shows: the same most recent window the PromptBuilder uses. */
export function affinityWindow(
  split: EncodedSplit,
  r: number,
  maxHistoryItems: number | undefined,
  historyBlock: number,
): { items: number[]; ratings: number[] } {
  const L = split.historyLen;
  const items: number[] = [];
  const ratings: number[] = [];
  for (let j = 0; j < L; j++) {
    const it = split.historyItemRows[r * L + j];
    const rating = split.historyRatings[r * L + j];
    if (it < 0 || Number.isNaN(rating)) continue;
    items.push(it);
    ratings.push(rating);
  }
  if (maxHistoryItems === undefined) return { items, ratings };
  const max = maxHistoryItems + blockOffset(split, r, historyBlock);
  const start = Math.max(0, items.length - max);
  return { items: items.slice(start), ratings: ratings.slice(start) };
}

/** Deterministic reference set: `count` item rows spread evenly over the table. */
export function referenceItemRows(itemCount: number, count: number): number[] {
  const k = Math.min(itemCount, count);
  return Array.from({ length: k }, (_, i) => Math.floor((i * itemCount) / k));
}

/** Mean of the reference vectors. */
export function centreOf(vectors: Float32Array[], dim: number): Float64Array {
  const mean = new Float64Array(dim);
  for (const v of vectors) for (let k = 0; k < dim; k++) mean[k] += v[k];
  if (vectors.length > 0) for (let k = 0; k < dim; k++) mean[k] /= vectors.length;
  return mean;
}

/** (v − centre) / |v − centre|; the zero vector stays zero. */
export function centredUnit(v: Float32Array, centre: Float64Array): Float64Array {
  const out = new Float64Array(centre.length);
  let n = 0;
  for (let k = 0; k < out.length; k++) {
    out[k] = v[k] - centre[k];
    n += out[k] * out[k];
  }
  n = Math.sqrt(n);
  if (n > 0) for (let k = 0; k < out.length; k++) out[k] /= n;
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) s += a[k] * b[k];
  return s;
}

function cosine(a: Float64Array, b: Float64Array): number {
  const nb = Math.sqrt(dot(b, b));
  const na = Math.sqrt(dot(a, a));
  return na > 0 && nb > 0 ? dot(a, b) / (na * nb) : 0;
}

/**
 * [cos(target, mean of items rated above the window's mean rating), the same for items rated below,
 * target · Σ (rating − mean) · item / n]. All three are 0 without history (no evidence either way).
 */
export function affinityFeatures(
  target: Float64Array,
  history: Float64Array[],
  ratings: number[],
): [number, number, number] {
  const n = history.length;
  if (n === 0) return [0, 0, 0];
  const dim = target.length;
  const mean = ratings.reduce((s, x) => s + x, 0) / n;
  const liked = new Float64Array(dim);
  const disliked = new Float64Array(dim);
  const weighted = new Float64Array(dim);
  history.forEach((e, i) => {
    const w = ratings[i] - mean;
    const side = w > 0 ? liked : w < 0 ? disliked : undefined;
    for (let k = 0; k < dim; k++) {
      weighted[k] += w * e[k];
      if (side) side[k] += e[k];
    }
  });
  return [cosine(target, liked), cosine(target, disliked), dot(target, weighted) / n];
}
