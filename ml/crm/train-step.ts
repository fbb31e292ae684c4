import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import type { Adam } from './adam.js';
import type { PreparedCrmBatch } from './batch.js';
import { sigmoidCrossEntropy } from './loss.js';
import type { CrmNet } from './model.js';

let stepVariableCounter = 0;

/**
 * One optimisation step with sparse embedding updates. The embedding lookup runs outside the gradient
 * tape; its output x0 becomes a temporary variable, so the tape yields dLoss/dx0 [B, width] instead of
 * a dense [V, D] table gradient. That gradient is scattered (in JS) onto the rows the batch touched and
 * those rows alone get an Adam update: the cost of a step no longer grows with the vocabulary.
 * Mathematically the same gradient as differentiating through the lookup (tested).
 */
export class SparseEmbeddingStepper {
  private readonly model: CrmNet;
  private readonly adam: Adam;
  private readonly dim: number;
  private readonly rowGrads: Float32Array;
  private readonly touchedMark: Uint8Array;
  private readonly touched: Int32Array;
  private readonly dense: { name: string; variable: Variable }[];
  private readonly tableName: string;

  constructor(model: CrmNet, adam: Adam) {
    this.model = model;
    this.adam = adam;
    this.dim = model.config.embeddingDim;
    const rows = model.layout.rows;
    this.rowGrads = new Float32Array(rows * this.dim);
    this.touchedMark = new Uint8Array(rows);
    this.touched = new Int32Array(rows);
    const named = model.namedVariables().filter((v) => v.trainable);
    const table = named.find((v) => v.variable === model.embeddingTable)!;
    this.tableName = table.name;
    this.dense = named.filter((v) => v !== table);
  }

  /** Runs forward, backward and the update; returns the batch loss (regularizer included). */
  step(batch: PreparedCrmBatch): number {
    const model = this.model;
    const B = batch.labels.shape[0];
    const nCat = model.layout.categoricalOffsets.length;
    const D = this.dim;
    const l2 = model.config.l2Embedding;
    const x0 = tf.tidy(() => model.embed(batch));
    const x0v = tf.variable(x0, true, `crm-step-x0/${++stepVariableCounter}`);
    x0.dispose();
    const vars = [...this.dense.map((d) => d.variable), x0v];
    const { value, grads } = tf.variableGrads(() => {
      const f = model.forward(batch, { training: true, x0: x0v as unknown as Tensor2D });
      let loss = sigmoidCrossEntropy(f.logits, batch.labels);
      if (l2 > 0 && nCat > 0) {
        // l2 × mean over the batch of the squared categorical rows, as CrmNet.regularizer computes it.
        const cat = tf.slice(x0v, [0, 0], [-1, nCat * D]);
        loss = tf.add(loss, tf.mul(tf.sum(tf.square(cat)), l2 / B)) as Scalar;
      }
      return loss;
    }, vars);
    const loss = (value.dataSync() as Float32Array)[0];
    const lrT = this.adam.nextStep();
    for (const { name, variable } of this.dense)
      this.adam.updateDense(name, variable, grads[variable.name], lrT);
    const dx0 = grads[x0v.name].dataSync() as Float32Array;
    const count = this.scatter(batch, dx0, x0v.shape[1]);
    this.adam.updateRows(this.tableName, model.embeddingTable, this.rowGrads, this.touched, count, D, lrT);
    for (let k = 0; k < count; k++) {
      const r = this.touched[k];
      this.touchedMark[r] = 0;
      this.rowGrads.fill(0, r * D, (r + 1) * D);
    }
    value.dispose();
    tf.dispose(grads);
    x0v.dispose();
    return loss;
  }

  /** Adds each x0 gradient slice onto its table row (weighted for pooled sequences); returns #rows touched. */
  private scatter(batch: PreparedCrmBatch, dx0: Float32Array, width: number): number {
    const { categoricalRows, sequenceRows, sequenceWeights } = batch.prepared.host;
    const D = this.dim;
    const nCat = this.model.layout.categoricalOffsets.length;
    const B = batch.labels.shape[0];
    const g = this.rowGrads;
    let count = 0;
    const touch = (r: number) => {
      if (this.touchedMark[r] === 0) {
        this.touchedMark[r] = 1;
        this.touched[count++] = r;
      }
    };
    for (let b = 0; b < B; b++) {
      for (let f = 0; f < nCat; f++) {
        const r = categoricalRows[b * nCat + f];
        touch(r);
        const src = b * width + f * D;
        const dst = r * D;
        for (let d = 0; d < D; d++) g[dst + d] += dx0[src + d];
      }
    }
    sequenceRows.forEach((rows, s) => {
      const w = sequenceWeights[s];
      const L = rows.length / B;
      const col = (nCat + s) * D;
      for (let b = 0; b < B; b++) {
        const src = b * width + col;
        for (let p = 0; p < L; p++) {
          const wk = w[b * L + p];
          if (wk === 0) continue;
          const r = rows[b * L + p];
          touch(r);
          const dst = r * D;
          for (let d = 0; d < D; d++) g[dst + d] += wk * dx0[src + d];
        }
      }
    });
    return count;
  }
}
