import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';

/**
 * Direct access to a float32 tensor's storage on the backends that keep it in JS-visible memory (the
 * wasm heap, the cpu backend's typed arrays). The optimizer updates variables in place through it,
 * which avoids a dozen tensor ops per variable per step and makes sparse row updates possible.
 * A view into the wasm heap is invalidated when the heap grows: use it before any other tfjs call.
 */
export function hasHostMemory(): boolean {
  const b = tf.getBackend();
  return b === 'wasm' || b === 'cpu';
}

export function liveData(t: Tensor): Float32Array {
  const backend = tf.backend() as unknown as {
    typedArrayFromHeap?: (t: Tensor) => Float32Array;
    data?: { get(id: object): { values?: Float32Array } };
  };
  if (tf.getBackend() === 'wasm' && backend.typedArrayFromHeap) return backend.typedArrayFromHeap(t);
  if (tf.getBackend() === 'cpu' && backend.data) {
    const v = backend.data.get(t.dataId).values;
    if (v instanceof Float32Array) return v;
  }
  throw new Error(`no host memory access to tensors on the ${tf.getBackend()} backend`);
}
