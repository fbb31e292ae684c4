import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorellaError } from '../../../../ml/errors.js';
import { resolveLlmConfig } from '../../../../ml/llm/config.js';
import { loadLlm, type LoadedLlm } from '../../../../ml/llm/model.js';
import { LlmScorer } from '../../../../ml/llm/scorer.js';
import { GgufFile } from '../../../../ml/llm/tf/gguf-file.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { checkLoraForBase } from '../../../../ml/llm/tf/lora-check.js';
import { exportLoraGguf } from '../../../../ml/llm/tf/lora-gguf.js';
import { LoraTrainer } from '../../../../ml/llm/tf/lora-train.js';
import { initTf } from '../../../../ml/tf/backend.js';
import { writeTinyGguf } from '../../../helpers/tiny-gguf.js';
import { paperPrompts } from './paper-prompts.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-lora-export-'));
const basePath = join(dir, 'base.gguf');
const otherBase = join(dir, 'other.gguf');
const shallowBase = join(dir, 'shallow.gguf');
const loraPath = join(dir, 'trained-lora.gguf');
let llm: LoadedLlm;
let model: LlamaTf;
let adapter: LoraAdapter;
let trainer: LoraTrainer;
let prompts: Token[][];
let basePYes: number[];

beforeAll(async () => {
  await initTf(undefined, () => undefined);
  writeTinyGguf(basePath, { seed: 21, nLayer: 3, nHeadKv: 2 });
  writeTinyGguf(otherBase, { seed: 21, nLayer: 3, nEmbd: 48, nHead: 4 });
  writeTinyGguf(shallowBase, { seed: 21, nLayer: 2, nHeadKv: 2 });
  llm = await loadLlm(resolveLlmConfig({ model: basePath, threads: 1, contextSize: 512 }));
  model = await LlamaTf.load(basePath);
  prompts = paperPrompts(
    llm,
    [
      { title: 'Toy Story (1995)', rating: 5 },
      { title: 'Heat (1995)', rating: 1 },
    ],
    ['The Matrix (1999)', 'Alien (1979)', 'Fargo (1996)', 'Casino (1995)'],
  );
  // Every projection type llama.cpp can adapt, on the top two of three blocks.
  adapter = LoraAdapter.create(model.hp, {
    layers: 2,
    rank: 4,
    alpha: 8,
    targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'],
  });
  trainer = new LoraTrainer(model, adapter, {
    answerTokens: [llm.yesToken, llm.noToken],
    learningRate: 3e-2,
  });
  basePYes = prompts.map((p) => trainer.pYes(p));
  const batch = prompts.map((tokens, i) => ({ tokens, label: i % 2 }));
  for (let s = 0; s < 12; s++) trainer.step(batch);
  await exportLoraGguf(adapter, loraPath);
});

afterAll(async () => {
  trainer?.dispose();
  adapter?.dispose();
  model?.dispose();
  await llm?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('GGUF LoRA export', () => {
  it('writes the layout llama.cpp expects: adapter metadata, lora_a [in, r] and lora_b [r, out]', async () => {
    const f = await GgufFile.open(loraPath);
    expect(f.meta('general.type')).toBe('adapter');
    expect(f.meta('adapter.type')).toBe('lora');
    expect(f.meta('adapter.lora.alpha')).toBe(8);
    expect(f.meta('general.architecture')).toBe('llama');
    expect(f.tensor('blk.2.attn_k.weight.lora_a').dims).toEqual([32, 4]);
    expect(f.tensor('blk.2.attn_k.weight.lora_b').dims).toEqual([4, 16]);
    expect(f.tensor('blk.1.ffn_down.weight.lora_a').dims).toEqual([64, 4]);
    expect(f.tensors.has('blk.0.attn_q.weight.lora_a')).toBe(false);
    const info = await checkLoraForBase(basePath, loraPath);
    expect(info.rank).toBe(4);
    expect(info.targets).toHaveLength(14);
    const b = await f.readF32('blk.2.attn_v.weight.lora_b');
    const host = await adapter.toHost();
    expect(Array.from(b)).toEqual(Array.from(host['blk.2.attn_v'].b));
  });

  it('node-llama-cpp with the exported adapter reproduces the tfjs pYes of the trained LoRA', async () => {
    const trained = prompts.map((p) => trainer.pYes(p));
    // Training moved the answers, so agreement below is not that of two base models.
    expect(Math.max(...trained.map((p, i) => Math.abs(p - basePYes[i])))).toBeGreaterThan(0.1);

    // Tight: an F32 KV cache, full distribution.
    const ctx = await llm.model.createContext({
      contextSize: 512,
      threads: 1,
      lora: { adapters: [{ filePath: loraPath, scale: 1 }] },
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    });
    try {
      const seq = ctx.getSequence();
      for (let i = 0; i < prompts.length; i++) {
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
        const py = probs.get(llm.yesToken)!;
        const pn = probs.get(llm.noToken)!;
        expect(Math.abs(py / (py + pn) - trained[i])).toBeLessThan(1e-4);
      }
    } finally {
      await ctx.dispose();
    }

    // As served: the scorer's defaults (F16 KV cache), LoRA from the config.
    const withLora = await loadLlm(
      resolveLlmConfig({ model: basePath, threads: 1, contextSize: 512, lora: { path: loraPath } }),
    );
    const scorer = await LlmScorer.create(
      withLora,
      resolveLlmConfig({
        model: basePath,
        threads: 1,
        contextSize: 512,
        hidden: false,
        lora: { path: loraPath },
      }),
    );
    try {
      const scores = await scorer.score(prompts);
      for (let i = 0; i < prompts.length; i++)
        expect(Math.abs(scores[i].pYes - trained[i])).toBeLessThan(2e-3);
    } finally {
      await scorer.dispose();
      await withLora.dispose();
    }
  });

  it('a LoRA exported for another base gets a typed error naming the tensor, before llama.cpp sees it', async () => {
    const err = await checkLoraForBase(otherBase, loraPath).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((err as Error).message).toMatch(
      /trained-lora\.gguf does not fit base model .*other\.gguf: blk\.\d\.\w+\.weight: lora_a \[32, 4\]/,
    );

    const viaLoader = await loadLlm(
      resolveLlmConfig({ model: otherBase, threads: 1, contextSize: 512, lora: { path: loraPath } }),
    ).catch((e: unknown) => e);
    expect(viaLoader).toBeInstanceOf(CorellaError);
    expect((viaLoader as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((viaLoader as Error).message).toMatch(/does not fit base model/);

    const shallow = await checkLoraForBase(shallowBase, loraPath).catch((e: unknown) => e);
    expect((shallow as Error).message).toMatch(/the base has no tensor blk\.2\./);

    // The base model itself is not an adapter.
    const notLora = await checkLoraForBase(basePath, otherBase).catch((e: unknown) => e);
    expect((notLora as Error).message).toMatch(/not a LoRA adapter/);
  });
});
