import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { LoraBranch } from '../../../../ml/llm/tf/lora-branch.js';
import { useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

/** The LoRA branch's training threads (llm.finetune.threads): its gradients, and its workers' lifetime. */
let model: LlamaTf;
useTinyLlamaTf('corella-lora-branch-threads-', (m) => (model = m));
const YES = 300;
const NO = 301;

function prompts(n: number): number[][] {
  return Array.from({ length: n }, (_, i) => [1, 40, 41, 42, 50 + (i % 5), 60 + ((i * 7) % 11), 43]);
}

async function until(cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function branch(threads: number, signal?: AbortSignal) {
  const adapter = LoraAdapter.create(model.hp, { layers: 2, rank: 2, seed: 3 });
  // Non-zero B, so every factor has a gradient.
  for (const v of adapter.variables()) v.assign(tf.randomUniform(v.shape, -0.1, 0.1, 'float32', 7));
  return new LoraBranch<'stage3'>({
    model,
    adapter,
    answerTokens: [YES, NO],
    prompts: { stage3: prompts(12) },
    threads,
    signal,
  });
}

/** Every threaded gradient within 1e-4 of the largest one-tape entry of its variable (and none all zero). */
function expectGradsClose(
  vars: tf.Variable[],
  want: Record<string, tf.Tensor>,
  got: { tensor: tf.Tensor }[],
): void {
  vars.forEach((v, j) => {
    const w = want[v.name].dataSync();
    const g = got[j].tensor.dataSync();
    let max = 0;
    let scale = 0;
    for (let i = 0; i < w.length; i++) {
      max = Math.max(max, Math.abs(w[i] - g[i]));
      scale = Math.max(scale, Math.abs(w[i]));
    }
    expect(scale, v.name).toBeGreaterThan(0);
    expect(max, v.name).toBeLessThan(1e-4 * scale + 1e-7);
  });
}

describe('LoRA branch threads', () => {
  it('threaded gradients equal the gradients of forward() up to float32 summation order', async () => {
    const one = branch(1);
    const two = branch(2);
    const local = [0, 3, 5, 8, 11];
    const labels = [1, 0, 0, 1, 1];
    expect(one.parallelGradients('stage3', local, labels)).toBeUndefined();
    const pg = two.parallelGradients('stage3', local, labels)!;
    expect(pg).toBeDefined();
    const vars = one.trainableVariables();
    const { value, grads } = tf.variableGrads(() => {
      const z = one.forward('stage3', local).logits;
      return tf.losses.sigmoidCrossEntropy(tf.tensor1d(labels), z) as tf.Scalar;
    }, vars);
    expect(pg.loss).toBeCloseTo(value.dataSync()[0], 5);
    expect(pg.grads.map((g) => g.name)).toEqual(two.trainableVariables().map((v) => v.name));
    expectGradsClose(vars, grads, pg.grads);
    // An output affine other than the identity: the threads' loss is BCE(y, a·z + b), forward()'s logits.
    one.rescaleOutput(1.7, -0.4);
    two.rescaleOutput(1.7, -0.4);
    const pa = two.parallelGradients('stage3', local, labels)!;
    const ref = tf.variableGrads(() => {
      const z = one.forward('stage3', local).logits;
      return tf.losses.sigmoidCrossEntropy(tf.tensor1d(labels), z) as tf.Scalar;
    }, vars);
    expect(pa.loss).toBeCloseTo(ref.value.dataSync()[0], 5);
    expect(Math.abs(pa.loss - pg.loss)).toBeGreaterThan(1e-3);
    expectGradsClose(vars, ref.grads, pa.grads);
    tf.dispose([value, ...Object.values(grads), ...pg.grads.map((g) => g.tensor)]);
    tf.dispose([ref.value, ...Object.values(ref.grads), ...pa.grads.map((g) => g.tensor)]);
    expect(two.liveWorkers).toBe(1);
    two.dispose();
    one.dispose();
    await until(() => two.liveWorkers === 0);
  }, 120_000);

  it("aborting the activity's signal ends the workers", async () => {
    const ac = new AbortController();
    const b = branch(3, ac.signal);
    expect(b.liveWorkers).toBe(2);
    ac.abort(new Error('cancelled'));
    await until(() => b.liveWorkers === 0);
    expect(() => b.parallelGradients('stage3', [0, 1], [1, 0])).toThrow();
    b.dispose();
  }, 60_000);
});
