import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { LlmFeatureCache, type FeatureCacheKey, type FeatureChunk } from '../../../ml/llm/feature-cache.js';

const key: FeatureCacheKey = {
  modelSha256: 'a'.repeat(64),
  template: 't',
  templateText: 'Q?',
  answers: { yes: 'Yes', no: 'No' },
  contextSize: 512,
  targetReserveTokens: 8,
  hidden: false,
  flashAttention: false,
};

function chunk(ids: number[]): FeatureChunk {
  return {
    sampleIds: Uint32Array.from(ids),
    pYes: Float32Array.from(ids, (i) => i / 100),
    logOdds: Float32Array.from(ids, (i) => i / 10),
    hidden: new Float32Array(0),
    hiddenDim: 0,
  };
}

describe('LlmFeatureCache index under concurrent writers', () => {
  it('keeps every chunk when two writers of one key append at the same time', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'corella-fc-'));
    try {
      const store = new FileArtifactStore(dir);
      const a = new LlmFeatureCache(store, key);
      const b = new LlmFeatureCache(store, key);
      await Promise.all([a.load(), b.load()]);
      await Promise.all([
        (async () => {
          for (let i = 0; i < 5; i++) await a.append(chunk([i * 2]));
        })(),
        (async () => {
          for (let i = 0; i < 5; i++) await b.append(chunk([i * 2 + 1]));
        })(),
      ]);
      const reader = new LlmFeatureCache(store, key);
      await reader.load();
      expect(reader.chunkCount).toBe(10);
      for (let id = 0; id < 10; id++) expect(reader.has(id), String(id)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
