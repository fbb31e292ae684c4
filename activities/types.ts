/**
 * Activity signatures: the only thing workflow code imports from activities/. Inputs and outputs are small
 * (ids, URIs, sha256s, metric summaries); large data stays in the artifact store and Postgres.
 */

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

/** The whole run configuration; its canonical hash is part of the workflow id. */
export interface PipelineConfig {
  crm?: Record<string, unknown>;
  llm?: Record<string, unknown>;
  joint?: Record<string, unknown>;
  calibration?: Record<string, unknown>;
  evaluation?: Record<string, unknown>;
  promotion?: { metric?: string; margin?: number };
}

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
  kind: 'retrain' | 'recalibrate';
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
  adapterArtifact: string;
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
  extractLlmFeatures(input: StageInput & { datasetVersionId: string }): Promise<LlmFeaturesResult>;
  trainJoint(
    input: StageInput & {
      datasetVersionId: string;
      crmArtifact: string;
      featuresIndex: string;
      modelSha256: string;
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

export interface RecalibrateInput {
  /** Model version to recalibrate; the current champion when omitted. */
  modelVersionId?: string;
  /** A newer dataset version to score; otherwise the most recent window of the model's own data. */
  datasetVersionId?: string;
  windowDays?: number;
  maxRoutedFraction?: number;
  queues?: TaskQueues;
}

export interface RecalibrateResult {
  modelVersionId: string;
  calibrationId: string;
  threshold: number;
  previousThreshold: number | null;
  applied: boolean;
  metrics: Metrics;
}

/** Activities that run on the GPU queue (training and LLM work); the rest run on the CPU queue. */
export const GPU_ACTIVITIES = ['trainCrm', 'extractLlmFeatures', 'trainJoint'] as const;

export type StageName =
  | 'starting'
  | 'ingest'
  | 'train-crm+llm-features'
  | 'joint-training'
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
