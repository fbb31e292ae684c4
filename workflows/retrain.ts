import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  defineQuery,
  isCancellation,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type {
  CorellaActivities,
  Metrics,
  RetrainInput,
  RetrainProgress,
  RetrainResult,
  StageName,
} from '../activities/types.js';
import { TASK_QUEUE_CPU, TASK_QUEUE_GPU } from './search-attributes.js';

export const progressQuery = defineQuery<RetrainProgress>('progress');

const stageKey = defineSearchAttributeKey('CorellaStage', 'KEYWORD');
const datasetKey = defineSearchAttributeKey('CorellaDataset', 'KEYWORD');
const modelKey = defineSearchAttributeKey('CorellaModelVersion', 'KEYWORD');
const outcomeKey = defineSearchAttributeKey('CorellaOutcome', 'KEYWORD');

/** Error types that retrying cannot fix: bad input or a stage that does not exist yet. */
export const NON_RETRYABLE = [
  'BAD_DATASET',
  'BAD_CONFIG',
  'BAD_MODEL_FILE',
  'FEATURE_MAP_MISMATCH',
  'PROMPT_TOO_LONG',
  'GPU_UNAVAILABLE',
  'STAGE_NOT_IMPLEMENTED',
  'DATA_NOT_AVAILABLE',
  'ARTIFACT_CORRUPT',
];

const retry = {
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '1m',
  maximumAttempts: 5,
  nonRetryableErrorTypes: NON_RETRYABLE,
};

/** Proxies per activity class; queue names can be overridden per run (separate GPU pools, isolated tests). */
export function activityProxies(queues: { cpu?: string; gpu?: string } = {}, heartbeatTimeout = '2m') {
  const cpuQueue = queues.cpu ?? TASK_QUEUE_CPU;
  return {
    cpu: proxyActivities<CorellaActivities>({
      taskQueue: cpuQueue,
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      startToCloseTimeout: '30m',
      heartbeatTimeout,
      retry,
    }),
    bookkeeping: proxyActivities<CorellaActivities>({
      taskQueue: cpuQueue,
      startToCloseTimeout: '1m',
      retry: { ...retry, maximumAttempts: 20 },
    }),
    // Training and LLM activities heartbeat while they compute; a missed heartbeat means the worker died and
    // the retry resumes from the checkpoint named in the last heartbeat.
    gpu: proxyActivities<CorellaActivities>({
      taskQueue: queues.gpu ?? TASK_QUEUE_GPU,
      // A cancelled run ends only once its training has really stopped (no half-written model behind it).
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      startToCloseTimeout: '8h',
      heartbeatTimeout,
      retry,
    }),
  };
}

function describe(err: unknown): string {
  if (err instanceof ActivityFailure && err.cause) return describe(err.cause);
  if (err instanceof ApplicationFailure) return `${err.type ?? 'Error'}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

/** Ingest → (CRM stage 1 ∥ LLM features) → joint training → alignment evaluation → calibration → registry. */
export async function retrainWorkflow(input: RetrainInput): Promise<RetrainResult> {
  const { cpu, gpu, bookkeeping } = activityProxies(input.queues, input.heartbeatTimeout);
  const progress: RetrainProgress = { stage: 'starting', completed: [], metrics: {} };
  setHandler(progressQuery, () => progress);
  const enter = (stage: StageName): void => {
    if (progress.stage !== 'starting') progress.completed.push(progress.stage);
    progress.stage = stage;
    upsertSearchAttributes([{ key: stageKey, value: stage }]);
  };
  const absorb = (prefix: string, metrics: Metrics): void => {
    for (const [k, v] of Object.entries(metrics)) progress.metrics[prefix ? `${prefix}.${k}` : k] = v;
  };

  const datasetLabel = input.dataset.name ?? input.dataset.source;
  upsertSearchAttributes([{ key: datasetKey, value: datasetLabel }]);
  const { runId } = await bookkeeping.startRun({
    workflowId: workflowInfo().workflowId,
    kind: 'retrain',
    config: {
      dataset: input.dataset,
      config: input.config,
      configHash: input.configHash,
      trigger: input.trigger,
    },
    datasetLabel,
  });
  progress.runId = runId;
  const config = input.config;

  try {
    enter('ingest');
    const ds = await cpu.ingestDataset({ runId, config, dataset: input.dataset });
    progress.datasetVersionId = ds.datasetVersionId;

    enter('train-crm+llm-features');
    const [crm, llm] = await Promise.all([
      gpu.trainCrm({ runId, config, datasetVersionId: ds.datasetVersionId }),
      gpu.extractLlmFeatures({ runId, config, datasetVersionId: ds.datasetVersionId }),
    ]);
    // Stage 1 reports DCNv2 ('crm.*') and the LR baseline ('lr.*') side by side.
    absorb('', crm.metrics);
    absorb('llm', llm.metrics);

    enter('joint-training');
    const joint = await gpu.trainJoint({
      runId,
      config,
      datasetVersionId: ds.datasetVersionId,
      crmArtifact: crm.crmArtifact,
      featuresIndex: llm.featuresIndex,
      modelSha256: llm.modelSha256,
    });
    absorb('joint', joint.metrics);

    const models = {
      runId,
      config,
      datasetVersionId: ds.datasetVersionId,
      crmArtifact: joint.crmArtifact,
      adapterArtifact: joint.adapterArtifact,
      featuresIndex: llm.featuresIndex,
    };
    // Calibration (validation split) comes first: the alignment evaluation reports the hybrid on test at the
    // calibrated threshold.
    enter('calibration');
    const calibration = await cpu.calibrateThreshold(models);
    absorb('calibration', calibration.metrics);

    enter('alignment-evaluation');
    const evaluation = await cpu.evaluateAlignment({ ...models, threshold: calibration.threshold });
    absorb('eval', evaluation.metrics);

    enter('registration');
    const reg = await cpu.registerModelVersion({
      runId,
      datasetVersionId: ds.datasetVersionId,
      artifacts: {
        crm: joint.crmArtifact,
        adapter: joint.adapterArtifact,
        llmModel: llm.modelSha256,
        featuresIndex: llm.featuresIndex,
        calibrationCurve: calibration.curveArtifact,
      },
      threshold: calibration.threshold,
      metrics: { ...progress.metrics },
      promotion: config.promotion,
      llmModelPath: typeof config.llm?.model === 'string' ? config.llm.model : undefined,
    });
    progress.modelVersionId = reg.modelVersionId;
    progress.alias = reg.alias;
    upsertSearchAttributes([
      { key: modelKey, value: reg.modelVersionId },
      { key: outcomeKey, value: reg.alias },
    ]);

    enter('done');
    await bookkeeping.finishRun({
      runId,
      status: 'completed',
      summary: { ...progress, stage: 'done' },
    });
    return {
      runId,
      datasetVersionId: ds.datasetVersionId,
      modelVersionId: reg.modelVersionId,
      alias: reg.alias,
      threshold: calibration.threshold,
      metrics: progress.metrics,
    };
  } catch (err) {
    const cancelled = isCancellation(err);
    progress.error = describe(err);
    progress.stage = cancelled ? 'cancelled' : 'failed';
    // The run row must say how it ended even when the workflow itself is being cancelled.
    await CancellationScope.nonCancellable(async () => {
      upsertSearchAttributes([{ key: outcomeKey, value: progress.stage }]);
      await bookkeeping.finishRun({
        runId,
        status: cancelled ? 'cancelled' : 'failed',
        error: progress.error,
        summary: { ...progress },
      });
    });
    throw err;
  }
}
