/**
 * Where a CRM inference batch goes, tfjs path against the fused native call (docs/crm-speed.md,
 * "Inference"), at the bench shape of bench/crm-vs-torch.ts (8 fields, dim 16, 3 cross layers, MLP 256-128,
 * batch 1024). Rounds alternate 1 and 2 pool threads in one process; per round and thread count it times
 * the tfjs forward + sigmoid + read-back on prepared batches (each native call wrapped in a JS timer, so
 * the rest is tfjs dispatch, sigmoid and read-back), `inferInto` on the tfjs path (with batch assembly, what
 * predict did), and `inferInto` on the fused call. Prints one JSON line of medians, ms per batch.
 *
 * Usage: npx tsx bench/crm-infer-profile.ts [--rounds 9]  (prefix `chrt -f 1` on a shared machine)
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { initTf } from '../ml/tf/index.js';
import { loadNative } from '../ml/tf/native.js';
import { CrmNet, defaultCrmConfig, disposeCrmBatch } from '../ml/crm/index.js';
import { uniformCategoricalSplit } from '../ml/data/uniform-categorical.js';

const VOCABS = [6040, 3706, 2, 7, 21, 3439, 18, 100];
const BATCH = 1024;
const N_BATCHES = 8;
const PER_ROUND = 100;
const roundsArg = process.argv.indexOf('--rounds');
const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 9;
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error('--rounds must be a positive integer');
  process.exit(2);
}

const init = await initTf('wasm', () => undefined);
const addon = loadNative().addon;
if (!addon) {
  console.error(`the native addon is not available: ${init.nativeReason}`);
  process.exit(3);
}
const { featureMap, split } = uniformCategoricalSplit('bench-crm-infer-profile', VOCABS, BATCH * N_BATCHES);
const model = new CrmNet(defaultCrmConfig('dcnv2'), featureMap);
const rows = Array.from({ length: N_BATCHES }, (_, k) =>
  Int32Array.from({ length: BATCH }, (_, i) => k * BATCH + i),
);
const batches = rows.map((r) => model.makeBatch(split, r));
const out = new Float32Array(BATCH);
const tfjsForward = (k: number) => {
  const p = tf.tidy(() => tf.sigmoid(model.forward(batches[k % N_BATCHES], { training: false }).logits));
  p.dataSync();
  p.dispose();
};
const tfjsInferInto = (k: number) => model.inferInto(split, rows[k % N_BATCHES], out, { path: 'tfjs' });
const fused = (k: number) => {
  if (model.inferInto(split, rows[k % N_BATCHES], out) !== 'fused')
    throw new Error('the fused path did not run');
};

// The native calls of the tfjs path (every kernel the addon exports), each wrapped in a timer.
const wrapped: Record<string, number> = {};
const calls = addon as unknown as Record<string, (...a: unknown[]) => unknown>;
const notKernels = new Set([
  'setThreads',
  'threads',
  'setBlasThreads',
  'blasThreads',
  'poolStats',
  'info',
  'crmInfer',
]);
for (const name of Object.getOwnPropertyNames(calls).filter(
  (k) => typeof calls[k] === 'function' && !notKernels.has(k),
)) {
  const f = calls[name];
  calls[name] = (...a: unknown[]) => {
    const t0 = performance.now();
    const r = f.apply(addon, a);
    wrapped[name] = (wrapped[name] ?? 0) + performance.now() - t0;
    return r;
  };
}
const time = (f: (k: number) => unknown) => {
  const t0 = performance.now();
  for (let i = 0; i < PER_ROUND; i++) f(i);
  return (performance.now() - t0) / PER_ROUND;
};
const acc: Record<number, Record<string, number[]>> = { 1: {}, 2: {} };
const push = (t: number, k: string, v: number) => (acc[t][k] ??= []).push(v);
for (const t of [1, 2]) {
  addon.setThreads(t);
  for (let i = 0; i < 30; i++) {
    tfjsForward(i);
    tfjsInferInto(i);
    fused(i);
  }
}
const loadBefore = os.loadavg();
for (let round = 0; round < rounds; round++) {
  for (const t of round % 2 ? [2, 1] : [1, 2]) {
    addon.setThreads(t);
    for (const k of Object.keys(wrapped)) wrapped[k] = 0;
    const wall = time(tfjsForward);
    let inKernels = 0;
    for (const [k, v] of Object.entries(wrapped)) {
      push(t, `tfjs.${k}`, v / PER_ROUND);
      inKernels += v / PER_ROUND;
    }
    push(t, 'tfjs.wall', wall);
    push(t, 'tfjs.outsideKernels', wall - inKernels);
    push(t, 'tfjsInferIntoWall', time(tfjsInferInto));
    const k0 = addon.poolStats().kernelMs;
    push(t, 'fused.wall', time(fused));
    push(t, 'fused.kernel', (addon.poolStats().kernelMs - k0) / PER_ROUND);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
batches.forEach(disposeCrmBatch);
model.dispose();
console.log(
  JSON.stringify({
    shape: { fields: VOCABS.length, embeddingDim: 16, crossLayers: 3, mlp: [256, 128], batch: BATCH },
    rounds,
    msPerBatch: Object.fromEntries(
      Object.entries(acc).map(([t, r]) => [
        `threads${t}`,
        Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Number(median(v).toFixed(3))])),
      ]),
    ),
    loadBefore,
    loadAfter: os.loadavg(),
  }),
);
