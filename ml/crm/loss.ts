import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor, Tensor1D } from '@tensorflow/tfjs-core';

/**
 * Mean binary cross-entropy on logits, in the stable form max(z,0) − z·y + log(1 + e^−|z|), with the
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

export function sigmoidCrossEntropy(logits: Tensor1D, labels: Tensor1D): Scalar {
  return bce(logits, labels) as Scalar;
}
