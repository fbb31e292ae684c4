import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { AUTO_THREADS_CAP, chooseCrmThreads } from '../../../ml/crm/threads.js';
import { trainCrm } from '../../../ml/crm/trainer.js';
import { initTf } from '../../../ml/tf/backend.js';
import { activeNativeAddon } from '../../../ml/tf/kernels/native-kernels.js';
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
    const two = await trainCrm(ds, config, { ...opts, threads: 2, dataParallel: true });
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

  it('on the native pool, 2 threads train the very same model as 1 and put the pool back as they found it', async (ctx) => {
    const addon = activeNativeAddon();
    if (!addon) {
      // Without the addon there is no pool (the native kernel tests fail in CI when it is missing).
      console.warn('native addon not built: the pool trainer test checks nothing');
      ctx.skip();
      return;
    }
    const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 2, mlp: [64, 32], seed: 9 });
    // Batches of 1024: large enough that the kernels split their rows across the pool.
    const big = syntheticDataset({ users: 300, items: 400, rows: 5000, dense: 1 });
    const opts = { store, epochs: 1, batchSize: 1024, lr: 0.005, patience: 1, lrDecay: 0.5 };
    const regions = addon.poolStats().regions;
    const one = await trainCrm(big, config, { ...opts, threads: 1 });
    expect(addon.poolStats().regions).toBe(regions);
    const two = await trainCrm(big, config, { ...opts, threads: 2 });
    expect(addon.poolStats().regions).toBeGreaterThan(regions);
    expect(addon.threads()).toBe(1);
    expect([one.threads, two.threads]).toEqual([1, 2]);
    expect(two.history[0].trainLoss).toBe(one.history[0].trainLoss);
    expect(two.history[0].validAuc).toBe(one.history[0].validAuc);
    expect(await two.model.predict(big.splits.test)).toEqual(await one.model.predict(big.splits.test));
    one.model.dispose();
    two.model.dispose();
  });

  it("threads 'auto' is decided once from the machine and reported; a bad count is a BAD_CONFIG naming threads", async () => {
    const config = defaultCrmConfig('dcnv2', { embeddingDim: 4, crossLayers: 1, mlp: [8], seed: 3 });
    const messages: string[] = [];
    const opts = { store, epochs: 1, batchSize: 256, lr: 0.005, patience: 1, lrDecay: 0.5 };
    const auto = await trainCrm(ds, config, {
      ...opts,
      threads: 'auto',
      onProgress: (p) => void (p.message && messages.push(p.message)),
    });
    expect(auto.threadsReason).toMatch(
      /^crm\.threads auto: \d+ \(\d+ cores available, load average [\d.]+, cap 4\)$/,
    );
    expect(messages[0]).toContain(auto.threadsReason);
    auto.model.dispose();
    await expect(trainCrm(ds, config, { ...opts, threads: 0 })).rejects.toMatchObject({
      code: 'BAD_CONFIG',
      details: { field: 'threads' },
    });
  });
});

describe('chooseCrmThreads', () => {
  it("'auto' takes the cores this process may use, loaded or not, at most the cap; a number is taken as is", () => {
    expect(chooseCrmThreads('auto', { cores: 2, load1: 0.3 }).threads).toBe(2);
    // the blocking pool at 2 threads outran 1 thread at the same CPU per step at load 12-14 (docs/crm-speed.md)
    expect(chooseCrmThreads('auto', { cores: 2, load1: 1.2 }).threads).toBe(2);
    expect(chooseCrmThreads('auto', { cores: 2, load1: 11 })).toEqual({
      threads: 2,
      reason: 'crm.threads auto: 2 (2 cores available, load average 11.00, cap 4)',
    });
    expect(chooseCrmThreads('auto', { cores: 1, load1: 0 }).threads).toBe(1);
    expect(chooseCrmThreads('auto', { cores: 64, load1: 3 }).threads).toBe(AUTO_THREADS_CAP);
    expect(chooseCrmThreads('auto', { cores: 8, load1: 5.6 }).threads).toBe(AUTO_THREADS_CAP);
    expect(chooseCrmThreads(3, { cores: 2, load1: 11 })).toEqual({ threads: 3, reason: 'crm.threads 3' });
    expect(() => chooseCrmThreads(65)).toThrow(/threads/);
    expect(() => chooseCrmThreads(1.5)).toThrow(/threads/);
  });
});
