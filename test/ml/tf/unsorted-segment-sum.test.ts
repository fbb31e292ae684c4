import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initTf } from '../../../ml/tf/backend.js';
import {
  registerUnsortedSegmentSum,
  restoreUnsortedSegmentSum,
  segmentSumInto,
} from '../../../ml/tf/kernels/unsorted-segment-sum.js';

function rand(seed: number): () => number {
  let s = seed;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

/** Reference values from tfjs's stock cpu kernel (our cpu override temporarily removed). */
async function referenceOnCpu<T>(f: () => T): Promise<T> {
  const prev = tf.getBackend();
  await tf.setBackend('cpu');
  restoreUnsortedSegmentSum('cpu');
  try {
    return f();
  } finally {
    registerUnsortedSegmentSum('cpu');
    await tf.setBackend(prev);
  }
}

const cases = [
  { n: 50, inner: [4], segments: 7 },
  { n: 300, inner: [3, 2], segments: 40 },
  { n: 17, inner: [], segments: 5 },
];

describe('UnsortedSegmentSum kernels', () => {
  beforeAll(async () => {
    await initTf('cpu', () => undefined);
    await initTf('wasm', () => undefined);
  });

  it('segmentSumInto matches a naive sum and drops out-of-range ids', () => {
    const x = [1, 2, 3, 4, 5, 6];
    const ids = [1, -1, 1, 3];
    const out = new Float32Array(4);
    segmentSumInto(x.slice(0, 4), ids, 2, 1, out);
    expect(Array.from(out)).toEqual([0, 1 + 3, 0, 0]);
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    for (const c of cases) {
      it(`${backend}: values equal the stock cpu kernel for x [${c.n}, ${c.inner}] into ${c.segments} segments`, async () => {
        const r = rand(c.n + c.segments);
        const size = c.n * c.inner.reduce((a, b) => a * b, 1);
        const xData = Float32Array.from({ length: size }, () => r() * 2 - 1);
        const idData = Int32Array.from({ length: c.n }, () => Math.floor(r() * (c.segments + 2)) - 1);
        const expected = await referenceOnCpu(() =>
          tf.tidy(() =>
            tf
              .unsortedSegmentSum(
                tf.tensor(xData, [c.n, ...c.inner]),
                tf.tensor1d(idData, 'int32'),
                c.segments,
              )
              .arraySync(),
          ),
        );
        await tf.setBackend(backend);
        const actual = tf.tidy(() =>
          tf
            .unsortedSegmentSum(tf.tensor(xData, [c.n, ...c.inner]), tf.tensor1d(idData, 'int32'), c.segments)
            .arraySync(),
        );
        const a = tf.tensor(actual as number[]).dataSync();
        const e = tf.tensor(expected as number[]).dataSync();
        expect(a.length).toBe(e.length);
        for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(e[i], 5);
      });
    }

    it(`${backend}: the gradient of an embedding gather equals the reference`, async () => {
      const r = rand(99);
      const table = Float32Array.from({ length: 30 * 4 }, () => r() - 0.5);
      const idx = Int32Array.from({ length: 64 }, () => Math.floor(r() * 30));
      const weights = Float32Array.from({ length: 64 * 4 }, () => r());
      const grad = () =>
        tf.tidy(() => {
          const t = tf.tensor2d(table, [30, 4]);
          const g = tf.grad((x: tf.Tensor) =>
            tf.sum(tf.mul(tf.gather(x, tf.tensor1d(idx, 'int32')), tf.tensor2d(weights, [64, 4]))),
          )(t);
          return g.dataSync().slice();
        });
      const expected = await referenceOnCpu(grad);
      await tf.setBackend(backend);
      const actual = grad();
      for (let i = 0; i < expected.length; i++) expect(actual[i]).toBeCloseTo(expected[i], 5);
    });
  }
});
