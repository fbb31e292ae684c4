import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initTf } from '../../../ml/tf/backend.js';
import { dense } from '../../../ml/tf/dense.js';

function data(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from(
    { length: n },
    () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1,
  );
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-4): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++)
    expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(tol * (1 + Math.abs(b[i])));
}

describe('dense (fused matmul with untransposed backward)', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    for (const activation of ['linear', 'relu'] as const) {
      for (const bias of [true, false]) {
        it(`${backend}/${activation}/${bias ? 'bias' : 'no bias'}: values and gradients equal tf.matMul's`, async () => {
          await initTf(backend, () => undefined);
          const x = tf.tensor2d(data(37 * 11, 1), [37, 11]);
          const w = tf.tensor2d(data(11 * 5, 2), [11, 5]);
          const b = tf.tensor1d(data(5, 3));
          const up = tf.tensor2d(data(37 * 5, 4), [37, 5]);
          const reference = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => {
            let y = tf.matMul(xx as tf.Tensor2D, ww as tf.Tensor2D);
            if (bias) y = tf.add(y, bb);
            return activation === 'relu' ? tf.relu(y) : y;
          };
          const ours = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
            dense(xx, ww, bias ? bb : undefined, activation);
          const loss =
            (f: (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.Tensor) =>
            (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
              tf.sum(tf.mul(f(xx, ww, bb), up));
          close(ours(x, w, b).dataSync(), reference(x, w, b).dataSync());
          // Without a bias, b takes no part in the output and has no gradient.
          const wrt = bias ? [x, w, b] : [x, w];
          const gOurs = tf.grads((...a: tf.Tensor[]) => loss(ours)(a[0], a[1], a[2] ?? b))(wrt);
          const gRef = tf.grads((...a: tf.Tensor[]) => loss(reference)(a[0], a[1], a[2] ?? b))(wrt);
          for (let i = 0; i < wrt.length; i++) close(gOurs[i].dataSync(), gRef[i].dataSync());
          tf.dispose([x, w, b, up, ...gOurs, ...gRef]);
          await initTf('wasm', () => undefined);
        });
      }
    }
  }
});
