import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs-core';
import { dense } from './dense.js';
import { CROSS_LAYER, CROSS_LAYER_GRAD } from './kernels/native-kernels.js';

type Cross = (x0: Tensor2D, x: Tensor2D, w: Tensor2D, b: Tensor1D) => Tensor2D;

/** One kernel forward (y and the pre-activation z it saves), one kernel backward. */
const fused = tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
  const [x0, x, w, b] = args as Tensor2D[];
  const save = args[4] as tf.GradSaveFunc;
  const [y, z] = tf.engine().runKernel(CROSS_LAYER, { x0, x, w, b }, {}) as Tensor2D[];
  save([x0, x, w, z]);
  return {
    value: y,
    gradFunc: (dy: Tensor, saved: Tensor[]) => {
      const [s0, sx, sw, sz] = saved;
      return tf.engine().runKernel(CROSS_LAYER_GRAD, { dy, x0: s0, x: sx, w: sw, z: sz }, {}) as Tensor[];
    },
  };
}) as unknown as Cross;

/**
 * A full-rank DCNv2 cross layer, `x0 ⊙ (x·w + b) + x`. Where the native kernels are registered (wasm with
 * the addon) forward and backward are one kernel each; elsewhere the same expression from stock ops.
 * Values and gradients agree within float32 rounding (tested).
 */
export function crossLayer(x0: Tensor2D, x: Tensor2D, w: Tensor, b: Tensor): Tensor2D {
  if (tf.getKernel(CROSS_LAYER, tf.getBackend()) && tf.getKernel(CROSS_LAYER_GRAD, tf.getBackend())) {
    return fused(x0, x, w as Tensor2D, b as Tensor1D);
  }
  return tf.add(tf.mul(x0, dense(x, w, b)), x);
}
