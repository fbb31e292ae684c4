/**
 * CoReLLa end to end on the real MovieLens-1M subset (../shared/datasets/ml-1m-u2999), or on the synthetic
 * MovieLens-format dataset (`--data synthetic[:SEED]`, ml/data/synthetic.ts), with a small GGUF LLM on CPU:
 * stage 1 (DCNv2), LLM features, stages 2 + 3, threshold calibration on validation, evaluation on a random
 * pool of test rows. Prints one JSON object: test AUC/LogLoss/ACC of the stage-1 CRM, the CRM after stage 2,
 * the LLM branch and the hybrid at the calibrated threshold, the routed fraction, the per-bucket tables, the
 * boundary shift before/after stage 2, and a bootstrap 95% interval of the hybrid-minus-stage-1-CRM AUC
 * difference. On synthetic data it adds `segments`: the same scores on test rows whose target item is in
 * the planted text-only segment vs the rest (with `--planted-rows` extra planted rows evaluated so the
 * segment is large enough), their CRM entropies and routed fractions, and bootstrap intervals of the
 * hybrid-minus-CRM AUC on the planted segment.
 *
 *   npx tsx bench/corella.ts [--data DIR|synthetic[:SEED]] [--synthetic-users 3000] [--synthetic-items 2000]
 *     [--synthetic-ratings 40] [--synthetic-planted-share 0.06] [--planted-rows 400] [--block 8]
 *     [--model PATH] [--threads 2] [--sequences 1] [--backend wasm] [--crm-epochs 4] [--stage2 2000] [--stage3 1000]
 *     [--shift-rows 500] [--calib-rows 3000] [--curve-frac 0.3] [--test-rows 2000] [--subset random|hard]
 *     [--max-history 10] [--bootstrap 1000] [--max-routed 0.2] [--hidden 1|0] [--cold-items]
 *     [--affinity] [--affinity-history N] [--adapter-skip N] [--calibrate-output 0.3]
 *
 * `--block N` (default 8; 1 = off) anchors LLM history windows in user blocks of N samples (llm
 * historyBlock) and draws every pool (stage-2/3 subsets, validation, calibration and test rows) in the same
 * blocks, so consecutive prompts share their prefix. The overall test scores and buckets are on the random
 * test pool only; the added planted rows enter the segment table alone, so the pool stays unbiased.
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
import { evaluateAlignment, type AlignmentEvaluation, type BucketTable } from '../ml/corella/evaluation.js';
import { trainJoint } from '../ml/corella/joint.js';
import { samplePool } from '../ml/corella/sampling.js';
import { entropies, routingEntropies } from '../ml/corella/routing.js';
import { ctrScores, pick } from '../ml/corella/score.js';
import type { SubsetSelection } from '../ml/corella/subsets.js';
import { defaultCrmConfig, trainCrm } from '../ml/crm/index.js';
import {
  generateSyntheticMovielens,
  ingestDataset,
  loadDataset,
  type SyntheticMovielens,
  type SyntheticOptions,
} from '../ml/data/index.js';
import type { DatasetSource, EncodedSplit, ItemTable } from '../ml/data/types.js';
import { CorellaError } from '../ml/errors.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import type { LlmFeatures, LlmFeatureSource } from '../ml/llm/types.js';
import type { Progress } from '../ml/progress.js';
import { initTf, type TfBackendChoice } from '../ml/tf/index.js';
import {
  bootstrapAucDiff,
  concat,
  extraMaskedRows,
  meanPercentile,
  positions,
  segmentRow,
  targetMask,
  type SegmentInput,
} from './segments.js';
import { defaultBenchModel } from './default-model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const num = (name: string, def: number) => Number(arg(name, String(def)));

const dataArg = arg('data', join(import.meta.dirname, '../../shared/datasets/ml-1m-u2999'));
/** `synthetic` or `synthetic:SEED` generates the dataset; anything else is a MovieLens-1M folder. */
const syntheticSeed = ((): number | undefined => {
  const m = /^synthetic(?::(.*))?$/.exec(dataArg);
  if (!m) return undefined;
  const seed = m[1] === undefined ? 42 : Number(m[1]);
  if (!Number.isInteger(seed) || seed < 0)
    throw new CorellaError(
      'BAD_CONFIG',
      `--data ${dataArg}: the seed after "synthetic:" must be an integer ≥ 0`,
    );
  return seed;
})();
/** Generator sizes: only those given are passed, so the generator's own defaults apply otherwise. */
const syntheticOptions = (): SyntheticOptions => {
  const o: SyntheticOptions = { seed: syntheticSeed };
  const opt = (flag: string, set: (v: number) => void) => {
    const v = arg(flag, '');
    if (v === '') return;
    const x = Number(v);
    if (!Number.isFinite(x) || x <= 0)
      throw new CorellaError('BAD_CONFIG', `--${flag}: expected a positive number, got ${v}`);
    set(x);
  };
  opt('synthetic-users', (v) => (o.users = Math.round(v)));
  opt('synthetic-items', (v) => (o.items = Math.round(v)));
  opt('synthetic-ratings', (v) => (o.ratingsPerUser = v));
  opt('synthetic-planted-share', (v) => (o.plantedShare = v));
  return o;
};
const plantedRows = num('planted-rows', 400);
const block = num('block', 8);
// Cold items (never seen in training) count as maximally uncertain for routing (CalibrationConfig.coldItems).
const coldItems = process.argv.includes('--cold-items');
// Item-affinity features for the LLM branch (llm.itemAffinity, ml/llm/item-affinity.ts).
const affinityHistory = num('affinity-history', 0);
const itemAffinity = process.argv.includes('--affinity')
  ? affinityHistory > 0
    ? { historyItems: affinityHistory }
    : true
  : false;
// Inputs that also reach the adapter's logit linearly (joint.adapter.skipInputs).
const adapterSkip = num('adapter-skip', 0);
const stage3Lr = num('stage3-lr', 1e-3);
// joint.adapter.inputTail: read only the last N input columns (0 = all).
const adapterTail = num('adapter-tail', 0);
const stage3Epochs = num('stage3-epochs', 5);
if (!Number.isInteger(block) || block < 1)
  throw new CorellaError('BAD_CONFIG', `--block: expected an integer ≥ 1, got ${arg('block', '')}`);
const modelPath = resolve(arg('model', defaultBenchModel()));
const threads = num('threads', 2);
// Parallel LLM sequences, each its own context (1 thread × 2 sequences is the robust choice on 2 shared cores).
const sequences = num('sequences', 1);
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
/** joint.calibrateOutput: share of the validation pool used to Platt-scale the LLM branch (0 = off). */
const calibrateOutput = num('calibrate-output', 0.3);

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

/**
 * Planted segment vs the rest over the random pool plus the added planted rows: scores of every predictor,
 * routed fraction and CRM entropies per segment (does routing even reach the planted rows?), and bootstrap
 * intervals of hybrid-minus-CRM AUC on each segment.
 */
function segmentReport(
  test: EncodedSplit,
  planted: Uint8Array,
  synth: SyntheticMovielens,
  ev: AlignmentEvaluation,
  evExtra: AlignmentEvaluation | undefined,
  pStage1AllRows: Float32Array,
) {
  const a = ev.predictions;
  const b = evExtra?.predictions;
  const join2 = (x: Float32Array, y: Float32Array | undefined) => (y ? concat(x, y) : x);
  const rows = b ? Int32Array.from([...a.rows, ...b.rows]) : a.rows;
  const pCrm = join2(a.pCrm, b?.pCrm);
  const pStage1 = pick(pStage1AllRows, rows);
  const d: SegmentInput = {
    labels: join2(a.labels, b?.labels),
    pStage1,
    pCrm,
    pLlm: join2(a.pLlm, b?.pLlm),
    pHybrid: join2(a.pHybrid, b?.pHybrid),
    // What routing sees (cold items at ln 2 with --cold-items), so `routed` matches the hybrid.
    entropy: routingEntropies(pCrm, test, rows, coldItems),
    entropyStage1: entropies(pStage1),
    threshold: ev.threshold,
  };
  const inPlanted = positions(rows.length, (i) => planted[rows[i]] === 1);
  const rest = positions(rows.length, (i) => planted[rows[i]] !== 1);
  const poolEntropy = d.entropy.subarray(0, a.rows.length);
  const interval = (idx: Int32Array, other: Float32Array) =>
    bootstrapAucDiff(pick(d.labels, idx), pick(d.pHybrid, idx), pick(other, idx), bootstrapRounds);
  return {
    plantedItems: synth.plantedItemIds.length,
    plantedTestRowsInSplit: planted.reduce((s, x) => s + x, 0),
    plantedInRandomPool: positions(a.rows.length, (i) => planted[a.rows[i]] === 1).length,
    plantedAdded: b?.rows.length ?? 0,
    threshold: r4(ev.threshold),
    table: [segmentRow('planted', d, inPlanted), segmentRow('rest', d, rest)],
    /** Mean percentile of each segment's CRM entropy within the random pool (routing takes the top). */
    entropyPercentileInPool: {
      planted: meanPercentile(pick(d.entropy, inPlanted), poolEntropy),
      rest: meanPercentile(pick(d.entropy, rest), poolEntropy),
    },
    plantedHybridMinusStage1CrmAuc: interval(inPlanted, d.pStage1),
    plantedHybridMinusCrmAfterStage2Auc: interval(inPlanted, d.pCrm),
    plantedLlmMinusStage1CrmAuc: bootstrapAucDiff(
      pick(d.labels, inPlanted),
      pick(d.pLlm, inPlanted),
      pick(d.pStage1, inPlanted),
      bootstrapRounds,
    ),
    restHybridMinusStage1CrmAuc: interval(rest, d.pStage1),
  };
}

const root = await mkdtemp(join(tmpdir(), 'corella-bench-corella-'));
try {
  const load0 = loadavg()[0];
  const tf = await initTf(backend, () => undefined);
  log(`tf backend ${tf.backend}`);
  const store = new FileArtifactStore(root);
  let source: DatasetSource = 'movielens-1m';
  let dataDir = resolve(dataArg);
  let synth: SyntheticMovielens | undefined;
  if (syntheticSeed !== undefined) {
    source = 'synthetic-movielens';
    dataDir = join(root, 'synthetic-movielens');
    synth = await generateSyntheticMovielens(dataDir, syntheticOptions());
    log(
      `synthetic data (seed ${syntheticSeed}): ${synth.users} users, ${synth.items} items, ` +
        `${synth.ratings} ratings, ${synth.plantedItemIds.length} planted items (${synth.plantedRatings} ratings)`,
    );
  }
  const manifest = await ingestDataset({ source, dir: dataDir }, store);
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
  const evalRows = samplePool(test, testRows, 99, block);
  const yTest = pick(test.labels, evalRows);
  // Stage 2 fine-tunes the CRM in place: every stage-1 prediction needed later is taken now.
  const pStage1AllRows = await crm.predict(test);
  const pStage1 = pick(pStage1AllRows, evalRows);
  const stage1All = ctrScores(pStage1AllRows, test.labels);
  const planted = synth ? targetMask(test, ds.items, synth.plantedItemIds) : undefined;
  const extra = planted
    ? extraMaskedRows(evalRows, planted, plantedRows, 4242)
    : { rows: new Int32Array(0), available: 0 };
  if (planted) {
    const inTest = planted.reduce((s, x) => s + x, 0);
    log(
      `planted test rows: ${inTest} in the split, ${extra.rows.length} added to the ${evalRows.length} pooled`,
    );
  }

  const extractor = await LlmFeatureExtractor.open(
    {
      model: modelPath,
      threads,
      sequences,
      contextSize: 2048,
      hidden,
      maxHistoryItems: maxHistory,
      historyBlock: block,
      template: 'paper',
      itemAffinity,
    },
    new FileArtifactStore(resolve('.corella/bench-store')),
    // Sample ids are only unique within one dataset version (synthetic and real runs share this store).
    { namespace: manifest.versionId },
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
      stage3: { samples: stage3, epochs: stage3Epochs, batchSize: 128, learningRate: stage3Lr },
      subset,
      poolBlock: block,
      adapter: {
        layers: [64, 32],
        skipInputs: adapterSkip,
        ...(adapterTail > 0 ? { inputTail: adapterTail } : {}),
      },
      alignment: { sharedDim: 32 },
      validationSamples: shiftRows,
      featureChunkSize: 256,
      calibrateOutput,
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
    config: {
      maxRows: calibRows,
      curveMaxFraction: curveFrac,
      maxRoutedFraction: maxRouted,
      metric: 'auc',
      poolBlock: block,
      coldItems,
    },
    onProgress,
  });
  log(`calibrated: threshold ${cal.threshold.toFixed(4)}, routed ${cal.chosen.routedFraction.toFixed(3)}`);

  const evaluate = (rows: ArrayLike<number>) =>
    evaluateAlignment({
      crm,
      adapter: joint.adapter,
      llm,
      split: test,
      items: ds.items,
      threshold: cal.threshold,
      coldItems,
      rows,
      onProgress,
    });
  const ev = await evaluate(evalRows);
  const pr = ev.predictions;
  // The added planted rows are evaluated on their own so the pool's overall scores and buckets stay unbiased.
  const evExtra: AlignmentEvaluation | undefined =
    extra.rows.length > 0 ? await evaluate(extra.rows) : undefined;
  const segments =
    planted && synth ? segmentReport(test, planted, synth, ev, evExtra, pStage1AllRows) : undefined;

  console.log(
    JSON.stringify({
      dataset: {
        source,
        synthetic: synth && {
          seed: syntheticSeed,
          users: synth.users,
          items: synth.items,
          ratings: synth.ratings,
          plantedItems: synth.plantedItemIds.length,
          plantedRatings: synth.plantedRatings,
        },
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
          coldItems,
        },
        maxHistory,
        block,
        itemAffinity,
        adapterSkip,
        adapterTail,
        stage3Lr,
        stage3Epochs,
        calibrateOutput,
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
      segments,
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
