/**
 * Activity signatures: the only thing workflow code imports from activities/. Inputs and outputs are small
 * (ids, URIs, sha256s, metric summaries); large data stays in the artifact store and Postgres.
 */
import type { PipelineConfigInput } from '../schema/pipeline.js';

export type DatasetSourceName = 'movielens-1m' | 'amazon-books' | 'recbole' | 'synthetic-movielens';

export interface DatasetSpec {
  source: DatasetSourceName;
  /** Local folder with the raw files (resolved by the client; workers must see the same path). */
  dir?: string;
  /** RecBole base name. */
  name?: string;
  /** Ingestion parameters (label rule, history length, k-core, ...), passed through to ml/data. */
  params?: Record<string, unknown>;
}

/**
 * The whole run configuration as written (every field optional), derived from the schema in
 * schema/pipeline.ts; its hash is part of the workflow id (docs/config.md).
 */
export type PipelineConfig = PipelineConfigInput;

export interface RetrainInput {
  dataset: DatasetSpec;
  config: PipelineConfig;
  /** sha256 of the canonical config + dataset spec, computed by the client. */
  configHash: string;
  /** Who or what started it (cli, schedule, test). */
  trigger?: string;
  /** Task queue overrides (defaults corella-cpu / corella-gpu). */
  queues?: TaskQueues;
  /** How long a long activity may go without a heartbeat before it is retried elsewhere (default 2m). */
  heartbeatTimeout?: string;
}

export interface TaskQueues {
  cpu?: string;
  gpu?: string;
}

export type Metrics = Record<string, number>;

export interface StartRunInput {
  workflowId: string;
  kind: 'retrain' | 'recalibrate' | 'score';
  config: unknown;
  datasetLabel: string;
}

export interface FinishRunInput {
  runId: string;
  status: 'completed' | 'failed' | 'cancelled';
  error?: string;
  summary?: Record<string, unknown>;
}

export interface StageInput {
  runId: string;
  config: PipelineConfig;
}

export interface IngestResult {
  datasetVersionId: string;
  /** Artifact sha256 of the dataset manifest. */
  manifestSha256: string;
  counts: Record<string, number>;
  source: DatasetSourceName;
}

export interface TrainCrmResult {
  crmArtifact: string;
  backend: string;
  metrics: Metrics;
}

export interface LlmFeaturesResult {
  /** Named pointer of the feature cache index in the artifact store. */
  featuresIndex: string;
  modelSha256: string;
  metrics: Metrics;
}

export interface JointResult {
  crmArtifact: string;
  /** The LLM branch artifact: the adapter, or with llm.finetune lora the LoRA head (ml/corella/llm-branch-model.ts). */
  adapterArtifact: string;
  /** With llm.finetune lora: sha256 of the exported GGUF LoRA adapter. */
  loraArtifact?: string;
  metrics: Metrics;
}

export interface EvaluationResult {
  evaluationId: string;
  metrics: Metrics;
}

export interface CalibrationResult {
  threshold: number;
  routedFraction: number;
  /** Artifact holding the whole threshold curve. */
  curveArtifact: string;
  metrics: Metrics;
}

export interface RegisterInput {
  runId: string;
  datasetVersionId: string;
  artifacts: Record<string, string>;
  threshold: number | null;
  metrics: Metrics;
  promotion?: { metric?: string; margin?: number };
  /** Local path of the LLM file, recorded as an artifact next to its sha256. */
  llmModelPath?: string;
}

export interface RegisterResult {
  modelVersionId: string;
  alias: 'champion' | 'challenger';
  reason: string;
}

export interface CorellaActivities {
  startRun(input: StartRunInput): Promise<{ runId: string }>;
  finishRun(input: FinishRunInput): Promise<void>;
  recordMetrics(input: { runId: string; metrics: Metrics; step?: number }): Promise<void>;
  ingestDataset(input: StageInput & { dataset: DatasetSpec }): Promise<IngestResult>;
  trainCrm(input: StageInput & { datasetVersionId: string }): Promise<TrainCrmResult>;
  /**
   * With `loraArtifact`, the features of the base model run with that GGUF LoRA (a LoRA run's second pass);
   * with `crmArtifact` too, only the validation rows calibration will ask for under that CRM.
   */
  extractLlmFeatures(
    input: StageInput & { datasetVersionId: string; loraArtifact?: string; crmArtifact?: string },
  ): Promise<LlmFeaturesResult>;
  trainJoint(
    input: StageInput & {
      datasetVersionId: string;
      crmArtifact: string;
      /** The frozen-LLM feature pass (informational; a LoRA run has none). */
      featuresIndex?: string;
      modelSha256?: string;
    },
  ): Promise<JointResult>;
  /** Runs after calibration: the hybrid is evaluated on test at the calibrated threshold. */
  evaluateAlignment(
    input: StageInput & {
      datasetVersionId: string;
      crmArtifact: string;
      adapterArtifact: string;
      featuresIndex: string;
      threshold: number;
    },
  ): Promise<EvaluationResult>;
  calibrateThreshold(
    input: StageInput & {
      datasetVersionId: string;
      crmArtifact: string;
      adapterArtifact: string;
      featuresIndex: string;
    },
  ): Promise<CalibrationResult>;
  registerModelVersion(input: RegisterInput): Promise<RegisterResult>;
  recalibrate(input: RecalibrateInput & { runId: string }): Promise<RecalibrateResult>;
  /** Batch scoring (workflows/score.ts): plan the chunks of an input artifact, score one, join them. */
  planScore(input: PlanScoreInput): Promise<ScorePlanSummary>;
  scoreChunk(input: ScoreChunkInput): Promise<ScoreChunkResult>;
  finishScore(input: FinishScoreInput): Promise<FinishScoreResult>;
  /** The run's HTML report, rendered from what it stored and kept as an artifact of the run. */
  renderReport(input: ReportInput): Promise<ReportResult>;
}

export interface ReportInput {
  runId: string;
  /**
   * Rendered as the last step of a run that is about to be closed as completed: the page shows that status
   * (the run row still says running while the report is made).
   */
  completing?: boolean;
  /** Bootstrap resamples per interval (default 1000). */
  bootstrapRounds?: number;
}

export interface ReportResult {
  /** sha256 of the HTML in the artifact store (also in the run's summary as reportArtifact). */
  reportArtifact: string;
  /** A copy with an .html name under the home folder, for opening it in a browser. */
  path: string;
  bytes: number;
  charts: string[];
}

/** A batch scoring run: the input file is an artifact; only its sha256 travels through the workflow. */
export interface BatchScoreInput {
  inputSha256: string;
  /** The file's name as the user gave it, for messages. */
  inputName?: string;
  /** `champion`, `challenger` (any alias) or a model version id; resolved once, when the run is planned. */
  model: string;
  /** Lines per chunk activity (default 1000). */
  chunkRows?: number;
  /** Chunks scored at once (default 1: one LLM per GPU worker). */
  parallelChunks?: number;
  /** Chunks per workflow run before it continues as new (default 500, which keeps the history small). */
  chunksPerRun?: number;
  queues?: TaskQueues;
  heartbeatTimeout?: string;
  /** Set by the workflow itself when it continues as new on a long file: the plan and the tallies so far. */
  resume?: {
    plan: ScorePlanSummary;
    nextChunk: number;
    tally: ScoreTally;
    /** The run row of the whole chain (workflows/score.ts SCORE_RUN_ROW); absent in runs from before it. */
    runId?: string;
  };
}

export interface PlanScoreInput {
  workflowId: string;
  inputSha256: string;
  inputName?: string;
  model: string;
  chunkRows: number;
}

export interface ScorePlanSummary {
  /** Artifact of the whole plan (chunk byte ranges, the pinned model version and threshold). */
  planSha256: string;
  rows: number;
  requests: number;
  chunks: number;
  modelVersion: string;
  threshold: number;
}

export interface ScoreChunkInput {
  workflowId: string;
  inputSha256: string;
  planSha256: string;
  chunk: number;
}

/** Rows per route; `crm-fallback` counts routed rows the LLM did not answer. */
export type RouteCounts = Record<'crm' | 'llm' | 'crm-fallback', number>;

export interface ScoreChunkResult {
  chunk: number;
  outputSha256: string;
  rows: number;
  routes: RouteCounts;
  /** True when an earlier attempt or run had already finished this chunk: nothing was scored again. */
  reused: boolean;
  attempt: number;
}

export interface FinishScoreInput {
  workflowId: string;
  planSha256: string;
}

export interface FinishScoreResult {
  outputSha256: string;
  rows: number;
  bytes: number;
}

export interface ScoreTally {
  routes: RouteCounts;
  scoredChunks: number;
  reusedChunks: number;
  /** Chunks that needed more than one attempt (a worker died or an attempt failed). */
  retriedChunks: number;
}

export interface BatchScoreResult extends ScoreTally {
  outputSha256: string;
  rows: number;
  chunks: number;
  modelVersion: string;
  threshold: number;
}

export interface ScoreProgress {
  stage: 'planning' | 'scoring' | 'joining' | 'done';
  chunks?: number;
  chunksDone: number;
  rows?: number;
}

export interface RecalibrateInput {
  /** Model version to recalibrate; the current champion when omitted. */
  modelVersionId?: string;
  /** A newer dataset version to score; otherwise the most recent window of the model's own data. */
  datasetVersionId?: string;
  windowDays?: number;
  maxRoutedFraction?: number;
  queues?: TaskQueues;
  /**
   * What to calibrate on: 'dataset' (default) the newest validation window of a dataset version; 'served'
   * the model version's logged predictions that received feedback in the last `windowDays` (default 7).
   */
  source?: RecalibrateSource;
  /** With source 'served': at most this many unrouted rows are shadow-scored by the LLM (default 256). */
  shadowRows?: number;
}

export type RecalibrateSource = 'dataset' | 'served';

/** Live routing against calibration, for a recalibration on served traffic. */
export interface RecalibrateDrift {
  /** Share of the window's served rows the server routed to the LLM. */
  liveRoutedFraction: number;
  /** Share the current threshold routed when it was calibrated (null when unknown). */
  calibratedRoutedFraction: number | null;
  /** The share the new threshold routes on the window. */
  newRoutedFraction: number;
  /** Live traffic routed more than the budget. */
  overBudget: boolean;
}

export interface RecalibrateResult {
  modelVersionId: string;
  calibrationId: string;
  threshold: number;
  previousThreshold: number | null;
  applied: boolean;
  metrics: Metrics;
  source?: RecalibrateSource;
  /** With source 'served'. */
  drift?: RecalibrateDrift;
  /** With source 'served': the hybrid as served on the window's rows. */
  served?: { auc: number; logLoss: number; acc: number };
  /** Anything the caller should know (e.g. why no row could be shadow-scored). */
  note?: string;
}

/** Activities that run on the GPU queue (training and LLM work); the rest run on the CPU queue. */
export const GPU_ACTIVITIES = ['trainCrm', 'extractLlmFeatures', 'trainJoint', 'scoreChunk'] as const;

export type StageName =
  | 'starting'
  | 'ingest'
  | 'train-crm+llm-features'
  /** llm.finetune lora only: stage 1 trains the CRM alone (the LoRA branch reads no frozen-LLM features). */
  | 'train-crm'
  | 'joint-training'
  /** llm.finetune lora only: the LLM features again, with the exported LoRA (for calibration and evaluation). */
  | 'lora-llm-features'
  | 'calibration'
  | 'alignment-evaluation'
  | 'registration'
  | 'report'
  | 'done'
  | 'failed'
  | 'cancelled';

export interface RetrainProgress {
  stage: StageName;
  runId?: string;
  completed: StageName[];
  datasetVersionId?: string;
  modelVersionId?: string;
  alias?: string;
  metrics: Metrics;
  error?: string;
  /** sha256 of the run's HTML report in the artifact store, and where its .html copy was written. */
  reportArtifact?: string;
  reportPath?: string;
  /** Why the report could not be rendered (the run itself still completes). */
  reportError?: string;
}

export interface RetrainResult {
  runId: string;
  datasetVersionId: string;
  modelVersionId: string;
  alias: 'champion' | 'challenger';
  threshold: number;
  metrics: Metrics;
  reportArtifact?: string;
  reportPath?: string;
}
