import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { trainCrm } from '../../../ml/crm/trainer.js';
import { initTf } from '../../../ml/tf/backend.js';
import { syntheticDataset } from './fixtures.js';

const ds = syntheticDataset({ rows: 3000, dense: 1 });
let dir: string;
let store: FileArtifactStore;

describe('two-thread training', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
    dir = await mkdtemp(join(tmpdir(), 'corella-crm-par-'));
    store = new FileArtifactStore(dir);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('without dropout, follows the single-threaded run (the halves combine to the full-batch gradient)', async () => {
    // Odd batch size: the halves differ in size, so their weighting matters.
    const config = defaultCrmConfig('dcnv2', {
      embeddingDim: 4,
      crossLayers: 2,
      mlp: [16, 8],
      dropout: 0,
      seed: 5,
    });
    const opts = { store, epochs: 2, batchSize: 101, lr: 0.005, patience: 3, lrDecay: 0.5 };
    const one = await trainCrm(ds, config, { ...opts, threads: 1 });
    const two = await trainCrm(ds, config, { ...opts, threads: 2 });
    two.history.forEach((h, i) => {
      expect(h.trainLoss).toBeCloseTo(one.history[i].trainLoss, 3);
      expect(h.validAuc).toBeCloseTo(one.history[i].validAuc, 2);
    });
    const p1 = await one.model.predict(ds.splits.test);
    const p2 = await two.model.predict(ds.splits.test);
    let maxDiff = 0;
    p1.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - p2[i]))));
    expect(maxDiff).toBeLessThan(5e-3);
    one.model.dispose();
    two.model.dispose();
  });
});
