/**
 * A served world for the engine tests: a small synthetic MovieLens folder ingested into a real artifact
 * store, a real DCNv2 CRM trained on it (ml/crm), an adapter for the tiny GGUF's features stored as an
 * artifact, and the tiny GGUF itself (test/helpers/tiny-gguf.ts) with the synthetic title words in its
 * vocabulary. Everything seeded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { defaultCrmConfig, saveCrm, trainCrm } from '../../../ml/crm/index.js';
import type { CrmNet } from '../../../ml/crm/model.js';
import {
  GENRE_WORDS,
  generateSyntheticMovielens,
  ingestDataset,
  loadDataset,
  type CtrDataset,
} from '../../../ml/data/index.js';
import type { LlmConfig } from '../../../ml/llm/config.js';
import { AFFINITY_FEATURES } from '../../../ml/llm/item-affinity.js';
import type { ServingBundle } from '../../../ml/serving/engine.js';
import type { ScoreRequest } from '../../../ml/serving/types.js';
import { initTf } from '../../../ml/tf/index.js';
import { writeTinyGguf } from '../../helpers/tiny-gguf.js';

export interface ServedWorld {
  dir: string;
  store: FileArtifactStore;
  dataset: CtrDataset;
  crm: CrmNet;
  crmArtifact: string;
  adapterArtifact: string;
  llm: LlmConfig;
  bundle(over?: Partial<ServingBundle>): ServingBundle;
  cleanup(): Promise<void>;
}

export const TINY_HIDDEN = 32;

export async function servedWorld(
  opts: { seed?: number; itemAffinity?: boolean; users?: number; items?: number } = {},
): Promise<ServedWorld> {
  await initTf(undefined, () => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'corella-serving-'));
  const data = join(dir, 'data');
  await generateSyntheticMovielens(data, {
    seed: opts.seed ?? 3,
    users: opts.users ?? 80,
    items: opts.items ?? 120,
    ratingsPerUser: 30,
  });
  const store = new FileArtifactStore(join(dir, 'store'));
  const manifest = await ingestDataset({ source: 'synthetic-movielens', dir: data, historyLen: 20 }, store);
  const dataset = await loadDataset(store, manifest);
  const trained = await trainCrm(
    dataset,
    defaultCrmConfig('dcnv2', { embeddingDim: 4, crossLayers: 1, mlp: [16], seed: 5 }),
    { store, epochs: 2, batchSize: 128, lr: 0.02, patience: 2, lrDecay: 1 },
  );
  const crm = trained.model;
  const crmArtifact = (await saveCrm(crm, store)).sha256;
  // As trainJoint builds it: the hidden state, and the affinity columns named apart (adapter version 2).
  const affinityDim = opts.itemAffinity ? AFFINITY_FEATURES.length : 0;
  const adapter = LlmAdapter.create({ hiddenDim: TINY_HIDDEN, affinityDim, layers: [8], seed: 7 });
  const adapterArtifact = (await store.put(adapter.serialize())).sha256;
  adapter.dispose();
  const model = join(dir, 'tiny.gguf');
  writeTinyGguf(model, { seed: 4, words: Object.values(GENRE_WORDS).flat() });
  const llm: LlmConfig = {
    model,
    threads: 1,
    contextSize: 2048,
    targetReserveTokens: 16,
    itemAffinity: opts.itemAffinity ? { referenceItems: 16 } : undefined,
  };
  return {
    dir,
    store,
    dataset,
    crm,
    crmArtifact,
    adapterArtifact,
    llm,
    bundle: (over = {}) => ({
      modelVersion: '1',
      datasetVersionId: manifest.versionId,
      crmArtifact,
      adapterArtifact,
      threshold: Math.LN2,
      coldItems: false,
      llm,
      ...over,
    }),
    cleanup: async () => {
      crm.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Raw user id of a split row, or undefined when the row's user is out of the vocabulary. */
export function rawUser(ds: CtrDataset, split: 'train' | 'valid' | 'test', r: number): string | undefined {
  const s = ds.splits[split];
  const C = ds.featureMap.categorical.length;
  const uid = s.categorical[r * C];
  return uid === 0 ? undefined : ds.featureMap.vocabularies.user_id[uid];
}

/** The request a stored row stands for: its user, its target item, and its own history passed explicitly. */
export function requestOfRow(ds: CtrDataset, split: 'train' | 'valid' | 'test', r: number): ScoreRequest {
  const s = ds.splits[split];
  const K = s.historyLen;
  const history: { item: string; rating: number }[] = [];
  for (let j = 0; j < K; j++) {
    const row = s.historyItemRows[r * K + j];
    if (row < 0) continue;
    history.push({ item: ds.items.ids[row], rating: s.historyRatings[r * K + j] });
  }
  return {
    user: { id: rawUser(ds, split, r) ?? `unknown-${r}` },
    candidates: [{ item: ds.items.ids[s.targetItemRows[r]] }],
    history,
  };
}
