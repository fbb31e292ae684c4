import * as tf from '@tensorflow/tfjs-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveLlmConfig } from '../../../../ml/llm/config.js';
import { loadLlm, type LoadedLlm } from '../../../../ml/llm/model.js';
import { LlmScorer } from '../../../../ml/llm/scorer.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { initTf } from '../../../../ml/tf/backend.js';
import { writeTinyGguf } from '../../../helpers/tiny-gguf.js';
import { paperPrompts } from './paper-prompts.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-llama-tf-'));
const modelPath = join(dir, 'tiny-gqa.gguf');
let llm: LoadedLlm;
let ours: LlamaTf;
let prompts: Token[][];

beforeAll(async () => {
  await initTf(undefined, () => undefined);
  // Grouped-query attention (4 query heads over 2 key/value heads) and a non-default rope base, so both
  // are exercised against llama.cpp.
  writeTinyGguf(modelPath, { seed: 11, nHeadKv: 2, ropeFreqBase: 5000 });
  llm = await loadLlm(resolveLlmConfig({ model: modelPath, threads: 1, contextSize: 512 }));
  ours = await LlamaTf.load(modelPath);
  prompts = paperPrompts(
    llm,
    [
      { title: 'Toy Story (1995)', rating: 5 },
      { title: 'Heat (1995)', rating: 2 },
      { title: 'Fargo (1996)', rating: 4 },
    ],
    ['The Matrix (1999)', 'Alien (1979)', 'Casino (1995)'],
  );
});

afterAll(async () => {
  ours?.dispose();
  await llm?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * llama.cpp's full next-token distribution after `tokens`, as log-probabilities. The KV cache is F32 here:
 * llama.cpp's default F16 cache rounds keys and values to 11 significant bits, which alone moves the tiny
 * model's log-probabilities by ~5e-3 (the scorer's own tolerance below accounts for it).
 */
async function llamaCppLogProbs(tokens: Token[], on: LoadedLlm = llm): Promise<Float64Array> {
  const ctx = await on.model.createContext({
    contextSize: 512,
    threads: 1,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  try {
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate([
      ...tokens.slice(0, -1),
      [
        tokens[tokens.length - 1],
        { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } },
      ],
    ]);
    const probs = res[res.length - 1]!.next.probabilities!;
    const out = new Float64Array(ours.hp.nVocab).fill(-Infinity);
    for (const [t, p] of probs) out[t] = Math.log(p);
    return out;
  } finally {
    await ctx.dispose();
  }
}

function logSoftmax(x: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let s = 0;
  for (const v of x) s += Math.exp(v - max);
  const lse = max + Math.log(s);
  return Float64Array.from(x, (v) => v - lse);
}

describe('the TensorFlow.js llama forward pass against llama.cpp (tiny F32 GGUF)', () => {
  it('gives the same full next-token distribution', async () => {
    for (const p of prompts) {
      const ref = await llamaCppLogProbs(p);
      const r = ours.forward(p, { logits: 'full' });
      expect(r.logits!.length).toBe(ours.hp.nVocab);
      const mine = logSoftmax(r.logits!);
      let maxDiff = 0;
      let compared = 0;
      for (let t = 0; t < mine.length; t++) {
        // llama.cpp drops tokens whose probability underflows; everything it reports is compared.
        if (!Number.isFinite(ref[t]) || ref[t] < -30) continue;
        maxDiff = Math.max(maxDiff, Math.abs(mine[t] - ref[t]));
        compared++;
      }
      expect(compared).toBeGreaterThan(ours.hp.nVocab * 0.9);
      // Measured 3–5e-6: float32 summation order is all that differs.
      expect(maxDiff).toBeLessThan(2e-5);
      // The distribution is far from uniform, so agreement is not trivial.
      expect(Math.max(...mine) - Math.min(...mine)).toBeGreaterThan(5);
    }
  });

  it('gives the same final hidden state and Yes/No log-odds as the scorer', async () => {
    const s = await LlmScorer.create(
      llm,
      resolveLlmConfig({ model: modelPath, threads: 1, contextSize: 512 }),
    );
    try {
      const scores = await s.score(prompts, { reusePrefix: false });
      for (let i = 0; i < prompts.length; i++) {
        const r = ours.forward(prompts[i], { logitTokens: [llm.yesToken, llm.noToken] });
        const logOdds = r.tokenLogits![0] - r.tokenLogits![1];
        // The scorer runs llama.cpp's default F16 KV cache: measured 1.4e-3 (hidden) and 8e-4 (log-odds).
        expect(Math.abs(logOdds - scores[i].logOdds)).toBeLessThan(5e-3);
        const h = scores[i].hidden!;
        expect(r.finalHidden.length).toBe(h.length);
        let maxDiff = 0;
        for (let j = 0; j < h.length; j++) maxDiff = Math.max(maxDiff, Math.abs(h[j] - r.finalHidden[j]));
        expect(maxDiff).toBeLessThan(5e-3);
      }
    } finally {
      await s.dispose();
    }
  });

  it('agrees with llama.cpp on tied-output and quantized variants of the model', async () => {
    // [options, tolerance on log-probabilities, measured]. llama.cpp dequantizes the token embedding
    // exactly (get_rows), so a quantized embedding checks our block decoding against llama.cpp's to float32
    // precision. Quantized matrices are another matter: llama.cpp also rounds the activations (to Q8_0 for
    // Q8_0 weights, to F16 for F16 weights) before each product, which we do not; on these random weights
    // that moves log-probabilities about as much as quantizing the weights did. (Q4_1 matrices are left to
    // bench/lora-forward.ts on SmolLM2: 4-bit random weights make this tiny model chaotic, the weight
    // quantization alone moves its log-probabilities by units.)
    const variants: [Parameters<typeof writeTinyGguf>[1], number, string][] = [
      [{ tiedOutput: true }, 2e-5, '1.5e-5'],
      [{ embeddingType: 'Q8_0' }, 2e-5, '7e-6'],
      [{ embeddingType: 'Q4_1' }, 2e-5, '3.6e-6'],
      [{ embeddingType: 'F16' }, 2e-5, '5e-6'],
      [{ matrixType: 'F16' }, 2e-2, '2.6e-3'],
      [{ matrixType: 'Q8_0', nEmbd: 64, nFf: 128 }, 0.5, '0.19'],
    ];
    for (const [i, [opts, tol]] of variants.entries()) {
      const path = join(dir, `variant-${i}.gguf`);
      writeTinyGguf(path, { seed: 11, nHeadKv: 2, ropeFreqBase: 5000, ...opts });
      const v = await loadLlm(resolveLlmConfig({ model: path, threads: 1, contextSize: 512 }));
      const m = await LlamaTf.load(path);
      try {
        for (const p of prompts.slice(0, 2)) {
          const ref = await llamaCppLogProbs(p, v);
          const mine = logSoftmax(m.forward(p, { logits: 'full' }).logits!);
          let maxDiff = 0;
          for (let t = 0; t < mine.length; t++) {
            if (Number.isFinite(ref[t]) && ref[t] > -30)
              maxDiff = Math.max(maxDiff, Math.abs(mine[t] - ref[t]));
          }
          expect(maxDiff, JSON.stringify(opts)).toBeLessThan(tol);
        }
      } finally {
        m.dispose();
        await v.dispose();
      }
    }
  });

  it('returns last-token hidden states of the chosen layers, the top one consistent with the final norm', () => {
    const before = tf.memory().numTensors;
    const r = ours.forward(prompts[0], { hiddenLayers: [0, ours.hp.nLayer - 1] });
    expect(tf.memory().numTensors).toBe(before);
    expect([...r.hidden.keys()].sort()).toEqual([0, ours.hp.nLayer - 1]);
    const top = r.hidden.get(ours.hp.nLayer - 1)!;
    const ms = top.reduce((a, v) => a + v * v, 0) / top.length;
    const scale = 1 / Math.sqrt(ms + ours.hp.rmsEps);
    // output_norm weights are ones in the tiny model: the final hidden state is the normed top layer.
    for (let j = 0; j < top.length; j++) expect(r.finalHidden[j]).toBeCloseTo(top[j] * scale, 4);
    expect(r.hidden.get(0)).not.toEqual(top);
  });
});
