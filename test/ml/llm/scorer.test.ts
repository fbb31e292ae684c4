import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Token } from 'node-llama-cpp';
import { resolveLlmConfig } from '../../../ml/llm/config.js';
import { loadLlm, type LoadedLlm } from '../../../ml/llm/model.js';
import { PromptBuilder, templateByName } from '../../../ml/llm/prompts.js';
import { LlmScorer } from '../../../ml/llm/scorer.js';
import { writeTinyGguf, writeTinyLoraGguf } from '../../helpers/tiny-gguf.js';
import { CorellaError } from '../../../ml/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-llm-scorer-'));
const modelPath = join(dir, 'tiny.gguf');
let llm: LoadedLlm;
let prompts: Token[][];
const TITLES = ['The Matrix (1999)', 'Alien (1979)', 'Fargo (1996)', 'Casino (1995)'];

beforeAll(async () => {
  writeTinyGguf(modelPath, { seed: 7 });
  llm = await loadLlm(resolveLlmConfig({ model: modelPath, threads: 1, contextSize: 512 }));
  const b = new PromptBuilder(
    { tokenize: (t, s, o) => llm.model.tokenize(t, s, o), bos: llm.model.tokens.bos },
    templateByName('paper'),
    { contextSize: 512, targetReserveTokens: 16 },
  );
  const h1 = [
    { title: 'Toy Story (1995)', rating: 5, genres: '' },
    { title: 'Heat (1995)', rating: 2, genres: '' },
  ];
  const h2 = [{ title: 'Heat (1995)', rating: 4, genres: '' }];
  prompts = [...TITLES.map((t) => b.build(h1, t).tokens), ...TITLES.map((t) => b.build(h2, t).tokens)];
});

afterAll(async () => {
  await llm?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function withScorer<T>(
  overrides: Parameters<typeof resolveLlmConfig>[0] | object,
  fn: (s: LlmScorer) => Promise<T>,
): Promise<T> {
  const s = await LlmScorer.create(
    llm,
    resolveLlmConfig({ model: modelPath, threads: 1, contextSize: 512, ...overrides }),
  );
  try {
    return await fn(s);
  } finally {
    await s.dispose();
  }
}

describe('LlmScorer on a real (tiny) GGUF model', () => {
  it('gives pYes in (0,1) consistent with the log-odds, varying with the prompt', async () => {
    const scores = await withScorer({}, (s) => s.score(prompts));
    for (const sc of scores) {
      expect(sc.pYes).toBeGreaterThan(0);
      expect(sc.pYes).toBeLessThan(1);
      expect(1 / (1 + Math.exp(-sc.logOdds))).toBeCloseTo(sc.pYes, 5);
      expect(sc.hidden).toBeInstanceOf(Float32Array);
      expect(sc.hidden!.length).toBe(llm.hiddenDim);
      expect(sc.hidden!.every(Number.isFinite)).toBe(true);
    }
    const distinct = new Set(scores.map((s) => s.pYes.toFixed(4)));
    expect(distinct.size).toBeGreaterThan(4);
  });

  it('pYes equals the two-way softmax of the full next-token distribution', async () => {
    const scores = await withScorer({ hidden: false }, (s) => s.score(prompts.slice(0, 3)));
    const ctx = await llm.model.createContext({ contextSize: 512, threads: 1 });
    try {
      const seq = ctx.getSequence();
      for (let i = 0; i < 3; i++) {
        await seq.clearHistory();
        const t = prompts[i];
        const res = await seq.controlledEvaluate([
          ...t.slice(0, -1),
          [
            t[t.length - 1],
            { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } },
          ],
        ]);
        const probs = res[res.length - 1]!.next.probabilities!;
        expect(probs.size).toBeGreaterThan(100); // the whole vocabulary, which the scorer avoids
        const py = probs.get(llm.yesToken)!;
        const pn = probs.get(llm.noToken)!;
        expect(scores[i].pYes).toBeCloseTo(py / (py + pn), 3);
        expect(scores[i].logOdds).toBeCloseTo(Math.log(py / pn), 2);
      }
    } finally {
      await ctx.dispose();
    }
  });

  it('prefix reuse matches the naive path within 1e-3 and evaluates fewer tokens', async () => {
    const { reuse, naive, reuseTokens, naiveTokens } = await withScorer({}, async (s) => {
      const reuse = await s.score(prompts, { reusePrefix: true });
      const reuseTokens = s.stats.evaluatedTokens;
      const naive = await s.score(prompts, { reusePrefix: false });
      return { reuse, naive, reuseTokens, naiveTokens: s.stats.evaluatedTokens - reuseTokens };
    });
    for (let i = 0; i < prompts.length; i++) {
      expect(Math.abs(reuse[i].pYes - naive[i].pYes)).toBeLessThan(1e-3);
      expect(Math.abs(reuse[i].logOdds - naive[i].logOdds)).toBeLessThan(1e-2);
      const a = reuse[i].hidden!;
      const b = naive[i].hidden!;
      let maxDiff = 0;
      for (let j = 0; j < a.length; j++) maxDiff = Math.max(maxDiff, Math.abs(a[j] - b[j]));
      expect(maxDiff).toBeLessThan(1e-3);
    }
    const total = prompts.reduce((n, p) => n + p.length, 0);
    expect(naiveTokens).toBe(total); // one pass gives the answer and the hidden state
    expect(reuseTokens).toBeLessThan(naiveTokens * 0.6);
  });

  it('the hidden state equals what the public embedding context gives for the same tokens', async () => {
    const [sc] = await withScorer({}, (s) => s.score([prompts[1]], { reusePrefix: false }));
    const emb = await llm.model.createEmbeddingContext({ contextSize: 512, threads: 1 });
    try {
      // getEmbeddingFor prepends the BOS token itself (and this vocabulary appends no EOS).
      const v = (await emb.getEmbeddingFor(prompts[1].slice(1))).vector;
      expect(v.length).toBe(sc.hidden!.length);
      let maxDiff = 0;
      for (let j = 0; j < v.length; j++) maxDiff = Math.max(maxDiff, Math.abs(v[j] - sc.hidden![j]));
      expect(maxDiff).toBeLessThan(1e-4);
    } finally {
      await emb.dispose();
    }
  });

  it('reads the hidden state of the right sequence when two sequences score at once', async () => {
    const one = await withScorer({}, (s) => s.score(prompts));
    const two = await withScorer({ sequences: 2 }, (s) =>
      s.score(prompts, {}, [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ]),
    );
    for (let i = 0; i < prompts.length; i++) {
      expect(Math.abs(one[i].pYes - two[i].pYes)).toBeLessThan(1e-3);
      const a = one[i].hidden!;
      const b = two[i].hidden!;
      let maxDiff = 0;
      for (let j = 0; j < a.length; j++) maxDiff = Math.max(maxDiff, Math.abs(a[j] - b[j]));
      expect(maxDiff).toBeLessThan(1e-3);
    }
  });

  it('two sequences give the same scores as one, within tolerance', async () => {
    const one = await withScorer({ hidden: false }, (s) => s.score(prompts));
    const two = await withScorer({ hidden: false, sequences: 2 }, (s) =>
      s.score(prompts, {}, [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ]),
    );
    for (let i = 0; i < prompts.length; i++) expect(Math.abs(one[i].pYes - two[i].pYes)).toBeLessThan(1e-3);
  });

  it('stops between prompts when the signal is aborted', async () => {
    const ac = new AbortController();
    let scored = 0;
    await expect(
      withScorer({ hidden: false }, (s) =>
        s.score(prompts, {
          signal: ac.signal,
          onScored: () => {
            scored++;
            if (scored === 2) ac.abort(new Error('stop here'));
          },
        }),
      ),
    ).rejects.toThrow('stop here');
    expect(scored).toBe(2);
  });
});

describe('LoRA adapters', () => {
  it('applies a GGUF LoRA adapter with its scale (scale 0 = base model)', async () => {
    const adapter = join(dir, 'adapter.gguf');
    writeTinyLoraGguf(adapter, { seed: 9 });
    const base = await withScorer({ hidden: false }, (s) => s.score(prompts.slice(0, 3)));
    const zero = await withScorer({ hidden: false, lora: { path: adapter, scale: 0 } }, (s) =>
      s.score(prompts.slice(0, 3)),
    );
    const full = await withScorer({ lora: { path: adapter, scale: 1 } }, (s) => s.score(prompts.slice(0, 3)));
    for (let i = 0; i < 3; i++) expect(Math.abs(zero[i].pYes - base[i].pYes)).toBeLessThan(1e-3);
    const moved = full.map((f, i) => Math.abs(f.pYes - base[i].pYes));
    expect(Math.max(...moved)).toBeGreaterThan(1e-2);
    expect(full[0].hidden!.length).toBe(llm.hiddenDim);
  });

  it('rejects an adapter that does not fit the model with BAD_MODEL_FILE', async () => {
    const adapter = join(dir, 'wrong.gguf');
    writeTinyLoraGguf(adapter, { nEmbd: 48 });
    const err = await withScorer({ hidden: false, lora: { path: adapter } }, async () => undefined).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((err as CorellaError).message).toContain('wrong.gguf');
  });
});
