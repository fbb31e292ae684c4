/**
 * Entropy routing: the CRM scores every sample; only samples whose CRM prediction entropy exceeds the
 * calibrated threshold are sent to the LLM branch. No LLM work is done for the others — that is the
 * point of CoReLLa at serving time, and the LLM source is only ever asked for the routed rows.
 */
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import type { LlmFeatureSource } from '../llm/types.js';
import type { LongRunOptions } from '../progress.js';
import type { LlmBranchModel } from './llm-branch-model.js';
import { fetchFeatures } from './features.js';

const P_EPS = 1e-12;

/** Binary entropy in nats: −p ln p − (1−p) ln(1−p); 0 at p ∈ {0, 1}, ln 2 at p = 0.5. */
export function entropy(p: number): number {
  const q = Math.min(1, Math.max(0, p));
  let h = 0;
  if (q > P_EPS) h -= q * Math.log(q);
  if (1 - q > P_EPS) h -= (1 - q) * Math.log(1 - q);
  return h;
}

export function entropies(p: ArrayLike<number>): Float32Array {
  const out = new Float32Array(p.length);
  for (let i = 0; i < p.length; i++) out[i] = entropy(p[i]);
  return out;
}

/**
 * Rows (of `rows`) whose target item is out of the CRM's vocabulary: never seen in training, so the CRM has
 * no embedding for it and its prediction carries no collaborative signal about the item. Categorical
 * column 1 is the item id (ml/data layout) and id 0 is the OOV row.
 */
export function coldItemMask(split: EncodedSplit, rows: ArrayLike<number>): Uint8Array {
  const nCat = split.size > 0 ? split.categorical.length / split.size : 0;
  const out = new Uint8Array(rows.length);
  if (nCat < 2) return out;
  for (let i = 0; i < rows.length; i++) out[i] = split.categorical[rows[i] * nCat + 1] === 0 ? 1 : 0;
  return out;
}

/**
 * The routing uncertainty of the CRM: the entropy of its prediction, and with `coldItems` the maximum
 * (ln 2) for rows whose item is cold (coldItemMask). A cold item's prediction can look confident while it
 * rests on the user alone; counting it as maximally uncertain sends it to the LLM first, which reads the
 * item's text. Thresholds keep their meaning: entropy > t is routed, and t = ln 2 routes nothing (isRouted).
 */
export function routingEntropies(
  pCrm: ArrayLike<number>,
  split: EncodedSplit,
  rows: ArrayLike<number>,
  coldItems = false,
): Float32Array {
  const h = entropies(pCrm);
  if (!coldItems) return h;
  const cold = coldItemMask(split, rows);
  for (let i = 0; i < h.length; i++) if (cold[i]) h[i] = Math.LN2;
  return h;
}

/**
 * The routing rule, one for calibration, evaluation, recalibration and serving: entropy strictly above the
 * threshold, and a threshold of ln 2 or more routes nothing. The second half is not implied by the first:
 * entropies live in Float32Arrays, and a cold row's ln 2 rounds to 0.69314718246 there, above the float64
 * ln 2 (0.69314718056) that a stored "route nothing" threshold is (storableThreshold). Without it the offline
 * evaluation routed every cold row of a version whose calibration routed nothing, and reported a hybrid that
 * the server, which had this guard alone, never served.
 */
export function isRouted(h: number, threshold: number): boolean {
  return threshold < Math.LN2 && h > threshold;
}

/** Indices i that isRouted(entropy[i], threshold). */
export function routedIndices(h: ArrayLike<number>, threshold: number): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < h.length; i++) if (isRouted(h[i], threshold)) out.push(i);
  return Int32Array.from(out);
}

/** Combines CRM and LLM-branch probabilities: LLM where routed (isRouted), CRM elsewhere. */
export function combine(
  pCrm: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  h: ArrayLike<number>,
  threshold: number,
) {
  const p = Float32Array.from(pCrm);
  let routed = 0;
  for (let i = 0; i < p.length; i++) {
    if (isRouted(h[i], threshold)) {
      p[i] = pLlm[i];
      routed++;
    }
  }
  return { p, routed };
}

export interface HybridPrediction {
  /** Split rows scored, in order. */
  rows: Int32Array;
  /** Hybrid click probability per scored row. */
  p: Float32Array;
  pCrm: Float32Array;
  entropy: Float32Array;
  /** LLM-branch probability where routed, NaN elsewhere (never computed there). */
  pLlm: Float32Array;
  /** Split rows that went to the LLM. */
  routedRows: Int32Array;
  routedFraction: number;
}

export interface HybridPredictorOptions {
  crm: CrmModel;
  /** The LLM branch on llama.cpp's features (LlmAdapter, or LoraHead for a LoRA version). */
  adapter: LlmBranchModel;
  llm: LlmFeatureSource;
  items: ItemTable;
  /** Entropy threshold in nats; +Infinity = CRM only, −Infinity = LLM only. */
  threshold: number;
  /** Count cold-item rows as maximally uncertain (routingEntropies); must match the calibration's setting. */
  coldItems?: boolean;
  batchSize?: number;
}

export class HybridPredictor {
  readonly threshold: number;
  private readonly o: HybridPredictorOptions;

  constructor(o: HybridPredictorOptions) {
    this.o = o;
    this.threshold = o.threshold;
  }

  async predict(
    split: EncodedSplit,
    rows?: ArrayLike<number>,
    opts: LongRunOptions = {},
  ): Promise<HybridPrediction> {
    const scored = rows ? Int32Array.from(rows) : Int32Array.from({ length: split.size }, (_, i) => i);
    const pCrm = await this.o.crm.predict(split, scored, this.o.batchSize);
    const h = routingEntropies(pCrm, split, scored, this.o.coldItems);
    const local = routedIndices(h, this.threshold);
    const routedRows = local.map((i) => scored[i]);
    const pLlm = new Float32Array(scored.length).fill(NaN);
    const p = Float32Array.from(pCrm);
    if (routedRows.length > 0) {
      const f = await fetchFeatures(this.o.llm, split, this.o.items, routedRows, {
        ...opts,
        stage: 'hybrid-llm',
      });
      const q = this.o.adapter.predict(f);
      local.forEach((i, k) => {
        pLlm[i] = q[k];
        p[i] = q[k];
      });
    }
    return {
      rows: scored,
      p,
      pCrm,
      entropy: h,
      pLlm,
      routedRows,
      routedFraction: scored.length > 0 ? routedRows.length / scored.length : 0,
    };
  }
}
