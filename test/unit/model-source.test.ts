import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cachedModelFile, modelWeightTypes, slowModelHint } from '../../cli/model-source.js';
import { requantizeGgufToQ8_0 } from '../../ml/llm/tf/gguf-requantize.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

let home: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'corella-model-source-'));
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

describe('cachedModelFile', () => {
  it('takes the first .gguf by name in <home>/models, and nothing when there is none', async () => {
    expect(cachedModelFile(home)).toBeUndefined();
    await mkdir(join(home, 'models'));
    await writeFile(join(home, 'models', 'm.gguf.sha256'), 'x');
    expect(cachedModelFile(home)).toBeUndefined();
    await writeFile(join(home, 'models', 'b.Q8_0.gguf'), 'GGUF');
    await writeFile(join(home, 'models', 'a.Q4_1.gguf'), 'GGUF');
    expect(cachedModelFile(home)).toBe(join(home, 'models', 'a.Q4_1.gguf'));
  });
});

describe('modelWeightTypes', () => {
  it('counts tensor types from the header and names the 4-bit ones llama.cpp runs slowly here', async () => {
    const q4 = join(home, 'tiny.Q4_1.gguf');
    writeTinyGguf(q4, { seed: 5, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true });
    const before = await modelWeightTypes(q4);
    expect(before.slowOnCpu).toEqual(['Q4_1']);
    expect(before.types.Q4_1).toBeGreaterThan(0);
    expect(before.types.Q8_0).toBe(1); // the token embedding
    // Most frequent first, so a summary reads as the model's type.
    const counts = Object.values(before.types);
    expect([...counts].sort((a, b) => b - a)).toEqual(counts);

    const q8 = join(home, 'tiny.Q8_0.gguf');
    await requantizeGgufToQ8_0(q4, q8);
    const after = await modelWeightTypes(q8);
    expect(after.slowOnCpu).toEqual([]);
    expect(after.types.Q4_1).toBeUndefined();
    expect(after.types.Q8_0).toBe(before.types.Q4_1 + 1);
  });

  it('refuses a file that is not GGUF with BAD_MODEL_FILE', async () => {
    const bad = join(home, 'notes.gguf');
    await writeFile(bad, 'not a model');
    await expect(modelWeightTypes(bad)).rejects.toMatchObject({ code: 'BAD_MODEL_FILE' });
  });
});

describe('slowModelHint', () => {
  it('speaks up for a 4-bit model on the CPU only', async () => {
    const q4 = join(home, 'tiny.Q4_1.gguf');
    writeTinyGguf(q4, { seed: 5, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true });
    const q8 = join(home, 'tiny.Q8_0.gguf');
    await requantizeGgufToQ8_0(q4, q8);
    const bad = join(home, 'notes.gguf');
    await writeFile(bad, 'not a model');
    const at = (path: string) => ({ path, sha256: undefined, origin: 'flag' as const });
    expect(await slowModelHint(at(q4), false)).toContain(`corella llm requantize ${q4}`);
    expect(await slowModelHint(at(q4), true)).toBeUndefined();
    expect(await slowModelHint(at(q8), false)).toBeUndefined();
    // Unreadable headers and hub URIs are the LLM activity's to report, not this hint's.
    expect(await slowModelHint(at(bad), false)).toBeUndefined();
    expect(await slowModelHint(at('hf:org/repo/m.gguf'), false)).toBeUndefined();
  });
});
