import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { loadCrm, saveCrm } from '../../../ml/crm/persist.js';
import { trainCrm } from '../../../ml/crm/trainer.js';
import type { TrainCrmOptions } from '../../../ml/crm/trainer.js';
import { CorellaError } from '../../../ml/errors.js';
import { auc } from '../../../ml/metrics/index.js';
import type { Progress } from '../../../ml/progress.js';
import { initTf } from '../../../ml/tf/backend.js';
import { syntheticDataset } from './fixtures.js';

const ds = syntheticDataset({ rows: 6000, dense: 1 });
const config = defaultCrmConfig('dcnv2', {
  embeddingDim: 4,
  crossLayers: 2,
  mlp: [16, 8],
  dropout: 0.1,
  seed: 9,
});
let dir: string;
let store: FileArtifactStore;

const base = (): Omit<TrainCrmOptions, 'store'> => ({
  epochs: 3,
  batchSize: 128,
  lr: 0.01,
  patience: 3,
  lrDecay: 0.5,
});

describe('trainCrm', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
    dir = await mkdtemp(join(tmpdir(), 'corella-crm-'));
    store = new FileArtifactStore(dir);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('learns the synthetic signal, beats LR, checkpoints every epoch and is reproducible', async () => {
    const progress: Progress[] = [];
    const a = await trainCrm(ds, config, {
      ...base(),
      store,
      checkpointKey: 'runs/a/crm',
      onProgress: (p) => void progress.push(p),
    });
    const test = ds.splits.test;
    const pa = await a.model.predict(test);
    expect(a.history).toHaveLength(3);
    expect(auc(test.labels, pa)).toBeGreaterThan(0.62);
    const checkpoints = progress.filter((p) => p.checkpoint).map((p) => p.checkpoint);
    expect(checkpoints).toHaveLength(3);
    expect(new Set(checkpoints).size).toBe(3);
    expect(JSON.parse((await store.getNamed('runs/a/crm'))!.toString()).sha256).toBe(a.checkpoint);
    expect(a.backend).toBe('wasm');

    const b = await trainCrm(ds, config, { ...base(), store });
    const pb = await b.model.predict(test);
    expect(Array.from(pb)).toEqual(Array.from(pa));

    const lr = await trainCrm(ds, defaultCrmConfig('lr'), { ...base(), store });
    const plr = await lr.model.predict(test);
    expect(auc(test.labels, pa)).toBeGreaterThan(auc(test.labels, plr) + 0.03);
    [a, b, lr].forEach((r) => r.model.dispose());
  });

  it('resumed from a mid-run checkpoint, ends where the uninterrupted run ends', async () => {
    const full = await trainCrm(ds, config, { ...base(), store });
    const ctl = new AbortController();
    const err = await trainCrm(ds, config, {
      ...base(),
      store,
      checkpointKey: 'runs/resume/crm',
      signal: ctl.signal,
      onProgress: (p) => {
        if (p.checkpoint) ctl.abort(new Error('interrupted after a checkpoint'));
      },
    }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/interrupted/);
    const pointer = JSON.parse((await store.getNamed('runs/resume/crm'))!.toString()) as { epoch: number };
    expect(pointer.epoch).toBe(0);

    const resumed = await trainCrm(ds, config, {
      ...base(),
      store,
      checkpointKey: 'runs/resume/crm',
      resumeFrom: 'latest',
    });
    expect(resumed.history.map((h) => h.epoch)).toEqual([0, 1, 2]);
    resumed.history.forEach((h, i) => expect(h.validAuc).toBeCloseTo(full.history[i].validAuc, 5));
    const pf = await full.model.predict(ds.splits.test);
    const pr = await resumed.model.predict(ds.splits.test);
    pf.forEach((v, i) => expect(Math.abs(v - pr[i])).toBeLessThan(1e-5));
    full.model.dispose();
    resumed.model.dispose();
  });

  it('decays the learning rate on every plateau epoch and stops after `patience` of them', async () => {
    // Labels shuffled against features: validation AUC only wanders, so plateaus happen.
    const noisy = syntheticDataset({ rows: 1500, seed: 3 });
    const labels = noisy.splits.valid.labels;
    for (let i = labels.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [labels[i], labels[j]] = [labels[j], labels[i]];
    }
    const r = await trainCrm(noisy, config, {
      ...base(),
      store,
      epochs: 12,
      patience: 2,
      lrDecay: 0.5,
      lr: 0.02,
    });
    let bad = 0;
    let best = -Infinity;
    r.history.forEach((h, i) => {
      const next = r.history[i + 1];
      if (h.validAuc > best) {
        best = h.validAuc;
        bad = 0;
        if (next) expect(next.lr).toBe(h.lr);
      } else {
        bad++;
        if (next) expect(next.lr).toBeCloseTo(h.lr * 0.5, 12);
      }
    });
    expect(r.stoppedEarly).toBe(true);
    expect(bad).toBe(2);
    expect(r.epochsRun).toBe(r.history.length);
    expect(r.epochsRun).toBeLessThan(12);
    expect(r.bestValidAuc).toBe(best);
    expect(r.history[r.bestEpoch].validAuc).toBe(best);
    r.model.dispose();
  });

  it('saves and loads a model with its feature map id; another feature map is refused', async () => {
    const r = await trainCrm(ds, config, { ...base(), epochs: 1, store });
    const ref = await saveCrm(r.model, store, { note: 'test' });
    const loaded = await loadCrm(store, ref.sha256, ds.featureMap);
    const p1 = await r.model.predict(ds.splits.test);
    const p2 = await loaded.predict(ds.splits.test);
    expect(Array.from(p2)).toEqual(Array.from(p1));
    expect(loaded.config).toEqual(r.model.config);

    const other = { ...ds.featureMap, id: 'fm-other' };
    const err = await loadCrm(store, ref.sha256, other).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('FEATURE_MAP_MISMATCH');

    const junk = await store.put('not a model');
    const err2 = await loadCrm(store, junk.sha256, ds.featureMap).catch((e: unknown) => e);
    expect((err2 as CorellaError).code).toBe('BAD_MODEL_FILE');
    r.model.dispose();
    loaded.dispose();
  });

  it('refuses to resume a checkpoint trained with another config, and bad options', async () => {
    const r = await trainCrm(ds, config, { ...base(), epochs: 1, store, checkpointKey: 'runs/cfg/crm' });
    r.model.dispose();
    const err = await trainCrm(
      ds,
      { ...config, embeddingDim: 8 },
      { ...base(), store, resumeFrom: r.checkpoint },
    ).catch((e: unknown) => e);
    expect((err as CorellaError).code).toBe('BAD_CONFIG');
    const err2 = await trainCrm(ds, config, { ...base(), store, batchSize: 0 }).catch((e: unknown) => e);
    expect((err2 as CorellaError).message).toMatch(/batchSize/);
    const err3 = await trainCrm(ds, config, { ...base(), store, resumeFrom: 'runs/none/crm' }).catch(
      (e: unknown) => e,
    );
    expect((err3 as CorellaError).code).toBe('ARTIFACT_NOT_FOUND');
  });
});
