/**
 * Ingestion benchmark on the real MovieLens-1M subset (users 1–2999, 487,650 ratings).
 * Usage: npx tsx bench/ingest.ts [dir]   — prints one JSON line.
 * The store goes to a temporary folder that is removed afterwards (nothing derived from the real files
 * may end up in the repository).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { ingestDataset, loadDataset, SPLITS } from '../ml/data/index.js';

async function splitBytes(
  store: FileArtifactStore,
  m: { splitArtifacts: Record<string, string> },
): Promise<number> {
  let total = 0;
  for (const id of Object.values(m.splitArtifacts)) total += (await stat(await store.localPath(id))).size;
  return total;
}

const dir = resolve(process.argv[2] ?? join(import.meta.dirname, '../../shared/datasets/ml-1m-u2999'));
const root = await mkdtemp(join(tmpdir(), 'corella-bench-ingest-'));
try {
  const store = new FileArtifactStore(root);
  const t0 = performance.now();
  // Seconds at which each stage started, from the progress reports.
  const stages: Record<string, number> = {};
  const manifest = await ingestDataset({ source: 'movielens-1m', dir }, store, {
    onProgress: (p) => {
      stages[p.stage] ??= Number(((performance.now() - t0) / 1000).toFixed(3));
    },
  });
  const wallSec = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  await loadDataset(store, manifest);
  const loadSec = (performance.now() - t1) / 1000;
  const samplesPerSplit = Object.fromEntries(SPLITS.map((s) => [s, manifest.stats[s].size]));
  const positiveRates = Object.fromEntries(
    SPLITS.map((s) => [s, Number(manifest.stats[s].positiveRate.toFixed(4))]),
  );
  console.log(
    JSON.stringify({
      dir,
      wallSec: Number(wallSec.toFixed(3)),
      loadSec: Number(loadSec.toFixed(3)),
      samplesPerSplit,
      positiveRates,
      dropped: manifest.dropped,
      stages,
      artifactMB: Number(
        (
          SPLITS.reduce((s, n) => s + manifest.stats[n].size, 0) &&
          (await splitBytes(store, manifest)) / 2 ** 20
        ).toFixed(1),
      ),
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      versionId: manifest.versionId,
    }),
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
