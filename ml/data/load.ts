import { CorellaError } from '../errors.js';
import type { ArtifactStore } from '../artifacts/store.js';
import { verifyFeatureMap } from './feature-map.js';
import { manifestName } from './ingest.js';
import { decodeSplit } from './split-codec.js';
import { SPLITS } from './types.js';
import type { CtrDataset, DatasetManifest, EncodedSplit, FeatureMap, ItemTable, SplitName } from './types.js';

function parseJson<T>(buf: Buffer, what: string): T {
  try {
    return JSON.parse(buf.toString('utf8')) as T;
  } catch {
    throw new CorellaError('ARTIFACT_CORRUPT', `${what} artifact is not valid JSON`);
  }
}

/** The feature map of a dataset version, checked against its own content hash. */
export async function loadFeatureMap(store: ArtifactStore, manifest: DatasetManifest): Promise<FeatureMap> {
  const fm = parseJson<FeatureMap>(
    await store.get(manifest.featureMapArtifact, `feature map of dataset version ${manifest.versionId}`),
    'feature map',
  );
  verifyFeatureMap(fm);
  return fm;
}

export async function loadItemTable(store: ArtifactStore, manifest: DatasetManifest): Promise<ItemTable> {
  return parseJson<ItemTable>(
    await store.get(manifest.itemTableArtifact, `item table of dataset version ${manifest.versionId}`),
    'item table',
  );
}

/**
 * One split of a dataset version. Its header records the feature map it was encoded with; a mismatch
 * with `featureMapId` (default: the version's own feature map) is FEATURE_MAP_MISMATCH.
 */
export async function loadSplit(
  store: ArtifactStore,
  manifest: DatasetManifest,
  name: SplitName,
  featureMapId?: string,
): Promise<EncodedSplit> {
  const expected = featureMapId ?? (await loadFeatureMap(store, manifest)).id;
  const { split, featureMapId: actual } = decodeSplit(
    await store.get(
      manifest.splitArtifacts[name],
      `dataset split ${name} of dataset version ${manifest.versionId}`,
    ),
  );
  if (actual !== expected) {
    throw new CorellaError(
      'FEATURE_MAP_MISMATCH',
      `split ${name} of dataset ${manifest.versionId} was encoded with feature map ${actual}, expected ${expected}`,
      { details: { expected, actual, split: name } },
    );
  }
  if (split.name !== name) {
    throw new CorellaError('ARTIFACT_CORRUPT', `artifact for split ${name} holds split ${split.name}`);
  }
  return split;
}

export async function loadDataset(store: ArtifactStore, manifest: DatasetManifest): Promise<CtrDataset> {
  const featureMap = await loadFeatureMap(store, manifest);
  const items = await loadItemTable(store, manifest);
  const splits = {} as Record<SplitName, EncodedSplit>;
  for (const name of SPLITS) splits[name] = await loadSplit(store, manifest, name, featureMap.id);
  return { manifest, featureMap, items, splits };
}

/** The manifest an earlier ingestion stored for `versionId`, or undefined. */
export async function loadManifest(
  store: ArtifactStore,
  versionId: string,
): Promise<DatasetManifest | undefined> {
  const buf = await store.getNamed(manifestName(versionId));
  return buf ? parseJson<DatasetManifest>(buf, 'dataset manifest') : undefined;
}
