import type { ArtifactRef, ArtifactStore } from '../artifacts/store.js';
import { CorellaError } from '../errors.js';
import type { FeatureMap } from '../data/types.js';
import { ensureTf } from '../tf/backend.js';
import { CrmNet } from './model.js';
import { decodeTensorFile, encodeTensorFile } from './tensor-file.js';
import type { CrmConfig } from './types.js';
import { readWeights, writeWeights } from './weights.js';

const MODEL_KIND = 'corella-crm-model';
const MODEL_VERSION = 1;

export interface CrmModelHeader {
  kind: typeof MODEL_KIND;
  version: number;
  config: CrmConfig;
  featureMapId: string;
  /** Free-form provenance (backend, epochs, metrics) stored with the weights. */
  meta: Record<string, unknown>;
}

export function encodeCrmModel(model: CrmNet, meta: Record<string, unknown> = {}): Uint8Array {
  const header: CrmModelHeader = {
    kind: MODEL_KIND,
    version: MODEL_VERSION,
    config: model.config,
    featureMapId: model.featureMapId,
    meta,
  };
  return encodeTensorFile({ ...header }, readWeights(model));
}

/** Stores the model (config, feature map id and every variable) as one content-addressed artifact. */
export async function saveCrm(
  model: CrmNet,
  store: ArtifactStore,
  meta: Record<string, unknown> = {},
): Promise<ArtifactRef> {
  return store.put(encodeCrmModel(model, meta));
}

export function decodeCrmModel(
  buf: Uint8Array,
  featureMap: FeatureMap,
  what: string,
): { model: CrmNet; header: CrmModelHeader } {
  const { header, tensors } = decodeTensorFile(buf, what);
  if (header.kind !== MODEL_KIND)
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `${what}: not a CRM model (kind ${JSON.stringify(header.kind)})`,
    );
  if (header.version !== MODEL_VERSION)
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `${what}: unsupported CRM model version ${String(header.version)}`,
    );
  if (header.featureMapId !== featureMap.id) {
    throw new CorellaError(
      'FEATURE_MAP_MISMATCH',
      `${what} was trained on feature map ${String(header.featureMapId)}, but the dataset uses feature map ${featureMap.id}`,
      { details: { modelFeatureMapId: header.featureMapId, datasetFeatureMapId: featureMap.id } },
    );
  }
  const model = new CrmNet(header.config as CrmConfig, featureMap);
  try {
    writeWeights(model, tensors, what);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, header: header as unknown as CrmModelHeader };
}

/** Loads a model artifact; FEATURE_MAP_MISMATCH when it was trained on another feature map. */
export async function loadCrm(store: ArtifactStore, sha256: string, featureMap: FeatureMap): Promise<CrmNet> {
  await ensureTf();
  const buf = await store.get(sha256, 'CRM model');
  return decodeCrmModel(buf, featureMap, `CRM model artifact ${sha256}`).model;
}
