import * as tf from '@tensorflow/tfjs-core';
import { disposeRope, llamaBlock, rmsNorm, ropeTables, type LayerLora } from './llama-block.js';
import type { LlamaHparams } from './llama-config.js';
import type { LayerWeights } from './llama-weights.js';

/**
 * What the L_llm loss of a LoRA step reads of the model: the adapted blocks, the final norm and the two
 * answer rows of the output matrix. A training worker (lora-worker.ts) holds only this, not the whole model:
 * the frozen blocks' outputs arrive with each sample.
 */
export interface AdaptedBlocks {
  hp: LlamaHparams;
  firstLayer: number;
  /** Index = layer; only firstLayer..nLayer−1 are read. */
  layers: readonly (LayerWeights | undefined)[];
  outputNorm: tf.Tensor1D;
  /** [2, nEmbd]: the yes and no rows of the output matrix. */
  answerRows: tf.Tensor2D;
}

/** One training sample as the loss sees it: the first adapted block's input, its label and loss weight. */
export interface AdaptedSample {
  /** [T, nEmbd] */
  input: tf.Tensor2D;
  label: number;
  weight: number;
}

/**
 * logit_yes − logit_no of one prompt from the first adapted block's input: the same ops in the same order
 * as LlamaTf.runLayers + finalNorm in LoraTrainer.outputs, so a sample's log-odds has the same bits on the
 * main thread and in a worker (and on any thread count).
 */
export function adaptedLogOdds(
  m: AdaptedBlocks,
  x: tf.Tensor2D,
  lora: readonly (LayerLora | undefined)[],
): tf.Scalar {
  return tf.tidy(() => {
    const { hp } = m;
    const T = x.shape[0];
    const rope = ropeTables(
      hp,
      Array.from({ length: T }, (_, i) => i),
    );
    try {
      let h = x;
      for (let l = m.firstLayer; l < hp.nLayer; l++)
        h = llamaBlock(hp, m.layers[l]!, h, rope, { lora: lora[l], lastOnly: l === hp.nLayer - 1 });
      const z = tf.matMul(rmsNorm(h, m.outputNorm, hp.rmsEps), m.answerRows, false, true); // [1, 2]
      return tf.reshape(tf.sub(tf.slice(z, [0, 0], [1, 1]), tf.slice(z, [0, 1], [1, 1])), []) as tf.Scalar;
    } finally {
      disposeRope(rope);
    }
  });
}

/**
 * Σ wᵢ·BCE(yᵢ, σ(zᵢ)) over a part of a batch (label smoothing ε as tfjs applies it), differentiable. The
 * batch loss is the parts' sums added in a fixed order and divided by Σw: the mean that LoraTrainer.loss
 * gives on one thread, whichever thread computed each part.
 */
export function weightedBceSum(
  m: AdaptedBlocks,
  samples: readonly AdaptedSample[],
  lora: readonly (LayerLora | undefined)[],
  labelSmoothing: number,
): tf.Scalar {
  return tf.tidy(() => {
    const z = tf.stack(samples.map((s) => adaptedLogOdds(m, s.input, lora)));
    const y = tf.tensor1d(samples.map((s) => s.label));
    const w = tf.tensor1d(samples.map((s) => s.weight));
    return tf.losses.sigmoidCrossEntropy(y, z, w, labelSmoothing, tf.Reduction.SUM) as tf.Scalar;
  });
}

/**
 * One sample's w·BCE and its gradient per variable (host copies, in `vars` order): the unit of work of the
 * data-parallel step. The input is copied into a tensor here, so the shared buffer it came from can be
 * rewritten by the next batch.
 */
export function sampleGrads(
  m: AdaptedBlocks,
  vars: tf.Variable[],
  lora: readonly (LayerLora | undefined)[],
  labelSmoothing: number,
  input: Float32Array,
  s: { tokens: number; label: number; weight: number },
): { sum: number; grads: Float32Array[] } {
  const { value, grads } = tf.variableGrads(
    () =>
      weightedBceSum(
        m,
        // slice(): a plain copy of a view of shared memory (tfjs keeps what it is given on some backends).
        [{ input: tf.tensor2d(input.slice(), [s.tokens, m.hp.nEmbd]), label: s.label, weight: s.weight }],
        lora,
        labelSmoothing,
      ),
    vars,
  );
  const out = vars.map((v) => (grads[v.name].dataSync() as Float32Array).slice());
  const sum = value.dataSync()[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { sum, grads: out };
}
