/**
 * CRM benchmark on the real MovieLens-1M subset (users 1–2999): ingest (time split 80/10/10), train
 * DCNv2 (embedding 16, 3 full-rank cross layers, MLP 256-128, batch 1024) and the LR baseline, and print
 * one JSON line with throughput, epochs, test metrics and peak RSS.
 * Usage: npx tsx bench/crm.ts [dir] [--epochs N] [--backend wasm|cpu|auto] [--threads 1|2] [--infer-batch N]
 * The artifact store lives in a temporary folder removed afterwards: nothing derived from the real files
 * may end up in the repository. Numbers are noisy on shared machines: compare runs made side by side.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { defaultCrmConfig, trainCrm } from '../ml/crm/index.js';
import type { CrmConfig } from '../ml/crm/index.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import type { CtrDataset } from '../ml/data/index.js';
import { ctrMetrics } from '../ml/metrics/index.js';
import { initTf } from '../ml/tf/index.js';
import type { TfBackendChoice } from '../ml/tf/index.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const positional = process.argv
  .slice(2)
  .filter((a, i, all) => !a.startsWith('--') && !(all[i - 1] ?? '').startsWith('--'));
const dir = resolve(positional[0] ?? join(import.meta.dirname, '../../shared/datasets/ml-1m-u2999'));
const epochs = Number(arg('epochs') ?? 6);
const backendChoice = (arg('backend') ?? 'wasm') as TfBackendChoice;
const threads = (arg('threads') === '2' ? 2 : 1) as 1 | 2;
const inferBatch = Number(arg('infer-batch') ?? 4096);
if (!Number.isInteger(inferBatch) || inferBatch < 1)
  throw new Error(`--infer-batch must be a positive integer`);
const round = (x: number, d = 4) => Number(x.toFixed(d));

async function run(ds: CtrDataset, store: FileArtifactStore, config: CrmConfig, lr: number) {
  const r = await trainCrm(ds, config, {
    store,
    epochs,
    batchSize: 1024,
    lr,
    patience: 2,
    lrDecay: 0.5,
    threads,
  });
  const test = ds.splits.test;
  // Warm-up pass, then the timed one.
  await r.model.predict(
    test,
    Array.from({ length: Math.min(8192, test.size) }, (_, i) => i),
  );
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const p = await r.model.predict(test, undefined, inferBatch);
  const inferSec = (performance.now() - t0) / 1000;
  const c1 = process.cpuUsage(c0);
  const inferCpuSec = (c1.user + c1.system) / 1e6;
  const trainCpuSec = r.history.reduce((a, h) => a + h.cpuSeconds, 0);
  const m = ctrMetrics(test.labels, p, test.userRows);
  r.model.dispose();
  return {
    trainSamplesPerSec: Math.round(r.trainSamplesPerSec),
    inferSamplesPerSec: Math.round(test.size / inferSec),
    // Per CPU-second of this process: what the code achieves when it gets a core to itself.
    trainSamplesPerCpuSec: Math.round((r.history.length * ds.splits.train.size) / trainCpuSec),
    inferSamplesPerCpuSec: Math.round(test.size / inferCpuSec),
    epochsRun: r.epochsRun,
    bestEpoch: r.bestEpoch,
    validAuc: r.history.map((h) => round(h.validAuc)),
    test: {
      auc: round(m.auc),
      logLoss: round(m.logLoss),
      acc: round(m.acc),
      userAuc: round(m.userAuc ?? NaN),
    },
  };
}

const loadAtStart = os.loadavg().map((x) => round(x, 2));
const root = await mkdtemp(join(tmpdir(), 'corella-bench-crm-'));
try {
  const tf = await initTf(backendChoice, () => undefined);
  const store = new FileArtifactStore(root);
  const manifest = await ingestDataset({ source: 'movielens-1m', dir }, store);
  const ds = await loadDataset(store, manifest);
  const dcnv2 = await run(
    ds,
    store,
    defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] }),
    1e-3,
  );
  const lr = await run(ds, store, defaultCrmConfig('lr'), 1e-2);
  console.log(
    JSON.stringify({
      backend: tf.backend,
      accelerator: tf.accelerator ?? 'none',
      ...(tf.nativeReason ? { nativeReason: tf.nativeReason } : {}),
      skipped: tf.reasons,
      samples: { train: ds.splits.train.size, valid: ds.splits.valid.size, test: ds.splits.test.size },
      fields: {
        categorical: ds.featureMap.categorical.map((f) => `${f.name}:${f.vocabSize}`),
        sequences: ds.featureMap.sequences.map((f) => `${f.name}:${f.maxLen}`),
        dense: ds.featureMap.dense.length,
      },
      batchSize: 1024,
      threads,
      inferBatchSize: inferBatch,
      dcnv2,
      lr,
      dcnv2BeatsLr: dcnv2.test.auc > lr.test.auc,
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      loadAverageAtStart: loadAtStart,
      loadAverage: os.loadavg().map((x) => round(x, 2)),
    }),
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
