/**
 * Helpers of bench/corella.ts kept apart so they can be tested without a model: the planted-segment mask
 * of the synthetic dataset, the deterministic top-up of planted test rows, per-segment scores and the
 * bootstrap interval of an AUC difference.
 */
import { mulberry32, permutation } from '../ml/random.js';
import { ctrScores } from '../ml/corella/score.js';
import type { EncodedSplit, ItemTable } from '../ml/data/types.js';
import { CorellaError } from '../ml/errors.js';
import { auc } from '../ml/metrics/index.js';

/** 1 where the row's target item is one of `itemIds` (raw ids, as the generator reports them). */
export function targetMask(split: EncodedSplit, items: ItemTable, itemIds: Iterable<string>): Uint8Array {
  const wanted = new Set(itemIds);
  const itemHit = new Uint8Array(items.ids.length);
  items.ids.forEach((id, k) => (itemHit[k] = wanted.has(id) ? 1 : 0));
  const mask = new Uint8Array(split.size);
  for (let r = 0; r < split.size; r++) {
    const k = split.targetItemRows[r];
    mask[r] = k >= 0 && k < itemHit.length ? itemHit[k] : 0;
  }
  return mask;
}

/**
 * Up to `count` rows with mask = 1 that `base` lacks (all of them if fewer), chosen by a seeded permutation
 * so a re-run evaluates the same rows; sorted. `available` = how many such rows there were.
 */
export function extraMaskedRows(
  base: ArrayLike<number>,
  mask: Uint8Array,
  count: number,
  seed: number,
): { rows: Int32Array; available: number } {
  if (count < 0 || !Number.isInteger(count))
    throw new CorellaError('BAD_CONFIG', `--planted-rows: expected an integer ≥ 0, got ${count}`);
  const have = new Set(Array.from(base));
  const candidates: number[] = [];
  for (let r = 0; r < mask.length; r++) if (mask[r] && !have.has(r)) candidates.push(r);
  const order = permutation(mulberry32(seed), candidates.length);
  const take = Math.min(count, candidates.length);
  const rows = Int32Array.from(order.subarray(0, take), (i) => candidates[i]).sort();
  return { rows, available: candidates.length };
}

/** Positions i (into per-row arrays) where `keep(i)` holds. */
export function positions(n: number, keep: (i: number) => boolean): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (keep(i)) out.push(i);
  return Int32Array.from(out);
}

export function at(a: ArrayLike<number>, idx: ArrayLike<number>): Float32Array {
  const out = new Float32Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = a[idx[i]];
  return out;
}

const r4 = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(4)) : x);

export const scoreJson = (p: ArrayLike<number>, y: ArrayLike<number>) => {
  const s = ctrScores(p, y);
  return { auc: r4(s.auc), logLoss: r4(s.logLoss), acc: r4(s.acc), n: s.count };
};

/** Bootstrap (resampling rows with replacement, fixed seed) of AUC(a) − AUC(b) on the same rows. */
export function bootstrapAucDiff(labels: Float32Array, a: Float32Array, b: Float32Array, rounds: number) {
  const rng = mulberry32(2718);
  const n = labels.length;
  const diffs: number[] = [];
  const y = new Float32Array(n);
  const pa = new Float32Array(n);
  const pb = new Float32Array(n);
  for (let k = 0; k < rounds; k++) {
    for (let i = 0; i < n; i++) {
      const j = Math.floor(rng() * n);
      y[i] = labels[j];
      pa[i] = a[j];
      pb[i] = b[j];
    }
    // A resample with one class only has no AUC: it is dropped, and `rounds` says how many were kept.
    const d = auc(y, pa) - auc(y, pb);
    if (Number.isFinite(d)) diffs.push(d);
  }
  diffs.sort((x, z) => x - z);
  const q = (p: number) => diffs[Math.min(diffs.length - 1, Math.max(0, Math.floor(p * diffs.length)))];
  return {
    point: r4(auc(labels, a) - auc(labels, b)),
    lo95: r4(q(0.025)),
    hi95: r4(q(0.975)),
    rounds: diffs.length,
  };
}

export interface SegmentInput {
  labels: Float32Array;
  pStage1: Float32Array;
  pCrm: Float32Array;
  pLlm: Float32Array;
  pHybrid: Float32Array;
  /** Entropy of the stage-2 CRM (what routing reads) and of the stage-1 CRM, per row. */
  entropy: Float32Array;
  entropyStage1: Float32Array;
  threshold: number;
}

const mean = (a: Float32Array) => (a.length > 0 ? a.reduce((s, x) => s + x, 0) / a.length : NaN);

/** Scores of every predictor on the rows at `idx`, plus the segment's routed fraction and mean entropies. */
export function segmentRow(name: string, d: SegmentInput, idx: Int32Array) {
  const y = at(d.labels, idx);
  const h = at(d.entropy, idx);
  let routed = 0;
  for (const x of h) if (x > d.threshold) routed++;
  let positives = 0;
  for (const x of y) positives += x;
  return {
    segment: name,
    n: idx.length,
    positives,
    routed: r4(idx.length > 0 ? routed / idx.length : NaN),
    meanCrmEntropy: r4(mean(h)),
    meanStage1CrmEntropy: r4(mean(at(d.entropyStage1, idx))),
    stage1Crm: scoreJson(at(d.pStage1, idx), y),
    crmAfterStage2: scoreJson(at(d.pCrm, idx), y),
    llmBranch: scoreJson(at(d.pLlm, idx), y),
    hybrid: scoreJson(at(d.pHybrid, idx), y),
  };
}

/** Mean over `values` of the share of `reference` strictly below each value (0 = lowest, 1 = highest). */
export function meanPercentile(values: ArrayLike<number>, reference: ArrayLike<number>): number {
  if (values.length === 0 || reference.length === 0) return NaN;
  const ref = Float64Array.from(reference).sort();
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    let lo = 0;
    let hi = ref.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ref[mid] < values[i]) lo = mid + 1;
      else hi = mid;
    }
    sum += lo / ref.length;
  }
  return r4(sum / values.length);
}

export function concat(a: ArrayLike<number>, b: ArrayLike<number>): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(Array.from(a), 0);
  out.set(Array.from(b), a.length);
  return out;
}
