/**
 * The differentiable pieces of the CoReLLa losses, each with a hand-written gradient.
 *
 * Why: the Node build of tfjs-core ships no gradient registry (the stock gradients live in ESM files the
 * union `@tensorflow/tfjs` package registers), so every op on a training path must either be a customGrad
 * or avoid needing a gradient. ml/tf's `dense` covers the affine layers; these cover the rest.
 */
import * as tf from '@tensorflow/tfjs-core';

type Args = (tf.Tensor | tf.GradSaveFunc)[];

/** [B, 1] → [B], the click logit column as a vector. */
export const column = tf.customGrad((...args: Args) => {
  const x = args[0] as tf.Tensor2D;
  const rows = x.shape[0];
  return {
    value: tf.reshape(x, [rows]),
    gradFunc: (dy: tf.Tensor) => tf.reshape(dy, [rows, 1]),
  };
}) as unknown as (x: tf.Tensor2D) => tf.Tensor1D;

/** a + b for two same-shape tensors, differentiable in both. */
export const addTensors = tf.customGrad((...args: Args) => {
  const [a, b] = args as tf.Tensor[];
  return { value: tf.add(a, b), gradFunc: (dy: tf.Tensor) => [dy, dy] };
}) as unknown as <T extends tf.Tensor>(a: T, b: T) => T;

const bce = tf.customGrad((...args: Args) => {
  const [z, y] = args as tf.Tensor1D[];
  const save = args[2] as tf.GradSaveFunc;
  // Stable form: max(z, 0) − z·y + log(1 + e^(−|z|)).
  const value = tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, y)), tf.log1p(tf.exp(tf.neg(tf.abs(z))))));
  save([z, y]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [zs, ys] = saved;
      const n = zs.shape[0] ?? 1;
      // Labels are data: their gradient is zero.
      return [tf.mul(tf.div(tf.sub(tf.sigmoid(zs), ys), n), dy), tf.zerosLike(ys)];
    },
  };
}) as unknown as (z: tf.Tensor1D, y: tf.Tensor1D) => tf.Scalar;

/** Mean binary cross-entropy of labels under sigmoid(logits). */
export function bceWithLogits(logits: tf.Tensor1D, labels: tf.Tensor1D): tf.Scalar {
  return bce(logits, labels);
}

/** Σ w_i · s_i over scalars, differentiable in every s_i. */
export function weightedSum(terms: tf.Scalar[], weights: number[]): tf.Scalar {
  const f = tf.customGrad((...args: Args) => {
    const ss = args.slice(0, terms.length) as tf.Scalar[];
    const value = tf.addN(ss.map((s, i) => tf.mul(s, weights[i])));
    return { value, gradFunc: (dy: tf.Tensor) => ss.map((_, i) => tf.mul(dy, weights[i])) };
  }) as unknown as (...s: tf.Scalar[]) => tf.Scalar;
  return f(...terms);
}

/**
 * Mean over pairs of (mean over the batch of ||llm − crm||²). Inputs are already projected activations.
 * Gradient: ∂/∂llm = 2(llm − crm)/(B·P), ∂/∂crm = −∂/∂llm.
 */
export function pairwiseSquaredDistance(projected: { crm: tf.Tensor2D; llm: tf.Tensor2D }[]): tf.Scalar {
  const pairs = projected.length;
  if (pairs === 0) return tf.scalar(0);
  const flat = projected.flatMap((p) => [p.crm, p.llm]);
  const f = tf.customGrad((...args: Args) => {
    const ts = args.slice(0, flat.length) as tf.Tensor2D[];
    const save = args[flat.length] as tf.GradSaveFunc;
    const diffs = Array.from({ length: pairs }, (_, k) => tf.sub(ts[2 * k + 1], ts[2 * k]));
    const value = tf.div(tf.addN(diffs.map((d) => tf.mean(tf.sum(tf.square(d), 1)))), pairs);
    save(diffs);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        saved.flatMap((d) => {
          const g = tf.mul(tf.mul(d, 2 / ((d.shape[0] || 1) * pairs)), dy);
          return [tf.neg(g), g];
        }),
    };
  }) as unknown as (...t: tf.Tensor2D[]) => tf.Scalar;
  return f(...flat);
}
