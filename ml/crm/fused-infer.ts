import type { Tensor } from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import type { EncodedSplit } from '../data/types.js';
import { activeNativeAddon } from '../tf/kernels/native-kernels.js';
import { liveData } from '../tf/memory.js';
import type { TableLayout } from './layout.js';
import type { CrmConfig } from './types.js';

/**
 * The CRM's inference forward as one native call (native/crm_infer.c): ids of a split's rows in,
 * probabilities out, every layer of a block of rows on one pool thread.
 *
 * Why: inference needs no tape and no saved activations, yet the tfjs path ran it as ~10 kernels over the
 * whole batch, each a pool region of its own with the main thread's dispatch, batch assembly and read-back
 * between them, during which the second thread idled (docs/crm-speed.md, "Inference"). The native call
 * also reads the split's columns directly, so predict builds no batch tensors at all.
 *
 * The results equal the tfjs path's to float rounding (the same op order; products over blocks of 128
 * rows instead of the whole batch) and are bit-identical at any pool size. Where the addon's kernels do not
 * serve the backend (no build, CORELLA_TF_NATIVE=off, the cpu backend) or the build predates crmInfer,
 * `fusedInferAddon` says why and the caller keeps the tfjs path.
 */

/** native/crm_infer.c's export (the addon's other functions are typed in ml/tf/native.ts). */
export interface CrmInferAddon {
  crmInfer(
    plan: Int32Array,
    weights: Float32Array[],
    categorical: Int32Array,
    sequences: Int32Array[],
    dense: Float32Array,
    splitSize: number,
    rows: Int32Array | null,
    start: number,
    count: number,
    out: Float32Array,
    logits: Float32Array | null,
  ): void;
}

/** The addon when its kernels serve the current backend and it has crmInfer; else why not. */
export function fusedInferAddon(): { addon: CrmInferAddon } | { reason: string } {
  const addon = activeNativeAddon() as (CrmInferAddon & object) | undefined;
  if (!addon) return { reason: 'the native kernels do not serve this backend (wasm with the addon only)' };
  if (typeof addon.crmInfer !== 'function')
    return { reason: 'the native addon predates crmInfer (rebuild: node scripts/build-native.mjs)' };
  return { addon };
}

/** The model's weights in the order native/crm_infer.c reads them (see its header). */
export interface FusedWeights {
  table: Tensor;
  cross: (
    { w: Tensor; b: Tensor } | { gate: Tensor; experts: { v: Tensor; c: Tensor; u: Tensor; b: Tensor }[] }
  )[];
  mlp: { w: Tensor; b: Tensor; gamma?: Tensor; beta?: Tensor; movingMean?: Tensor; movingVar?: Tensor }[];
  outW: Tensor;
  outB: Tensor;
}

const PLAN_VERSION = 1;
const STRUCTURES = { stacked: 0, parallel: 1, crossnet_only: 2 } as const;

/** The plan: the model's shape as crm_infer.c's Int32Array (layout in its header). */
export function inferPlan(config: CrmConfig, layout: TableLayout, inputWidth: number): Int32Array {
  const mlp = config.crossStructure === 'crossnet_only' ? [] : config.mlp;
  return Int32Array.from([
    PLAN_VERSION,
    layout.categoricalOffsets.length,
    layout.sequenceOffsets.length,
    layout.nDense,
    config.embeddingDim,
    inputWidth,
    config.crossLayers,
    STRUCTURES[config.crossStructure],
    config.lowRank?.rank ?? 0,
    config.lowRank?.experts ?? 0,
    mlp.length,
    config.batchNorm ? 1 : 0,
    layout.rows,
    ...mlp,
    ...layout.categoricalOffsets,
    ...layout.categoricalVocab,
    ...layout.sequenceOffsets,
    ...layout.sequenceVocab,
    ...layout.sequenceMaxLen,
  ]);
}

/** The weight tensors flattened in the plan's order (the MLP left out for crossnet_only, which skips it). */
export function weightList(w: FusedWeights, config: CrmConfig): Tensor[] {
  const list: Tensor[] = [w.table];
  for (const layer of w.cross) {
    if ('w' in layer) list.push(layer.w, layer.b);
    else {
      list.push(layer.gate);
      for (const e of layer.experts) list.push(e.v, e.c, e.u, e.b);
    }
  }
  if (config.crossStructure !== 'crossnet_only') {
    for (const m of w.mlp) {
      list.push(m.w, m.b);
      if (config.batchNorm) list.push(m.gamma!, m.beta!, m.movingMean!, m.movingVar!);
    }
  }
  list.push(w.outW, w.outB);
  return list;
}

/**
 * Checks what the native call would reject, as typed errors naming the field: the output's length and the
 * row ids (the split's column lengths are checkSplitShape's). Nothing is written before these pass.
 */
export function checkInferRows(
  split: EncodedSplit,
  rows: Int32Array,
  out: Float32Array,
  logits?: Float32Array,
): void {
  if (out.length !== rows.length)
    throw new CorellaError('BAD_CONFIG', `out has ${out.length} values for ${rows.length} rows`, {
      details: { field: 'out' },
    });
  if (logits && logits.length !== rows.length)
    throw new CorellaError('BAD_CONFIG', `logits has ${logits.length} values for ${rows.length} rows`, {
      details: { field: 'logits' },
    });
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (!(r >= 0 && r < split.size))
      throw new CorellaError('BAD_CONFIG', `row ${r} is outside split ${split.name} (size ${split.size})`, {
        details: { field: 'rows', index: i },
      });
  }
}

/**
 * Runs the fused forward on `rows` of `split` into out (probabilities) and logits (when given). The weight
 * views are taken here, right before the call: a view of the wasm heap is invalidated when the heap grows,
 * and nothing allocates between this line and the native call.
 */
export function runFusedInfer(
  addon: CrmInferAddon,
  plan: Int32Array,
  weights: Tensor[],
  split: EncodedSplit,
  rows: Int32Array,
  out: Float32Array,
  logits?: Float32Array,
): void {
  addon.crmInfer(
    plan,
    weights.map(liveData),
    split.categorical,
    split.sequences,
    split.dense,
    split.size,
    rows,
    0,
    rows.length,
    out,
    logits ?? null,
  );
}
