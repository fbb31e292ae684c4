import type { EncodedSplit } from './types.js';

/**
 * A split's samples grouped into *user blocks*: runs of `block` consecutive samples (in time) of one user.
 *
 * The LLM branch renders a sample's history as its most recent earlier items. With a fixed window, two
 * consecutive samples of a user share no prompt prefix beyond the template head, because the window slides.
 * Inside a block the window is anchored instead: the block's k-th sample (k = 0..block−1) sees `base + k`
 * items, i.e. exactly the first sample's window plus the items rated since. Consecutive prompts of a block
 * then extend one another and the LLM evaluates each shared prefix once. Everything here depends only on
 * the split, never on which rows a caller asks for, so a sample's prompt (and its cached features) is the
 * same in every pool.
 */

const cache = new WeakMap<EncodedSplit, Int32Array>();

/** Per row: how many samples of the same user precede it in the split (time order, then sample id). */
export function userSampleIndex(split: EncodedSplit): Int32Array {
  let idx = cache.get(split);
  if (idx) return idx;
  const n = split.size;
  const order = Int32Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => split.timestamps[a] - split.timestamps[b] || split.sampleIds[a] - split.sampleIds[b] || a - b,
  );
  const seen = new Map<number, number>();
  idx = new Int32Array(n);
  for (const r of order) {
    const u = split.userRows[r];
    const k = seen.get(u) ?? 0;
    idx[r] = k;
    seen.set(u, k + 1);
  }
  cache.set(split, idx);
  return idx;
}

/** Position of row `r` inside its user block (0 = the block's first sample). */
export function blockOffset(split: EncodedSplit, r: number, block: number): number {
  return block > 1 ? userSampleIndex(split)[r] % block : 0;
}

/**
 * The split's user blocks, each a list of rows in time order; blocks ordered by their first row so the list
 * is deterministic. With `block` ≤ 1 every row is a block of its own, in row order.
 */
export function userBlocks(split: EncodedSplit, block: number): Int32Array[] {
  if (block <= 1) return Array.from({ length: split.size }, (_, r) => Int32Array.of(r));
  const idx = userSampleIndex(split);
  const byKey = new Map<string, number[]>();
  const first: string[] = [];
  for (let r = 0; r < split.size; r++) {
    const key = `${split.userRows[r]}:${Math.floor(idx[r] / block)}`;
    let rows = byKey.get(key);
    if (!rows) {
      rows = [];
      byKey.set(key, rows);
      first.push(key);
    }
    rows.push(r);
  }
  return first.map((k) => Int32Array.from(byKey.get(k)!).sort((a, b) => idx[a] - idx[b]));
}
