import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { LlamaTf } from '../../ml/llm/tf/llama-forward.js';
import type { LoraAdapter } from '../../ml/llm/tf/lora.js';
import { modelBlocks, type AdaptedBlocks } from '../../ml/llm/tf/lora-loss.js';
import { LoraWorkers } from '../../ml/llm/tf/lora-parallel.js';
import { currentTfBackend, initTf } from '../../ml/tf/backend.js';
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

/**
 * This thread's adapted blocks of `adapter` and two worker threads that hold the same model and adapter, for
 * the tests that compare a worker's bits with this thread's. The caller closes the workers.
 */
export function blocksAndWorkers(
  model: LlamaTf,
  adapter: LoraAdapter,
  answerTokens: [number, number],
  smoothing: number,
): { blocks: AdaptedBlocks; workers: LoraWorkers } {
  const answerRows = model.outputRows(answerTokens);
  const blocks = modelBlocks(model, adapter.firstLayer, answerRows);
  const rows = answerRows.dataSync() as Float32Array;
  const workers = new LoraWorkers(model, adapter, rows, smoothing, currentTfBackend()!.backend, 2);
  return { blocks, workers };
}
