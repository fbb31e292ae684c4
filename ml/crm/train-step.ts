import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import { activeNativeAddon } from '../tf/kernels/native-kernels.js';
import { hasHostMemory, liveData } from '../tf/memory.js';
import type { Adam } from './adam.js';
import type { HostRows, PreparedCrmBatch } from './batch.js';
import { sigmoidCrossEntropy } from './loss.js';
import type { CrmNet } from './model.js';

let stepVariableCounter = 0;

export interface NamedVariable {
  name: string;
  variable: Variable;
}

/** Every trainable variable except the embedding table, in the model's stable order. */
export function denseVariables(model: CrmNet): NamedVariable[] {
  return model.namedVariables().filter((v) => v.trainable && v.variable !== model.embeddingTable);
}

export interface BatchGradients {
  loss: number;
  /** Gradients of the dense variables, in denseVariables() order. */
  dense: Float32Array[];
  /** dLoss/dx0, [B, width]. */
  dx0: Float32Array;
  width: number;
  /** Frees the gradient tensors that `views` left dense and dx0 pointing into (a no-op for copies). */
  release(): void;
}

/**
 * Loss and gradients of one batch with the embedding lookup outside the gradient tape: x0 becomes a
 * temporary variable, so the tape yields dLoss/dx0 [B, width] instead of a dense [V, D] table gradient.
 */
export function batchGradients(
  model: CrmNet,
  dense: NamedVariable[],
  batch: PreparedCrmBatch,
  opts: { views?: boolean } = {},
): BatchGradients {
  const B = batch.labels.shape[0];
  const nCat = model.layout.categoricalOffsets.length;
  const D = model.config.embeddingDim;
  const l2 = model.config.l2Embedding;
  const x0 = tf.tidy(() => model.embed(batch));
  const x0v = tf.variable(x0, true, `crm-step-x0/${++stepVariableCounter}`);
  x0.dispose();
  // With the native kernels the regularizer stays off the tape: its gradient 2·l2/B·x0 is added to dx0 on
  // the host (one pass) instead of slice/square/sum forward and pad/mul/ones backward over [B, width].
  const hostL2 = activeNativeAddon() !== undefined && l2 > 0 && nCat > 0;
  try {
    const { value, grads } = tf.variableGrads(() => {
      const f = model.forward(batch, { training: true, x0: x0v as unknown as Tensor2D });
      let loss = sigmoidCrossEntropy(f.logits, batch.labels);
      if (l2 > 0 && nCat > 0 && !hostL2) {
        // l2 × mean over the batch of the squared categorical rows, as CrmNet.regularizer computes it.
        const cat = tf.slice(x0v, [0, 0], [-1, nCat * D]);
        loss = tf.add(loss, tf.mul(tf.sum(tf.square(cat)), l2 / B)) as Scalar;
      }
      return loss;
    }, [...dense.map((d) => d.variable), x0v]);
    // dataSync copies out of the wasm heap already; other backends may hand back their own storage.
    // With `views` (wasm with the native kernels, whose host loops read the heap in place) the gradients
    // stay where the tape left them: the copies cost ~0.2 ms a step, and the caller applies them before
    // anything can grow the heap (which would detach the views), then calls release().
    const owned = tf.getBackend() === 'wasm';
    const views = opts.views === true && owned && activeNativeAddon() !== undefined;
    const read = (t: Tensor) =>
      views ? liveData(t) : owned ? (t.dataSync() as Float32Array) : (t.dataSync() as Float32Array).slice();
    const width = x0v.shape[1];
    const out: BatchGradients = {
      loss: (value.dataSync() as Float32Array)[0],
      dense: dense.map((d) => read(grads[d.variable.name])),
      dx0: read(grads[x0v.name]),
      width,
      release: views ? () => tf.dispose(grads) : () => undefined,
    };
    if (hostL2) {
      const sq = activeNativeAddon()!.l2Grad(out.dx0, liveData(x0v), B, width, nCat * D, (2 * l2) / B);
      out.loss += (l2 / B) * sq;
    }
    value.dispose();
    if (!views) tf.dispose(grads);
    return out;
  } finally {
    x0v.dispose();
  }
}

/** The x0 gradient of (part of) a batch, with the rows it came from and its share of the batch loss. */
export interface EmbeddingGradientPart {
  host: HostRows;
  size: number;
  dx0: Float32Array;
  width: number;
  scale: number;
}

/**
 * Applies Adam: dense variables get the usual update; the x0 gradients are scattered (in JS) onto the
 * embedding rows the batch touched, and those rows alone are updated. A step's cost no longer grows with
 * the vocabulary. Mathematically the gradient of differentiating through the lookup (tested).
 */
export class SparseEmbeddingStepper {
  private readonly model: CrmNet;
  private readonly adam: Adam;
  private readonly dim: number;
  private readonly rowGrads: Float32Array;
  private readonly touchedMark: Uint8Array;
  /** Rows updated by the last apply(), in [0, touchedCount). */
  readonly touched: Int32Array;
  touchedCount = 0;
  readonly dense: NamedVariable[];
  private readonly tableName: string;
  private readonly nCat: number;

  constructor(model: CrmNet, adam: Adam) {
    this.model = model;
    this.adam = adam;
    this.dim = model.config.embeddingDim;
    const rows = model.layout.rows;
    this.rowGrads = new Float32Array(rows * this.dim);
    this.touchedMark = new Uint8Array(rows);
    this.touched = new Int32Array(rows);
    this.tableName = model.namedVariables().find((v) => v.variable === model.embeddingTable)!.name;
    this.dense = denseVariables(model);
    this.nCat = model.layout.categoricalOffsets.length;
  }

  /** Forward, backward and update of one batch; returns its loss (regularizer included). */
  step(batch: PreparedCrmBatch): number {
    const g = batchGradients(this.model, this.dense, batch, { views: true });
    try {
      const size = batch.labels.shape[0];
      this.apply([{ host: batch.prepared.host, size, dx0: g.dx0, width: g.width, scale: 1 }], g.dense);
    } finally {
      g.release();
    }
    return g.loss;
  }

  /**
   * One Adam step from dense gradients and x0 gradient parts; returns the new dense weights (views of the
   * variables where the native kernels update them in place: read them before the next tfjs call).
   */
  apply(parts: EmbeddingGradientPart[], denseGrads: Float32Array[]): Float32Array[] {
    const lrT = this.adam.nextStep();
    const weights = this.adam.updateDenseAll(this.dense, denseGrads, lrT);
    for (let k = 0; k < this.touchedCount; k++) this.touchedMark[this.touched[k]] = 0;
    this.touchedCount = 0;
    const native = activeNativeAddon();
    if (native?.embeddingAdam && parts.length === 1) {
      // One call: touched rows, their scattered gradients and their Adam step, split over the pool (see
      // embeddingAdam in native/corella_native.c); the same bits as the scatter + updateRows below.
      const p = parts[0];
      const { m, v } = this.adam.moments(this.tableName, this.model.embeddingTable.size);
      const { adam } = this;
      this.touchedCount = native.embeddingAdam(
        liveData(this.model.embeddingTable),
        m,
        v,
        p.dx0,
        p.host.categoricalRows.subarray(0, p.size * this.nCat),
        p.host.sequenceRows,
        p.host.sequenceWeights,
        p.size,
        p.width,
        this.dim,
        p.scale,
        lrT,
        adam.beta1,
        adam.beta2,
        adam.epsilon,
        this.touched,
      );
      return weights;
    }
    for (const p of parts) this.scatter(p);
    const D = this.dim;
    this.adam.updateRows(
      this.tableName,
      this.model.embeddingTable,
      this.rowGrads,
      this.touched,
      this.touchedCount,
      D,
      lrT,
    );
    for (let k = 0; k < this.touchedCount; k++) {
      const r = this.touched[k];
      this.rowGrads.fill(0, r * D, (r + 1) * D);
    }
    return weights;
  }

  /** Current values of the rows the last apply() touched, packed in touched order. */
  touchedRowValues(): Float32Array {
    const D = this.dim;
    const table = hasHostMemory()
      ? liveData(this.model.embeddingTable)
      : (this.model.embeddingTable.dataSync() as Float32Array);
    const out = new Float32Array(this.touchedCount * D);
    for (let k = 0; k < this.touchedCount; k++) {
      const r = this.touched[k];
      out.set(table.subarray(r * D, (r + 1) * D), k * D);
    }
    return out;
  }

  private touch(r: number): void {
    if (this.touchedMark[r] === 0) {
      this.touchedMark[r] = 1;
      this.touched[this.touchedCount++] = r;
    }
  }

  /** Adds each x0 gradient slice (× scale) onto its table row, weighted for pooled sequences. */
  private scatter(p: EmbeddingGradientPart): void {
    const { categoricalRows, sequenceRows, sequenceWeights } = p.host;
    const { dx0, width, size: B, scale } = p;
    const D = this.dim;
    const nCat = this.model.layout.categoricalOffsets.length;
    const g = this.rowGrads;
    const native = activeNativeAddon();
    if (native) {
      const mark = (rows: Int32Array, w: Float32Array | null) =>
        (this.touchedCount = native.markRows(rows, w, this.touchedMark, this.touched, this.touchedCount));
      mark(categoricalRows.subarray(0, B * nCat), null);
      native.scatterAdd(g, dx0, categoricalRows, null, B, nCat, 0, D, width, D, scale);
      sequenceRows.forEach((rows, s) => {
        const w = sequenceWeights[s];
        mark(rows, w);
        native.scatterAdd(g, dx0, rows, w, B, rows.length / B, (nCat + s) * D, 0, width, D, scale);
      });
      return;
    }
    for (let b = 0; b < B; b++) {
      for (let f = 0; f < nCat; f++) {
        const r = categoricalRows[b * nCat + f];
        this.touch(r);
        const src = b * width + f * D;
        const dst = r * D;
        for (let d = 0; d < D; d++) g[dst + d] += scale * dx0[src + d];
      }
    }
    sequenceRows.forEach((rows, s) => {
      const w = sequenceWeights[s];
      const L = rows.length / B;
      const col = (nCat + s) * D;
      for (let b = 0; b < B; b++) {
        const src = b * width + col;
        for (let q = 0; q < L; q++) {
          const wk = w[b * L + q];
          if (wk === 0) continue;
          const r = rows[b * L + q];
          this.touch(r);
          const dst = r * D;
          const f = scale * wk;
          for (let d = 0; d < D; d++) g[dst + d] += f * dx0[src + d];
        }
      }
    });
  }
}
