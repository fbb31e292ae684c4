import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor, Tensor1D } from '@tensorflow/tfjs-core';
import { BCE_WITH_LOGITS } from '../tf/kernels/native-kernels.js';

/**
 * Mean binary cross-entropy on logits, in the stable form max(z,0) − z·y + log1p(e^−|z|), with the
 * closed-form gradient (σ(z) − y)/B instead of differentiating through abs/log1p/exp op by op.
 */
const bce = tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
  const [z, y] = args as Tensor1D[];
  const save = args[2] as tf.GradSaveFunc;
  save([z, y]);
  const value = tf.mean(
    tf.add(tf.sub(tf.relu(z), tf.mul(z, y)), tf.log1p(tf.exp(tf.neg(tf.abs(z))))),
  ) as Scalar;
  return {
    value,
    gradFunc: (dy: Tensor, saved: Tensor[]) => {
      const [zs, ys] = saved;
      const g = tf.mul(tf.sub(tf.sigmoid(zs), ys), tf.div(dy, zs.shape[0]));
      return [g, tf.zerosLike(ys)];
    },
  };
});

/**
 * The same loss as one native kernel (wasm with the addon): it returns the mean and the gradient of the
 * mean together, so the backward is one multiply by the upstream scalar. The ops above were ~14 small
 * wasm kernels, each with its own dispatch on the main thread, which a second core cannot help with. The
 * kernel sums in double, so the loss agrees with the ops above to float32 rounding, not bit for bit.
 */
const nativeBce = tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
  const [z, y] = args as Tensor1D[];
  const save = args[2] as tf.GradSaveFunc;
  const [value, g] = tf.engine().runKernel(BCE_WITH_LOGITS, { z, y }, {}) as Tensor[];
  save([g, y]);
  return {
    value: value as Scalar,
    gradFunc: (dy: Tensor, saved: Tensor[]) => [tf.mul(saved[0], dy), tf.zerosLike(saved[1])],
  };
});

export function sigmoidCrossEntropy(logits: Tensor1D, labels: Tensor1D): Scalar {
  // The kernel reads both as float32 vectors of one length; anything else takes the stock ops.
  const native =
    tf.getKernel(BCE_WITH_LOGITS, tf.getBackend()) !== undefined &&
    logits.dtype === 'float32' &&
    labels.dtype === 'float32' &&
    logits.rank === 1 &&
    labels.rank === 1 &&
    logits.shape[0] === labels.shape[0];
  return (native ? nativeBce(logits, labels) : bce(logits, labels)) as Scalar;
}
