import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Tensor2D } from '@tensorflow/tfjs-core';
import { crossLayer } from '../tf/cross.js';
import { CROSS_STACK, CROSS_STACK_GRAD } from '../tf/kernels/native-kernels.js';

/** A full-rank cross layer's weights: w [n, n], b [n]. */
export interface CrossWeights {
  w: Tensor;
  b: Tensor;
}

function stackRegistered(): boolean {
  const backend = tf.getBackend();
  return (
    tf.getKernel(CROSS_STACK, backend) !== undefined && tf.getKernel(CROSS_STACK_GRAD, backend) !== undefined
  );
}

/**
 * The whole stack as one op on the tape. Layer by layer, x0 feeds every layer, so the tape summed its
 * gradient with one Add per use (L + 1 of them, serial wasm work on the main thread); here the native
 * kernels sum it in one buffer as they go.
 */
const fused = tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
  const save = args.at(-1) as tf.GradSaveFunc;
  const [x0, ...wb] = args.slice(0, -1) as Tensor[];
  const layers = wb.length / 2;
  const inputs: Record<string, Tensor> = { x0 };
  for (let l = 0; l < layers; l++) {
    inputs[`w${l}`] = wb[2 * l];
    inputs[`b${l}`] = wb[2 * l + 1];
  }
  const out = tf.engine().runKernel(CROSS_STACK, inputs, { layers }) as Tensor[];
  const y = out[0];
  const zs = out.slice(1, 1 + layers);
  const xs = out.slice(1 + layers);
  save([x0, ...wb.filter((_, i) => i % 2 === 0), ...zs, ...xs]);
  return {
    value: y,
    gradFunc: (dy: Tensor, saved: Tensor[]) => {
      const g: Record<string, Tensor> = { dy, x0: saved[0] };
      for (let l = 0; l < layers; l++) {
        g[`w${l}`] = saved[1 + l];
        g[`z${l}`] = saved[1 + layers + l];
        if (l > 0) g[`x${l}`] = saved[2 * layers + l];
      }
      return tf.engine().runKernel(CROSS_STACK_GRAD, g, { layers }) as Tensor[];
    },
  };
});

/**
 * L full-rank DCNv2 cross layers x_{l+1} = x0 ⊙ (x_l·w_l + b_l) + x_l from x_0 = x0. With the native
 * kernels one forward and one backward kernel; elsewhere (or with no layers) the layers one by one, as
 * crossLayer computes them: the same values, and on wasm with the addon the same bits.
 */
export function crossStack(x0: Tensor2D, layers: CrossWeights[]): Tensor2D {
  if (layers.length === 0 || !stackRegistered()) {
    let x = x0;
    for (const { w, b } of layers) x = crossLayer(x0, x, w, b);
    return x;
  }
  return fused(x0, ...layers.flatMap(({ w, b }) => [w, b])) as Tensor2D;
}
