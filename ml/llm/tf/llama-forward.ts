import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { disposeRope, llamaBlock, rmsNorm, ropeTables, type LayerLora } from './llama-block.js';
import type { LlamaHparams } from './llama-config.js';
import { loadLlamaWeights, type LlamaWeights } from './llama-weights.js';

export interface ForwardOptions {
  /** Layers (0-based) whose last-token output (the residual stream after the block) to return. */
  hiddenLayers?: number[];
  /** 'full': every vocabulary logit of the last position; 'none': skip the output matrix. */
  logits?: 'full' | 'none';
  /** Token ids whose last-position logits to return (e.g. the Yes/No answer tokens). */
  logitTokens?: number[];
  /** Per layer (index = layer), LoRA factors to add to its projections. */
  lora?: (LayerLora | undefined)[];
}

export interface ForwardResult {
  /** [nVocab] when logits: 'full'. */
  logits?: Float32Array;
  /** Logits of `logitTokens`, in that order. */
  tokenLogits?: Float32Array;
  /** Last-token output of each requested layer. */
  hidden: Map<number, Float32Array>;
  /** The last token's final-normed hidden state: what llama.cpp returns as the embedding. */
  finalHidden: Float32Array;
}

/**
 * A Llama-family model in TensorFlow.js, with weights dequantized from the GGUF file that node-llama-cpp
 * runs. It exists to back-propagate into LoRA factors (node-llama-cpp cannot); inference in production stays
 * in llama.cpp, which is why the tests hold the two engines to the same logits.
 */
export class LlamaTf {
  private constructor(readonly weights: LlamaWeights) {}

  static async load(path: string): Promise<LlamaTf> {
    return new LlamaTf(await loadLlamaWeights(path));
  }

  get hp(): LlamaHparams {
    return this.weights.hp;
  }

  /** Rows of the embedding table for `tokens`: [T, nEmbd]. */
  embed(tokens: readonly number[]): tf.Tensor2D {
    const { nEmbd, nVocab } = this.hp;
    const out = new Float32Array(tokens.length * nEmbd);
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
        throw new CorellaError(
          'BAD_CONFIG',
          `token ${t} at position ${i} is outside the model's vocabulary of ${nVocab} (field tokens)`,
          { details: { field: 'tokens', position: i, token: t } },
        );
      }
      out.set(this.weights.tokenEmbd.subarray(t * nEmbd, (t + 1) * nEmbd), i * nEmbd);
    });
    return tf.tensor2d(out, [tokens.length, nEmbd]);
  }

  /** Rows of the output matrix for `tokens`: [n, nEmbd] (the answer tokens' rows, for the loss). */
  outputRows(tokens: readonly number[]): tf.Tensor2D {
    const { nEmbd } = this.hp;
    const out = new Float32Array(tokens.length * nEmbd);
    tokens.forEach((t, i) => out.set(this.weights.output.subarray(t * nEmbd, (t + 1) * nEmbd), i * nEmbd));
    return tf.tensor2d(out, [tokens.length, nEmbd]);
  }

  /**
   * Runs blocks [from, to) on x (positions 0..T−1); the last block can be restricted to the last position.
   * `onLayer` sees each block's output (before the next consumes it).
   */
  runLayers(
    x: tf.Tensor2D,
    from: number,
    to: number,
    opts: {
      lora?: (LayerLora | undefined)[];
      lastOnly?: boolean;
      onLayer?: (l: number, y: tf.Tensor2D) => void;
    } = {},
  ): tf.Tensor2D {
    const T = x.shape[0];
    const rope = ropeTables(
      this.hp,
      Array.from({ length: T }, (_, i) => i),
    );
    try {
      let h = x;
      for (let l = from; l < to; l++) {
        h = llamaBlock(this.hp, this.weights.layers[l], h, rope, {
          lora: opts.lora?.[l],
          lastOnly: opts.lastOnly && l === to - 1,
        });
        opts.onLayer?.(l, h);
      }
      return h;
    } finally {
      disposeRope(rope);
    }
  }

  /** Final RMSNorm of [R, nEmbd]. */
  finalNorm(h: tf.Tensor2D): tf.Tensor2D {
    return rmsNorm(h, this.weights.outputNorm, this.hp.rmsEps);
  }

  /** One full pass over `tokens` (a prompt, BOS included when the model wants it). */
  forward(tokens: readonly number[], opts: ForwardOptions = {}): ForwardResult {
    if (tokens.length === 0) throw new CorellaError('BAD_CONFIG', 'empty token list (field tokens)');
    const want = new Set(opts.hiddenLayers ?? []);
    for (const l of want) {
      if (!Number.isInteger(l) || l < 0 || l >= this.hp.nLayer) {
        throw new CorellaError(
          'BAD_CONFIG',
          `hidden layer ${l} is not in 0..${this.hp.nLayer - 1} (field hiddenLayers)`,
          {
            details: { field: 'hiddenLayers', layer: l },
          },
        );
      }
    }
    let result: ForwardResult | undefined;
    tf.tidy(() => {
      const hidden = new Map<number, Float32Array>();
      const T = tokens.length;
      const last = this.runLayers(this.embed(tokens), 0, this.hp.nLayer, {
        lora: opts.lora,
        lastOnly: true,
        onLayer: (l, y) => {
          if (!want.has(l)) return;
          const row = l === this.hp.nLayer - 1 ? y : tf.slice(y, [T - 1, 0], [1, -1]);
          hidden.set(l, row.dataSync() as Float32Array);
        },
      });
      const norm = this.finalNorm(last);
      const r: ForwardResult = { hidden, finalHidden: norm.dataSync() as Float32Array };
      if (opts.logits === 'full') r.logits = this.fullLogits(norm);
      if (opts.logitTokens?.length) {
        r.tokenLogits = tf
          .matMul(norm, this.outputRows(opts.logitTokens), false, true)
          .dataSync() as Float32Array;
      }
      result = r;
    });
    return result!;
  }

  /** norm [1, nEmbd] · outputᵀ in vocabulary chunks, so the whole output matrix is never one tensor. */
  private fullLogits(norm: tf.Tensor2D): Float32Array {
    const { nVocab } = this.hp;
    const out = new Float32Array(nVocab);
    const chunk = 8192;
    for (let s = 0; s < nVocab; s += chunk) {
      const ids = Array.from({ length: Math.min(chunk, nVocab - s) }, (_, i) => s + i);
      const part = tf.tidy(() => tf.matMul(norm, this.outputRows(ids), false, true).dataSync());
      out.set(part as Float32Array, s);
    }
    return out;
  }

  dispose(): void {
    this.weights.dispose();
  }
}
