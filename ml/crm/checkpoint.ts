import type { ArtifactStore } from '../artifacts/store.js';
import { CorellaError } from '../errors.js';
import type { Adam } from './adam.js';
import type { CrmNet } from './model.js';
import { decodeTensorFile, encodeTensorFile } from './tensor-file.js';
import type { TensorEntry } from './tensor-file.js';
import type { EpochRecord } from './trainer.js';
import type { CrmConfig } from './types.js';
import { readWeights, writeWeights } from './weights.js';

const CHECKPOINT_KIND = 'corella-crm-checkpoint';
const CHECKPOINT_VERSION = 1;
const SHA_RE = /^[0-9a-f]{64}$/;

/** Trainer state after a completed epoch. */
export interface CheckpointState {
  /** Epochs completed (= the next epoch to run). */
  nextEpoch: number;
  step: number;
  lr: number;
  bestValidAuc: number;
  bestEpoch: number;
  badEpochs: number;
  history: EpochRecord[];
}

/** What the named checkpoint pointer holds. */
export interface CheckpointPointer {
  sha256: string;
  epoch: number;
}

export async function saveCheckpoint(
  opts: { store: ArtifactStore; checkpointKey?: string },
  model: CrmNet,
  adam: Adam,
  config: CrmConfig,
  featureMapId: string,
  state: CheckpointState,
  best: TensorEntry[],
  backend: string,
): Promise<string> {
  const optimizer = adam.exportState();
  const tensors: TensorEntry[] = [
    ...readWeights(model).map((t) => ({ ...t, name: `w/${t.name}` })),
    ...best.map((t) => ({ ...t, name: `best/${t.name}` })),
    ...optimizer.tensors,
  ];
  // JSON has no ±Infinity: before the first evaluation bestValidAuc is -Infinity.
  const header = {
    kind: CHECKPOINT_KIND,
    version: CHECKPOINT_VERSION,
    config,
    featureMapId,
    backend,
    state: { ...state, bestValidAuc: Number.isFinite(state.bestValidAuc) ? state.bestValidAuc : null },
    optimizer: { step: optimizer.step, lr: optimizer.lr },
  };
  const ref = await opts.store.put(encodeTensorFile(header, tensors));
  if (opts.checkpointKey) {
    const pointer: CheckpointPointer = { sha256: ref.sha256, epoch: state.nextEpoch - 1 };
    await opts.store.putNamed(opts.checkpointKey, JSON.stringify(pointer));
  }
  return ref.sha256;
}

async function readPointer(store: ArtifactStore, key: string): Promise<string | undefined> {
  const raw = await store.getNamed(key);
  if (!raw) return undefined;
  let p: Partial<CheckpointPointer>;
  try {
    p = JSON.parse(raw.toString('utf8')) as Partial<CheckpointPointer>;
  } catch {
    throw new CorellaError('BAD_MODEL_FILE', `checkpoint pointer ${key} is not JSON`);
  }
  if (typeof p.sha256 !== 'string' || !SHA_RE.test(p.sha256))
    throw new CorellaError('BAD_MODEL_FILE', `checkpoint pointer ${key} has no sha256`);
  return p.sha256;
}

async function resolveResume(opts: {
  store: ArtifactStore;
  checkpointKey?: string;
  resumeFrom?: string;
}): Promise<string | undefined> {
  const r = opts.resumeFrom;
  if (r === undefined) return undefined;
  if (r === 'latest') {
    if (!opts.checkpointKey)
      throw new CorellaError('BAD_CONFIG', "resumeFrom 'latest' needs a checkpointKey");
    return readPointer(opts.store, opts.checkpointKey);
  }
  if (SHA_RE.test(r)) return r;
  const sha = await readPointer(opts.store, r);
  if (!sha) throw new CorellaError('ARTIFACT_NOT_FOUND', `no checkpoint is stored under ${r}`);
  return sha;
}

/** Restores model, optimizer and trainer state from the checkpoint `opts.resumeFrom` names, if any. */
export async function loadCheckpoint(
  opts: { store: ArtifactStore; checkpointKey?: string; resumeFrom?: string },
  model: CrmNet,
  adam: Adam,
  config: CrmConfig,
  featureMapId: string,
): Promise<{ state: CheckpointState; best: TensorEntry[]; sha256: string } | undefined> {
  const sha = await resolveResume(opts);
  if (!sha) return undefined;
  const what = `CRM checkpoint ${sha}`;
  const { header, tensors } = decodeTensorFile(await opts.store.get(sha), what);
  if (header.kind !== CHECKPOINT_KIND || header.version !== CHECKPOINT_VERSION) {
    throw new CorellaError('BAD_MODEL_FILE', `${what}: not a version-${CHECKPOINT_VERSION} CRM checkpoint`);
  }
  if (header.featureMapId !== featureMapId) {
    throw new CorellaError(
      'FEATURE_MAP_MISMATCH',
      `${what} belongs to feature map ${String(header.featureMapId)}, the dataset uses ${featureMapId}`,
      {
        details: { checkpointFeatureMapId: header.featureMapId, datasetFeatureMapId: featureMapId },
      },
    );
  }
  if (JSON.stringify(header.config) !== JSON.stringify(config)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${what} was trained with config ${JSON.stringify(header.config)}, not ${JSON.stringify(config)}`,
    );
  }
  writeWeights(model, tensors, what, 'w/');
  const named = model.namedVariables();
  adam.importState(header.optimizer as { step: number; lr: number }, tensors, named);
  const raw = header.state as CheckpointState & { bestValidAuc: number | null };
  const state: CheckpointState = { ...raw, bestValidAuc: raw.bestValidAuc ?? -Infinity };
  const best: TensorEntry[] = [];
  for (const { name } of named) {
    const t = tensors.get(`best/${name}`);
    if (t) best.push({ ...t, name });
  }
  return { state, best, sha256: sha };
}
