/**
 * Does LoRA make the LLM branch learn, and what does it cost? The ablation of issue 19 on ml-1m-u2999 with
 * the pipeline's prompts and pools. Not in CI (SmolLM2 is 100 MB; a run takes tens of minutes).
 *
 *   npx tsx bench/lora.ts [--data ../shared/datasets/ml-1m-u2999] [--format movielens-1m|recbole]
 *     [--model .corella/models/SmolLM2-…gguf] [--out FILE]
 *     [--cache ~/.cache/corella-bench-lora] [--train-rows 2000] [--valid-rows 600] [--test-rows 1000]
 *     [--pool-seed 11] [--k 2] [--rank 8] [--alpha 2·rank] [--targets q,v] [--lr 1e-3] [--epochs 3]
 *     [--batch 8] [--seeds 1,2,3] [--balance] [--smoothing 0] [--patience 1] [--threads 2] [--train-threads 1]
 *     [--frozen-only] [--crm-epochs 3] [--label NAME] [--eval prefix|per-prompt]
 *     [--train-select 0.5] [--train-weight none|entropy] [--align-gamma 0] [--align-dim 32]
 *     [--branch lora|adapter] [--frozen-memory-mb 1024]
 *
 * - Pools as the pipeline draws them (config/ml-1m-cpu.json: paper template, 6 history items, history blocks
 *   of 8, samplePool in user blocks, rows in extractor order, PromptBuilder.buildForRow): a train pool from
 *   the train split (the rows LoRA learns on), the valid pool (early stopping on its AUC, Platt scaling and
 *   the routing threshold) and the test pool (every reported figure).
 * - The CRM is the pipeline's DCNv2 (config/ml-1m-cpu.json crm), trained here once; its valid/test
 *   predictions are cached in the --cache store. Nothing derived from the data goes near the repository.
 * - The frozen pass (blocks below the adapted ones) runs once per prompt on --threads worker threads and is
 *   cached on disk (ml/llm/tf/frozen-store.ts), so a second run with the same k starts training at once.
 * - Per seed: LoRA epochs with the valid AUC after each; the best epoch's weights (early stopping with
 *   --patience) give the test figures: AUC, LogLoss, ACC overall and per CRM-entropy tercile of the test pool
 *   (terciles cut on the test pool's CRM entropy), and the hybrid against the CRM: the LLM's log-odds
 *   Platt-scaled on the valid pool's routed rows, the routed share (5–20%) chosen on the valid pool, the test
 *   gain with a user-clustered bootstrap interval (ml/report/stats aucDiffInterval), and the gain at
 *   exactly 20% routed.
 * - Epoch 0 is zero-shot (B = 0, so the LoRA changes nothing).
 * - `--format recbole` reads `--data` as RecBole atomic files (bench/text-poor.ts writes the text-poor
 *   variant of ml-1m-u2999 that way: titles and binary labels only).
 * - The test pool is scored twice per seed: zero-shot, and once more with the best epoch's weights restored
 *   after training (it used to be scored at every improving epoch, which for a run whose valid AUC keeps
 *   rising cost more than the training itself). The hybrid is also reported gated as calibration must
 *   route: nothing unless the valid gain's user-bootstrap lower bound is above 0.
 * - `--branch adapter` reports the frozen-LLM + adapter row instead (bench/adapter-baseline.ts): the pipeline's
 *   llama.cpp features for the same rows and its LlmAdapter trained on them, scored exactly like a LoRA.
 * - `--train-select F` trains on the share F of the train pool with the highest CRM entropy (the rows the
 *   gate would route), `--train-weight entropy` weights each row's loss by its CRM entropy. Both need the
 *   CRM's predictions on the train split, cached apart (a cache from before them retrains the CRM once and
 *   records how close the retrained CRM's valid/test predictions are to the cached ones).
 * - `--align-gamma G` adds the paper's stage-2 alignment, G·L_align, to the LoRA's loss (the CRM's layer at
 *   the top block's relative depth ↔ the top block's last-token output, through projections of width
 *   `--align-dim`); the CRM model is cached as an artifact for it.
 * - `--out FILE` also writes the JSON there (so a run's figures survive the terminal that started it), each
 *   seed's JSON beside it, and each seed's valid/test rows (label, CRM p, user, LoRA log-odds) as
 *   `.preds.seedN.json`, for scoring other routing rules offline (data-derived: keep it out of the repository).
 *
 * Prints one JSON document; progress on stderr.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { homedir, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { fitPlatt } from '../ml/corella/platt.js';
import { samplePool } from '../ml/corella/sampling.js';
import { entropies } from '../ml/corella/routing.js';
import { defaultCrmConfig, disposeCrmBatch, loadCrm, saveCrm, trainCrm } from '../ml/crm/index.js';
import { AlignmentProjections, defaultPairs } from '../ml/corella/alignment.js';
import { LoraBranch } from '../ml/llm/tf/lora-branch.js';
import * as tf from '@tensorflow/tfjs-core';
import { mixSeed, mulberry32, permutation } from '../ml/random.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import type { EncodedSplit } from '../ml/data/types.js';
import { adapterBaseline } from './adapter-baseline.js';
import { openPaperPrompts } from './paper-prompts.js';
import { warmFrozenParallel } from '../ml/llm/tf/frozen-parallel.js';
import { FrozenPrefixCache } from '../ml/llm/tf/frozen-prefix.js';
import { FrozenOutputStore } from '../ml/llm/tf/frozen-store.js';
import { CorellaError } from '../ml/errors.js';
import { LlamaTf } from '../ml/llm/tf/llama-forward.js';
import type { Projection } from '../ml/llm/tf/llama-weights.js';
import { LoraAdapter, type LoraHostWeights } from '../ml/llm/tf/lora.js';
import { LoraTrainer, MAX_LORA_THREADS, type LoraSample } from '../ml/llm/tf/lora-train.js';
import { accuracy, auc, logLoss } from '../ml/metrics/classification.js';
import { aucDiffInterval, groupBy } from '../ml/report/stats.js';
import { initTf } from '../ml/tf/backend.js';
import { defaultBenchModel } from './default-model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

const data = resolve(arg('data', '../shared/datasets/ml-1m-u2999'));
const formatArg = arg('format', 'movielens-1m');
if (formatArg !== 'movielens-1m' && formatArg !== 'recbole')
  throw new Error(`--format ${formatArg}: expected movielens-1m or recbole`);
const format: 'movielens-1m' | 'recbole' = formatArg;
const outFile = arg('out', '');
const modelPath = resolve(arg('model', defaultBenchModel()));
const cacheDir = resolve(arg('cache', join(homedir(), '.cache', 'corella-bench-lora')));
const trainRows = Number(arg('train-rows', '2000'));
const validRows = Number(arg('valid-rows', '600'));
const testRows = Number(arg('test-rows', '1000'));
const poolSeed = Number(arg('pool-seed', '11'));
const k = arg('k', '2') === 'all' ? 'all' : Number(arg('k', '2'));
const rank = Number(arg('rank', '8'));
const alpha = Number(arg('alpha', String(2 * rank)));
const targets = arg('targets', 'q,v').split(',') as Projection[];
const lr = Number(arg('lr', '1e-3'));
const epochs = Number(arg('epochs', '3'));
const batchSize = Number(arg('batch', '8'));
const seeds = arg('seeds', '1,2,3').split(',').map(Number);
const balance = flag('balance');
const smoothing = Number(arg('smoothing', '0'));
const patience = Number(arg('patience', '1'));
const threads = Number(arg('threads', '2'));
// Threads of each LoRA step (LoraTrainer threads: the batch split over worker threads); not the aligned steps.
const trainThreads = Number(arg('train-threads', '1'));
if (!(Number.isInteger(trainThreads) && trainThreads >= 1 && trainThreads <= MAX_LORA_THREADS))
  throw new CorellaError(
    'BAD_CONFIG',
    `--train-threads ${arg('train-threads', '')}: expected an integer in 1..${MAX_LORA_THREADS}`,
    { details: { field: '--train-threads' } },
  );
// Memory for decoded frozen entries (FrozenPrefixCache's LRU); evicted ones are read back from the --cache store.
const frozenMemoryMb = Number(arg('frozen-memory-mb', '1024'));
if (!(Number.isFinite(frozenMemoryMb) && frozenMemoryMb > 0))
  throw new CorellaError(
    'BAD_CONFIG',
    `--frozen-memory-mb ${arg('frozen-memory-mb', '')}: expected a positive number of megabytes`,
    { details: { field: '--frozen-memory-mb' } },
  );
const crmEpochs = Number(arg('crm-epochs', '3'));
const label = arg('label', '');
const evalMode = arg('eval', 'prefix');
// --branch adapter: the frozen-LLM adapter (today's default branch) on the same pools, instead of a LoRA.
const branch = arg('branch', 'lora');
if (branch !== 'lora' && branch !== 'adapter')
  throw new Error(`--branch ${branch}: expected lora or adapter`);
// CoReLLa routes the rows the CRM is unsure of, so the LLM must be good there: --train-select F keeps only
// the share F of the train pool with the highest CRM entropy; --train-weight entropy weights each row's
// loss by its CRM entropy (mean 1 over the rows trained on).
const trainSelectArg = arg('train-select', '');
const trainSelect = trainSelectArg === '' ? undefined : Number(trainSelectArg);
if (trainSelect !== undefined && !(trainSelect > 0 && trainSelect <= 1))
  throw new Error(`--train-select ${trainSelectArg}: expected a share in (0, 1]`);
const trainWeight = arg('train-weight', 'none');
if (trainWeight !== 'none' && trainWeight !== 'entropy')
  throw new Error(`--train-weight ${trainWeight}: expected none or entropy`);
// The paper's stage-2 pairwise signal: γ·L_align between a CRM layer and the top block's last-token output
// (RMS-normalized, as LoraBranch gives it), through trainable projections; the CRM itself stays fixed.
const alignGamma = Number(arg('align-gamma', '0'));
if (!(alignGamma >= 0)) throw new Error(`--align-gamma ${arg('align-gamma', '')}: expected a number ≥ 0`);
const alignDim = Number(arg('align-dim', '32'));
if (!(Number.isInteger(alignDim) && alignDim > 0))
  throw new Error(`--align-dim ${arg('align-dim', '')}: expected a positive integer`);
// The pipeline's prompt shaping (config/ml-1m-cpu.json llm).
const contextSize = 1024;
const maxHistory = 6;
const block = 8;
const log = (m: string): void =>
  void process.stderr.write(`[bench/lora ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const r4 = (x: number) => Number(x.toFixed(4));
const r6 = (x: number) => Number(x.toFixed(6));

/** Wall seconds, and CPU seconds of this process (all its threads): the CPU figure is less hostage to load. */
function seconds<T>(fn: () => T): { value: T; s: number; cpu: number } {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const value = fn();
  const c = process.cpuUsage(c0);
  return { value, s: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/** Pool rows in the extractor's order (user, time, sample id), so history blocks' prompts follow each other. */
function pool(split: EncodedSplit, n: number, seed: number): number[] {
  return Array.from(samplePool(split, n, seed, block)).sort(
    (a, b) =>
      split.userRows[a] - split.userRows[b] ||
      split.timestamps[a] - split.timestamps[b] ||
      split.sampleIds[a] - split.sampleIds[b],
  );
}

function metrics(y: number[], p: number[]) {
  return { auc: r4(auc(y, p)), logLoss: r4(logLoss(y, p)), acc: r4(accuracy(y, p)), rows: y.length };
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

async function main(): Promise<void> {
  const load0 = loadavg();
  const tfInfo = await initTf(undefined, log);
  const store = new FileArtifactStore(cacheDir);
  log(`ingesting ${data} into ${cacheDir}`);
  const manifest = await ingestDataset({ source: format, dir: data }, store);
  const ds = await loadDataset(store, manifest);
  const { train, valid, test } = ds.splits;

  // CRM predictions on the whole valid and test splits, trained once per dataset version.
  const crmName = `bench-lora/crm/${manifest.versionId.slice(0, 16)}-e${crmEpochs}.bin`;
  // Its predictions on the train split are stored apart: only --train-select/--train-weight read them, and
  // caches written before those flags existed hold valid and test only.
  const crmTrainName = `bench-lora/crm/${manifest.versionId.slice(0, 16)}-e${crmEpochs}-train.bin`;
  const wantTrainCrm = trainSelect !== undefined || trainWeight !== 'none';
  // The CRM model itself (its layers feed L_align), as an artifact named by a pointer.
  const crmModelName = `bench-lora/crm/${manifest.versionId.slice(0, 16)}-e${crmEpochs}-model`;
  const wantCrmModel = alignGamma > 0;
  let crmBuf = await store.getNamed(crmName);
  let crmTrainBuf = wantTrainCrm ? await store.getNamed(crmTrainName) : undefined;
  let crmModelSha = (await store.getNamed(crmModelName))?.toString('utf8');
  let crmSeconds: number | undefined;
  let crmRetrainValidMaxDiff: number | undefined;
  const f32 = (b: Buffer) => new Float32Array(new Uint8Array(b).buffer);
  if (!crmBuf || (wantTrainCrm && !crmTrainBuf) || (wantCrmModel && !crmModelSha)) {
    log('training the CRM (DCNv2 16/3/256-128, as config/ml-1m-cpu.json)');
    const t0 = performance.now();
    const r = await trainCrm(
      ds,
      { ...defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] }), seed: 42 },
      { store, epochs: crmEpochs, batchSize: 1024, lr: 1e-3, patience: 1, lrDecay: 0.5, threads: 2 },
    );
    const pv = await r.model.predict(valid);
    const pt = await r.model.predict(test);
    const ptr = wantTrainCrm ? await r.model.predict(train) : undefined;
    crmModelSha = (await saveCrm(r.model, store)).sha256;
    await store.putNamed(crmModelName, crmModelSha);
    r.model.dispose();
    crmSeconds = (performance.now() - t0) / 1000;
    const fresh = Buffer.concat([
      Buffer.from(Float32Array.from(pv).buffer),
      Buffer.from(Float32Array.from(pt).buffer),
    ]);
    if (crmBuf) {
      // A retrain for the train-split predictions: keep the cached valid/test predictions (every earlier run
      // used them) and record how far the retrained CRM is from them, so the train entropies are known to
      // come from the same model (or how close a twin).
      const old = f32(crmBuf);
      const now = f32(fresh);
      crmRetrainValidMaxDiff = old.reduce((m, v, i) => Math.max(m, Math.abs(v - now[i])), 0);
      log(`retrained CRM vs cached predictions: max |Δp| ${crmRetrainValidMaxDiff.toExponential(2)}`);
    } else {
      crmBuf = fresh;
      await store.putNamed(crmName, crmBuf);
    }
    if (ptr) {
      crmTrainBuf = Buffer.from(Float32Array.from(ptr).buffer);
      await store.putNamed(crmTrainName, crmTrainBuf);
    }
  }
  const crmAll = f32(crmBuf);
  const crmValid = crmAll.subarray(0, valid.size);
  const crmTest = crmAll.subarray(valid.size);
  const crmTrain = crmTrainBuf ? f32(crmTrainBuf) : undefined;
  log(`CRM test AUC (whole split) ${auc(test.labels, crmTest).toFixed(4)}`);

  const { llm, builder } = await openPaperPrompts({
    model: modelPath,
    threads: 1,
    contextSize,
    maxHistory,
    block,
  });
  const answers: [number, number] = [llm.yesToken, llm.noToken];
  const modelSha256 = llm.modelSha256;
  const build = (split: EncodedSplit, rows: number[]) =>
    rows.map((r) => ({
      tokens: builder.buildForRow(split, ds.items, r).tokens as number[],
      label: split.labels[r],
    }));
  // Different seeds from the pipeline's valid/test pool seed for the train pool, which is another split anyway.
  const trPool = pool(train, trainRows, poolSeed + 1000);
  // The pool is drawn (and its prompts built) as before, so the frozen cache still holds every row; the
  // selection only drops rows, in extractor order.
  const trEntropyAll = crmTrain ? entropies(trPool.map((r) => crmTrain[r])) : undefined;
  let trRows = trPool;
  let trEntropy = trEntropyAll;
  if (trainSelect !== undefined && trEntropyAll) {
    const n = Math.round(trainSelect * trPool.length);
    const keep = new Set(
      Array.from(trEntropyAll, (_, i) => i)
        .sort((a, b) => trEntropyAll[b] - trEntropyAll[a])
        .slice(0, n),
    );
    const idx = trPool.map((_, i) => i).filter((i) => keep.has(i));
    trRows = idx.map((i) => trPool[i]);
    trEntropy = Float32Array.from(idx, (i) => trEntropyAll[i]);
  }
  const vaRows = pool(valid, validRows, poolSeed);
  const teRows = pool(test, testRows, poolSeed);
  const trSet = build(train, trRows);
  const vaSet = build(valid, vaRows);
  const teSet = build(test, teRows);
  await llm.dispose();
  const meanTokens =
    [...trSet, ...vaSet, ...teSet].reduce((a, s) => a + s.tokens.length, 0) /
    (trSet.length + vaSet.length + teSet.length);
  log(
    `${trSet.length} train / ${vaSet.length} valid / ${teSet.length} test prompts, ${meanTokens.toFixed(0)} tokens on average`,
  );

  // Test-pool CRM figures and terciles of its entropy (the CRM's confidence: low entropy = confident).
  const yTe = teSet.map((s) => s.label);
  const yVa = vaSet.map((s) => s.label);
  const crmTe = teRows.map((r) => crmTest[r]);
  const crmVa = vaRows.map((r) => crmValid[r]);
  const hTe = entropies(crmTe);
  const hVa = entropies(crmVa);
  const sortedH = Array.from(hTe).sort((a, b) => a - b);
  const cuts = [sortedH[Math.floor(sortedH.length / 3)], sortedH[Math.floor((2 * sortedH.length) / 3)]];
  const tercileOf = (h: number) => (h < cuts[0] ? 0 : h < cuts[1] ? 1 : 2);
  const terciles = [0, 1, 2].map((t) => teSet.map((_, i) => i).filter((i) => tercileOf(hTe[i]) === t));
  const pick = (a: ArrayLike<number>, idx: number[]) => idx.map((i) => a[i]);
  const crmFigures = {
    overall: metrics(yTe, crmTe),
    terciles: terciles.map((idx) => metrics(pick(yTe, idx), pick(crmTe, idx))),
  };
  const userGroups = groupBy(teRows.map((r) => test.userRows[r]));
  const validGroups = groupBy(vaRows.map((r) => valid.userRows[r]));

  /** Rows whose CRM entropy is among the top `share` of the pool. */
  const topShare = (h: Float32Array, share: number) => {
    const n = Math.round(share * h.length);
    const idx = Array.from(h, (_, i) => i).sort((a, b) => h[b] - h[a]);
    return { idx: idx.slice(0, n), threshold: n > 0 ? h[idx[n - 1]] : Infinity };
  };
  const hybridOf = (crm: number[], llmP: number[], h: Float32Array, threshold: number) =>
    crm.map((p, i) => (h[i] >= threshold ? llmP[i] : p));

  function evaluate(zVa: number[], zTe: number[]) {
    const pTe = zTe.map(sigmoid);
    const branch = {
      overall: metrics(yTe, pTe),
      terciles: terciles.map((idx) => metrics(pick(yTe, idx), pick(pTe, idx))),
    };
    // Routed share chosen on the valid pool (5–20%), Platt on the valid pool's routed rows, as calibration does.
    let best: { share: number; gain: number; threshold: number; a: number; b: number } | undefined;
    for (const share of [0.05, 0.1, 0.15, 0.2]) {
      const { idx, threshold } = topShare(hVa, share);
      const platt = fitPlatt(pick(zVa, idx), pick(yVa, idx));
      const pVa = zVa.map((z) => sigmoid(platt.a * z + platt.b));
      const gain = auc(yVa, hybridOf(crmVa, pVa, hVa, threshold)) - auc(yVa, crmVa);
      if (!best || gain > best.gain) best = { share, gain, threshold, ...platt };
    }
    const b = best!;
    // Calibration's rule (issue 19): route only when the valid gain clears its own noise, here the
    // user-bootstrap lower bound of the chosen share's valid gain; otherwise route nothing (hybrid = CRM).
    const validInterval = aucDiffInterval(
      yVa,
      hybridOf(
        crmVa,
        zVa.map((z) => sigmoid(b.a * z + b.b)),
        hVa,
        b.threshold,
      ),
      crmVa,
      validGroups,
      { rounds: 1000, seed: 7, unit: 'user' },
    );
    const routes = validInterval !== undefined && validInterval.lo95 > 0;
    const pTeCal = zTe.map((z) => sigmoid(b.a * z + b.b));
    const hyb = hybridOf(crmTe, pTeCal, hTe, b.threshold);
    const routed = hyb.filter((_, i) => hTe[i] >= b.threshold).length / hyb.length;
    const interval = aucDiffInterval(yTe, hyb, crmTe, userGroups, { rounds: 1000, seed: 7, unit: 'user' });
    // At exactly 20% routed on the test pool (Platt of the 20% valid rows): the routing budget's ceiling.
    const t20 = topShare(hTe, 0.2);
    const v20 = topShare(hVa, 0.2);
    const p20 = fitPlatt(pick(zVa, v20.idx), pick(yVa, v20.idx));
    const hyb20 = hybridOf(
      crmTe,
      zTe.map((z) => sigmoid(p20.a * z + p20.b)),
      hTe,
      t20.threshold,
    );
    const i20 = aucDiffInterval(yTe, hyb20, crmTe, userGroups, { rounds: 1000, seed: 7, unit: 'user' });
    return {
      branch,
      hybrid: {
        validShare: b.share,
        validGain: r4(b.gain),
        validLo95: validInterval && r4(validInterval.lo95),
        testRouted: r4(routed),
        auc: r4(auc(yTe, hyb)),
        gain: interval && { point: r4(interval.point), lo95: r4(interval.lo95), hi95: r4(interval.hi95) },
        at20: i20 && { point: r4(i20.point), lo95: r4(i20.lo95), hi95: r4(i20.hi95) },
        gated: routes
          ? { routes: true, testRouted: r4(routed), gain: interval && r4(interval.point) }
          : { routes: false, testRouted: 0, gain: 0, why: 'valid gain lower bound ≤ 0' },
      },
    };
  }

  /**
   * Training steps with γ·L_align added to L_llm: the CRM's layers (fixed: only the LoRA and the two
   * projections learn) paired with the top block's RMS-normalized last-token output, as stage 2 pairs them.
   * The LoRA's Adam here is tfjs's, like LoraTrainer's, with the same learning rate.
   */
  async function alignedStepper(adapter: LoraAdapter, samples: LoraSample[], seed: number) {
    const crmModel = await loadCrm(store, crmModelSha!, ds.featureMap);
    const branch = new LoraBranch({
      model,
      adapter,
      answerTokens: answers,
      prompts: { train: samples.map((s) => s.tokens) },
      frozen,
    });
    const pairs = defaultPairs(crmModel.activationShapes, branch.activationShapes);
    const proj = AlignmentProjections.create(
      { pairs, sharedDim: alignDim, seed: seed + 1 },
      crmModel.activationShapes,
      branch.activationShapes,
    );
    const vars = [...adapter.variables(), ...proj.trainableVariables()];
    const opt = tf.train.adam(lr);
    let parts = { llm: 0, align: 0, rows: 0 };
    return {
      pairs,
      step(idx: number[]): number {
        const batch = crmModel.makeBatch(
          train,
          Int32Array.from(idx, (j) => trRows[j]),
        );
        const [total, lLlm, lAlign] = tf.tidy(() => {
          let kept: tf.Scalar[] = [];
          const { value, grads } = tf.variableGrads(() => {
            const cf = crmModel.forward(batch, { training: false, activations: true });
            const af = branch.forward('train', idx, { activations: true, training: true });
            const y = tf.tensor1d(idx.map((j) => samples[j].label));
            const w = tf.tensor1d(idx.map((j) => samples[j].weight ?? 1));
            const l1 = tf.losses.sigmoidCrossEntropy(
              y,
              af.logits,
              w,
              smoothing,
              tf.Reduction.MEAN,
            ) as tf.Scalar;
            const l2 = proj.loss(cf.activations, af.activations);
            kept = [tf.keep(l1), tf.keep(l2)];
            return tf.add(l1, tf.mul(l2, alignGamma)) as tf.Scalar;
          }, vars);
          // Variables the loss does not reach have no gradient.
          opt.applyGradients(
            Object.entries(grads)
              .filter(([, g]) => g !== undefined)
              .map(([name, tensor]) => ({ name, tensor })),
          );
          const out = [value.dataSync()[0], ...kept.map((k) => k.dataSync()[0])];
          kept.forEach((k) => k.dispose());
          return out;
        });
        disposeCrmBatch(batch);
        parts.llm += lLlm * idx.length;
        parts.align += lAlign * idx.length;
        parts.rows += idx.length;
        return total;
      },
      /** The epoch's mean L_llm and L_align, then reset. */
      epochParts() {
        const out = {
          trainLlmLoss: r4(parts.llm / parts.rows),
          trainAlignLoss: r4(parts.align / parts.rows),
        };
        parts = { llm: 0, align: 0, rows: 0 };
        return out;
      },
      dispose() {
        opt.dispose();
        proj.dispose();
        crmModel.dispose();
      },
    };
  }

  if (branch === 'adapter') {
    // The frozen-LLM adapter row of the ablation (bench/adapter-baseline.ts): the pipeline's llama.cpp
    // features for the same rows, its LlmAdapter trained on them, scored by the same evaluate().
    const adapterRuns: Record<string, unknown>[] = [];
    for (const seed of seeds) {
      const r = await adapterBaseline({
        dataset: ds,
        store,
        namespace: manifest.versionId,
        modelPath,
        rows: { train: trRows, valid: vaRows, test: teRows },
        seed,
        epochs: Math.max(epochs, 30),
        patience: Math.max(patience, 3),
        log,
      });
      const fit = evaluate(r.zVa, r.zTe);
      adapterRuns.push({
        seed,
        bestEpoch: r.bestEpoch,
        bestValidAuc: r4(r.bestValidAuc),
        adapter: fit,
        history: r.history,
        cost: r.cost,
      });
      log(`adapter seed ${seed} best epoch ${r.bestEpoch}: ${JSON.stringify(fit)}`);
    }
    const doc = {
      bench: 'lora',
      branch: 'adapter',
      label,
      data,
      format,
      model: { path: modelPath, sha256: modelSha256 },
      pools: { train: trSet.length, valid: vaSet.length, test: teSet.length, seed: poolSeed },
      crm: crmFigures,
      runs: adapterRuns,
      loadAverage: { start: load0, end: loadavg() },
    };
    console.log(JSON.stringify(doc, null, 2));
    if (outFile) await writeJson(outFile, doc);
    return;
  }

  const model = await LlamaTf.load(modelPath);
  const nLayer = model.hp.nLayer;
  const layers = k === 'all' ? nLayer : k;
  const firstLayer = nLayer - layers;
  const frozen = new FrozenPrefixCache(model, firstLayer, frozenMemoryMb * 2 ** 20);
  const frozenStore = new FrozenOutputStore(
    store,
    { namespace: manifest.versionId, modelSha256, firstLayer, keepLayers: [] },
    model.hp.nEmbd,
  );
  frozen.attachStore(frozenStore);
  const all = [...trSet, ...vaSet, ...teSet].map((s) => s.tokens);
  let lastLog = 0;
  const tf0 = performance.now();
  const warm = await warmFrozenParallel(frozen, all, {
    modelPath,
    threads,
    store: frozenStore,
    onProgress: (done, total) => {
      if (performance.now() - lastLog > 30_000 || done === total) {
        lastLog = performance.now();
        log(`frozen pass ${done}/${total} (${((performance.now() - tf0) / 1000).toFixed(0)} s)`);
      }
    },
  });
  const frozenSeconds = (performance.now() - tf0) / 1000;
  const frozenCost = {
    firstLayer,
    threads,
    prompts: all.length,
    fromDisk: warm.fromStore,
    computed: warm.computed,
    seconds: r4(frozenSeconds),
    secondsPerComputedPrompt: warm.computed ? r4(frozenSeconds / warm.computed) : undefined,
    loadAverage: loadavg()[0],
  };
  log(`frozen pass: ${JSON.stringify(frozenCost)}`);
  if (flag('frozen-only')) {
    console.log(JSON.stringify({ bench: 'lora', frozen: frozenCost }, null, 2));
    return;
  }

  const runs: Record<string, unknown>[] = [];
  for (const seed of seeds) {
    const adapter = LoraAdapter.create(model.hp, { layers, rank, alpha, targets, seed });
    const trainer = new LoraTrainer(model, adapter, {
      answerTokens: answers,
      learningRate: lr,
      labelSmoothing: smoothing,
      frozen,
      threads: trainThreads,
    });
    const pos = trSet.reduce((a, s) => a + s.label, 0) / trSet.length;
    // Class weights with mean 1 over the pool: each class carries half the loss.
    const classWeight = (y: number) => (balance ? (y === 1 ? 0.5 / pos : 0.5 / (1 - pos)) : 1);
    const meanH = trEntropy ? trEntropy.reduce((a, h) => a + h, 0) / trEntropy.length : 1;
    const rowWeight = (i: number) => (trainWeight === 'entropy' ? trEntropy![i] / meanH : 1);
    const samples: LoraSample[] = trSet.map((s, i) =>
      balance || trainWeight !== 'none' ? { ...s, weight: classWeight(s.label) * rowWeight(i) } : s,
    );
    // Prefix-sharing evaluation (LoraTrainer.evalLogOdds); --eval per-prompt scores one prompt at a time.
    const logOdds = (set: { tokens: number[] }[]) =>
      evalMode === 'per-prompt'
        ? set.map((s) => {
            const z = trainer.logOdds(s.tokens);
            const v = z.dataSync()[0];
            z.dispose();
            return v;
          })
        : Array.from(trainer.evalLogOdds(set.map((s) => s.tokens)));
    const evalEpoch = () => {
      const t = seconds(() => ({ zVa: logOdds(vaSet), zTe: logOdds(teSet) }));
      return { ...t.value, s: t.s, cpu: t.cpu };
    };
    const e0 = evalEpoch();
    const evalPrompts0 = vaSet.length + teSet.length;
    const history: Record<string, unknown>[] = [
      {
        epoch: 0,
        validAuc: r4(auc(yVa, e0.zVa.map(sigmoid))),
        testAuc: r4(auc(yTe, e0.zTe.map(sigmoid))),
        evalSeconds: r4(e0.s),
        evalSecondsPerPrompt: r4(e0.s / evalPrompts0),
        evalCpuSecondsPerPrompt: r4(e0.cpu / evalPrompts0),
        loadAverage: loadavg()[0],
      },
    ];
    log(`seed ${seed} ${JSON.stringify(history[0])}`);
    const zeroShot = evaluate(e0.zVa, e0.zTe);
    let best = {
      epoch: 0,
      validAuc: auc(yVa, e0.zVa),
      zVa: e0.zVa,
      weights: undefined as LoraHostWeights | undefined,
    };
    let bad = 0;
    let trainSeconds = 0;
    let stepsDone = 0;
    let validEvalSeconds = 0;
    let validEvals = 0;
    const aligned = alignGamma > 0 ? await alignedStepper(adapter, samples, seed) : undefined;
    for (let e = 1; e <= epochs; e++) {
      const order = permutation(mulberry32(mixSeed(seed, e)), trSet.length);
      let lossSum = 0;
      let batches = 0;
      const t = seconds(() => {
        for (let i = 0; i < order.length; i += batchSize) {
          const idx = Array.from(order.subarray(i, i + batchSize));
          lossSum += aligned ? aligned.step(idx) : trainer.step(idx.map((j) => samples[j]));
          batches++;
          if (batches % 50 === 0)
            log(
              `seed ${seed} epoch ${e}: ${i + batchSize}/${order.length}, loss ${(lossSum / batches).toFixed(4)}`,
            );
        }
      });
      trainSeconds += t.s;
      stepsDone += order.length;
      const loadAfterTraining = loadavg()[0];
      // Only the valid pool per epoch (early stopping); the test pool once, with the best weights, below.
      const tv = seconds(() => logOdds(vaSet));
      validEvalSeconds += tv.s;
      validEvals += vaSet.length;
      const validAuc = auc(yVa, tv.value);
      const improved = validAuc > best.validAuc;
      const row = {
        epoch: e,
        trainLoss: r4(lossSum / batches),
        ...(aligned && aligned.epochParts()),
        validAuc: r4(validAuc),
        validLogLoss: r4(logLoss(yVa, tv.value.map(sigmoid))),
        epochSeconds: r4(t.s),
        trainSecondsPerSample: r4(t.s / order.length),
        trainCpuSecondsPerSample: r4(t.cpu / order.length),
        loadAverageTraining: loadAfterTraining,
        evalSeconds: r4(tv.s),
        evalSecondsPerPrompt: r4(tv.s / vaSet.length),
        evalCpuSecondsPerPrompt: r4(tv.cpu / vaSet.length),
        loadAverage: loadavg()[0],
      };
      history.push(row);
      log(`seed ${seed} ${JSON.stringify(row)}`);
      if (improved) {
        best = { epoch: e, validAuc, zVa: tv.value, weights: await adapter.toHost() };
        bad = 0;
      } else if (++bad > patience) break;
    }
    let zTeBest = e0.zTe;
    let testEvalSeconds: number | undefined;
    if (best.weights) {
      adapter.load(best.weights);
      const tt = seconds(() => logOdds(teSet));
      zTeBest = tt.value;
      testEvalSeconds = tt.s;
      validEvalSeconds += tt.s;
      validEvals += teSet.length;
    }
    const fit = evaluate(best.zVa, zTeBest);
    runs.push({
      seed,
      bestEpoch: best.epoch,
      bestValidAuc: r4(best.validAuc),
      zeroShot,
      lora: fit,
      history,
      cost: {
        trainSeconds: r4(trainSeconds),
        secondsPerTrainingSample: stepsDone ? r4(trainSeconds / stepsDone) : undefined,
        secondsPerEvalPrompt: r4(e0.s / evalPrompts0),
        secondsPerEvalPromptAfterTraining: validEvals ? r4(validEvalSeconds / validEvals) : undefined,
        testEvalSeconds: testEvalSeconds && r4(testEvalSeconds),
        loadAverage: loadavg()[0],
      },
    });
    const done = runs[runs.length - 1];
    if (outFile) {
      await writeJson(`${outFile.replace(/\.json$/, '')}.seed${seed}.json`, done);
      // The rows behind the figures, so other routing and combination rules can be scored offline on the
      // same predictions. Derived from the data: --out must point outside the repository.
      await writeJson(`${outFile.replace(/\.json$/, '')}.preds.seed${seed}.json`, {
        seed,
        valid: {
          y: yVa,
          crm: crmVa.map(r6),
          user: vaRows.map((r) => valid.userRows[r]),
          z: best.zVa.map(r6),
        },
        test: { y: yTe, crm: crmTe.map(r6), user: teRows.map((r) => test.userRows[r]), z: zTeBest.map(r6) },
      });
    }
    log(`seed ${seed} best epoch ${best.epoch}: ${JSON.stringify(fit)}`);
    aligned?.dispose();
    trainer.dispose();
    adapter.dispose();
  }
  frozen.dispose();
  model.dispose();
  const doc = {
    bench: 'lora',
    label,
    data,
    format,
    model: { path: modelPath, sha256: modelSha256, nLayer, nEmbd: model.hp.nEmbd },
    tfjs: tfInfo.backend,
    pools: {
      train: trSet.length,
      valid: vaSet.length,
      test: teSet.length,
      seed: poolSeed,
      meanTokens: r4(meanTokens),
    },
    trainPositiveRate: r4(trSet.reduce((a, s) => a + s.label, 0) / trSet.length),
    trainSelection: trEntropyAll && {
      select: trainSelect ?? 1,
      weight: trainWeight,
      poolRows: trPool.length,
      rows: trRows.length,
      // In-sample: the CRM trained on these rows, so it is surer of them than of the test pool.
      crmEntropyPool: meanStd(trEntropyAll),
      crmEntropyTrained: meanStd(trEntropy!),
      crmAucPool: r4(
        auc(
          trPool.map((r) => train.labels[r]),
          trPool.map((r) => crmTrain![r]),
        ),
      ),
      crmRetrainValidMaxDiff,
    },
    lora: {
      layers,
      firstLayer,
      rank,
      alpha,
      targets,
      lr,
      epochs,
      batchSize,
      balance,
      smoothing,
      patience,
      eval: evalMode,
      alignGamma,
      alignDim: alignGamma > 0 ? alignDim : undefined,
    },
    crm: { ...crmFigures, trainSeconds: crmSeconds },
    frozen: frozenCost,
    frozenMemory: {
      budgetMb: frozenMemoryMb,
      peakResidentMb: r4(frozen.peakResidentBytes / 2 ** 20),
      storeReads: frozen.stats.storeReads,
      storeReadSeconds: r4(frozen.stats.storeReadSeconds),
    },
    runs,
    loadAverage: { start: load0, end: loadavg() },
    note: 'taken on a 2-core machine shared with other jobs: timings are under load',
  };
  console.log(JSON.stringify(doc, null, 2));
  if (outFile) await writeJson(outFile, doc);
}

function meanStd(a: ArrayLike<number>): { mean: number; std: number } {
  const m = Array.from(a).reduce((x, y) => x + y, 0) / a.length;
  const v = Array.from(a).reduce((x, y) => x + (y - m) ** 2, 0) / a.length;
  return { mean: r4(m), std: r4(Math.sqrt(v)) };
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(resolve(path)), { recursive: true });
  await writeFile(resolve(path), JSON.stringify(value, null, 2) + '\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
