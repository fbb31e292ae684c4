/**
 * The report model: every number one run's report shows, gathered from what the run stored (metric rows,
 * the calibration curve, the alignment evaluation and its per-row predictions, the boundary shift, the model
 * registry). Pure: the activity reads Postgres and the artifact store and hands the rows in; charts and the
 * HTML page are drawn from this model only, so the test can check the page against the same rows.
 */
import { CorellaError } from '../errors.js';
import { bucketOf } from '../metrics/index.js';
import { aucDiffInterval, groupBy, reliabilityBins, type Interval, type ReliabilityBin } from './stats.js';

export interface Scores {
  auc: number;
  logLoss: number;
  acc: number;
}

export interface RunInfo {
  id: string;
  workflowId: string;
  kind: string;
  status: string;
  attempt: number;
  startedAt: string;
  endedAt: string | null;
  codeVersion: string | null;
  datasetVersionId: string | null;
  /** The run row's config: { dataset, config, configHash, trigger } for a retrain. */
  config: Record<string, unknown>;
}

export interface MetricPoint {
  key: string;
  step: number;
  value: number;
}

/** A stored bucket row (ml/corella/evaluation.ts BucketRow after JSON: ±Infinity edges became null). */
export interface StoredBucketRow {
  bucket: number;
  label: string;
  lo: number | null;
  hi: number | null;
  n: number;
  positives: number;
  routedFraction: number;
  crm: Scores;
  llm: Scores;
  hybrid: Scores;
}

export interface StoredAlignment {
  split: string;
  n: number;
  threshold: number;
  routedFraction: number;
  overall: { crm: Scores; llm: Scores; hybrid: Scores };
  buckets: { scheme: { kind: string; buckets?: number }; rows: StoredBucketRow[] }[];
  /** The hybrid on the wider test pool where the LLM ran on routed rows only (ml/corella/hybrid-evaluation). */
  wide?: WideHybrid;
}

export interface WideHybrid {
  n: number;
  routed: number;
  routedFraction: number;
  crm: Scores;
  hybrid: Scores;
  gain?: { auc: number; lo95: number; hi95: number; rounds: number; unit: 'user' | 'row' };
}

export interface StoredPredictions {
  labels: ArrayLike<number>;
  pCrm: ArrayLike<number>;
  pLlm: ArrayLike<number>;
  pHybrid: ArrayLike<number>;
  /** The user of each row: overall intervals resample whole users (rows of one user are correlated). */
  users?: ArrayLike<number>;
  /** The routing entropy of each row (cold items count as ln 2): assigns rows to the stored buckets. */
  entropy?: ArrayLike<number>;
}

export interface StoredCalibration {
  metric: string;
  threshold: number;
  /** The routing budget the threshold was chosen under. */
  maxRoutedFraction: number;
  curve: { threshold: number; routedFraction: number; auc: number; logLoss: number }[];
  /** Why calibration chose the threshold (the gain check's verdict), when it recorded one. */
  reason?: string;
}

export interface StoredShift {
  n: number;
  agreement: number;
  logitCorrelation: number | null;
  meanAbsDiff: number;
  alignLoss: number | null;
}

export interface StoredModel {
  id: number;
  aliases: string[];
  calibratedThreshold: number | null;
  artifacts: Record<string, string | undefined>;
  metrics: Record<string, unknown>;
  sourceRunId: string;
}

export interface ReportSource {
  run: RunInfo;
  metrics: MetricPoint[];
  calibration?: StoredCalibration;
  alignment?: StoredAlignment;
  predictions?: StoredPredictions;
  boundaryShift?: { before: StoredShift; after: StoredShift };
  /** The version this run registered. */
  model?: StoredModel;
  /** The champion when the run started (from the alias audit trail), if there was one. */
  champion?: StoredModel & { since: string };
  dataset?: { versionId: string; source?: string; label?: string; counts?: Record<string, number> };
  llmModelSha256?: string;
  /** Bootstrap resamples per interval (default 1000). */
  bootstrapRounds?: number;
  /** A recalibration's model version as served: the prediction log per time bucket and its calibrations. */
  serving?: {
    modelVersionId: number;
    routed: { at: string; rows: number; routed: number; threshold: number | null }[];
    thresholds: { at: string; threshold: number; runId: string }[];
  };
}

export interface SummaryRow {
  /** 'overall', or `<scheme>.<bucket>` (e.g. 'q5.0', 'paper3.2'). */
  key: string;
  label: string;
  /** Entropy range [lo, hi) in nats; null = unbounded. */
  lo: number | null;
  hi: number | null;
  n: number;
  positives: number | null;
  routedFraction: number;
  crm: Scores;
  llm: Scores;
  hybrid: Scores;
  hybridMinusCrm?: Interval;
  llmMinusCrm?: Interval;
}

export interface SummarySection {
  /** 'overall' or the bucket scheme ('q5', 'paper3'). */
  scheme: string;
  title: string;
  rows: SummaryRow[];
}

export interface CurvePoint {
  threshold: number;
  routedFraction: number;
  auc: number;
  logLoss: number;
  chosen: boolean;
}

export interface TrainingSeries {
  /** The metric key, e.g. 'crm.train.loss'. */
  key: string;
  phase: 'CRM (stage 1)' | 'joint stage 2' | 'joint stage 3';
  kind: 'loss' | 'validation AUC';
  points: { epoch: number; value: number }[];
}

export interface ComparisonRow {
  metric: string;
  run: number | null;
  champion: number | null;
  diff: number | null;
}

export interface RunReport {
  title: string;
  run: RunInfo;
  provenance: {
    dataset: string;
    datasetVersionId: string | null;
    source: string | null;
    configHash: string | null;
    codeVersion: string | null;
    llmModelSha256: string | null;
    trigger: string | null;
    config: unknown;
  };
  headline: Record<string, number>;
  summary?: {
    split: string;
    n: number;
    threshold: number;
    routedFraction: number;
    sections: SummarySection[];
    wide?: WideHybrid;
  };
  calibration?: { metric: string; threshold: number; budget: number; points: CurvePoint[]; reason?: string };
  /** Bars: one per bucket (of the first scheme) and model. */
  buckets?: {
    scheme: string;
    bars: { bucket: string; order: number; model: string; auc: number; logLoss: number }[];
  };
  boundaryShift?: { measure: string; when: 'before stage 2' | 'after stage 2'; value: number }[];
  training: TrainingSeries[];
  reliability?: { model: 'CRM' | 'hybrid'; bins: ReliabilityBin[] }[];
  model?: StoredModel;
  champion?: { id: number; since: string; sourceRunId: string; rows: ComparisonRow[] };
  serving?: {
    modelVersionId: number;
    routed: { at: string; rows: number; routedFraction: number; threshold: number | null }[];
    thresholds: { at: string; threshold: number; runId: string; thisRun: boolean }[];
  };
  /** Every summary metric (step 0) of the run, by key. */
  metrics: Record<string, number>;
  /** What the report could not show, and why. */
  notes: string[];
}

/** The models of the summary table and the bucket bars, in display order. */
export const MODELS = [
  { key: 'crm', label: 'CRM' },
  { key: 'llm', label: 'LLM branch' },
  { key: 'hybrid', label: 'hybrid' },
] as const;

/** Metrics compared with the champion, when both have them. */
export const COMPARED_METRICS = [
  'calibration.hybrid.auc',
  'calibration.hybrid.logloss',
  'calibration.routedFraction',
  'calibration.threshold',
  'eval.test.crm.auc',
  'eval.test.llm.auc',
  'eval.test.hybrid.auc',
  'eval.test.hybrid.logloss',
  'eval.test.routedFraction',
  'crm.test.auc',
  'lr.test.auc',
] as const;

const HEADLINE = [
  'recalibration.threshold',
  'recalibration.routedFraction',
  'recalibration.new.auc',
  'recalibration.previous.auc',
  'eval.test.hybrid.auc',
  'eval.test.crm.auc',
  'eval.test.llm.auc',
  'eval.test.routedFraction',
  'calibration.threshold',
  'calibration.hybrid.auc',
];

const TRAINING: { key: string; phase: TrainingSeries['phase']; kind: TrainingSeries['kind'] }[] = [
  { key: 'crm.train.loss', phase: 'CRM (stage 1)', kind: 'loss' },
  { key: 'crm.valid.auc', phase: 'CRM (stage 1)', kind: 'validation AUC' },
  { key: 'joint.stage2.loss', phase: 'joint stage 2', kind: 'loss' },
  { key: 'joint.stage2.valid.crm.auc', phase: 'joint stage 2', kind: 'validation AUC' },
  { key: 'joint.stage3.loss', phase: 'joint stage 3', kind: 'loss' },
  { key: 'joint.stage3.valid.llm.auc', phase: 'joint stage 3', kind: 'validation AUC' },
];

function schemeKey(s: { kind: string; buckets?: number }): string {
  return s.kind === 'quantile' ? `q${s.buckets ?? ''}` : s.kind;
}

function schemeTitle(s: { kind: string; buckets?: number }): string {
  return s.kind === 'quantile'
    ? `${s.buckets} CRM-entropy quantile buckets (least uncertain first)`
    : "the paper's three CRM-confidence groups (entropy tertiles)";
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Step-0 values are a run's summary metrics; steps ≥ 1 are per-epoch curve points. */
function latestByKey(metrics: MetricPoint[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics) if (m.step === 0) out.set(m.key, m.value);
  return out;
}

function trainingSeries(metrics: MetricPoint[]): TrainingSeries[] {
  const out: TrainingSeries[] = [];
  for (const t of TRAINING) {
    const pts = metrics
      .filter((m) => m.key === t.key && m.step >= 1)
      .map((m) => ({ epoch: m.step, value: m.value }))
      .sort((a, b) => a.epoch - b.epoch);
    if (pts.length === 0) {
      // A joint stage logs its validation scores once, after its last epoch (step 0): one point.
      const last = metrics.find((m) => m.key === t.key && m.step === 0);
      const epochs = metrics.filter((m) => m.key === t.key.replace(/\.valid\..*$/, '.loss') && m.step >= 1);
      if (last && t.kind === 'validation AUC' && t.phase !== 'CRM (stage 1)' && epochs.length > 0) {
        pts.push({ epoch: Math.max(...epochs.map((m) => m.step)), value: last.value });
      }
    }
    if (pts.length > 0) out.push({ ...t, points: pts });
  }
  return out;
}

function intervals(
  p: StoredPredictions,
  rows: number[],
  rounds: number,
  seed: number,
): Pick<SummaryRow, 'hybridMinusCrm' | 'llmMinusCrm'> {
  const byUser = p.users ? groupBy(p.users, rows) : undefined;
  const unit = byUser && byUser.length >= 2 ? 'user' : 'row';
  const groups = unit === 'user' ? byUser! : rows.map((i) => [i]);
  const o = { rounds, unit } as const;
  return {
    hybridMinusCrm: aucDiffInterval(p.labels, p.pHybrid, p.pCrm, groups, { ...o, seed }),
    llmMinusCrm: aucDiffInterval(p.labels, p.pLlm, p.pCrm, groups, { ...o, seed: seed + 1 }),
  };
}

/** Restricts the predictions to `rows`, so intervals of a bucket are computed on that bucket only. */
function subset(p: StoredPredictions, rows: number[]): StoredPredictions {
  const take = (a: ArrayLike<number>) => Float64Array.from(rows, (i) => a[i]);
  return {
    labels: take(p.labels),
    pCrm: take(p.pCrm),
    pLlm: take(p.pLlm),
    pHybrid: take(p.pHybrid),
    users: p.users ? take(p.users) : undefined,
  };
}

function checkPredictions(p: StoredPredictions, n: number): void {
  for (const [field, a] of Object.entries({
    labels: p.labels,
    pCrm: p.pCrm,
    pLlm: p.pLlm,
    pHybrid: p.pHybrid,
  })) {
    if (a.length !== n) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `report: predictions.${field} has ${a.length} rows but the evaluation has ${n}`,
        { details: { field: `predictions.${field}`, rows: a.length, expected: n } },
      );
    }
  }
}

function summaryOf(
  a: StoredAlignment,
  p: StoredPredictions | undefined,
  rounds: number,
  notes: string[],
): RunReport['summary'] {
  if (p) checkPredictions(p, a.n);
  const all = Array.from({ length: a.n }, (_, i) => i);
  const sections: SummarySection[] = [
    {
      scheme: 'overall',
      title: `all ${a.n} evaluated ${a.split} rows`,
      rows: [
        {
          key: 'overall',
          label: 'overall',
          lo: null,
          hi: null,
          n: a.n,
          positives: null,
          routedFraction: a.routedFraction,
          ...a.overall,
          ...(p ? intervals(p, all, rounds, 1) : {}),
        },
      ],
    },
  ];
  if (!p) notes.push('No per-row predictions were stored: the summary table has no bootstrap intervals.');
  else if (!p.entropy) notes.push('No routing entropies: per-bucket rows have no bootstrap intervals.');
  a.buckets.forEach((table, t) => {
    const key = schemeKey(table.scheme);
    // Bucket membership as the evaluation assigned it: bucketOf over the stored lower edges.
    const edges = table.rows.slice(1).map((r) => r.lo ?? -Infinity);
    const members = table.rows.map((): number[] => []);
    if (p?.entropy) for (let i = 0; i < a.n; i++) members[bucketOf(p.entropy[i], edges)]?.push(i);
    sections.push({
      scheme: key,
      title: schemeTitle(table.scheme),
      rows: table.rows.map((r, b) => {
        const m = members[b];
        const usable = p?.entropy !== undefined && m.length === r.n;
        if (p?.entropy && !usable) {
          notes.push(
            `Bucket ${key}.${r.bucket}: ${m.length} rows by entropy but ${r.n} stored; no interval.`,
          );
        }
        return {
          key: `${key}.${r.bucket}`,
          label: r.label,
          lo: r.lo,
          hi: r.hi,
          n: r.n,
          positives: r.positives,
          routedFraction: r.routedFraction,
          crm: r.crm,
          llm: r.llm,
          hybrid: r.hybrid,
          ...(usable
            ? intervals(
                subset(p, m),
                m.map((_, j) => j),
                rounds,
                100 * (t + 1) + b,
              )
            : {}),
        };
      }),
    });
  });
  return {
    split: a.split,
    n: a.n,
    threshold: a.threshold,
    routedFraction: a.routedFraction,
    sections,
    ...(a.wide ? { wide: a.wide } : {}),
  };
}

export function buildReport(src: ReportSource): RunReport {
  const notes: string[] = [];
  const rounds = src.bootstrapRounds ?? 1000;
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new CorellaError(
      'BAD_CONFIG',
      `report: bootstrapRounds must be a positive integer, got ${rounds}`,
      {
        details: { field: 'bootstrapRounds' },
      },
    );
  }
  const latest = latestByKey(src.metrics);
  const cfg = src.run.config;
  const ds = (cfg.dataset ?? {}) as { source?: string; name?: string };
  const text = (v: unknown) => (typeof v === 'string' ? v : null);

  const report: RunReport = {
    title: `corella ${src.run.kind} run ${src.run.id.slice(0, 8)}`,
    run: src.run,
    provenance: {
      dataset: src.dataset?.label ?? ds.name ?? ds.source ?? '-',
      datasetVersionId: src.run.datasetVersionId ?? src.dataset?.versionId ?? null,
      source: src.dataset?.source ?? ds.source ?? null,
      configHash: text(cfg.configHash),
      codeVersion: src.run.codeVersion,
      llmModelSha256: src.llmModelSha256 ?? src.model?.artifacts.llmModel ?? null,
      trigger: text(cfg.trigger),
      config: cfg.config ?? cfg,
    },
    headline: Object.fromEntries(HEADLINE.flatMap((k) => (latest.has(k) ? [[k, latest.get(k)!]] : []))),
    training: trainingSeries(src.metrics),
    metrics: Object.fromEntries([...latest.entries()].sort(([a], [b]) => (a < b ? -1 : 1))),
    notes,
  };

  if (src.alignment) report.summary = summaryOf(src.alignment, src.predictions, rounds, notes);
  else if (src.run.kind !== 'recalibrate') {
    notes.push('No alignment evaluation was stored for this run: no summary table or bucket bars.');
  }

  if (src.serving) {
    const sv = src.serving;
    report.serving = {
      modelVersionId: sv.modelVersionId,
      routed: sv.routed
        .filter((r) => r.rows > 0)
        .map((r) => ({ at: r.at, rows: r.rows, routedFraction: r.routed / r.rows, threshold: r.threshold })),
      thresholds: sv.thresholds.map((t) => ({ ...t, thisRun: t.runId === src.run.id })),
    };
    if (report.serving.routed.length === 0) {
      notes.push(
        `Model version ${sv.modelVersionId} has no served predictions logged yet: no routed fraction over time.`,
      );
    }
  }

  if (src.calibration) {
    const c = src.calibration;
    report.calibration = {
      metric: c.metric,
      threshold: c.threshold,
      budget: c.maxRoutedFraction,
      points: c.curve
        .filter((p) => Number.isFinite(p.auc) && Number.isFinite(p.logLoss))
        .map((p) => ({ ...p, chosen: p.threshold === c.threshold })),
      ...(c.reason ? { reason: c.reason } : {}),
    };
  } else notes.push('No threshold calibration was stored for this run.');

  const first = src.alignment?.buckets[0];
  if (first) {
    report.buckets = {
      scheme: schemeKey(first.scheme),
      bars: first.rows.flatMap((r) =>
        MODELS.map((m) => ({
          bucket: r.label,
          order: r.bucket,
          model: m.label,
          auc: r[m.key].auc,
          logLoss: r[m.key].logLoss,
        })),
      ),
    };
  }

  if (src.boundaryShift) {
    const measures = [
      ['agreement', 'decision agreement'],
      ['logitCorrelation', 'logit correlation'],
      ['meanAbsDiff', 'mean |p_crm − p_llm|'],
      ['alignLoss', 'alignment loss'],
    ] as const;
    report.boundaryShift = measures.flatMap(([k, label]) =>
      (['before', 'after'] as const).flatMap((when) => {
        const v = num(src.boundaryShift![when][k]);
        return v === null ? [] : [{ measure: label, when: `${when} stage 2` as const, value: v }];
      }),
    );
  } else if (src.run.kind !== 'recalibrate') {
    notes.push('No boundary shift was stored (stage 2 off, or no validation samples).');
  }

  if (src.predictions && src.alignment) {
    report.reliability = [
      { model: 'CRM', bins: reliabilityBins(src.predictions.pCrm, src.predictions.labels) },
      { model: 'hybrid', bins: reliabilityBins(src.predictions.pHybrid, src.predictions.labels) },
    ];
  }

  if (report.training.length === 0 && src.run.kind !== 'recalibrate') {
    notes.push('No per-epoch training metrics were stored for this run.');
  }

  if (src.model) report.model = src.model;
  if (src.champion) {
    const theirs = src.champion.metrics;
    report.champion = {
      id: src.champion.id,
      since: src.champion.since,
      sourceRunId: src.champion.sourceRunId,
      rows: COMPARED_METRICS.map((metric) => {
        const run = latest.get(metric) ?? null;
        const champion = num(theirs[metric]);
        return { metric, run, champion, diff: run !== null && champion !== null ? run - champion : null };
      }).filter((r) => r.run !== null || r.champion !== null),
    };
  } else if (src.run.kind !== 'recalibrate') {
    notes.push('There was no champion when this run started: nothing to compare with.');
  }
  return report;
}
