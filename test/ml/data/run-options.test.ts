import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { ingestDataset } from '../../../ml/data/index.js';
import type { Progress } from '../../../ml/progress.js';
import { listFiles, movielensLines, tempDir, writeMovielens } from '../../helpers/datasets.js';

describe('ingestDataset run options', () => {
  it('reports progress through every stage', async () => {
    const dir = await writeMovielens(await tempDir(), movielensLines());
    const seen: Progress[] = [];
    await ingestDataset({ source: 'movielens-1m', dir }, new FileArtifactStore(join(dir, 'store')), {
      onProgress: (p) => {
        seen.push(p);
      },
    });
    const stages = [...new Set(seen.map((p) => p.stage))];
    expect(stages).toEqual(['ingest:parse', 'ingest:build', 'ingest:encode', 'ingest:write', 'ingest:done']);
  });

  it('stops when cancelled and writes nothing', async () => {
    const dir = await writeMovielens(await tempDir(), movielensLines());
    const storeDir = join(dir, 'store');
    const ac = new AbortController();
    const run = ingestDataset({ source: 'movielens-1m', dir }, new FileArtifactStore(storeDir), {
      signal: ac.signal,
      onProgress: (p) => {
        if (p.stage === 'ingest:encode') ac.abort(new Error('user cancelled'));
      },
    });
    await expect(run).rejects.toThrow('user cancelled');
    expect(await listFiles(storeDir)).toEqual([]);
  });

  it('rejects invalid options with BAD_CONFIG', async () => {
    const dir = await writeMovielens(await tempDir(), movielensLines());
    const store = new FileArtifactStore(join(dir, 'store'));
    for (const bad of [
      { historyLen: 0 },
      { minHistory: -1 },
      { split: [0, 0.5, 0.5] as [number, number, number] },
    ]) {
      await expect(ingestDataset({ source: 'movielens-1m', dir, ...bad }, store)).rejects.toMatchObject({
        code: 'BAD_CONFIG',
      });
    }
  });
});
