import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { throwIfAborted } from '../../progress.js';
import { FrozenPrefixCache } from './frozen-prefix.js';
import type { LlamaTf } from './llama-forward.js';
import type { LoraAdapter } from './lora.js';

export interface LoraSample {
  tokens: readonly number[];
  /** Click label, 0 or 1. */
  label: number;
}

export interface LoraTrainerOptions {
  /** The two answer tokens [yes, no]. */
  answerTokens: [number, number];
  learningRate?: number;
  /** Bytes of frozen-prefix outputs to keep in memory (default 1 GiB). */
  cacheBytes?: number;
}

/**
 * Trains LoRA factors on L_llm = BCE(label, p), p = e^yes / (e^yes + e^no) = σ(logit_yes − logit_no): the
 * paper's LLM loss, the same two-way softmax that the scorer reads from llama.cpp. Only the adapted blocks
 * run forward and backward; their input comes from the frozen-prefix cache, and the top block computes
 * the last position only (its output is all the loss reads).
 */
export class LoraTrainer {
  readonly frozen: FrozenPrefixCache;
  private readonly optimizer: tf.AdamOptimizer;
  private readonly answerRows: tf.Tensor2D;

  constructor(
    readonly model: LlamaTf,
    readonly adapter: LoraAdapter,
    opts: LoraTrainerOptions,
  ) {
    for (const t of opts.answerTokens) {
      if (!Number.isInteger(t) || t < 0 || t >= model.hp.nVocab)
        throw new CorellaError(
          'BAD_CONFIG',
          `answer token ${t} is outside the vocabulary (field answerTokens)`,
          {
            details: { field: 'answerTokens' },
          },
        );
    }
    this.frozen = new FrozenPrefixCache(model, adapter.firstLayer, opts.cacheBytes ?? 2 ** 30);
    this.optimizer = tf.train.adam(opts.learningRate ?? 1e-3);
    // [2, nEmbd]: the loss needs these two rows of the output matrix, never the whole vocabulary.
    this.answerRows = model.outputRows(opts.answerTokens);
  }

  /** logit_yes − logit_no of `tokens` under the current LoRA, as a differentiable scalar. */
  logOdds(tokens: readonly number[]): tf.Scalar {
    return tf.tidy(() => {
      const x = this.frozen.input(tokens);
      const last = this.model.runLayers(x, this.adapter.firstLayer, this.model.hp.nLayer, {
        lora: this.adapter.layerLora(),
        lastOnly: true,
      });
      const z = tf.matMul(this.model.finalNorm(last), this.answerRows, false, true); // [1, 2]
      return tf.reshape(tf.sub(tf.slice(z, [0, 0], [1, 1]), tf.slice(z, [0, 1], [1, 1])), []) as tf.Scalar;
    });
  }

  /** Mean BCE over `batch` (differentiable). */
  loss(batch: readonly LoraSample[]): tf.Scalar {
    if (batch.length === 0) throw new CorellaError('BAD_CONFIG', 'empty LoRA training batch');
    return tf.tidy(() => {
      const z = tf.stack(batch.map((s) => this.logOdds(s.tokens)));
      const y = tf.tensor1d(batch.map((s) => s.label));
      return tf.losses.sigmoidCrossEntropy(y, z) as tf.Scalar;
    });
  }

  /** One Adam step on the batch's mean BCE; returns the loss before the step. */
  step(batch: readonly LoraSample[], signal?: AbortSignal): number {
    throwIfAborted(signal);
    for (const s of batch) {
      if (s.label !== 0 && s.label !== 1)
        throw new CorellaError('BAD_CONFIG', `LoRA training label ${s.label} is not 0 or 1 (field label)`, {
          details: { field: 'label' },
        });
    }
    const cost = this.optimizer.minimize(() => this.loss(batch), true, this.adapter.variables());
    const v = cost!.dataSync()[0];
    cost!.dispose();
    return v;
  }

  /** Gradients of the batch's mean BCE with respect to every LoRA variable, in `adapter.variables()` order. */
  gradients(batch: readonly LoraSample[]): { loss: number; grads: Float32Array[] } {
    const vars = this.adapter.variables();
    const { value, grads } = tf.variableGrads(() => this.loss(batch), vars);
    const out = vars.map((v) => grads[v.name].dataSync() as Float32Array);
    const loss = value.dataSync()[0];
    tf.dispose([value, ...Object.values(grads)]);
    return { loss, grads: out };
  }

  /** P(yes) of `tokens` under the current LoRA. */
  pYes(tokens: readonly number[]): number {
    const z = this.logOdds(tokens);
    const v = z.dataSync()[0];
    z.dispose();
    return 1 / (1 + Math.exp(-v));
  }

  dispose(): void {
    this.frozen.dispose();
    this.optimizer.dispose();
    this.answerRows.dispose();
  }
}
