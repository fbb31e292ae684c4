import { loadDataset, loadManifest, type CtrDataset } from '../ml/data/index.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { CorellaError } from '../ml/errors.js';

// Several stages of one run load the same dataset version in the same worker: keep the last one decoded.
let cached: { versionId: string; dataset: Promise<CtrDataset> } | undefined;

/** A dataset version from the artifact store, by the manifest's version id. */
export function datasetForVersion(store: ArtifactStore, versionId: string): Promise<CtrDataset> {
  if (cached?.versionId === versionId) return cached.dataset;
  const dataset = (async () => {
    const manifest = await loadManifest(store, versionId);
    if (!manifest) {
      throw new CorellaError(
        'ARTIFACT_NOT_FOUND',
        `dataset version ${versionId} has no manifest in the artifact store`,
        {
          retryable: false,
        },
      );
    }
    return loadDataset(store, manifest);
  })();
  cached = { versionId, dataset };
  dataset.catch(() => {
    if (cached?.dataset === dataset) cached = undefined;
  });
  return dataset;
}
