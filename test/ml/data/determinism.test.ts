import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { ingestDataset, loadManifest } from '../../../ml/data/index.js';
import { listFiles, movielensLines, tempDir, writeMovielens } from '../../helpers/datasets.js';

async function storeBytes(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const f of await listFiles(root))
    out.set(f.slice(root.length), (await readFile(f)).toString('base64'));
  return out;
}

describe('dataset versions', () => {
  it('same inputs and params give the same version id and identical artifact bytes', async () => {
    const lines = movielensLines({ seed: 7 });
    const a = await writeMovielens(await tempDir(), lines);
    const b = await writeMovielens(await tempDir(), lines);
    const sa = join(a, 'store');
    const sb = join(b, 'store');
    const ma = await ingestDataset({ source: 'movielens-1m', dir: a }, new FileArtifactStore(sa));
    const mb = await ingestDataset({ source: 'movielens-1m', dir: b }, new FileArtifactStore(sb));
    expect(mb).toEqual(ma);
    const ba = await storeBytes(sa);
    expect(ba.size).toBe(6); // feature map, item table, 3 splits, manifest
    expect(await storeBytes(sb)).toEqual(ba);
    expect(await loadManifest(new FileArtifactStore(sa), ma.versionId)).toEqual(ma);
    // Ingesting again into the same store adds nothing.
    await ingestDataset({ source: 'movielens-1m', dir: a }, new FileArtifactStore(sa));
    expect((await storeBytes(sa)).size).toBe(6);
  });

  it('other params or other inputs give another version', async () => {
    const lines = movielensLines({ seed: 7 });
    const dir = await writeMovielens(await tempDir(), lines);
    const store = new FileArtifactStore(join(dir, 'store'));
    const base = await ingestDataset({ source: 'movielens-1m', dir }, store);
    const k = await ingestDataset({ source: 'movielens-1m', dir, historyLen: 10 }, store);
    const lbl = await ingestDataset(
      { source: 'movielens-1m', dir, labelRule: { kind: 'min', threshold: 5 } },
      store,
    );
    expect(new Set([base.versionId, k.versionId, lbl.versionId]).size).toBe(3);
    lines.ratings[0] = lines.ratings[0].replace(/::(\d)::/, (_, r: string) => `::${(Number(r) % 5) + 1}::`);
    await writeMovielens(dir, lines);
    const changed = await ingestDataset({ source: 'movielens-1m', dir }, store);
    expect(changed.versionId).not.toBe(base.versionId);
    expect(changed.inputs.find((i) => i.name === 'ratings.dat')!.sha256).not.toBe(
      base.inputs.find((i) => i.name === 'ratings.dat')!.sha256,
    );
  });
});
