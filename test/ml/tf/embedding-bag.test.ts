import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initTf } from '../../../ml/tf/backend.js';
import { embeddingBag, embeddingBagReference } from '../../../ml/tf/kernels/embedding-bag.js';

function rand(seed: number): () => number {
  let s = seed;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

describe('embedding-bag kernel', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    for (const bagSize of [1, 5]) {
      it(`${backend}, bags of ${bagSize}: values and table gradient equal gather + weighted sum`, async () => {
        await initTf(backend, () => undefined);
        const r = rand(bagSize * 31);
        const V = 23;
        const D = 6;
        const N = 40 * bagSize;
        const table = tf.tensor2d(
          Float32Array.from({ length: V * D }, () => r() - 0.5),
          [V, D],
        );
        const rows = tf.tensor1d(
          Int32Array.from({ length: N }, () => Math.floor(r() * V)),
          'int32',
        );
        // some zero weights, as on padded history positions
        const weights = tf.tensor1d(Float32Array.from({ length: N }, () => (r() < 0.3 ? 0 : r())));
        const up = tf.tensor2d(
          Float32Array.from({ length: (N / bagSize) * D }, () => r() - 0.5),
          [N / bagSize, D],
        );
        const ours = embeddingBag(table, rows, weights, bagSize);
        const ref = embeddingBagReference(table, rows, weights, bagSize);
        expect(ours.shape).toEqual([N / bagSize, D]);
        const a = ours.dataSync();
        const e = ref.dataSync();
        for (let i = 0; i < e.length; i++) expect(a[i]).toBeCloseTo(e[i], 5);
        const gOurs = tf
          .grad((t: tf.Tensor) => tf.sum(tf.mul(embeddingBag(t, rows, weights, bagSize), up)))(table)
          .dataSync();
        const gRef = tf
          .grad((t: tf.Tensor) =>
            tf.sum(tf.mul(embeddingBagReference(t as tf.Tensor2D, rows, weights, bagSize), up)),
          )(table)
          .dataSync();
        for (let i = 0; i < gRef.length; i++) expect(gOurs[i]).toBeCloseTo(gRef[i], 5);
        tf.dispose([table, rows, weights, up, ours, ref]);
        await initTf('wasm', () => undefined);
      });
    }
  }
});
