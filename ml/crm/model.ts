import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor, Tensor1D, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import type { EncodedSplit, FeatureMap } from '../data/types.js';
import { yieldToEventLoop } from '../progress.js';
import { crossLayer } from '../tf/cross.js';
import { dense } from '../tf/dense.js';
import { embeddingBag } from '../tf/kernels/embedding-bag.js';
import { crossStack } from './cross-stack.js';
import { denseStack } from './dense-stack.js';
import { checkInferRows, fusedInferAddon, inferPlan, runFusedInfer, weightList } from './fused-infer.js';
import type { FusedWeights } from './fused-infer.js';
import { checkSplitShape, disposeCrmBatch, isPrepared, makePreparedBatch } from './batch.js';
import type { PreparedCrmBatch } from './batch.js';
import { resolveCrmConfig } from './config.js';
import { inputWidth, tableLayout } from './layout.js';
import type { TableLayout } from './layout.js';
import { mixSeed, mulberry32, uniformArray } from '../random.js';
import type { CrmActivation, CrmBatch, CrmConfig, CrmForward, CrmModel } from './types.js';

const BN_EPS = 1e-3;
let variableCounter = 0;
const BN_MOMENTUM = 0.99;

interface CrossLayer {
  w?: Variable;
  b?: Variable;
  /** DCN-Mix experts: x_l·V_i → tanh → ·C_i → tanh → ·U_i + b_i */
  experts?: { v: Variable; c: Variable; u: Variable; b: Variable }[];
  gate?: Variable;
}

interface MlpLayer {
  w: Variable;
  b: Variable;
  gamma?: Variable;
  beta?: Variable;
  movingMean?: Variable;
  movingVar?: Variable;
}

/**
 * DCNv2 (and the LR baseline: embedding width 1, no cross/MLP, output layer over x0) written directly
 * on tfjs-core ops. Variables are created in a fixed order from the seed, so equal configs give equal
 * initial weights on every backend.
 */
export class CrmNet implements CrmModel {
  readonly config: CrmConfig;
  readonly featureMapId: string;
  readonly layout: TableLayout;
  readonly inputWidth: number;
  readonly activationShapes: { name: string; width: number }[] = [];
  private readonly vars = new Map<string, { v: Variable; trainable: boolean }>();
  private readonly table: Variable;
  private readonly cross: CrossLayer[] = [];
  private readonly mlp: MlpLayer[] = [];
  private readonly outW: Variable;
  private readonly outB: Variable;
  private readonly catOffsets: Tensor2D;
  private readonly seqOffsets: number[];
  private dropoutStep = 0;
  /** The fused inference's plan and weight list (fused-infer.ts), made on first use. */
  private inferPlan?: Int32Array;
  private inferWeights?: Tensor[];
  private disposed = false;

  constructor(config: CrmConfig, featureMap: FeatureMap) {
    this.config = resolveCrmConfig(config);
    this.featureMapId = featureMap.id;
    this.layout = tableLayout(featureMap);
    const c = this.config;
    const D = c.embeddingDim;
    const W0 = inputWidth(this.layout, D);
    this.inputWidth = W0;
    if (W0 === 0) throw new CorellaError('BAD_CONFIG', `feature map ${featureMap.id} has no input fields`);
    const rand = mulberry32(mixSeed(c.seed, 0x5eed));
    const glorot = (name: string, fanIn: number, fanOut: number, trainable = true) => {
      const lim = Math.sqrt(6 / (fanIn + fanOut));
      return this.add(
        name,
        tf.tensor2d(uniformArray(fanIn * fanOut, -lim, lim, rand), [fanIn, fanOut]),
        trainable,
      );
    };
    const zeros = (name: string, n: number) => this.add(name, tf.zeros([n]));
    const ones = (name: string, n: number, trainable = true) => this.add(name, tf.ones([n]), trainable);

    this.table = this.add(
      'embedding',
      tf.tensor2d(uniformArray(this.layout.rows * D, -0.05, 0.05, rand), [this.layout.rows, D]),
    );
    for (let l = 0; l < c.crossLayers; l++) {
      if (c.lowRank) {
        const { rank, experts } = c.lowRank;
        const ex = [];
        for (let e = 0; e < experts; e++) {
          ex.push({
            v: glorot(`cross_${l}/expert_${e}/v`, W0, rank),
            c: glorot(`cross_${l}/expert_${e}/c`, rank, rank),
            u: glorot(`cross_${l}/expert_${e}/u`, rank, W0),
            b: zeros(`cross_${l}/expert_${e}/b`, W0),
          });
        }
        this.cross.push({
          experts: ex,
          gate: glorot(`cross_${l}/gate`, W0, experts),
        });
      } else {
        this.cross.push({ w: glorot(`cross_${l}/w`, W0, W0), b: zeros(`cross_${l}/b`, W0) });
      }
      this.activationShapes.push({ name: `cross_${l}`, width: W0 });
    }
    let width = W0;
    c.mlp.forEach((h, i) => {
      const layer: MlpLayer = { w: glorot(`mlp_${i}/w`, width, h), b: zeros(`mlp_${i}/b`, h) };
      if (c.batchNorm) {
        layer.gamma = ones(`mlp_${i}/gamma`, h);
        layer.beta = zeros(`mlp_${i}/beta`, h);
        layer.movingMean = this.add(`mlp_${i}/moving_mean`, tf.zeros([h]), false);
        layer.movingVar = ones(`mlp_${i}/moving_var`, h, false);
      }
      this.mlp.push(layer);
      this.activationShapes.push({ name: `mlp_${i}`, width: h });
      width = h;
    });
    const outIn =
      c.crossStructure === 'parallel'
        ? W0 + (c.mlp.at(-1) ?? 0)
        : c.crossStructure === 'stacked' && c.mlp.length
          ? c.mlp.at(-1)!
          : W0;
    this.outW = glorot('output/w', outIn, 1);
    this.outB = zeros('output/b', 1);
    this.catOffsets = tf.tensor2d(
      this.layout.categoricalOffsets,
      [1, this.layout.categoricalOffsets.length],
      'int32',
    );
    this.seqOffsets = Array.from(this.layout.sequenceOffsets);
  }

  private add(name: string, init: Tensor, trainable = true): Variable {
    const v = tf.variable(init, trainable, `crm/${++variableCounter}/${name}`);
    init.dispose();
    this.vars.set(name, { v, trainable });
    return v;
  }

  /** Every variable by stable name, including non-trainable batch-norm statistics; for checkpoints. */
  namedVariables(): { name: string; variable: Variable; trainable: boolean }[] {
    return [...this.vars].map(([name, { v, trainable }]) => ({ name, variable: v, trainable }));
  }

  trainableVariables(): Variable[] {
    return [...this.vars.values()].filter((e) => e.trainable).map((e) => e.v);
  }

  /** Name of the embedding-table variable, which optimizers may update sparsely. */
  get embeddingTable(): Variable {
    return this.table;
  }

  /** Sets the step that dropout masks derive from, so a resumed run draws the same masks. */
  setDropoutStep(step: number): void {
    this.dropoutStep = step;
  }

  makeBatch(split: EncodedSplit, rows: ArrayLike<number>): PreparedCrmBatch {
    checkSplitShape(split, this.layout);
    return makePreparedBatch(split, rows, this.layout);
  }

  private categoricalInputs(batch: CrmBatch): { rows: Tensor1D; weights: Tensor1D } {
    if (isPrepared(batch)) {
      return { rows: batch.prepared.categoricalRows, weights: batch.prepared.categoricalWeights };
    }
    // Hand-built batch: clamp each field's ids into its vocabulary (OOV = 0) and add the field offsets.
    const vocab = tf.tensor2d(
      this.layout.categoricalVocab,
      [1, this.layout.categoricalVocab.length],
      'int32',
    );
    const ids = batch.categorical;
    const inRange = tf.logicalAnd(tf.greaterEqual(ids, 0), tf.less(ids, vocab));
    const rows = tf.reshape(
      tf.add(tf.where(inRange, ids, tf.zerosLike(ids)), this.catOffsets),
      [-1],
    ) as Tensor1D;
    return { rows, weights: tf.ones([rows.shape[0]], 'float32') as Tensor1D };
  }

  private sequenceInputs(batch: CrmBatch, s: number): { rows: Tensor1D; weights: Tensor1D } {
    if (isPrepared(batch)) {
      return { rows: batch.prepared.sequenceRows[s], weights: batch.prepared.sequenceWeights[s] };
    }
    const ids = batch.sequences[s];
    const vocab = this.layout.sequenceVocab[s];
    const inRange = tf.logicalAnd(tf.greater(ids, 0), tf.less(ids, vocab));
    const offset = tf.scalar(this.seqOffsets[s], 'int32');
    const rows = tf.reshape(tf.add(tf.where(inRange, ids, tf.zerosLike(ids)), offset), [-1]) as Tensor1D;
    const mask = tf.cast(tf.notEqual(ids, 0), 'float32');
    const count = tf.maximum(tf.sum(mask, 1, true), 1);
    return { rows, weights: tf.reshape(tf.div(mask, count), [-1]) as Tensor1D };
  }

  /** x0: field embeddings, masked-mean pooled sequences and dense values, concatenated. */
  embed(batch: CrmBatch): Tensor2D {
    const D = this.config.embeddingDim;
    const B = batch.labels.shape[0];
    const parts: Tensor2D[] = [];
    const nCat = this.layout.categoricalOffsets.length;
    if (nCat > 0) {
      const { rows, weights } = this.categoricalInputs(batch);
      parts.push(tf.reshape(embeddingBag(this.table, rows, weights, 1), [B, nCat * D]));
    }
    for (let s = 0; s < this.seqOffsets.length; s++) {
      const { rows, weights } = this.sequenceInputs(batch, s);
      parts.push(embeddingBag(this.table, rows, weights, this.layout.sequenceMaxLen[s]));
    }
    if (this.layout.nDense > 0) {
      if (!batch.dense)
        throw new CorellaError(
          'BAD_CONFIG',
          `the feature map has ${this.layout.nDense} dense fields but the batch has none`,
        );
      parts.push(batch.dense);
    }
    return parts.length === 1 ? parts[0] : tf.concat(parts, 1);
  }

  private crossLayer(layer: CrossLayer, x0: Tensor2D, xl: Tensor2D): Tensor2D {
    if (layer.w) return crossLayer(x0, xl, layer.w, layer.b!);
    const experts = layer.experts!;
    const gates = tf.softmax(dense(xl, layer.gate!));
    let mix: Tensor2D | undefined;
    experts.forEach((e, i) => {
      const v = tf.tanh(dense(xl, e.v));
      const c = tf.tanh(dense(v, e.c));
      const out = tf.mul(x0, dense(c, e.u, e.b));
      const weighted = tf.mul(out, tf.slice(gates, [0, i], [-1, 1])) as Tensor2D;
      mix = mix ? (tf.add(mix, weighted) as Tensor2D) : weighted;
    });
    return tf.add(mix!, xl);
  }

  private mlpLayer(layer: MlpLayer, i: number, h: Tensor2D, training: boolean): Tensor2D {
    let out: Tensor2D;
    if (layer.gamma) {
      const z = dense(h, layer.w, layer.b);
      let mean: Tensor;
      let variance: Tensor;
      if (training) {
        const m = tf.moments(z, 0);
        mean = m.mean;
        variance = m.variance;
        const mm = layer.movingMean!;
        const mv = layer.movingVar!;
        tf.tidy(() => {
          mm.assign(tf.add(tf.mul(mm, BN_MOMENTUM), tf.mul(mean, 1 - BN_MOMENTUM)));
          mv.assign(tf.add(tf.mul(mv, BN_MOMENTUM), tf.mul(variance, 1 - BN_MOMENTUM)));
        });
      } else {
        mean = layer.movingMean!;
        variance = layer.movingVar!;
      }
      const normed = tf.mul(tf.sub(z, mean), tf.rsqrt(tf.add(variance, BN_EPS)));
      out = tf.relu(tf.add(tf.mul(normed, layer.gamma), layer.beta!)) as Tensor2D;
    } else {
      out = dense(h, layer.w, layer.b, 'relu');
    }
    if (training && this.config.dropout > 0) {
      out = tf.dropout(
        out,
        this.config.dropout,
        undefined,
        mixSeed(this.config.seed, this.dropoutStep, i),
      ) as Tensor2D;
    }
    return out;
  }

  /**
   * `x0` (additive to the CrmModel contract) replaces the embedding step with a precomputed input, e.g. a
   * variable whose gradient the trainer turns into sparse embedding-row updates.
   */
  forward(batch: CrmBatch, opts: { training: boolean; activations?: boolean; x0?: Tensor2D }): CrmForward {
    if (this.disposed) throw new CorellaError('BAD_CONFIG', 'this CRM model has been disposed');
    const activations: CrmActivation[] = [];
    const x0 = opts.x0 ?? this.embed(batch);
    let cross = x0;
    if (!opts.activations && this.cross.every((layer) => layer.w)) {
      // Full rank and no activations asked for: the whole stack is one op (see cross-stack.ts).
      cross = crossStack(
        x0,
        this.cross.map((layer) => ({ w: layer.w!, b: layer.b! })),
      );
    } else {
      this.cross.forEach((layer, l) => {
        cross = this.crossLayer(layer, x0, cross);
        if (opts.activations) activations.push({ name: `cross_${l}`, value: cross });
      });
    }
    let h = this.config.crossStructure === 'parallel' ? x0 : cross;
    const structure = this.config.crossStructure;
    const mlp = structure === 'crossnet_only' ? [] : this.mlp;
    // Plain relu layers with no activations asked for: the MLP (and, stacked on it, the output layer) is
    // one op (see dense-stack.ts). Batch norm and training-time dropout sit between the layers.
    const plain = !opts.activations && !this.config.batchNorm && !(opts.training && this.config.dropout > 0);
    if (plain) {
      const layers = mlp.map((layer) => ({ w: layer.w, b: layer.b, relu: true }));
      if (structure !== 'parallel') {
        layers.push({ w: this.outW, b: this.outB, relu: false });
        return { logits: tf.reshape(denseStack(h, layers), [-1]) as Tensor1D, activations };
      }
      h = denseStack(h, layers);
    } else {
      mlp.forEach((layer, i) => {
        h = this.mlpLayer(layer, i, h, opts.training);
        if (opts.activations) activations.push({ name: `mlp_${i}`, value: h });
      });
    }
    const top = structure === 'parallel' ? tf.concat([cross, h], 1) : h;
    const logits = tf.reshape(dense(top, this.outW, this.outB), [-1]) as Tensor1D;
    return { logits, activations };
  }

  /** l2Embedding × the mean over the batch of the squared norm of its categorical embedding rows. */
  regularizer(batch: CrmBatch): Scalar | undefined {
    if (!(this.config.l2Embedding > 0) || this.layout.categoricalOffsets.length === 0) return undefined;
    const { rows, weights } = this.categoricalInputs(batch);
    const e = embeddingBag(this.table, rows, weights, 1);
    return tf.mul(tf.sum(tf.square(e)), this.config.l2Embedding / batch.labels.shape[0]) as Scalar;
  }

  /**
   * σ(logits) of `rows` of `split` into `out` (one value per row), on the fused native forward
   * (fused-infer.ts) where the addon serves the backend, else on `forward`. `path: 'tfjs'` forces the
   * latter (benchmarks and equivalence tests). Returns the path taken. Bad rows or a wrongly sized `out`
   * are a CorellaError before anything is written.
   */
  inferInto(
    split: EncodedSplit,
    rows: Int32Array,
    out: Float32Array,
    opts: { path?: 'auto' | 'tfjs'; logits?: Float32Array } = {},
  ): 'fused' | 'tfjs' {
    if (this.disposed) throw new CorellaError('BAD_CONFIG', 'this CRM model has been disposed');
    checkSplitShape(split, this.layout);
    checkInferRows(split, rows, out, opts.logits);
    const native = opts.path === 'tfjs' ? undefined : fusedInferAddon();
    if (native && 'addon' in native) {
      this.inferPlan ??= inferPlan(this.config, this.layout, this.inputWidth);
      this.inferWeights ??= weightList(
        {
          table: this.table,
          cross: this.cross as FusedWeights['cross'],
          mlp: this.mlp,
          outW: this.outW,
          outB: this.outB,
        },
        this.config,
      );
      runFusedInfer(native.addon, this.inferPlan, this.inferWeights, split, rows, out, opts.logits);
      return 'fused';
    }
    const batch = makePreparedBatch(split, rows, this.layout);
    try {
      const [p, z] = tf.tidy(() => {
        const { logits } = this.forward(batch, { training: false });
        return [tf.sigmoid(logits), logits];
      });
      out.set(p.dataSync() as Float32Array);
      if (opts.logits) opts.logits.set(z.dataSync() as Float32Array);
      p.dispose();
      z.dispose();
    } finally {
      disposeCrmBatch(batch);
    }
    return 'tfjs';
  }

  async predict(split: EncodedSplit, rows?: ArrayLike<number>, batchSize = 4096): Promise<Float32Array> {
    checkSplitShape(split, this.layout);
    const n = rows ? rows.length : split.size;
    const out = new Float32Array(n);
    const idx = new Int32Array(Math.min(batchSize, n));
    for (let start = 0; start < n; start += batchSize) {
      const end = Math.min(n, start + batchSize);
      const sel = idx.subarray(0, end - start);
      for (let i = start; i < end; i++) sel[i - start] = rows ? rows[i] : i;
      this.inferInto(split, sel, out.subarray(start, end));
      await yieldToEventLoop();
    }
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const { v } of this.vars.values()) v.dispose();
    this.catOffsets.dispose();
  }
}

export function createCrm(config: CrmConfig, featureMap: FeatureMap): CrmNet {
  return new CrmNet(config, featureMap);
}
