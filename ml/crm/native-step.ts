import * as tf from '@tensorflow/tfjs-core';
import type { Variable } from '@tensorflow/tfjs-core';
import type { EncodedSplit } from '../data/types.js';
import { activeNativeAddon } from '../tf/kernels/native-kernels.js';
import type { NativeAddon } from '../tf/native.js';
import { liveData } from '../tf/memory.js';
import { hostRows } from './batch.js';
import type { HostRows } from './batch.js';
import type { CrmNet } from './model.js';
import type { BatchGradients, NamedVariable } from './train-step.js';

const EMPTY = new Float32Array(0);
const NOTHING = () => undefined;

/** A batch as the native step reads it: rows and pooling weights, labels and dense values, all in JS memory. */
export interface HostBatch {
  host: HostRows;
  labels: Float32Array;
  /** [B, nDense] when the feature map has dense fields */
  dense?: Float32Array;
}

/** The batch's rows, labels and dense values; with `into` (the same batch size) its arrays are reused. */
export function hostBatch(
  model: CrmNet,
  split: EncodedSplit,
  rows: ArrayLike<number>,
  into?: HostBatch,
): HostBatch {
  const layout = model.layout;
  const B = rows.length;
  const reuse = into !== undefined && into.labels.length === B;
  const host = hostRows(split, rows, layout, reuse ? into.host : undefined);
  const labels = reuse ? into.labels : new Float32Array(B);
  const y = split.labels;
  for (let i = 0; i < B; i++) labels[i] = y[rows[i]];
  const out: HostBatch = { host, labels };
  const nd = layout.nDense;
  if (nd > 0) {
    const d = reuse && into.dense?.length === B * nd ? into.dense : new Float32Array(B * nd);
    const src = split.dense;
    for (let i = 0; i < B; i++) {
      const from = rows[i] * nd;
      for (let k = 0; k < nd; k++) d[i * nd + k] = src[from + k];
    }
    out.dense = d;
  }
  return out;
}

/**
 * Whether `NativeStep` can run this model's training step: wasm with the addon, full-rank cross layers,
 * the MLP stacked on them (or no MLP), no batch norm, no dropout. Anything else takes the tape.
 */
export function nativeStepSupported(model: CrmNet): boolean {
  const c = model.config;
  return (
    activeNativeAddon() !== undefined &&
    tf.getBackend() === 'wasm' &&
    !c.lowRank &&
    !c.batchNorm &&
    !(c.dropout > 0) &&
    (c.crossStructure === 'stacked' || c.crossStructure === 'crossnet_only')
  );
}

/**
 * The CRM's training forward and backward with no tfjs tape: the native kernels the tape ops call (cross
 * stack, dense stack, BCE with logits, the host l2 term), called directly on JS buffers and on views of
 * the variables. On the tape each step paid ~0.8 ms of main-thread work that a second core cannot help
 * with (tensor and tape bookkeeping, the batch's tensors, 19 gradient-save clones), about a sixth of a
 * 2-thread step. The kernels and their order are the tape's, so the gradients are the same bits
 * (test/ml/crm/native-step.test.ts); the tape stays the path for every other configuration.
 */
export class NativeStep {
  private readonly addon: NativeAddon;
  private readonly model: CrmNet;
  private readonly cross: { w: Variable; b: Variable }[];
  private readonly stack: { w: Variable; b: Variable }[];
  private readonly reluMask: number;
  /** Index into `dense` (denseVariables order) of each cross w, b and stack w, b gradient. */
  private readonly slots: { cw: number[]; cb: number[]; sw: number[]; sb: number[] };
  private readonly dense: NamedVariable[];
  private readonly grads: Float32Array[];
  /** The gradient buffers in the kernels' argument order: cross w, b and stack w, b. */
  private readonly gradLists: {
    cw: Float32Array[];
    cb: Float32Array[];
    sw: Float32Array[];
    sb: Float32Array[];
  };
  private readonly views: { cw: Float32Array[]; cb: Float32Array[]; sw: Float32Array[]; sb: Float32Array[] };
  private buffers?: ReturnType<NativeStep['allocate']>;
  private lastBatch?: HostBatch;

  constructor(model: CrmNet, dense: NamedVariable[]) {
    const addon = activeNativeAddon();
    if (!addon || !nativeStepSupported(model)) throw new Error('NativeStep: unsupported model or backend');
    this.addon = addon;
    this.model = model;
    const byName = new Map(model.namedVariables().map((v) => [v.name, v.variable]));
    const at = (name: string) => {
      const i = dense.findIndex((d) => d.variable === byName.get(name));
      if (i < 0) throw new Error(`NativeStep: no trainable variable ${name}`);
      return i;
    };
    const c = model.config;
    const cross = Array.from({ length: c.crossLayers }, (_, l) => `cross_${l}`);
    const mlp = c.crossStructure === 'crossnet_only' ? [] : c.mlp.map((_, i) => `mlp_${i}`);
    const stack = [...mlp, 'output'];
    this.cross = cross.map((p) => ({ w: byName.get(`${p}/w`)!, b: byName.get(`${p}/b`)! }));
    this.stack = stack.map((p) => ({ w: byName.get(`${p}/w`)!, b: byName.get(`${p}/b`)! }));
    this.slots = {
      cw: cross.map((p) => at(`${p}/w`)),
      cb: cross.map((p) => at(`${p}/b`)),
      sw: stack.map((p) => at(`${p}/w`)),
      sb: stack.map((p) => at(`${p}/b`)),
    };
    this.reluMask = (1 << mlp.length) - 1;
    this.dense = dense;
    this.grads = dense.map((d) => new Float32Array(d.variable.size));
    const g = this.grads;
    this.gradLists = {
      cw: this.slots.cw.map((i) => g[i]),
      cb: this.slots.cb.map((i) => g[i]),
      sw: this.slots.sw.map((i) => g[i]),
      sb: this.slots.sb.map((i) => g[i]),
    };
    this.views = {
      cw: this.cross.map(() => EMPTY),
      cb: this.cross.map(() => EMPTY),
      sw: this.stack.map(() => EMPTY),
      sb: this.stack.map(() => EMPTY),
    };
  }

  /**
   * Views of the weights for this step, into arrays made once: a step used to build eight small arrays
   * and the argument lists of the kernels anew. The views themselves are taken afresh every step (a view
   * of the wasm heap dies when it grows, and a variable's storage moves when it is assigned).
   */
  private refreshViews(): void {
    const { cw, cb, sw, sb } = this.views;
    for (let l = 0; l < this.cross.length; l++) {
      cw[l] = liveData(this.cross[l].w);
      cb[l] = liveData(this.cross[l].b);
    }
    for (let l = 0; l < this.stack.length; l++) {
      sw[l] = liveData(this.stack[l].w);
      sb[l] = liveData(this.stack[l].b);
    }
  }

  /**
   * A step begins (true) or ends (false), for the pool (poolHold in native/corella_native.c): in between,
   * its workers poll 300 µs after each region, across the step's serial stretches (BCE, Adam's
   * bookkeeping, the embedding update's linking pass, 30-150 µs each), instead of sleeping after 50 µs and
   * paying a 40-50 µs wake-up at the next region; the whole-step trace found the worker asleep at the
   * dense Adam region's start in most steps. The bound (100 ms) only matters for a step that never ends.
   * Scheduling only: the same bits.
   */
  hold(on: boolean): void {
    this.addon.poolHold?.(on ? 100_000 : 0);
  }

  /**
   * The next batch in this step's own buffers (hostBatch with reuse): valid until the next call. The
   * trainer's step takes a batch, trains on it and drops it, so one set of arrays serves every step.
   */
  hostBatch(split: EncodedSplit, rows: ArrayLike<number>): HostBatch {
    // The embedding bag's region follows the assembly (~40 µs of JS): past their 50 µs poll since the
    // last step's update, the workers would otherwise sleep into it.
    this.addon.prewake?.(120);
    return (this.lastBatch = hostBatch(this.model, split, rows, this.lastBatch));
  }

  private allocate(B: number) {
    const W = this.model.inputWidth;
    const L = this.cross.length;
    const layout = this.model.layout;
    const D = this.model.config.embeddingDim;
    const nCat = layout.categoricalOffsets.length;
    // x0 is the categorical bag's output itself when nothing else is concatenated onto it
    const catOnly = layout.sequenceOffsets.length === 0 && layout.nDense === 0;
    const ys = Array.from({ length: L }, () => new Float32Array(B * W));
    return {
      B,
      x0: new Float32Array(B * W),
      catOnly,
      cat: catOnly ? undefined : new Float32Array(B * nCat * D),
      seq: Array.from(layout.sequenceOffsets, () => new Float32Array(B * D)),
      ones: new Float32Array(B * nCat).fill(1),
      ys,
      /** x_1 … x_{L-1}: the cross backward's inputs of layers 1.. (ys without the last) */
      xs: ys.slice(0, -1),
      zs: Array.from({ length: L }, () => new Float32Array(B * W)),
      hs: this.stack.map(({ b }) => new Float32Array(B * b.size)),
      g: new Float32Array(B),
      dtop: new Float32Array(B * W),
      dx0: new Float32Array(B * W),
    };
  }

  /** x0 = [categorical rows | pooled sequences | dense values], as CrmNet.embed builds it. */
  private embed(buf: NonNullable<NativeStep['buffers']>, batch: HostBatch, table: Float32Array): void {
    const a = this.addon;
    const layout = this.model.layout;
    const D = this.model.config.embeddingDim;
    const nCat = layout.categoricalOffsets.length;
    const { B, x0 } = buf;
    if (buf.catOnly) {
      if (nCat > 0) a.embeddingBag(table, batch.host.categoricalRows, buf.ones, x0, D, 1);
      return;
    }
    const W = this.model.inputWidth;
    const parts: { src: Float32Array; width: number }[] = [];
    if (nCat > 0) {
      a.embeddingBag(table, batch.host.categoricalRows, buf.ones, buf.cat!, D, 1);
      parts.push({ src: buf.cat!, width: nCat * D });
    }
    layout.sequenceMaxLen.forEach((len, s) => {
      a.embeddingBag(table, batch.host.sequenceRows[s], batch.host.sequenceWeights[s], buf.seq[s], D, len);
      parts.push({ src: buf.seq[s], width: D });
    });
    if (layout.nDense > 0) parts.push({ src: batch.dense!, width: layout.nDense });
    let col = 0;
    for (const { src, width } of parts) {
      for (let i = 0; i < B; i++) x0.set(src.subarray(i * width, (i + 1) * width), i * W + col);
      col += width;
    }
  }

  /**
   * Loss and gradients of one batch, as batchGradients computes them on the tape. The dense gradients are
   * this object's buffers (valid until the next call); dx0 likewise.
   */
  gradients(batch: HostBatch): BatchGradients {
    const a = this.addon;
    const B = batch.labels.length;
    if (!this.buffers || this.buffers.B !== B) this.buffers = this.allocate(B);
    const buf = this.buffers;
    const W = this.model.inputWidth;
    const L = this.cross.length;
    const c = this.model.config;
    const nCat = this.model.layout.categoricalOffsets.length;
    // Views of the variables, taken now: nothing below allocates wasm memory, which could detach them.
    this.refreshViews();
    const { cw, cb, sw, sb } = this.views;
    this.embed(buf, batch, liveData(this.model.embeddingTable));
    let top = buf.x0;
    if (L > 0) {
      a.crossStackForward(buf.x0, cw, cb, buf.ys, buf.zs, B, W);
      top = buf.ys[L - 1];
    }
    a.denseStackForward(top, sw, sb, buf.hs, B, W, this.reluMask);
    // The tape stores the mean in a float32 scalar and seeds its gradient with 1: g passes through as is.
    let loss = Math.fround(a.bceWithLogits(buf.hs[buf.hs.length - 1], batch.labels, buf.g, 1 / B) / B);
    const gl = this.gradLists;
    a.denseStackBackward(
      buf.g,
      top,
      sw,
      buf.hs,
      L > 0 ? buf.dtop : buf.dx0,
      gl.sw,
      gl.sb,
      B,
      W,
      this.reluMask,
    );
    const l2 = c.l2Embedding > 0 && nCat > 0;
    const l2Cols = nCat * c.embeddingDim;
    const l2Factor = (2 * c.l2Embedding) / B;
    // The l2 term on the embedding columns of dx0: inside the cross backward's row region where the addon
    // takes it there (each core on the rows it just finished), else the serial l2Grad pass; the same bits.
    let sq: number | undefined;
    if (L > 0) {
      const xs = buf.xs;
      sq = l2
        ? a.crossStackBackward(
            buf.dtop,
            buf.x0,
            cw,
            buf.zs,
            xs,
            buf.dx0,
            gl.cw,
            gl.cb,
            B,
            W,
            l2Cols,
            l2Factor,
          )
        : a.crossStackBackward(buf.dtop, buf.x0, cw, buf.zs, xs, buf.dx0, gl.cw, gl.cb, B, W);
    }
    if (l2) {
      if (typeof sq !== 'number') sq = a.l2Grad(buf.dx0, buf.x0, B, W, l2Cols, l2Factor);
      loss += (c.l2Embedding / B) * sq;
    }
    return { loss, dense: this.grads, dx0: buf.dx0, width: W, release: NOTHING };
  }
}
