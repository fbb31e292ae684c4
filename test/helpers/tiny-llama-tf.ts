import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { LlamaTf } from '../../ml/llm/tf/llama-forward.js';
import { initTf } from '../../ml/tf/backend.js';
import { writeTinyGguf } from './tiny-gguf.js';

/**
 * Registers the file's beforeAll/afterAll for the tfjs twin of the tiny test GGUF (3 blocks, grouped-query
 * attention with 2 KV heads): tfjs is initialised, the GGUF written to a temporary folder and loaded, and both
 * are disposed of afterwards. `onLoad` receives the model and the GGUF's path (its folder is the file's temporary
 * folder, removed afterwards), so a test file keeps its own `model` variable.
 */
export function useTinyLlamaTf(prefix: string, onLoad: (model: LlamaTf, path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let model: LlamaTf | undefined;
  beforeAll(async () => {
    await initTf(undefined, () => undefined);
    const path = join(dir, 'tiny.gguf');
    writeTinyGguf(path, { seed: 5, nLayer: 3, nHeadKv: 2 });
    model = await LlamaTf.load(path);
    onLoad(model, path);
  });
  afterAll(() => {
    model?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
}
