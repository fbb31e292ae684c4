import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { resolveLlmConfig, type LlmConfig } from '../../../ml/llm/config.js';
import { llamaFor, loadLlm } from '../../../ml/llm/model.js';
import { sha256File } from '../../../ml/artifacts/store.js';
import { writeTinyGguf } from '../../helpers/tiny-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-llm-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function loadError(cfg: LlmConfig): Promise<CorellaError> {
  try {
    const llm = await loadLlm(resolveLlmConfig({ threads: 1, ...cfg }));
    await llm.dispose();
  } catch (e) {
    expect(e).toBeInstanceOf(CorellaError);
    return e as CorellaError;
  }
  throw new Error('expected loading to fail');
}

describe('loadLlm', () => {
  it('loads a GGUF file, identifies it by sha256 and finds the answer tokens', async () => {
    const path = join(dir, 'ok.gguf');
    writeTinyGguf(path, { seed: 3, nEmbd: 48 });
    const llm = await loadLlm(resolveLlmConfig({ model: path, threads: 1 }));
    try {
      expect(llm.modelSha256).toBe(await sha256File(path));
      expect(llm.hiddenDim).toBe(48);
      expect(llm.model.detokenize([llm.yesToken])).toBe('Yes');
      expect(llm.model.detokenize([llm.noToken])).toBe('No');
      expect(llm.yesToken).not.toBe(llm.noToken);
    } finally {
      await llm.dispose();
    }
  });

  it('writes byte-identical files for the same seed and different ones for another seed', async () => {
    writeTinyGguf(join(dir, 'a.gguf'), { seed: 5 });
    writeTinyGguf(join(dir, 'b.gguf'), { seed: 5 });
    writeTinyGguf(join(dir, 'c.gguf'), { seed: 6 });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => sha256File(join(dir, `${n}.gguf`))));
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it('rejects a missing file with BAD_MODEL_FILE naming the path', async () => {
    const missing = join(dir, 'nope.gguf');
    const e = await loadError({ model: missing });
    expect(e.code).toBe('BAD_MODEL_FILE');
    expect(e.message).toContain(missing);
    expect(e.message).toMatch(/does not exist/);
  });

  it('rejects a file that is not GGUF', async () => {
    const path = join(dir, 'text.gguf');
    writeFileSync(path, 'this is not a model\n');
    const e = await loadError({ model: path });
    expect(e.code).toBe('BAD_MODEL_FILE');
    expect(e.message).toMatch(/not a GGUF file/);
  });

  it('rejects a truncated GGUF file', async () => {
    const path = join(dir, 'truncated.gguf');
    writeFileSync(path, Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0, 9, 9])]));
    const e = await loadError({ model: path });
    expect(e.code).toBe('BAD_MODEL_FILE');
    expect(e.message).toContain(path);
  });

  it('rejects a model whose vocabulary lacks the answer words', async () => {
    const path = join(dir, 'noanswers.gguf');
    writeTinyGguf(path, { withoutAnswerWords: true });
    const e = await loadError({ model: path });
    expect(e.code).toBe('BAD_MODEL_FILE');
    expect(e.message).toMatch(/no single token for the answer word "Yes"/);
  });

  it('rejects a missing LoRA adapter before loading anything', async () => {
    const path = join(dir, 'ok2.gguf');
    writeTinyGguf(path);
    const e = await loadError({ model: path, lora: { path: join(dir, 'adapter.gguf'), scale: 0.5 } });
    expect(e.code).toBe('BAD_MODEL_FILE');
    expect(e.message).toMatch(/LoRA adapter .*adapter\.gguf does not exist/);
  });

  it('fails with GPU_UNAVAILABLE when a GPU backend is requested on a machine without one', async () => {
    // Which backends exist decides the expectation: this test runs on CPU-only CI and on GPU machines.
    const cpu = await llamaFor(false);
    const gpus = await cpu.getGpuDeviceNames();
    for (const gpu of ['cuda', 'vulkan'] as const) {
      let outcome: string;
      try {
        const l = await llamaFor(gpu);
        outcome = l.gpu === gpu ? 'ok' : 'wrong-backend';
      } catch (e) {
        outcome = e instanceof CorellaError ? e.code : String(e);
        if (e instanceof CorellaError)
          expect(e.message).toMatch(new RegExp(`${gpu}.*(not available|no ${gpu} device)`));
      }
      expect(['ok', 'GPU_UNAVAILABLE']).toContain(outcome);
      if (gpus.length === 0 && cpu.gpu === false) expect(outcome).toBe('GPU_UNAVAILABLE');
    }
  });

  it('validates the config with BAD_CONFIG naming the field', () => {
    expect(() => resolveLlmConfig({ model: 'x.gguf', threads: 0 })).toThrow(/threads/);
    expect(() => resolveLlmConfig({ model: 'x.gguf', gpu: 'metal' as never })).toThrow(/field gpu/);
    expect(() => resolveLlmConfig({ model: 'x.gguf', answers: { yes: 'Yes', no: 'Yes' } })).toThrow(
      /answers/,
    );
  });
});
