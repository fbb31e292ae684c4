import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, NamedTensorMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs-core';
import { DENSE_GRAD, nativeKernelsActive } from './kernels/native-kernels.js';

export type DenseActivation = 'linear' | 'relu';

/**
 * The wasm BatchMatMul kernel is ~10× slower with transposeA/transposeB than on plain row-major inputs
 * (measured 25 ms vs 2.7 ms for 1024×144·144×144), and tfjs's stock matMul gradient uses exactly those
 * flags. Materialising the transpose (≈1 ms) and multiplying untransposed is the faster path there.
 * The native (OpenBLAS) matmul kernels take transposed operands at full speed, so they get them as they are.
 */
function materialiseTransposes(): boolean {
  return tf.getBackend() === 'wasm' && !nativeKernelsActive();
}

function matMulT(a: Tensor2D, b: Tensor2D, transposeA: boolean, transposeB: boolean): Tensor2D {
  if (!materialiseTransposes()) return tf.matMul(a, b, transposeA, transposeB);
  const aa = transposeA ? tf.transpose(a) : a;
  const bb = transposeB ? tf.transpose(b) : b;
  return tf.matMul(aa, bb);
}

/**
 * Σ over rows of a [B, N] matrix. wasm's Sum reduces the last axis only, so a reduction over axis 0
 * transposes first; a [1, B]·[B, N] product of ones does the same work on the matmul fast path.
 */
function columnSums(x: Tensor2D): Tensor1D {
  if (tf.getBackend() !== 'wasm') return tf.sum(x, 0);
  return tf.reshape(tf.matMul(tf.ones([1, x.shape[0]]), x), [x.shape[1]]);
}

type Grad3 = (x: Tensor2D, w: Tensor2D, b: Tensor1D) => Tensor2D;
type Grad2 = (x: Tensor2D, w: Tensor2D) => Tensor2D;

function backward(
  dy: Tensor,
  x: Tensor2D,
  w: Tensor2D,
  y: Tensor2D,
  activation: DenseActivation,
  withBias: boolean,
): Tensor2D[] | Tensor[] {
  if (tf.getKernel(DENSE_GRAD, tf.getBackend())) {
    // One native kernel for dz, dx, dw and db instead of five or six launches.
    return tf.engine().runKernel(DENSE_GRAD, { dy, x, w, y }, {
      relu: activation === 'relu',
      withBias,
    } as unknown as NamedAttrMap) as Tensor[];
  }
  const dz = (activation === 'relu' ? tf.mul(dy, tf.step(y)) : dy) as Tensor2D;
  const grads = [matMulT(dz, w, false, true), matMulT(x, dz, true, false)];
  return withBias ? [...grads, columnSums(dz)] : grads;
}

/**
 * The forward product. tf.fused.matMul refuses to fuse bias and relu while a gradient is being recorded
 * (it cannot know our gradient), falling back to matMul + add + relu; inside our customGrad the fused
 * kernel is always right. Direct only on the native kernels, which take rank-2 operands (the stock wasm
 * kernel wants rank 3, which tf.fused.matMul arranges).
 */
function forwardProduct(
  x: Tensor2D,
  w: Tensor2D,
  b: Tensor1D | undefined,
  activation: DenseActivation,
): Tensor2D {
  if (tf.getBackend() === 'wasm' && nativeKernelsActive()) {
    const inputs: NamedTensorMap = b ? { a: x, b: w, bias: b } : { a: x, b: w };
    return tf.engine().runKernel(tf._FusedMatMul, inputs, {
      transposeA: false,
      transposeB: false,
      activation,
    } as unknown as NamedAttrMap) as Tensor2D;
  }
  return tf.fused.matMul({ a: x, b: w, bias: b, activation }) as Tensor2D;
}

function build(activation: DenseActivation, withBias: true): Grad3;
function build(activation: DenseActivation, withBias: false): Grad2;
function build(activation: DenseActivation, withBias: boolean): Grad3 | Grad2 {
  if (withBias) {
    return tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
      const [x, w, b] = args as Tensor[];
      const save = args[3] as tf.GradSaveFunc;
      const y = forwardProduct(x as Tensor2D, w as Tensor2D, b as Tensor1D, activation);
      save([x, w, y]);
      return {
        value: y,
        gradFunc: (dy: Tensor, saved: Tensor[]) => {
          const [xs, ws, ys] = saved as Tensor2D[];
          return backward(dy, xs, ws, ys, activation, true);
        },
      };
    }) as unknown as Grad3;
  }
  return tf.customGrad((...args: (Tensor | tf.GradSaveFunc)[]) => {
    const [x, w] = args as Tensor2D[];
    const save = args[2] as tf.GradSaveFunc;
    const y = forwardProduct(x, w, undefined, activation);
    save([x, w, y]);
    return {
      value: y,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [xs, ws, ys] = saved as Tensor2D[];
        return backward(dy, xs, ws, ys, activation, false);
      },
    };
  }) as unknown as Grad2;
}

const withBias = { linear: build('linear', true), relu: build('relu', true) };
const noBias = { linear: build('linear', false), relu: build('relu', false) };

/**
 * `activation(x·w + b)` in one fused kernel, with a gradient that keeps every matrix product on the
 * untransposed fast path where that matters (wasm). Values and gradients equal tf.matMul's.
 */
export function dense(x: Tensor, w: Tensor, b?: Tensor, activation: DenseActivation = 'linear'): Tensor2D {
  return b
    ? withBias[activation](x as Tensor2D, w as Tensor2D, b as Tensor1D)
    : noBias[activation](x as Tensor2D, w as Tensor2D);
}
