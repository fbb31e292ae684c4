/**
 * Alignment evaluation: CRM, LLM branch and hybrid per CRM-confidence bucket, plus the ablation runner.
 *
 * Unlike the HybridPredictor (the serving path, which never runs the LLM on confident samples), the
 * evaluation runs the LLM branch on every evaluated row: the per-bucket "LLM branch" column needs it.
 * Use `rows` to evaluate on a subsample when the LLM is slow.
 */
import type { ArtifactStore } from '../artifacts/store.js';
import type { CrmModel } from '../crm/types.js';
import type { CtrDataset, EncodedSplit, ItemTable } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { LlmFeatureSource } from '../llm/types.js';
import { bucketOf, quantileEdges } from '../metrics/index.js';
import type { LongRunOptions } from '../progress.js';
import type { LlmBranchModel } from './llm-branch-model.js';
import type { BoundaryShift } from './boundary.js';
import { calibrateThreshold, type Calibration, type CalibrationConfig } from './calibration.js';
import { fetchFeatures } from './features.js';
import { trainJoint, type JointConfigInput, type JointResult } from './joint.js';
import { sampleRows } from './sampling.js';
import { combine, isRouted, routingEntropies } from './routing.js';
import { ctrScores, pick, type CtrScores } from './score.js';
import { restoreVariables, snapshotVariables } from './weights.js';

/** 'quantile': n entropy-quantile buckets; 'paper3': the paper's three groups (entropy tertiles). */
export type BucketScheme = { kind: 'quantile'; buckets: number } | { kind: 'paper3' };

export const DEFAULT_BUCKET_SCHEMES: BucketScheme[] = [{ kind: 'quantile', buckets: 5 }, { kind: 'paper3' }];

export interface BucketRow {
  bucket: number;
  label: string;
  /** Entropy range [lo, hi) in nats. */
  lo: number;
  hi: number;
  n: number;
  positives: number;
  /** Share of the bucket the hybrid sends to the LLM. */
  routedFraction: number;
  crm: CtrScores;
  llm: CtrScores;
  hybrid: CtrScores;
}

export interface BucketTable {
  scheme: BucketScheme;
  rows: BucketRow[];
}

const PAPER3_LABELS = ['confident', 'medium', 'uncertain'];

/** Per-bucket scores of the three predictors; buckets by CRM entropy, least uncertain first. */
export function bucketTable(
  h: ArrayLike<number>,
  pCrm: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  pHybrid: ArrayLike<number>,
  labels: ArrayLike<number>,
  threshold: number,
  scheme: BucketScheme,
): BucketTable {
  const buckets = scheme.kind === 'paper3' ? 3 : scheme.buckets;
  if (!Number.isInteger(buckets) || buckets < 1) {
    throw new CorellaError('BAD_CONFIG', `bucket scheme: buckets must be a positive integer, got ${buckets}`);
  }
  const edges = quantileEdges(h, buckets);
  const members: number[][] = Array.from({ length: edges.length + 1 }, () => []);
  for (let i = 0; i < h.length; i++) members[bucketOf(h[i], edges)].push(i);
  const rows = members.map((m, b): BucketRow => {
    let routed = 0;
    for (const i of m) if (isRouted(h[i], threshold)) routed++;
    const y = pick(labels, m);
    const crm = ctrScores(pick(pCrm, m), y);
    return {
      bucket: b,
      label:
        scheme.kind === 'paper3' && edges.length === 2 ? PAPER3_LABELS[b] : `q${b + 1}/${edges.length + 1}`,
      lo: b === 0 ? -Infinity : edges[b - 1],
      hi: b === edges.length ? Infinity : edges[b],
      n: m.length,
      positives: crm.positives,
      routedFraction: m.length > 0 ? routed / m.length : 0,
      crm,
      llm: ctrScores(pick(pLlm, m), y),
      hybrid: ctrScores(pick(pHybrid, m), y),
    };
  });
  return { scheme, rows };
}

export interface AlignmentEvaluation {
  split: string;
  n: number;
  threshold: number;
  routedFraction: number;
  overall: { crm: CtrScores; llm: CtrScores; hybrid: CtrScores };
  buckets: BucketTable[];
  /** Per-row predictions, for bootstrap intervals and plots. */
  predictions: {
    rows: Int32Array;
    labels: Float32Array;
    pCrm: Float32Array;
    pLlm: Float32Array;
    pHybrid: Float32Array;
  };
}

export interface EvaluateArgs extends LongRunOptions {
  crm: CrmModel;
  /** The LLM branch on llama.cpp's features (LlmAdapter, or LoraHead for a LoRA version). */
  adapter: LlmBranchModel;
  llm: LlmFeatureSource;
  split: EncodedSplit;
  items: ItemTable;
  threshold: number;
  /** Rows of `split` to evaluate (all when omitted). */
  rows?: ArrayLike<number>;
  schemes?: BucketScheme[];
  /** Cold-item rows count as maximally uncertain, as in the calibration (CalibrationConfig.coldItems). */
  coldItems?: boolean;
}

export async function evaluateAlignment(args: EvaluateArgs): Promise<AlignmentEvaluation> {
  const { split } = args;
  const rows = args.rows ? Int32Array.from(args.rows) : Int32Array.from({ length: split.size }, (_, i) => i);
  if (rows.length === 0)
    throw new CorellaError('DATA_NOT_AVAILABLE', `evaluation: no rows of split ${split.name}`);
  const pCrm = await args.crm.predict(split, rows);
  const f = await fetchFeatures(args.llm, split, args.items, rows, {
    signal: args.signal,
    onProgress: args.onProgress,
    stage: `evaluation-llm-${split.name}`,
  });
  const pLlm = args.adapter.predict(f);
  const h = routingEntropies(pCrm, split, rows, args.coldItems);
  const { p: pHybrid, routed } = combine(pCrm, pLlm, h, args.threshold);
  const labels = pick(split.labels, rows);
  return {
    split: split.name,
    n: rows.length,
    threshold: args.threshold,
    routedFraction: routed / rows.length,
    overall: {
      crm: ctrScores(pCrm, labels),
      llm: ctrScores(pLlm, labels),
      hybrid: ctrScores(pHybrid, labels),
    },
    buckets: (args.schemes ?? DEFAULT_BUCKET_SCHEMES).map((s) =>
      bucketTable(h, pCrm, pLlm, pHybrid, labels, args.threshold, s),
    ),
    predictions: { rows, labels, pCrm, pLlm, pHybrid },
  };
}

export { sampleRows };

export type AblationVariant =
  'full' | 'no_stage1' | 'no_stage2' | 'no_stage3' | 'no_align' | 'crm_only' | 'llm_only';

export const ALL_ABLATIONS: readonly AblationVariant[] = [
  'full',
  'no_stage1',
  'no_stage2',
  'no_stage3',
  'no_align',
  'crm_only',
  'llm_only',
];

export interface AblationResult {
  variant: AblationVariant;
  threshold: number;
  calibration?: Calibration;
  test: { crm: CtrScores; llm: CtrScores; hybrid: CtrScores; routedFraction: number };
  boundaryShift?: { before: BoundaryShift; after: BoundaryShift };
}

export interface AblationArgs extends LongRunOptions {
  dataset: CtrDataset;
  llm: LlmFeatureSource;
  store: ArtifactStore;
  variants?: AblationVariant[];
  joint?: JointConfigInput;
  calibration?: Partial<CalibrationConfig>;
  /** Test rows evaluated (0 = all). */
  testRows?: number;
  /** A fresh, untrained CRM. */
  newCrm: () => CrmModel;
  /** Stage 1: a CRM trained on the training split (e.g. `(o) => trainCrm(ds, cfg, o).then((r) => r.model)`). */
  trainStage1: (opts: LongRunOptions) => Promise<CrmModel>;
}

/**
 * Runs each variant from the same stage-1 CRM (trained once, restored before each variant):
 * - no_stage1: a fresh CRM goes straight into stage 2;
 * - no_stage2 / no_stage3 / no_align (γ = 0): that part of the joint config switched off;
 * - crm_only / llm_only: the full model without routing (threshold +∞ / −∞).
 */
export async function runAblations(args: AblationArgs): Promise<AblationResult[]> {
  const variants = args.variants ?? [...ALL_ABLATIONS];
  const { dataset } = args;
  const testRows = sampleRows(dataset.splits.test.size, args.testRows ?? 0, 23);
  const stage1 = await args.trainStage1({ signal: args.signal, onProgress: args.onProgress });
  const snap = snapshotVariables(stage1.trainableVariables());
  const results: AblationResult[] = [];
  const baseName = args.joint?.checkpointName ?? 'corella/ablation';

  const run = async (
    variant: AblationVariant,
  ): Promise<{ crm: CrmModel; joint: JointResult; cal: Calibration }> => {
    const joint: JointConfigInput = {
      ...args.joint,
      checkpointName: `${baseName}/${variant}`,
      resume: false,
    };
    if (variant === 'no_stage2') joint.stage2 = { ...args.joint?.stage2, enabled: false };
    if (variant === 'no_stage3') joint.stage3 = { ...args.joint?.stage3, enabled: false };
    if (variant === 'no_align') joint.gamma = 0;
    let crm = stage1;
    if (variant === 'no_stage1') crm = args.newCrm();
    else restoreVariables(stage1.trainableVariables(), snap, 'stage-1 CRM snapshot');
    const j = await trainJoint({
      crm,
      dataset,
      llm: args.llm,
      store: args.store,
      config: joint,
      signal: args.signal,
      onProgress: args.onProgress,
    });
    const cal = await calibrateThreshold({
      crm,
      adapter: j.adapter,
      llm: args.llm,
      split: dataset.splits.valid,
      items: dataset.items,
      config: args.calibration,
      signal: args.signal,
    });
    return { crm, joint: j, cal };
  };

  const evaluate = async (crm: CrmModel, adapter: LlmBranchModel, threshold: number) => {
    const e = await evaluateAlignment({
      crm,
      adapter,
      llm: args.llm,
      split: dataset.splits.test,
      items: dataset.items,
      threshold,
      rows: testRows,
      schemes: [],
      signal: args.signal,
    });
    return { ...e.overall, routedFraction: e.routedFraction };
  };

  const trained = variants.filter((v) => v !== 'crm_only' && v !== 'llm_only');
  const needFull = variants.includes('crm_only') || variants.includes('llm_only');
  if (needFull && !trained.includes('full')) trained.unshift('full');
  for (const variant of trained) {
    const r = await run(variant);
    if (variants.includes(variant)) {
      results.push({
        variant,
        threshold: r.cal.threshold,
        calibration: r.cal,
        test: await evaluate(r.crm, r.joint.adapter, r.cal.threshold),
        boundaryShift: r.joint.boundaryShift,
      });
    }
    if (variant === 'full') {
      for (const [v, t] of [
        ['crm_only', Infinity],
        ['llm_only', -Infinity],
      ] as const) {
        if (variants.includes(v))
          results.push({ variant: v, threshold: t, test: await evaluate(r.crm, r.joint.adapter, t) });
      }
    }
    r.joint.adapter.dispose();
    r.joint.projections.dispose();
    if (r.crm !== stage1) r.crm.dispose();
  }
  stage1.dispose();
  const order = new Map(ALL_ABLATIONS.map((v, i) => [v, i]));
  return results.sort((a, b) => (order.get(a.variant) ?? 0) - (order.get(b.variant) ?? 0));
}
