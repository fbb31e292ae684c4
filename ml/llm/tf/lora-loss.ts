import * as tf from '@tensorflow/tfjs-core';
import { disposeRope, llamaBlock, rmsNorm, ropeTables, type LayerLora } from './llama-block.js';
import type { LlamaHparams } from './llama-config.js';
import type { LayerWeights } from './llama-weights.js';
import { dense } from '../../tf/dense.js';

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

/** The adapted blocks of a whole model loaded on this thread, from `firstLayer` up (its weights, not copies). */
export function modelBlocks(
  model: { hp: LlamaHparams; weights: { layers: readonly LayerWeights[]; outputNorm: tf.Tensor1D } },
  firstLayer: number,
  answerRows: tf.Tensor2D,
): AdaptedBlocks {
  return {
    hp: model.hp,
    firstLayer,
    layers: model.weights.layers,
    outputNorm: model.weights.outputNorm,
    answerRows,
  };
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
  return adaptedOutputs(m, x, lora, []).logOdds;
}

/**
 * The log-odds and the last-token outputs ([1, nEmbd] each, differentiable) of the adapted blocks among
 * `hiddenLayers`, as LoraTrainer.outputs computes them (the top block's output is already its last row).
 */
export function adaptedOutputs(
  m: AdaptedBlocks,
  x: tf.Tensor2D,
  lora: readonly (LayerLora | undefined)[],
  hiddenLayers: readonly number[],
): { logOdds: tf.Scalar; hidden: Map<number, tf.Tensor2D> } {
  const hidden = new Map<number, tf.Tensor2D>();
  const logOdds = tf.tidy(() => {
    const { hp } = m;
    const T = x.shape[0];
    const top = hp.nLayer - 1;
    const rope = ropeTables(
      hp,
      Array.from({ length: T }, (_, i) => i),
    );
    try {
      let h = x;
      for (let l = m.firstLayer; l < hp.nLayer; l++) {
        h = llamaBlock(hp, m.layers[l]!, h, rope, { lora: lora[l], lastOnly: l === top });
        if (hiddenLayers.includes(l))
          hidden.set(l, tf.keep(l === top ? h : (tf.slice(h, [T - 1, 0], [1, -1]) as tf.Tensor2D)));
      }
      const z = tf.matMul(rmsNorm(h, m.outputNorm, hp.rmsEps), m.answerRows, false, true); // [1, 2]
      return tf.reshape(tf.sub(tf.slice(z, [0, 0], [1, 1]), tf.slice(z, [0, 1], [1, 1])), []) as tf.Scalar;
    } finally {
      disposeRope(rope);
    }
  });
  return { logOdds, hidden };
}

/**
 * A block's last-token output divided by its root mean square, as the next block's RMSNorm reads it (without
 * that norm's learned weight). Why: the residual stream of a real transformer is large and grows with depth
 * (SmolLM2-135M's top block: an RMS in the tens, a few outliers in the hundreds), so the raw L2 distance to
 * a CRM layer's projection was about 80,000 before stage 2 in a MovieLens run, and γ = 0.1 times that
 * swamped L_llm (≈ 0.7): the LoRA learned to align, not to predict (validation AUC 0.28). Normalized, every
 * row has unit RMS whatever the layer, like the adapter's small activations in the frozen mode, and the
 * direction of the hidden state, which is what the model's own next layer sees, is what gets aligned.
 * Row-wise, so one row at a time (a worker's sample) gives what the whole batch gives.
 */
export function rmsNormalized(h: tf.Tensor2D, eps = 1e-5): tf.Tensor2D {
  return tf.tidy(() => tf.div(h, tf.sqrt(tf.add(tf.mean(tf.square(h), 1, true), eps))) as tf.Tensor2D);
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

/**
 * The LLM side of a joint (stage-2) step as the LoRA threads compute it: the CRM side of every alignment
 * pair arrives as values (`targets`), so each sample's part of α·L_llm + γ·L_align differentiates on its
 * own, in any thread. Exact, not an approximation: ∂‖a − c‖²/∂a needs only the value of c, and the CRM's
 * own side (∂/∂c with a's value) is the caller's.
 */
export interface JointTerms {
  alpha: number;
  gamma: number;
  /** The branch's output affine: the click logit is a·z + b on the log-odds z. */
  output: { a: number; b: number };
  /** Layers whose last-token output the pairs read (the branch's alignLayers, in order). */
  hiddenLayers: number[];
  /** Per alignment pair: the index into hiddenLayers it reads, and g_llm's weight [nEmbd, S] and bias [S]. */
  pairs: { hidden: number; w: Float32Array; b: Float32Array }[];
  /** S, the width of the shared space. */
  sharedDim: number;
}

/** What a joint sample brings besides its first adapted block's input. */
export interface JointSampleData {
  tokens: number;
  label: number;
  /** g_crm(h_crm) of this row for every pair, pair after pair ([P·S]; empty without alignment). */
  targets: Float32Array;
  /** Last-token outputs of the frozen blocks among hiddenLayers (constants: the frozen cache's). */
  frozenRows: [number, Float32Array][];
}

/** One joint sample's result: its loss term, logit, g_llm(h) per pair [P·S] and gradients. */
export interface JointSampleResult {
  sum: number;
  logit: number;
  projected: Float32Array;
  /** LoRA variables (adapter.variables() order), then each pair's g_llm weight and bias. */
  grads: Float32Array[];
}

/** Trainable copies of the pairs' g_llm weights for one batch (disposed by the caller). */
export function jointProjectionVariables(terms: JointTerms, nEmbd: number): tf.Variable[] {
  return terms.pairs.flatMap((p) => [
    tf.variable(tf.tensor2d(p.w, [nEmbd, terms.sharedDim]), true),
    tf.variable(tf.tensor1d(p.b), true),
  ]);
}

/**
 * One sample's s = α·BCE(y, a·z + b) + (γ/P)·Σₚ ‖g_llm,ₚ(rms(hₚ)) − cₚ‖² and its gradient with respect to the
 * LoRA and the g_llm copies (`projVars`, from jointProjectionVariables). Summed over a batch's samples and
 * divided by its size B, that is the gradient of the one-tape stage-2 loss with respect to those variables:
 * L_llm is the batch mean of the BCE, L_align the mean over pairs of the batch mean of the distances. The
 * same function runs on the trainer's thread and in the workers, so who computes a sample does not change
 * its bits.
 */
export function jointSampleGrads(
  m: AdaptedBlocks,
  loraVars: tf.Variable[],
  projVars: tf.Variable[],
  lora: readonly (LayerLora | undefined)[],
  terms: JointTerms,
  input: Float32Array,
  s: JointSampleData,
): JointSampleResult {
  const { hp } = m;
  const P = terms.pairs.length;
  const S = terms.sharedDim;
  const adapted = terms.hiddenLayers.filter((l) => l >= m.firstLayer);
  let logit = 0;
  let projected: Float32Array = new Float32Array(0);
  let kept: tf.Tensor[] = [];
  const vars = [...loraVars, ...projVars];
  const { value, grads } = tf.variableGrads(() => {
    // slice(): a plain copy of a view of shared memory (tfjs keeps what it is given on some backends).
    const x = tf.tensor2d(input.slice(), [s.tokens, hp.nEmbd]);
    const out = adaptedOutputs(m, x, lora, adapted);
    kept = [...out.hidden.values()];
    const z = tf.add(tf.mul(out.logOdds, terms.output.a), terms.output.b);
    logit = z.dataSync()[0];
    const bce = tf.losses.sigmoidCrossEntropy(
      tf.tensor1d([s.label]),
      tf.reshape(z, [1]),
      undefined,
      0,
      tf.Reduction.SUM,
    ) as tf.Scalar;
    let loss = tf.mul(bce, terms.alpha) as tf.Scalar;
    if (P > 0) {
      const frozen = new Map(s.frozenRows);
      const rows = terms.hiddenLayers.map((l) => {
        const h = out.hidden.get(l);
        if (h) return h;
        const v = frozen.get(l);
        if (!v) throw new Error(`joint sample lacks the frozen output of block ${l}`);
        return tf.tensor2d(v, [1, hp.nEmbd]);
      });
      const a = terms.pairs.map((p, k) =>
        dense(
          rmsNormalized(rows[p.hidden]),
          projVars[2 * k] as tf.Tensor2D,
          projVars[2 * k + 1] as tf.Tensor1D,
        ),
      );
      projected = tf.concat(a, 1).dataSync() as Float32Array;
      const dist = a.map((ak, k) =>
        tf.sum(tf.square(tf.sub(ak, tf.tensor2d(s.targets.subarray(k * S, (k + 1) * S), [1, S])))),
      );
      loss = tf.add(loss, tf.mul(tf.addN(dist), terms.gamma / P)) as tf.Scalar;
    }
    return loss;
  }, vars);
  // Kept out of adaptedOutputs' scope; freed only now that the backward pass no longer needs them.
  tf.dispose(kept);
  const out = vars.map((v) => {
    const g = grads[v.name];
    // A variable the loss does not reach (γ·… = 0 still reaches, so only a broken graph lands here).
    if (!g) throw new Error(`joint sample: no gradient for ${v.name}`);
    return (g.dataSync() as Float32Array).slice();
  });
  const sum = value.dataSync()[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { sum, logit, projected: projected.slice(), grads: out };
}
