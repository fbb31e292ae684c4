import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { LoraBranch } from '../../../../ml/llm/tf/lora-branch.js';
import { useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

let model: LlamaTf;
const YES = 300;
const NO = 301;

function prompts(n: number, seed: number): number[][] {
  return Array.from({ length: n }, (_, i) => [
    1,
    40,
    41,
    ...Array.from({ length: 4 + (i % 3) }, (_, j) => 3 + ((i * 31 + j * 17 + seed * 7) % 290)),
  ]);
}

const parts = { stage2: prompts(12, 1), stage3: prompts(6, 2), valid: prompts(8, 3) };
const labels = { stage2: parts.stage2.map((_, i) => ((i * 7) % 3 === 0 ? 1 : 0)) };

useTinyLlamaTf('corella-lora-branch-', (m) => (model = m));

function branch(alignLayers = [0, 2]) {
  const adapter = LoraAdapter.create(model.hp, { layers: 2, rank: 4, alpha: 8, seed: 1 });
  return new LoraBranch({ model, adapter, answerTokens: [YES, NO], prompts: parts, alignLayers });
}

describe('LoraBranch: the LLM side of a joint step with LoRA', () => {
  it('its logits are the tfjs log-odds, its activations the align layers of the real forward', () => {
    const b = branch();
    expect(b.activationShapes).toEqual([
      { name: 'llm_block_0', width: model.hp.nEmbd },
      { name: 'llm_block_2', width: model.hp.nEmbd },
    ]);
    const idx = [3, 0, 7];
    const f = b.forward('stage2', idx, { activations: true });
    const z = f.logits.dataSync();
    idx.forEach((i, j) => {
      const ref = model.forward(parts.stage2[i], {
        logitTokens: [YES, NO],
        hiddenLayers: [0, 2],
        lora: b.adapter.layerLora(),
      });
      expect(z[j]).toBeCloseTo(ref.tokenLogits![0] - ref.tokenLogits![1], 4);
      const a0 = f.activations[0].value.arraySync()[j];
      const a2 = f.activations[1].value.arraySync()[j];
      // The align layers' outputs as the next block's RMSNorm reads them: unit RMS, same direction.
      const unitRms = (v: ArrayLike<number>) => {
        const rms = Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0) / v.length + 1e-5);
        return Array.from(v, (x) => x / rms);
      };
      const h0 = unitRms(ref.hidden.get(0)!);
      const h2 = unitRms(ref.hidden.get(2)!);
      expect(Math.max(...a0.map((v, k) => Math.abs(v - h0[k])))).toBeLessThan(1e-4);
      expect(Math.max(...a2.map((v, k) => Math.abs(v - h2[k])))).toBeLessThan(1e-4);
      const rms2 = Math.sqrt(a2.reduce((s, x) => s + x * x, 0) / a2.length);
      expect(rms2).toBeCloseTo(1, 3);
    });
    expect(f.activations[0].value.shape).toEqual([3, model.hp.nEmbd]);
    tf.dispose([f.logits, ...f.activations.map((a) => a.value)]);
    b.dispose();
  });

  it('gradients of α·BCE + γ·(an alignment term) reach the LoRA, and Adam steps lower the BCE', () => {
    const b = branch();
    const y = tf.tensor1d(labels.stage2);
    const all = parts.stage2.map((_, i) => i);
    const bce = () =>
      tf.tidy(() => tf.losses.sigmoidCrossEntropy(y, b.forward('stage2', all).logits).dataSync()[0]);
    const before = bce();
    const opt = tf.train.adam(5e-2);
    for (let s = 0; s < 6; s++) {
      const { value, grads } = tf.variableGrads(() => {
        const f = b.forward('stage2', all, { activations: true, training: true });
        const align = tf.mean(tf.square(f.activations[1].value));
        return tf.add(tf.losses.sigmoidCrossEntropy(y, f.logits), tf.mul(1e-3, align)) as tf.Scalar;
      }, b.trainableVariables());
      if (s === 0) {
        // B starts at zero, so only B has a gradient through z at step 0 — and it must be non-zero.
        const norms = b.trainableVariables().map((v) => tf.tidy(() => tf.norm(grads[v.name]).dataSync()[0]));
        expect(Math.max(...norms)).toBeGreaterThan(0);
      }
      opt.applyGradients(grads as Parameters<typeof opt.applyGradients>[0]);
      tf.dispose([value, ...Object.values(grads)]);
    }
    expect(bce()).toBeLessThan(before - 0.01);
    opt.dispose();
    y.dispose();
    b.dispose();
  });

  it('rescaleOutput composes a·z + b, predict is σ of it, and serialize/clone keep everything', () => {
    const b = branch([2]);
    b.adapter.pairs.forEach((p, i) =>
      tf.tidy(() => p.b.assign(tf.randomNormal(p.b.shape, 0, 0.3, 'float32', 40 + i))),
    );
    const z = b.logOdds('valid');
    b.rescaleOutput(2, 0.5);
    b.rescaleOutput(0.5, -1);
    expect(b.output).toEqual({ a: 1, b: -0.75 });
    b.rescaleOutput(3, 0);
    const p = b.predict('valid');
    z.forEach((v, i) => expect(p[i]).toBeCloseTo(1 / (1 + Math.exp(-(3 * v - 2.25))), 5));
    const back = LoraBranch.deserialize(b.serialize(), { model, answerTokens: [YES, NO], prompts: parts });
    expect(Array.from(back.predict('valid'))).toEqual(Array.from(p));
    expect(back.alignLayers).toEqual([2]);
    const c = b.clone();
    c.adapter.pairs.forEach((q) => tf.tidy(() => q.b.assign(tf.zerosLike(q.b))));
    // The clone moved back to the base model; the original did not.
    expect(Array.from(b.predict('valid'))).toEqual(Array.from(p));
    expect(c.predict('valid')[0]).not.toBeCloseTo(p[0], 4);
    expect(() =>
      LoraBranch.deserialize('{"format":"x"}', { model, answerTokens: [YES, NO], prompts: parts }),
    ).toThrow(/format/);
    expect(() => b.forward('valid', [99])).toThrow(/outside part valid/);
    [c, back, b].forEach((x) => x.dispose());
  });

  it('a row outside the part is one typed error at every entry point, sizing (splitJoint) included', () => {
    const b = branch([2]);
    const outside = {
      code: 'BAD_CONFIG',
      message: expect.stringMatching(/row 12 is outside part stage2 \(12 rows\)/),
    };
    const catchOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e;
      }
      return 'no error';
    };
    expect(catchOf(() => b.forward('stage2', [0, 12]))).toMatchObject(outside);
    expect(catchOf(() => b.splitJoint('stage2', [0, 12]))).toMatchObject(outside);
    expect(catchOf(() => b.parallelGradients('stage2', [0, 12], [1, 0]))).toMatchObject(outside);
    const step = { alpha: 1, gamma: 0, sharedDim: 0, pairs: [] };
    expect(catchOf(() => b.parallelJointGradients('stage2', [0, 12], [1, 0], step))).toMatchObject(outside);
    expect(b.splitJoint('stage2', [0, 11])).toBe(false);
    b.dispose();
  });
});
