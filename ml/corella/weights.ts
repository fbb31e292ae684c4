import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';

/** One stored tensor: float32 values as base64 so artifacts stay plain JSON. */
export interface StoredTensor {
  name: string;
  shape: number[];
  data: string;
}

export function encodeFloat32(values: Float32Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

export function decodeFloat32(b64: string, expectedLength: number, what: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  if (buf.byteLength !== expectedLength * 4) {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${what}: expected ${expectedLength} float32 values, found ${buf.byteLength} bytes`,
    );
  }
  // Copy: the Buffer may sit at an unaligned offset of a shared pool.
  const out = new Float32Array(expectedLength);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

/** A trainable variable owning its data: the initial tensor is released. */
export function makeVariable(initial: tf.Tensor): tf.Variable {
  const v = tf.variable(initial, true);
  initial.dispose();
  return v;
}

export function storeVariable(name: string, v: tf.Variable): StoredTensor {
  return { name, shape: v.shape.slice(), data: encodeFloat32(v.dataSync() as Float32Array) };
}

export function restoreTensor(t: StoredTensor, expectedShape: number[], what: string): tf.Tensor {
  if (t.shape.length !== expectedShape.length || t.shape.some((d, i) => d !== expectedShape[i])) {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${what} (${t.name}): shape [${t.shape.join(',')}] does not match expected [${expectedShape.join(',')}]`,
    );
  }
  const n = expectedShape.reduce((a, b) => a * b, 1);
  return tf.tensor(decodeFloat32(t.data, n, `${what} (${t.name})`), expectedShape, 'float32');
}

/** Snapshot of a list of variables (e.g. the CRM before stage 2), restorable in place. */
export function snapshotVariables(vars: tf.Variable[]): StoredTensor[] {
  return vars.map((v, i) => storeVariable(`${i}:${v.name}`, v));
}

export function restoreVariables(vars: tf.Variable[], snap: StoredTensor[], what: string): void {
  if (snap.length !== vars.length) {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${what}: ${snap.length} stored tensors for ${vars.length} variables`,
    );
  }
  vars.forEach((v, i) => {
    const t = restoreTensor(snap[i], v.shape, what);
    v.assign(t);
    t.dispose();
  });
}
