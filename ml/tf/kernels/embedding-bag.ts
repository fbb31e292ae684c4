import * as tf from '@tensorflow/tfjs-core';
import { getKernel, registerGradient, registerKernel, unregisterKernel } from '@tensorflow/tfjs-core';
import type { KernelFunc, NamedAttrMap, Tensor, Tensor1D, Tensor2D, TensorInfo } from '@tensorflow/tfjs-core';

/**
 * Embedding bag: out[b] = Σ_p weights[b·L + p] · table[rows[b·L + p]] for bags of L = bagSize rows.
 * With L = 1 and unit weights it is a plain row gather; with weights 1/count on real positions and 0 on
 * padding it is the masked mean of a history. On wasm the stock GatherV2 plus a [B, L, D] reduction cost
 * ~100 ms per 1024-sample batch with a 30-item history (the reduction transposes); this is one linear pass.
 * Its gradient is the weighted scatter-add of dy into a dense [V, D] table gradient.
 */
export const EMBEDDING_BAG = 'CorellaEmbeddingBag';
export const EMBEDDING_BAG_GRAD = 'CorellaEmbeddingBagGrad';

export function embeddingBagForward(
  table: ArrayLike<number>,
  rows: ArrayLike<number>,
  weights: ArrayLike<number>,
  dim: number,
  bagSize: number,
  out: Float32Array,
): void {
  const bags = rows.length / bagSize;
  for (let b = 0; b < bags; b++) {
    const o = b * dim;
    for (let p = 0; p < bagSize; p++) {
      const k = b * bagSize + p;
      const w = weights[k];
      if (w === 0) continue;
      const r = rows[k] * dim;
      for (let d = 0; d < dim; d++) out[o + d] += w * table[r + d];
    }
  }
}

export function embeddingBagBackward(
  dy: ArrayLike<number>,
  rows: ArrayLike<number>,
  weights: ArrayLike<number>,
  dim: number,
  bagSize: number,
  out: Float32Array,
): void {
  const bags = rows.length / bagSize;
  for (let b = 0; b < bags; b++) {
    const o = b * dim;
    for (let p = 0; p < bagSize; p++) {
      const k = b * bagSize + p;
      const w = weights[k];
      if (w === 0) continue;
      const r = rows[k] * dim;
      for (let d = 0; d < dim; d++) out[r + d] += w * dy[o + d];
    }
  }
}

interface BagAttrs {
  bagSize: number;
  numRows: number;
}

/** Reads inputs and allocates the float32 output on either backend. */
interface Io {
  read(t: TensorInfo): ArrayLike<number>;
  output(shape: number[]): { info: TensorInfo; values: Float32Array };
}

function ioFor(backendName: 'wasm' | 'cpu', backend: unknown): Io {
  if (backendName === 'wasm') {
    const b = backend as {
      typedArrayFromHeap(t: TensorInfo): ArrayLike<number>;
      makeOutput(s: number[], d: 'float32'): TensorInfo;
    };
    return {
      read: (t) => b.typedArrayFromHeap(t),
      output: (shape) => {
        const info = b.makeOutput(shape, 'float32');
        const values = b.typedArrayFromHeap(info) as Float32Array;
        // makeOutput hands back uninitialised heap memory.
        values.fill(0);
        return { info, values };
      },
    };
  }
  const b = backend as {
    data: { get(id: object): { values: ArrayLike<number> } };
    makeTensorInfo(s: number[], d: 'float32', v: Float32Array): TensorInfo;
  };
  return {
    read: (t) => b.data.get(t.dataId).values,
    output: (shape) => {
      const values = new Float32Array(shape.reduce((x, y) => x * y, 1));
      return { info: b.makeTensorInfo(shape, 'float32', values), values };
    },
  };
}

function forwardKernel(backendName: 'wasm' | 'cpu'): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { table, rows, weights } = inputs as { table: TensorInfo; rows: TensorInfo; weights: TensorInfo };
    const { bagSize } = attrs as unknown as BagAttrs;
    const io = ioFor(backendName, backend);
    const dim = table.shape[1];
    const { info, values } = io.output([rows.shape[0] / bagSize, dim]);
    embeddingBagForward(io.read(table), io.read(rows), io.read(weights), dim, bagSize, values);
    return info;
  };
}

function backwardKernel(backendName: 'wasm' | 'cpu'): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { dy, rows, weights } = inputs as { dy: TensorInfo; rows: TensorInfo; weights: TensorInfo };
    const { bagSize, numRows } = attrs as unknown as BagAttrs;
    const io = ioFor(backendName, backend);
    const dim = dy.shape[1];
    const { info, values } = io.output([numRows, dim]);
    embeddingBagBackward(io.read(dy), io.read(rows), io.read(weights), dim, bagSize, values);
    return info;
  };
}

let gradientRegistered = false;

/** Registers the embedding-bag kernels for `backendName` and its gradient; idempotent. */
export function registerEmbeddingBag(backendName: 'wasm' | 'cpu'): void {
  for (const [name, fn] of [
    [EMBEDDING_BAG, forwardKernel(backendName)],
    [EMBEDDING_BAG_GRAD, backwardKernel(backendName)],
  ] as const) {
    if (getKernel(name, backendName)) unregisterKernel(name, backendName);
    registerKernel({ kernelName: name, backendName, kernelFunc: fn });
  }
  if (!gradientRegistered) {
    gradientRegistered = true;
    registerGradient({
      kernelName: EMBEDDING_BAG,
      inputsToSave: ['table', 'rows', 'weights'],
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[], attrs: NamedAttrMap) => {
        const [table, rows, weights] = saved;
        const { bagSize } = attrs as unknown as BagAttrs;
        return {
          table: () =>
            tf.engine().runKernel(EMBEDDING_BAG_GRAD, { dy: dy as Tensor, rows, weights }, {
              bagSize,
              numRows: table.shape[0],
            } as unknown as NamedAttrMap) as Tensor,
          rows: () => tf.zerosLike(rows),
          weights: () => tf.zerosLike(weights),
        };
      },
    });
  }
}

/** The same computation from stock ops, for backends without our kernel (native tensorflow) and tests. */
export function embeddingBagReference(
  table: Tensor2D,
  rows: Tensor1D,
  weights: Tensor1D,
  bagSize: number,
): Tensor2D {
  return tf.tidy(() => {
    const dim = table.shape[1];
    const g = tf.mul(tf.gather(table, rows), tf.reshape(weights, [-1, 1]));
    return bagSize === 1 ? (g as Tensor2D) : (tf.sum(tf.reshape(g, [-1, bagSize, dim]), 1) as Tensor2D);
  });
}

/** [N / bagSize, D] weighted sums of table rows; differentiable with respect to `table`. */
export function embeddingBag(table: Tensor, rows: Tensor1D, weights: Tensor1D, bagSize: number): Tensor2D {
  if (getKernel(EMBEDDING_BAG, tf.getBackend())) {
    return tf
      .engine()
      .runKernel(EMBEDDING_BAG, { table, rows, weights }, { bagSize } as unknown as NamedAttrMap) as Tensor2D;
  }
  return embeddingBagReference(table as Tensor2D, rows, weights, bagSize);
}
