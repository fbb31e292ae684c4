/**
 * What a person watching the Temporal UI reads about a retrain: the activity summaries shown in the event
 * history, and the markdown of the workflow's current details (stage, live progress, key metrics, report).
 * Deterministic text from workflow state only.
 */
import type { Metrics, PipelineConfig, RetrainProgress, StageName } from '../activities/types.js';

/**
 * The stages in order, for "stage 3 of 7". A LoRA run's 'lora-llm-features' (between joint training and
 * calibration) is not counted, so a run without LoRA reads as it always did; its stage 1, 'train-crm',
 * counts as the second stage, where 'train-crm+llm-features' stands.
 */
export const STAGES: StageName[] = [
  'ingest',
  'train-crm+llm-features',
  'joint-training',
  'calibration',
  'alignment-evaluation',
  'registration',
  'report',
];

/** The activities each stage runs: progress of any other (a late signal of a finished one) is ignored. */
export const STAGE_ACTIVITIES: Partial<Record<StageName, string[]>> = {
  ingest: ['ingestDataset'],
  'train-crm+llm-features': ['trainCrm', 'extractLlmFeatures'],
  'train-crm': ['trainCrm'],
  'joint-training': ['trainJoint'],
  'lora-llm-features': ['extractLlmFeatures'],
  calibration: ['calibrateThreshold'],
  'alignment-evaluation': ['evaluateAlignment'],
  registration: ['registerModelVersion'],
  report: ['renderReport'],
};

/** Metrics worth a glance while a run is going, in the order they appear; the rest stay in Postgres. */
const KEY_METRICS = [
  'crm.valid.auc',
  'crm.test.auc',
  'lr.test.auc',
  'llm.computed',
  'llm.samplesPerSec',
  'joint.stage2.loss',
  'joint.stage2.valid.crm.auc',
  'joint.stage3.valid.llm.auc',
  'calibration.threshold',
  'calibration.routedFraction',
  'calibration.hybrid.auc',
  'eval.test.crm.auc',
  'eval.test.llm.auc',
  'eval.test.hybrid.auc',
  'eval.test.routedFraction',
];

/** Digits grouped in threes (no Intl: the text must be the same on every replay and worker). */
export function grouped(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function section(config: PipelineConfig, name: keyof PipelineConfig): Record<string, unknown> {
  return (config[name] ?? {}) as Record<string, unknown>;
}

function n(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** One-line activity summaries (Temporal markdown), e.g. "train CRM: DCNv2 3 epochs". */
export function activitySummaries(config: PipelineConfig, datasetLabel: string) {
  const crm = section(config, 'crm');
  const llm = section(config, 'llm');
  const joint = section(config, 'joint');
  const cal = section(config, 'calibration');
  const pools = (llm.pools ?? {}) as Record<string, unknown>;
  const s2 = (joint.stage2 ?? {}) as Record<string, unknown>;
  const s3 = (joint.stage3 ?? {}) as Record<string, unknown>;
  const valid = n(pools.valid) ?? 2000;
  const test = n(pools.test) ?? 2000;
  // Random stage-2/3 subsets get their features up front; 'hard' ones are chosen after stage 1.
  const train = joint.subset === 'random' ? (n(s2.samples) ?? 0) + (n(s3.samples) ?? 0) : 0;
  const epochs = n(crm.epochs) ?? 3;
  const stage = (name: string, s: Record<string, unknown>) =>
    s.enabled === false
      ? `${name} off`
      : `${name}${n(s.samples) ? ` ${grouped(n(s.samples)!)} rows` : ''}${n(s.epochs) !== undefined ? ` × ${n(s.epochs)} epochs` : ''}`;
  const budget = n(cal.maxRoutedFraction);
  return {
    ingest: `ingest: ${datasetLabel}`,
    trainCrm: `train CRM: DCNv2 ${epochs} epoch${epochs === 1 ? '' : 's'}${crm.baseline === false ? '' : ' + LR baseline'}`,
    extractLlmFeatures: `LLM features: ${grouped(valid + test + train)} rows (valid ${grouped(valid)}, test ${grouped(test)}${train ? `, train ${grouped(train)}` : ''})`,
    trainJoint: `joint training: ${stage('stage 2', s2)}, ${stage('stage 3', s3)}`,
    extractLoraFeatures: `LLM features with the trained LoRA: ${grouped(valid + test)} rows (valid ${grouped(valid)}, test ${grouped(test)})`,
    calibrateThreshold: `calibrate threshold: best ${typeof cal.metric === 'string' ? cal.metric : 'auc'}${budget !== undefined ? ` within ${Math.round(budget * 100)}% routed` : ''}`,
    evaluateAlignment: (threshold: number) =>
      `evaluate on test: CRM, LLM branch, hybrid at threshold ${threshold.toFixed(3)}`,
    registerModelVersion: `register model version (promotion by ${config.promotion?.metric ?? 'calibration.hybrid.auc'})`,
    renderReport: 'render the HTML report',
  };
}

/** Live progress of the running activity, as its heartbeats report it (ml/progress.ts Progress). */
export interface LiveProgress {
  activity: string;
  stage?: string;
  epoch?: number;
  done?: number;
  total?: number;
  samplesPerSec?: number;
  etaSec?: number;
  message?: string;
}

function liveLine(p: LiveProgress): string {
  const parts = [p.activity, p.stage && p.stage !== p.activity ? p.stage : undefined];
  if (p.epoch !== undefined) parts.push(`epoch ${p.epoch + 1}`);
  if (p.done !== undefined) {
    parts.push(
      p.total
        ? `${grouped(p.done)}/${grouped(p.total)} (${Math.floor((100 * p.done) / p.total)}%)`
        : grouped(p.done),
    );
  }
  if (p.samplesPerSec !== undefined) parts.push(`${p.samplesPerSec.toFixed(1)} samples/s`);
  if (p.etaSec !== undefined) parts.push(`ETA ${Math.round(p.etaSec)} s`);
  if (p.message) parts.push(p.message);
  return parts.filter(Boolean).join(' · ');
}

function value(k: string, v: number): string {
  if (/routedFraction$/.test(k)) return `${(v * 100).toFixed(1)}%`;
  return Number.isInteger(v) ? grouped(v) : v.toFixed(4);
}

/** The workflow's current details: markdown, rebuilt whenever the stage, the metrics or the progress change. */
export function currentDetails(
  p: RetrainProgress & { live?: Record<string, LiveProgress> },
  datasetLabel: string,
): string {
  const at = STAGES.indexOf(p.stage === 'train-crm' ? 'train-crm+llm-features' : p.stage);
  const stage = at >= 0 ? `**Stage:** ${p.stage} (${at + 1} of ${STAGES.length})` : `**Stage:** ${p.stage}`;
  const lines = [stage, `**Dataset:** ${datasetLabel}`];
  if (p.runId) lines.push(`**Run:** \`${p.runId}\``);
  if (p.completed.length) lines.push(`**Done:** ${p.completed.join(' → ')}`);
  for (const live of Object.values(p.live ?? {})) lines.push(`**Running:** ${liveLine(live)}`);
  if (p.modelVersionId) lines.push(`**Model version:** ${p.modelVersionId} (${p.alias ?? '?'})`);
  if (p.error) lines.push(`**Error:** ${p.error}`);
  if (p.reportPath) lines.push(`**Report:** \`${p.reportPath}\``);
  const metrics = keyMetrics(p.metrics);
  // Two trailing spaces: a markdown line break, so the header lines stay one per line.
  const head = lines.join('  \n');
  if (metrics.length === 0) return head;
  return `${head}\n\n**Key metrics so far**\n\n${metrics.map(([k, v]) => `- ${k}: ${value(k, v)}`).join('\n')}`;
}

export function keyMetrics(m: Metrics): [string, number][] {
  return KEY_METRICS.filter((k) => typeof m[k] === 'number').map((k) => [k, m[k]]);
}
