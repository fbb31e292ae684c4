import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { bceWithLogits } from '../../../ml/corella/ops.js';
import { CorellaError } from '../../../ml/errors.js';
import type { LlmFeatures } from '../../../ml/llm/types.js';
import { useCpu } from './fixtures.js';

beforeAll(useCpu);

/** n rows of `d` noise hidden columns whose last column (and not the log-odds) decides the label. */
function features(n: number, d: number, seed: number): { f: LlmFeatures; y: Float32Array } {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const hidden = new Float32Array(n * d);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) hidden[i * d + j] = rnd();
    y[i] = hidden[i * d + d - 1] > 0 ? 1 : 0;
  }
  return {
    f: {
      modelSha256: 'x',
      template: 'paper',
      hiddenDim: d,
      sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
      pYes: new Float32Array(n).fill(0.5),
      logOdds: Float32Array.from({ length: n }, () => rnd()),
      hidden,
    },
    y,
  };
}

function train(adapter: LlmAdapter, f: LlmFeatures, y: Float32Array, steps: number): number {
  const opt = tf.train.adam(0.05);
  let last = 0;
  for (let k = 0; k < steps; k++) {
    last = tf.tidy(() => {
      const x = adapter.inputTensor(f);
      const labels = tf.tensor1d(y);
      const { value, grads } = tf.variableGrads(
        () => bceWithLogits(adapter.forward(x).logits, labels),
        adapter.trainableVariables(),
      );
      opt.applyGradients(Object.entries(grads).map(([name, tensor]) => ({ name, tensor })));
      return value.dataSync()[0];
    });
  }
  opt.dispose();
  return last;
}

describe('LlmAdapter skip inputs (wide and deep)', () => {
  it('trains the skip weights: the decisive trailing column gets the largest skip weight', () => {
    const { f, y } = features(256, 6, 3);
    const adapter = LlmAdapter.create({ hiddenDim: 6, layers: [4], skipInputs: 3, seed: 1 });
    adapter.fitNormalization(f);
    const before = adapter.trainableVariables().at(-1)!.dataSync().slice();
    const loss = train(adapter, f, y, 60);
    expect(loss).toBeLessThan(0.4);
    // Skip columns are [hidden 4, hidden 5, log-odds]; hidden 5 decides the label.
    const after = Array.from(adapter.trainableVariables().at(-1)!.dataSync());
    expect(after).not.toEqual(Array.from(before));
    expect(Math.abs(after[1])).toBeGreaterThan(Math.abs(after[0]));
    expect(Math.abs(after[1])).toBeGreaterThan(Math.abs(after[2]));
    adapter.dispose();
  });

  it('round-trips through serialisation, and rescaleOutput scales the skip path too', () => {
    const { f } = features(32, 5, 9);
    const adapter = LlmAdapter.create({ hiddenDim: 5, layers: [3, 2], skipInputs: 2, seed: 4 });
    adapter.fitNormalization(f);
    const z = adapter.predictLogits(f);
    const copy = LlmAdapter.deserialize(adapter.serialize());
    expect(copy.config.skipInputs).toBe(2);
    expect(Array.from(copy.predictLogits(f))).toEqual(Array.from(z));
    copy.rescaleOutput(2, -0.5);
    const z2 = copy.predictLogits(f);
    z.forEach((v, i) => expect(z2[i]).toBeCloseTo(2 * v - 0.5, 4));
    adapter.dispose();
    copy.dispose();
  });

  it('without skipInputs the weights are exactly the deep-only adapter (old artifacts load unchanged)', () => {
    const { f } = features(16, 4, 5);
    const plain = LlmAdapter.create({ hiddenDim: 4, layers: [3], seed: 2 });
    const zero = LlmAdapter.create({ hiddenDim: 4, layers: [3], skipInputs: 0, seed: 2 });
    expect(zero.trainableVariables().length).toBe(plain.trainableVariables().length);
    expect(Array.from(zero.predictLogits(f))).toEqual(Array.from(plain.predictLogits(f)));
    plain.dispose();
    zero.dispose();
  });

  it('inputTail reads only the trailing columns: the rest of the hidden state cannot move the output', () => {
    const { f } = features(32, 6, 7);
    const adapter = LlmAdapter.create({ hiddenDim: 6, layers: [3], inputTail: 2, seed: 3 });
    adapter.fitNormalization(f);
    expect(adapter.inputDim).toBe(2);
    const z = adapter.predictLogits(f);
    // Scramble hidden columns 0–4; column 5 and the log-odds are the adapter's whole input.
    const scrambled = { ...f, hidden: f.hidden.map((v, i) => (i % 6 < 5 ? v * -7 + 3 : v)) };
    expect(Array.from(adapter.predictLogits(scrambled))).toEqual(Array.from(z));
    const changed = { ...f, logOdds: f.logOdds.map((v) => v + 5) };
    expect(Array.from(adapter.predictLogits(changed))).not.toEqual(Array.from(z));
    const copy = LlmAdapter.deserialize(adapter.serialize());
    expect(Array.from(copy.predictLogits(f))).toEqual(Array.from(z));
    adapter.dispose();
    copy.dispose();
  });

  it('rejects a skip wider than the input, and a tail wider than the features', () => {
    expect(() =>
      LlmAdapter.create({ hiddenDim: 4, layers: [2], inputTail: 2, skipInputs: 3, seed: 1 }),
    ).toThrow(/skipInputs/);
    expect(() => LlmAdapter.create({ hiddenDim: 2, layers: [2], inputTail: 4, seed: 1 })).toThrow(
      /inputTail/,
    );
    expect(() => LlmAdapter.create({ hiddenDim: 2, layers: [2], skipInputs: 4, seed: 1 })).toThrow(
      CorellaError,
    );
    expect(() => LlmAdapter.create({ hiddenDim: 2, layers: [2], skipInputs: 4, seed: 1 })).toThrow(
      /skipInputs/,
    );
  });
});
