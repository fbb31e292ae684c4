import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor, Tensor2D } from '@tensorflow/tfjs-core';
import { dense } from '../tf/dense.js';
import { DENSE_STACK, DENSE_STACK_GRAD } from '../tf/kernels/native-kernels.js';

/** One dense layer of a stack: w [k, n], b [n], and whether a relu follows. */
export interface DenseLayerWeights {
  w: Tensor;
  b: Tensor;
  relu: boolean;
}

/** Layers the native kernels take at most (STACK_MAX in native/corella_native.c). */
export const DENSE_STACK_MAX = 16;

function stackRegistered(): boolean {
  const backend = tf.getBackend();
  return (
    tf.getKernel(DENSE_STACK, backend) !== undefined && tf.getKernel(DENSE_STACK_GRAD, backend) !== undefined
  );
}

/**
 * The whole stack as one op on the tape. Layer by layer, each dense layer was a tape node with its own
 * gradient tensor between it and the next, and each of its kernels a pool region over the whole batch,
 * reading activations that had left the cache. Here the forward carries each block of rows through
 * every layer, and the backward runs the dx chain of a block in one region and all weight gradients in
 * a second: the same arithmetic, so the same bits, with the intermediates cache-hot.
 */
function fusedStack(relu: number) {
  return tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
    const save = args.at(-1) as tf.GradSaveFunc;
    const [x, ...wb] = args.slice(0, -1) as Tensor[];
    const layers = wb.length / 2;
    const inputs: Record<string, Tensor> = { x };
    for (let l = 0; l < layers; l++) {
      inputs[`w${l}`] = wb[2 * l];
      inputs[`b${l}`] = wb[2 * l + 1];
    }
    const attrs = { layers, relu } as unknown as NamedAttrMap;
    const out = tf.engine().runKernel(DENSE_STACK, inputs, attrs) as Tensor[];
    const y = out[0];
    // ys in layer order: the backward reads each layer's input (the one below's output) and its relu mask
    const ys = [...out.slice(1), y];
    save([x, ...wb.filter((_, i) => i % 2 === 0), ...ys]);
    return {
      value: y,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const g: Record<string, Tensor> = { dy, x: saved[0] };
        for (let l = 0; l < layers; l++) {
          g[`w${l}`] = saved[1 + l];
          g[`y${l}`] = saved[1 + layers + l];
        }
        return tf.engine().runKernel(DENSE_STACK_GRAD, g, attrs) as Tensor[];
      },
    };
  });
}

/** One customGrad per relu pattern (a CRM uses one or two), made on first use. */
const byPattern = new Map<number, ReturnType<typeof fusedStack>>();

/**
 * `act_L(… act_1(x·w_1 + b_1) …·w_L + b_L)` for float32 layers. With the native kernels one forward and one
 * backward kernel; elsewhere (or past DENSE_STACK_MAX layers) `dense` layer by layer: the same values,
 * and on wasm with the addon the same bits.
 */
export function denseStack(x: Tensor2D, layers: DenseLayerWeights[]): Tensor2D {
  if (layers.length === 0 || layers.length > DENSE_STACK_MAX || !stackRegistered()) {
    let h = x;
    for (const { w, b, relu } of layers) h = dense(h, w, b, relu ? 'relu' : 'linear');
    return h;
  }
  const relu = layers.reduce((mask, layer, l) => (layer.relu ? mask | (1 << l) : mask), 0);
  let f = byPattern.get(relu);
  if (!f) byPattern.set(relu, (f = fusedStack(relu)));
  return f(x, ...layers.flatMap(({ w, b }) => [w, b])) as Tensor2D;
}
