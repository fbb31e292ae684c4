import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../../../cli/main.js';
import { q8OutputPath } from '../../../../cli/commands/llm.js';
import { resolveLlmConfig } from '../../../../ml/llm/config.js';
import { loadLlm } from '../../../../ml/llm/model.js';
import { LlmScorer } from '../../../../ml/llm/scorer.js';
import { GGML_TYPE, dequantize, f16ToF32, f32ToF16, quantizeQ8_0 } from '../../../../ml/llm/tf/ggml-types.js';
import { GgufFile } from '../../../../ml/llm/tf/gguf-file.js';
import { requantizeGgufToQ8_0 } from '../../../../ml/llm/tf/gguf-requantize.js';
import { mulberry32 } from '../../../../ml/random.js';
import { writeTinyGguf } from '../../../helpers/tiny-gguf.js';
import { paperPrompts } from './paper-prompts.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-requantize-'));
const q4 = join(dir, 'tiny.Q4_1.gguf');
const q8 = join(dir, 'tiny.Q8_0.gguf');

beforeAll(() => {
  // As the PyPI SmolLM2: 4-bit matrices, a Q8_0 token embedding (tied output), F32 norms.
  writeTinyGguf(q4, { seed: 5, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true, nHeadKv: 2 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('f32ToF16', () => {
  it('returns every finite half exactly and rounds halfway cases to even', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) continue; // NaN payloads
      expect(f32ToF16(f16ToF32(h))).toBe(h);
    }
    // 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties go to the even mantissa (1).
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16(70_000)).toBe(0x7c00);
    expect(f32ToF16(2 ** -30)).toBe(0);
  });
});

describe('quantizeQ8_0', () => {
  it('keeps each value within half a step of the block scale, and a zero block zero', () => {
    const rand = mulberry32(3);
    const x = new Float32Array(32 * 64).map(() => (rand() - 0.5) * 2 ** (rand() * 8 - 4));
    x.fill(0, 0, 32);
    const back = dequantize(GGML_TYPE.Q8_0, quantizeQ8_0(x), x.length);
    for (let b = 0; b < 64; b++) {
      const block = x.subarray(b * 32, b * 32 + 32);
      const amax = Math.max(...Array.from(block, Math.abs));
      // Half a step, plus the f16 rounding of d (2^-11 relative) over the 127 steps of the largest value.
      const tol = amax / 254 + amax * 2 ** -11 + 1e-12;
      for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j] - block[j])).toBeLessThanOrEqual(tol);
    }
    expect(Array.from(back.subarray(0, 32))).toEqual(new Array(32).fill(0));
  });
});

describe('requantizeGgufToQ8_0', () => {
  it('rewrites the 4-bit matrices as Q8_0 and copies every other tensor and all metadata', async () => {
    const r = await requantizeGgufToQ8_0(q4, q8);
    const a = await GgufFile.open(q4);
    const b = await GgufFile.open(q8);
    expect([...b.tensors.keys()]).toEqual([...a.tensors.keys()]);
    let converted = 0;
    for (const [name, ta] of a.tensors) {
      const tb = b.tensor(name);
      expect(tb.dims).toEqual(ta.dims);
      const [va, vb] = [await a.readF32(name), await b.readF32(name)];
      if (ta.ggmlType === GGML_TYPE.Q4_1) {
        converted++;
        expect(tb.ggmlType).toBe(GGML_TYPE.Q8_0);
        const amax = va.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        for (let i = 0; i < va.length; i++) expect(Math.abs(vb[i] - va[i])).toBeLessThanOrEqual(amax / 127);
      } else {
        expect(tb.ggmlType).toBe(ta.ggmlType);
        expect(vb).toEqual(va);
      }
    }
    expect(converted).toBeGreaterThan(0);
    expect(r.converted).toEqual({ Q4_1: converted });
    expect(r.kept).toBe(a.tensors.size - converted);
    // The tokenizer and hyperparameters are the source's; only the file type and the provenance differ.
    const strip = (m: Record<string, unknown>) => {
      const general = { ...(m.general as Record<string, unknown>) };
      delete general.file_type;
      return { ...m, general, corella: undefined };
    };
    expect(strip(b.metadata)).toEqual(strip(a.metadata));
    expect(b.meta('corella.requantized_from')).toBe(`tiny.Q4_1.gguf sha256:${r.sourceSha256}`);
    expect(await readdir(dir)).not.toContain(expect.stringContaining('.tmp-'));
  });

  it('llama.cpp answers the paper prompts on the Q8_0 file as on the Q4_1 one', async () => {
    await requantizeGgufToQ8_0(q4, q8);
    const logOdds = async (path: string) => {
      const llm = await loadLlm(resolveLlmConfig({ model: path, threads: 1, contextSize: 512 }));
      const scorer = await LlmScorer.create(
        llm,
        resolveLlmConfig({ model: path, threads: 1, contextSize: 512 }),
      );
      try {
        const prompts = paperPrompts(
          llm,
          [
            { title: 'Toy Story (1995)', rating: 5 },
            { title: 'Heat (1995)', rating: 2 },
          ],
          ['The Matrix (1999)', 'Alien (1979)', 'Casino (1995)', 'Fargo (1996)'],
        );
        return (await scorer.score(prompts)).map((s) => s.logOdds);
      } finally {
        await scorer.dispose();
        await llm.dispose();
      }
    };
    const [a, b] = [await logOdds(q4), await logOdds(q8)];
    // Not the same bits: every weight moved by up to half a Q8_0 step (~0.4% of its block's largest), and
    // the tiny model's random weights amplify that more than a trained model does (measured here: 0.03–0.18
    // on log-odds spread over 5.2; SmolLM2's figures are in docs/llm-branch.md). The answers keep their order.
    const spread = Math.max(...a) - Math.min(...a);
    expect(spread).toBeGreaterThan(1);
    for (let i = 0; i < a.length; i++) expect(Math.abs(b[i] - a[i])).toBeLessThan(0.05 * spread);
    const order = (x: number[]) => x.map((_, i) => i).sort((i, j) => x[i] - x[j]);
    expect(order(b)).toEqual(order(a));
    expect(b).not.toEqual(a);
  });

  it('refuses to overwrite its source, and a file that is not GGUF, leaving nothing behind', async () => {
    await expect(requantizeGgufToQ8_0(q4, q4)).rejects.toMatchObject({ code: 'BAD_CONFIG' });
    const junk = join(dir, 'junk.gguf');
    await writeFile(junk, 'not a model');
    await expect(requantizeGgufToQ8_0(junk, join(dir, 'junk.Q8_0.gguf'))).rejects.toMatchObject({
      code: 'BAD_MODEL_FILE',
    });
    await expect(requantizeGgufToQ8_0(q4, join(dir, 'missing-folder', 'x.gguf'))).rejects.toThrow();
    expect((await readdir(dir)).filter((n) => n.includes('.tmp-') || n.startsWith('junk.Q8_0'))).toEqual([]);
  });
});

describe('corella llm requantize', () => {
  it('names the output after the source and writes it', async () => {
    expect(q8OutputPath('/m/SmolLM2-135M-Instruct.Q4_1.gguf')).toBe('/m/SmolLM2-135M-Instruct.Q8_0.gguf');
    expect(q8OutputPath('/m/smollm2-q4_0.gguf')).toBe('/m/smollm2-Q8_0.gguf');
    expect(q8OutputPath('/m/model.gguf')).toBe('/m/model.Q8_0.gguf');
    const out = join(dir, 'by-cli.gguf');
    expect(await main(['llm', 'requantize', q4, '--out', out, '--json'])).toBe(0);
    expect((await GgufFile.open(out)).meta('general.architecture')).toBe('llama');
    expect(await main(['llm', 'requantize'])).toBe(2);
    expect(await main(['llm', 'requantise', q4])).toBe(2);
  });
});
