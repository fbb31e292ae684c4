import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBranchExtractor } from '../../activities/llm-branch.js';
import { FileArtifactStore, sha256File } from '../../ml/artifacts/store.js';
import { LoraHead, type LoraHeadFile } from '../../ml/corella/llm-branch-model.js';
import { CorellaError } from '../../ml/errors.js';
import { writeTinyGguf, writeTinyLoraGguf } from '../helpers/tiny-gguf.js';

/**
 * How a worker opens a LoRA version's LLM branch (activities/llm-branch.ts): the LoRA comes from the store
 * by sha256 and applies only to its own base model; a mismatch is a typed error before any feature is read.
 */
describe('openBranchExtractor with a LoRA head', () => {
  let dir: string;
  let store: FileArtifactStore;
  let modelPath: string;
  let modelSha: string;
  const head = (over: Partial<LoraHeadFile>): LoraHead =>
    new LoraHead({
      kind: 'corella-llm-branch',
      version: 1,
      branch: 'lora',
      loraSha256: '0'.repeat(64),
      baseModelSha256: modelSha,
      template: 'paper',
      head: { a: 1, b: 0 },
      lora: { firstLayer: 0, rank: 4, alpha: 4, targets: ['q', 'v'] },
      ...over,
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-branch-open-'));
    store = new FileArtifactStore(join(dir, 'artifacts'));
    modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 3 });
    modelSha = await sha256File(modelPath);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const config = () => ({ llm: { model: modelPath, threads: 1, contextSize: 256 } });

  it('opens the base model with the LoRA fetched from the store, keyed by its sha256', async () => {
    const loraPath = join(dir, 'fits.gguf');
    writeTinyLoraGguf(loraPath, { seed: 4 });
    const lora = await store.putFile(loraPath);
    const ex = await openBranchExtractor(config(), { home: dir, store }, head({ loraSha256: lora.sha256 }));
    try {
      expect(ex.modelSha256).toBe(modelSha);
      expect(ex.config.lora?.path).toBe(await store.localPath(lora.sha256));
      // The feature cache is the LoRA's own, not the frozen model's.
      const frozen = await openBranchExtractor(config(), { home: dir, store }, undefined);
      expect(ex.cache.indexName).not.toBe(frozen.cache.indexName);
      await frozen.dispose();
    } finally {
      await ex.dispose();
    }
  });

  it('refuses a head trained on another base model, and a LoRA whose tensors do not fit, by name', async () => {
    const loraPath = join(dir, 'fits2.gguf');
    writeTinyLoraGguf(loraPath, { seed: 5 });
    const lora = await store.putFile(loraPath);
    const other = await openBranchExtractor(
      config(),
      { home: dir, store },
      head({ loraSha256: lora.sha256, baseModelSha256: 'e'.repeat(64) }),
    ).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(CorellaError);
    expect(other).toMatchObject({ code: 'BAD_MODEL_FILE', details: { field: 'baseModelSha256' } });
    expect((other as Error).message).toMatch(/was trained on base model eeeeeeeeeeee…, not the run's model/);

    // Same base sha256 recorded, but a LoRA of a wider model: checkLoraForBase names the tensor.
    const wide = join(dir, 'wide.gguf');
    writeTinyLoraGguf(wide, { seed: 6, nEmbd: 48 });
    const w = await store.putFile(wide);
    const misfit = await openBranchExtractor(
      config(),
      { home: dir, store },
      head({ loraSha256: w.sha256 }),
    ).catch((e: unknown) => e);
    expect(misfit).toBeInstanceOf(CorellaError);
    expect((misfit as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((misfit as Error).message).toMatch(
      /does not fit base model .*: blk\.\d\.attn_[qv]\.weight: lora_a \[48, 4\]/,
    );

    // A LoRA missing from the store is named as such.
    const gone = await openBranchExtractor(
      config(),
      { home: dir, store },
      head({ loraSha256: 'd'.repeat(64) }),
    ).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(CorellaError);
    expect((gone as Error).message).toMatch(/GGUF LoRA adapter/);
  });
});
