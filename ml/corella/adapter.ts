/**
 * The LLM branch of CoReLLa: a small tfjs network over what the LLM tells us about a sample — its final
 * hidden state and its Yes/No log-odds — ending in a click logit.
 *
 * Why an adapter and not the LLM itself: the paper fine-tunes LLaMA2-7B with LoRA inside the joint loss.
 * node-llama-cpp runs GGUF inference only and cannot back-propagate, so our LLM weights stay FROZEN (an
 * optional, separately trained LoRA file can be loaded into the context) and the trainable part of the LLM
 * branch is this adapter. Its hidden-layer activations are what the alignment loss pairs with CRM layers.
 * See docs/llm-branch.md.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import type { LlmFeatures } from '../llm/types.js';
import { dense } from '../tf/dense.js';
import { affinityWidth } from './features.js';
import { addTensors, column } from './ops.js';
import { glorotUniform, mulberry32 } from '../random.js';
import {
  encodeFloat32,
  decodeFloat32,
  makeVariable,
  restoreTensor,
  storeVariable,
  type StoredTensor,
} from './weights.js';

export interface AdapterConfig {
  /** Width of the LLM's final hidden state (LlmFeatures.hiddenDim). */
  hiddenDim: number;
  /**
   * Item-affinity columns (LlmFeatures.affinity) the adapter reads after the hidden state: 0 = none. Absent in
   * version-1 artifacts, whose hiddenDim counted the affinity columns too (they were stored at the end of
   * LlmFeatures.hidden); such an adapter reads the same columns, [hidden state, affinity], as one block.
   */
  affinityDim?: number;
  /** Hidden layer widths; each layer's ReLU output is an alignable activation `adapter_<i>`. */
  layers: number[];
  /**
   * The input columns are, in order, [hidden state (hiddenDim), item affinity (affinityDim), log-odds].
   * The last `skipInputs` of them (the log-odds last, before it e.g. the three item-affinity features) also
   * reach the output logit linearly ("wide and deep"), so a few strong scalar inputs are not drowned by
   * hundreds of hidden-state dimensions. 0 (default) = deep path only.
   */
  skipInputs?: number;
  /**
   * Read only the last `inputTail` of those columns (e.g. 4 = the three item-affinity features and the
   * log-odds), leaving the prompt's hidden state out. For small training sets, where hundreds of hidden-state
   * dimensions mostly add noise. Absent = every column.
   */
  inputTail?: number;
  seed: number;
}

export interface AdapterActivation {
  name: string;
  value: tf.Tensor2D;
}

export interface AdapterForward {
  logits: tf.Tensor1D;
  activations: AdapterActivation[];
}

interface Dense {
  w: tf.Variable;
  b: tf.Variable;
}

/**
 * Version 2 names the affinity columns (config.affinityDim); version 1 (hiddenDim counted them) still loads
 * and reads the same columns.
 */
interface AdapterFile {
  kind: 'corella-llm-adapter';
  version: 1 | 2;
  config: AdapterConfig;
  inputMean: string;
  inputStd: string;
  weights: StoredTensor[];
}

export function validateAdapterConfig(c: AdapterConfig, where = 'adapter'): void {
  // 0 = the LLM source extracts no hidden state (it costs a second pass); the adapter then reads log-odds only.
  if (!Number.isInteger(c.hiddenDim) || c.hiddenDim < 0) {
    throw new CorellaError('BAD_CONFIG', `${where}.hiddenDim must be an integer ≥ 0, got ${c.hiddenDim}`);
  }
  if (!Array.isArray(c.layers) || c.layers.some((w) => !Number.isInteger(w) || w < 1)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${where}.layers must be positive integer widths, got ${JSON.stringify(c.layers)}`,
    );
  }
  const a = c.affinityDim ?? 0;
  if (!Number.isInteger(a) || a < 0) {
    throw new CorellaError('BAD_CONFIG', `${where}.affinityDim must be an integer ≥ 0, got ${a}`);
  }
  const columns = c.hiddenDim + a + 1;
  const width = c.inputTail ?? columns;
  if (!Number.isInteger(width) || width < 1 || width > columns) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${where}.inputTail must be an integer in [1, hidden state + affinity + log-odds = ${columns}], got ${width}`,
    );
  }
  const k = c.skipInputs ?? 0;
  if (!Number.isInteger(k) || k < 0 || k > width) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${where}.skipInputs must be an integer in [0, input width ${width}], got ${k}`,
    );
  }
}

export class LlmAdapter {
  readonly config: AdapterConfig;
  /** Input = the tail of [hidden state, affinity, log-odds], standardised with statistics fitted on training features. */
  readonly inputDim: number;
  /** Feature columns before the log-odds: the hidden state and the affinity columns. */
  readonly featureWidth: number;
  private inputMean: Float32Array;
  private inputStd: Float32Array;
  private readonly hidden: Dense[];
  private readonly out: Dense;
  private readonly skip: tf.Variable | undefined;

  private constructor(config: AdapterConfig, init: (name: string, shape: number[]) => tf.Tensor) {
    validateAdapterConfig(config);
    this.config = { ...config, layers: config.layers.slice() };
    this.featureWidth = config.hiddenDim + (config.affinityDim ?? 0);
    this.inputDim = config.inputTail ?? this.featureWidth + 1;
    this.inputMean = new Float32Array(this.inputDim);
    this.inputStd = new Float32Array(this.inputDim).fill(1);
    let fanIn = this.inputDim;
    this.hidden = config.layers.map((width, i) => {
      const d = {
        w: makeVariable(init(`adapter_${i}/w`, [fanIn, width])),
        b: makeVariable(init(`adapter_${i}/b`, [width])),
      };
      fanIn = width;
      return d;
    });
    this.out = { w: makeVariable(init('out/w', [fanIn, 1])), b: makeVariable(init('out/b', [1])) };
    const k = config.skipInputs ?? 0;
    this.skip = k > 0 ? makeVariable(init('skip/w', [k, 1])) : undefined;
  }

  static create(config: AdapterConfig): LlmAdapter {
    const rng = mulberry32(config.seed);
    // The skip starts at zero: a random wide path would rank rows by a random mix of its few inputs, and
    // short stages cannot undo that; from zero it moves only where the gradient says.
    return new LlmAdapter(config, (name, shape) =>
      shape.length === 2 && name !== 'skip/w'
        ? tf.tensor2d(glorotUniform(rng, shape[0], shape[1]), [shape[0], shape[1]])
        : tf.zeros(shape),
    );
  }

  get activationShapes(): { name: string; width: number }[] {
    return this.config.layers.map((width, i) => ({ name: `adapter_${i}`, width }));
  }

  /** Fits the input standardisation on training features (before any training step). */
  fitNormalization(f: LlmFeatures): void {
    this.checkFeatures(f);
    const n = f.sampleIds.length;
    const mean = new Float64Array(this.inputDim);
    const sq = new Float64Array(this.inputDim);
    const row = new Float32Array(this.inputDim);
    for (let r = 0; r < n; r++) {
      this.rawRow(f, r, row);
      for (let j = 0; j < this.inputDim; j++) {
        mean[j] += row[j];
        sq[j] += row[j] * row[j];
      }
    }
    for (let j = 0; j < this.inputDim; j++) {
      const m = n > 0 ? mean[j] / n : 0;
      const variance = n > 0 ? Math.max(0, sq[j] / n - m * m) : 1;
      this.inputMean[j] = m;
      // Constant inputs would divide by zero; leave them centred but unscaled.
      this.inputStd[j] = variance > 1e-12 ? Math.sqrt(variance) : 1;
    }
  }

  /**
   * The adapter's unstandardised input columns of feature row r: the tail of [hidden state, affinity,
   * log-odds], each read from its own field of the features.
   */
  private rawRow(f: LlmFeatures, r: number, out: Float32Array): void {
    const d = f.hiddenDim;
    const k = affinityWidth(f);
    const first = this.featureWidth + 1 - this.inputDim;
    for (let j = 0; j < this.inputDim; j++) {
      const c = first + j;
      out[j] = c < d ? f.hidden[r * d + c] : c < d + k ? f.affinity![r * k + c - d] : f.logOdds[r];
    }
  }

  private checkFeatures(f: LlmFeatures): void {
    const k = affinityWidth(f);
    const want = this.config.affinityDim;
    // A version-1 adapter (affinityDim absent) read [hidden state, affinity] as one block of hiddenDim.
    const fits =
      want === undefined
        ? f.hiddenDim + k === this.config.hiddenDim
        : f.hiddenDim === this.config.hiddenDim && k === want;
    if (!fits) {
      throw new CorellaError(
        'BAD_CONFIG',
        `LLM features have hiddenDim ${f.hiddenDim} and ${k} affinity columns but the adapter was built for hiddenDim ${this.config.hiddenDim} and ${want ?? 0} affinity columns (model ${f.modelSha256}; affinity: llm.itemAffinity)`,
      );
    }
    const n = f.sampleIds.length;
    if (
      f.logOdds.length !== n ||
      f.hidden.length !== n * f.hiddenDim ||
      (f.affinity?.length ?? 0) !== n * k
    ) {
      throw new CorellaError(
        'BAD_CONFIG',
        `LLM features are ragged: ${n} ids, ${f.logOdds.length} log-odds, ${f.hidden.length} hidden values, ${f.affinity?.length ?? 0} affinity values`,
      );
    }
  }

  /** Standardised input rows [B, inputDim]; `rows` index into the feature set (all when omitted). */
  inputTensor(f: LlmFeatures, rows?: ArrayLike<number>): tf.Tensor2D {
    this.checkFeatures(f);
    const count = rows ? rows.length : f.sampleIds.length;
    const x = new Float32Array(count * this.inputDim);
    const row = new Float32Array(this.inputDim);
    for (let i = 0; i < count; i++) {
      this.rawRow(f, rows ? rows[i] : i, row);
      const o = i * this.inputDim;
      for (let j = 0; j < this.inputDim; j++) x[o + j] = (row[j] - this.inputMean[j]) / this.inputStd[j];
    }
    return tf.tensor2d(x, [count, this.inputDim]);
  }

  forward(x: tf.Tensor2D, opts: { activations?: boolean } = {}): AdapterForward {
    const activations: AdapterActivation[] = [];
    let h: tf.Tensor2D = x;
    this.hidden.forEach((layer, i) => {
      h = dense(h, layer.w, layer.b, 'relu');
      if (opts.activations) activations.push({ name: `adapter_${i}`, value: h });
    });
    let out = dense(h, this.out.w, this.out.b);
    if (this.skip) {
      const k = this.skip.shape[0];
      // x is data (no gradient flows into it), so the slice needs none either.
      const wide = dense(tf.slice(x, [0, this.inputDim - k], [-1, k]), this.skip);
      out = addTensors(out, wide);
    }
    return { logits: column(out), activations };
  }

  /** Logits for every row of `f` (in `f`'s order), batched. */
  predictLogits(f: LlmFeatures, batchSize = 4096): Float32Array {
    const n = f.sampleIds.length;
    const out = new Float32Array(n);
    for (let s = 0; s < n; s += batchSize) {
      const rows = Array.from({ length: Math.min(batchSize, n - s) }, (_, i) => s + i);
      const vals = tf.tidy(() => this.forward(this.inputTensor(f, rows)).logits.dataSync());
      out.set(vals, s);
    }
    return out;
  }

  predict(f: LlmFeatures, batchSize = 4096): Float32Array {
    const logits = this.predictLogits(f, batchSize);
    return logits.map((z) => 1 / (1 + Math.exp(-z)));
  }

  trainableVariables(): tf.Variable[] {
    return [
      ...this.hidden.flatMap((d) => [d.w, d.b]),
      this.out.w,
      this.out.b,
      ...(this.skip ? [this.skip] : []),
    ];
  }

  /** Replaces the output logit z by a·z + b (folded into the last layer, so it is saved with the weights). */
  rescaleOutput(a: number, b: number): void {
    tf.tidy(() => {
      this.out.w.assign(tf.mul(this.out.w, a));
      this.out.b.assign(tf.add(tf.mul(this.out.b, a), b));
      this.skip?.assign(tf.mul(this.skip, a));
    });
  }

  serialize(): string {
    const names = [
      ...this.hidden.flatMap((_, i) => [`adapter_${i}/w`, `adapter_${i}/b`]),
      'out/w',
      'out/b',
      ...(this.skip ? ['skip/w'] : []),
    ];
    const file: AdapterFile = {
      kind: 'corella-llm-adapter',
      version: this.config.affinityDim === undefined ? 1 : 2,
      config: this.config,
      inputMean: encodeFloat32(this.inputMean),
      inputStd: encodeFloat32(this.inputStd),
      weights: this.trainableVariables().map((v, i) => storeVariable(names[i], v)),
    };
    return JSON.stringify(file);
  }

  static deserialize(data: string | Uint8Array): LlmAdapter {
    let file: AdapterFile;
    try {
      file = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8')) as AdapterFile;
    } catch (e) {
      throw new CorellaError('ARTIFACT_CORRUPT', 'LLM adapter artifact is not valid JSON', { cause: e });
    }
    if (file?.kind !== 'corella-llm-adapter' || (file.version !== 1 && file.version !== 2)) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `not an LLM adapter artifact (kind ${String(file?.kind)}, version ${String(file?.version)})`,
      );
    }
    const byName = new Map(file.weights.map((w) => [w.name, w]));
    const adapter = new LlmAdapter(file.config, (name, shape) => {
      const stored = byName.get(name);
      if (!stored) throw new CorellaError('ARTIFACT_CORRUPT', `LLM adapter artifact lacks weight ${name}`);
      return restoreTensor(stored, shape, 'LLM adapter');
    });
    adapter.inputMean = decodeFloat32(file.inputMean, adapter.inputDim, 'LLM adapter inputMean');
    adapter.inputStd = decodeFloat32(file.inputStd, adapter.inputDim, 'LLM adapter inputStd');
    return adapter;
  }

  clone(): LlmAdapter {
    return LlmAdapter.deserialize(this.serialize());
  }

  dispose(): void {
    for (const v of this.trainableVariables()) v.dispose();
  }
}
