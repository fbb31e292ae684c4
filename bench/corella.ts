/**
 * CoReLLa end to end on the real MovieLens-1M subset (../shared/datasets/ml-1m-u2999) with a small GGUF LLM
 * on CPU: stage 1 (DCNv2), LLM features, stages 2 + 3, threshold calibration on validation, evaluation on a
 * random sample of test rows. Prints one JSON object: test AUC/LogLoss/ACC of the stage-1 CRM, the CRM
 * after stage 2, the LLM branch and the hybrid at the calibrated threshold, the routed fraction, the
 * per-bucket tables, the boundary shift before/after stage 2, and a bootstrap 95% interval of the
 * hybrid-minus-stage-1-CRM AUC difference.
 *
 *   npx tsx bench/corella.ts [--data DIR] [--model PATH] [--threads 2] [--backend wasm] [--crm-epochs 4]
 *     [--stage2 2000] [--stage3 1000] [--shift-rows 500] [--calib-rows 3000] [--curve-frac 0.3]
 *     [--test-rows 2000] [--subset random|hard] [--max-history 10] [--bootstrap 1000] [--max-routed 0.2]
 *     [--hidden 1|0]
 *
 * Dataset, CRM and checkpoints live in a temporary store removed afterwards; LLM features are cached in
 * .corella/bench-store (git-ignored) so a re-run does not recompute them. Nothing derived from the real
 * files may enter the repository. Other work shares the 2 cores: timings are noisy.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { calibrateThreshold } from '../ml/corella/calibration.js';
import { evaluateAlignment, sampleRows, type BucketTable } from '../ml/corella/evaluation.js';
import { trainJoint } from '../ml/corella/joint.js';
import { makeRng } from '../ml/corella/random.js';
import { ctrScores, pick } from '../ml/corella/score.js';
import type { SubsetSelection } from '../ml/corella/subsets.js';
import { defaultCrmConfig, trainCrm } from '../ml/crm/index.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import type { EncodedSplit, ItemTable } from '../ml/data/types.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import type { LlmFeatures, LlmFeatureSource } from '../ml/llm/types.js';
import { auc } from '../ml/metrics/index.js';
import type { Progress } from '../ml/progress.js';
import { initTf, type TfBackendChoice } from '../ml/tf/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const num = (name: string, def: number) => Number(arg(name, String(def)));

const dataDir = resolve(arg('data', join(import.meta.dirname, '../../shared/datasets/ml-1m-u2999')));
const modelPath = resolve(arg('model', '.corella/models/SmolLM2-135M-Instruct.Q4_1.gguf'));
const threads = num('threads', 2);
const backend = arg('backend', 'wasm') as TfBackendChoice;
const crmEpochs = num('crm-epochs', 4);
const stage2 = num('stage2', 2000);
const stage3 = num('stage3', 1000);
const shiftRows = num('shift-rows', 500);
const calibRows = num('calib-rows', 3000);
const curveFrac = num('curve-frac', 0.3);
const testRows = num('test-rows', 2000);
const subset = arg('subset', 'random') as SubsetSelection;
const maxHistory = num('max-history', 10);
const bootstrapRounds = num('bootstrap', 1000);
const maxRouted = num('max-routed', 0.2);
/** 0 = no hidden-state pass (half the LLM time): the adapter then reads the Yes/No log-odds only. */
const hidden = num('hidden', 1) !== 0;

const t0 = performance.now();
const elapsed = () => Math.round((performance.now() - t0) / 1000);
const log = (m: string): void => void process.stderr.write(`[bench/corella ${elapsed()}s] ${m}\n`);
const r4 = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(4)) : x);
let lastLog = 0;
const onProgress = (p: Progress) => {
  if (Date.now() - lastLog < 15_000) return;
  lastLog = Date.now();
  log(`${p.stage} ${p.done}/${p.total ?? '?'}${p.samplesPerSec ? ` ${p.samplesPerSec.toFixed(1)}/s` : ''}`);
};

/** Counts the rows the LLM is asked for and the time it takes (features come from the cache when present). */
class CountingSource implements LlmFeatureSource {
  rows = 0;
  seconds = 0;
  constructor(private readonly inner: LlmFeatureExtractor) {}
  async features(split: EncodedSplit, items: ItemTable, rows: ArrayLike<number>): Promise<LlmFeatures> {
    const s = performance.now();
    const f = await this.inner.extract(split, items, rows, { onProgress });
    this.rows += rows.length;
    this.seconds += (performance.now() - s) / 1000;
    return f;
  }
}

function bootstrapAucDiff(labels: Float32Array, a: Float32Array, b: Float32Array, rounds: number) {
  const rng = makeRng(2718);
  const n = labels.length;
  const diffs: number[] = [];
  const y = new Float32Array(n);
  const pa = new Float32Array(n);
  const pb = new Float32Array(n);
  for (let k = 0; k < rounds; k++) {
    for (let i = 0; i < n; i++) {
      const j = Math.floor(rng() * n);
      y[i] = labels[j];
      pa[i] = a[j];
      pb[i] = b[j];
    }
    const d = auc(y, pa) - auc(y, pb);
    if (Number.isFinite(d)) diffs.push(d);
  }
  diffs.sort((x, z) => x - z);
  const q = (p: number) => diffs[Math.min(diffs.length - 1, Math.max(0, Math.floor(p * diffs.length)))];
  return { point: auc(labels, a) - auc(labels, b), lo95: q(0.025), hi95: q(0.975), rounds: diffs.length };
}

const scores = (p: Float32Array, y: Float32Array) => {
  const s = ctrScores(p, y);
  return { auc: r4(s.auc), logLoss: r4(s.logLoss), acc: r4(s.acc), n: s.count };
};

const tableJson = (t: BucketTable) => ({
  scheme: t.scheme.kind === 'paper3' ? 'paper3' : `quantile${t.scheme.buckets}`,
  rows: t.rows.map((r) => ({
    bucket: r.label,
    entropy: [r4(r.lo), r4(r.hi)],
    n: r.n,
    positiveRate: r4(r.positives / Math.max(1, r.n)),
    routed: r4(r.routedFraction),
    auc: { crm: r4(r.crm.auc), llm: r4(r.llm.auc), hybrid: r4(r.hybrid.auc) },
    logLoss: { crm: r4(r.crm.logLoss), llm: r4(r.llm.logLoss), hybrid: r4(r.hybrid.logLoss) },
    acc: { crm: r4(r.crm.acc), llm: r4(r.llm.acc), hybrid: r4(r.hybrid.acc) },
  })),
});

const root = await mkdtemp(join(tmpdir(), 'corella-bench-corella-'));
try {
  const load0 = loadavg()[0];
  const tf = await initTf(backend, () => undefined);
  log(`tf backend ${tf.backend}`);
  const store = new FileArtifactStore(root);
  const manifest = await ingestDataset({ source: 'movielens-1m', dir: dataDir }, store);
  const ds = await loadDataset(store, manifest);
  const test = ds.splits.test;
  log(`dataset: train ${ds.splits.train.size}, valid ${ds.splits.valid.size}, test ${test.size}`);

  // Stage 1.
  const crmConfig = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
  const s1 = await trainCrm(ds, crmConfig, {
    store,
    epochs: crmEpochs,
    batchSize: 1024,
    lr: 1e-3,
    patience: 2,
    lrDecay: 0.5,
    onProgress,
  });
  const crm = s1.model;
  log(`stage 1 done: best valid AUC ${s1.bestValidAuc.toFixed(4)} (epoch ${s1.bestEpoch})`);
  const evalRows = sampleRows(test.size, testRows, 99);
  const yTest = pick(test.labels, evalRows);
  const pStage1 = await crm.predict(test, evalRows);
  const stage1All = ctrScores(await crm.predict(test), test.labels);

  const extractor = await LlmFeatureExtractor.open(
    {
      model: modelPath,
      threads,
      contextSize: 2048,
      hidden,
      maxHistoryItems: maxHistory,
      template: 'paper',
    },
    new FileArtifactStore(resolve('.corella/bench-store')),
  );
  const llm = new CountingSource(extractor);

  const joint = await trainJoint({
    crm,
    dataset: ds,
    llm,
    store,
    onProgress,
    config: {
      stage2: { samples: stage2, epochs: 3, batchSize: 128, learningRate: 1e-3, crmLearningRate: 1e-4 },
      stage3: { samples: stage3, epochs: 5, batchSize: 128, learningRate: 1e-3 },
      subset,
      adapter: { layers: [64, 32] },
      alignment: { sharedDim: 32 },
      validationSamples: shiftRows,
      featureChunkSize: 256,
      resume: false,
    },
  });
  log(`stages 2+3 done; LLM rows so far ${llm.rows} in ${llm.seconds.toFixed(0)} s`);

  const cal = await calibrateThreshold({
    crm,
    adapter: joint.adapter,
    llm,
    split: ds.splits.valid,
    items: ds.items,
    config: { maxRows: calibRows, curveMaxFraction: curveFrac, maxRoutedFraction: maxRouted, metric: 'auc' },
    onProgress,
  });
  log(`calibrated: threshold ${cal.threshold.toFixed(4)}, routed ${cal.chosen.routedFraction.toFixed(3)}`);

  const ev = await evaluateAlignment({
    crm,
    adapter: joint.adapter,
    llm,
    split: test,
    items: ds.items,
    threshold: cal.threshold,
    rows: evalRows,
    onProgress,
  });
  const pr = ev.predictions;

  console.log(
    JSON.stringify({
      dataset: {
        train: ds.splits.train.size,
        valid: ds.splits.valid.size,
        test: test.size,
        evaluatedTestRows: ev.n,
      },
      setup: {
        tfBackend: tf.backend,
        model: modelPath.split('/').pop(),
        threads,
        crm: 'dcnv2 emb16 cross3 mlp256-128',
        stage1Epochs: s1.epochsRun,
        stage2Samples: joint.stage2.samples,
        stage3Samples: joint.stage3.samples,
        subset,
        adapter: joint.config.adapter.layers,
        pairs: joint.pairs,
        weights: { alpha: joint.config.alpha, beta: joint.config.beta, gamma: joint.config.gamma },
        calibration: {
          validRows: cal.n,
          llmRows: cal.llmRows,
          metric: cal.metric,
          maxRoutedFraction: cal.maxRoutedFraction,
        },
        maxHistory,
        hiddenState: hidden,
      },
      test: {
        stage1CrmAllRows: {
          auc: r4(stage1All.auc),
          logLoss: r4(stage1All.logLoss),
          acc: r4(stage1All.acc),
          n: stage1All.count,
        },
        stage1Crm: scores(pStage1, yTest),
        crmAfterStage2: scores(pr.pCrm, yTest),
        llmBranch: scores(pr.pLlm, yTest),
        hybrid: scores(pr.pHybrid, yTest),
        routedFraction: r4(ev.routedFraction),
        threshold: r4(cal.threshold),
      },
      hybridMinusStage1CrmAuc: bootstrapAucDiff(yTest, pr.pHybrid, pStage1, bootstrapRounds),
      hybridMinusCrmAfterStage2Auc: bootstrapAucDiff(yTest, pr.pHybrid, pr.pCrm, bootstrapRounds),
      buckets: ev.buckets.map(tableJson),
      boundaryShift: joint.boundaryShift,
      stages: {
        stage2: {
          meanCrmEntropy: r4(joint.stage2.meanCrmEntropy),
          epochs: joint.stage2.epochs,
          seconds: r4(joint.stage2.seconds),
          validation: joint.stage2.validation,
        },
        stage3: {
          meanCrmEntropy: r4(joint.stage3.meanCrmEntropy),
          epochs: joint.stage3.epochs,
          seconds: r4(joint.stage3.seconds),
          validation: joint.stage3.validation,
        },
      },
      calibrationCurve: cal.curve.map((c) => ({
        q: c.quantile,
        t: r4(c.threshold),
        routed: r4(c.routedFraction),
        auc: r4(c.auc),
        logLoss: r4(c.logLoss),
        acc: r4(c.acc),
      })),
      llm: { rowsRequested: llm.rows, seconds: Math.round(llm.seconds), extractorStats: extractor.stats },
      seconds: elapsed(),
      loadAvgAtStart: r4(load0),
      loadAvgAtEnd: r4(loadavg()[0]),
      note: 'shared 2-core machine: timings are noisy',
    }),
  );
  joint.adapter.dispose();
  joint.projections.dispose();
  crm.dispose();
  await extractor.dispose();
} finally {
  await rm(root, { recursive: true, force: true });
}
