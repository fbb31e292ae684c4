import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { initTf, parseBackendChoice } from '../../../ml/tf/backend.js';

function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

describe('initTf', () => {
  it('falls through the native backends that are not installed to wasm, with a reason for each', async () => {
    const logs: string[] = [];
    const r = await initTf('auto', (m) => logs.push(m));
    if (!installed('@tensorflow/tfjs-node-gpu') && !installed('@tensorflow/tfjs-node')) {
      expect(r.backend).toBe('wasm');
      expect(r.reasons.map((s) => s.split(':')[0])).toEqual(['tensorflow-gpu', 'tensorflow']);
      expect(tf.getBackend()).toBe('wasm');
      expect(logs.join('\n')).toMatch(/tfjs backend: wasm/);
    } else {
      expect(['tensorflow-gpu', 'tensorflow']).toContain(r.backend);
    }
  });

  it('refuses an explicitly requested GPU backend that cannot start, with a typed error', async () => {
    if (installed('@tensorflow/tfjs-node-gpu')) return;
    const err = await initTf('tensorflow-gpu', () => undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('GPU_UNAVAILABLE');
    expect((err as CorellaError).message).toMatch(/tfjs-node-gpu/);
  });

  it('switches to cpu on request and trains gradients of embedding lookups there', async () => {
    const r = await initTf('cpu', () => undefined);
    expect(r.backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([0, 2, 2], 'int32'))))(
      tf.ones([3, 2]),
    );
    expect(Array.from(g.dataSync())).toEqual([1, 1, 0, 0, 2, 2]);
    await initTf('wasm', () => undefined);
  });

  it('parses CORELLA_TF_BACKEND and rejects unknown names', () => {
    expect(parseBackendChoice(undefined)).toBe('auto');
    expect(parseBackendChoice(' WASM ')).toBe('wasm');
    expect(() => parseBackendChoice('tpu')).toThrow(/CORELLA_TF_BACKEND/);
  });
});
