import {
  ActivityCancellationType,
  CancellationScope,
  defineQuery,
  isCancellation,
  defineSignal,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { ApplicationFailure, defineSearchAttributeKey, type ActivityOptions } from '@temporalio/common';
import type {
  CorellaActivities,
  Metrics,
  RetrainInput,
  RetrainProgress,
  RetrainResult,
  StageName,
} from '../activities/types.js';
import { METRIC_PREFIX, prefixMetrics, type MetricPrefix } from '../activities/metric-keys.js';
import { activitySummaries, currentDetails, STAGE_ACTIVITIES, type LiveProgress } from './run-details.js';
import { TASK_QUEUE_CPU, TASK_QUEUE_GPU } from './search-attributes.js';
import { rootCause } from './failure.js';

export const progressQuery = defineQuery<RetrainProgress>('progress');
/** Sent by long activities (activities/heartbeat.ts, throttled) so the current details show live progress. */
export const activityProgressSignal = defineSignal<[LiveProgress]>('activityProgress');

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

/**
 * How long an activity may go without a heartbeat before Temporal hands it to another worker. Activities
 * heartbeat every second while they compute (activities/heartbeat.ts withPulse), so 30 s tolerates a loaded
 * machine's stalls many times over, while a worker killed mid-activity costs at most 30 s before the worker
 * `up` restarted picks the retry up (with 2 minutes, a restarted worker sat idle for 2 minutes).
 */
export const DEFAULT_HEARTBEAT_TIMEOUT = '30s';

/** Options per activity class; queue names can be overridden per run (separate GPU pools, isolated tests). */
export function activityOptions(
  queues: { cpu?: string; gpu?: string } = {},
  heartbeatTimeout = DEFAULT_HEARTBEAT_TIMEOUT,
) {
  const cpuQueue = queues.cpu ?? TASK_QUEUE_CPU;
  return {
    cpu: {
      taskQueue: cpuQueue,
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      // Room for the work and for a database outage waited out inside it.
      startToCloseTimeout: '2h',
      heartbeatTimeout,
      retry,
    },
    // Run rows are quick writes, but a database outage is waited out inside the activity (CORELLA_DB_WAIT,
    // 30 minutes by default, heartbeating meanwhile): the timeout leaves room for that wait, and the
    // heartbeat timeout still notices a dead worker within seconds.
    bookkeeping: {
      taskQueue: cpuQueue,
      startToCloseTimeout: '40m',
      heartbeatTimeout,
      retry: { ...retry, maximumAttempts: 20 },
    },
    // Training and LLM activities heartbeat while they compute; a missed heartbeat means the worker died and
    // the retry resumes from the checkpoint named in the last heartbeat.
    gpu: {
      taskQueue: queues.gpu ?? TASK_QUEUE_GPU,
      // A cancelled run ends only once its training has really stopped (no half-written model behind it).
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      startToCloseTimeout: '8h',
      heartbeatTimeout,
      retry,
    },
  } satisfies Record<string, ActivityOptions>;
}

/** Proxies per activity class. */
export function activityProxies(
  queues: { cpu?: string; gpu?: string } = {},
  heartbeatTimeout = DEFAULT_HEARTBEAT_TIMEOUT,
) {
  const o = activityOptions(queues, heartbeatTimeout);
  return {
    cpu: proxyActivities<CorellaActivities>(o.cpu),
    bookkeeping: proxyActivities<CorellaActivities>(o.bookkeeping),
    gpu: proxyActivities<CorellaActivities>(o.gpu),
  };
}

/**
 * The same proxies, each call carrying a one-line summary that the Temporal UI shows on the activity's
 * events ("train CRM: DCNv2 3 epochs"). A proxy is only an options holder, so one per call costs nothing.
 */
function summarised(o: ReturnType<typeof activityOptions>) {
  const make = (opts: ActivityOptions) => (summary: string) =>
    proxyActivities<CorellaActivities>({ ...opts, summary });
  return { cpu: make(o.cpu), gpu: make(o.gpu), bookkeeping: make(o.bookkeeping) };
}

/**
 * Patch `retrain-lora-features`: a run with llm.finetune lora extracts the validation and test features
 * again with the LoRA that joint training exported, so calibration and evaluation score the branch that
 * serving will run. Runs with finetune lora that started before it had no such step.
 */
const LORA_FEATURES_PATCH = 'retrain-lora-features';

/**
 * Patch `retrain-lora-no-frozen-features`: a LoRA run reads no frozen-LLM features (its branch is the LoRA
 * itself, and calibration and evaluation read the LoRA pass), so beside stage 1 it no longer extracts them:
 * on the adapter's ml-1m config that pass was 1,400+ prompts of llama.cpp competing with the CRM for the
 * two cores, and a LoRA run's pools are larger.
 */
const LORA_NO_FROZEN_FEATURES_PATCH = 'retrain-lora-no-frozen-features';

/**
 * Patch `retrain-lora-screened-valid`: the LoRA pass gets the joint CRM, so it extracts only the validation
 * rows calibration will ask the LLM for (the pool's top `calibration.curveMaxFraction` by that CRM's
 * entropy). Without the CRM an old run's pass extracts the whole pool, as it did when it started.
 */
const LORA_SCREENED_VALID_PATCH = 'retrain-lora-screened-valid';

/**
 * Patch `retrain-lora-stage-label`: a LoRA run's stage 1 trains only the CRM, so it is named 'train-crm'
 * in the Temporal UI and the stage search attribute. It is asked before the stage is entered, and a history
 * without its marker replays as before (no command), so runs that started earlier keep their old label.
 */
const LORA_STAGE_LABEL_PATCH = 'retrain-lora-stage-label';

/**
 * Ingest → (CRM stage 1 ∥ LLM features) → joint training → [LoRA features] → calibration → alignment evaluation → registry →
 * report. The current details (Temporal UI) follow every stage, metric and progress report.
 */
export async function retrainWorkflow(input: RetrainInput): Promise<RetrainResult> {
  const options = activityOptions(input.queues, input.heartbeatTimeout);
  const { cpu, gpu, bookkeeping } = summarised(options);
  const progress: RetrainProgress & { live?: Record<string, LiveProgress> } = {
    stage: 'starting',
    completed: [],
    metrics: {},
  };
  const datasetLabel = input.dataset.name ?? input.dataset.source;
  const refresh = (): void => setCurrentDetails(currentDetails(progress, datasetLabel));
  setHandler(progressQuery, () => {
    const { live: _live, ...rest } = progress;
    return rest;
  });
  setHandler(activityProgressSignal, (p) => {
    if (!STAGE_ACTIVITIES[progress.stage]?.includes(p.activity)) return;
    progress.live = { ...progress.live, [p.activity]: p };
    refresh();
  });
  const enter = (stage: StageName): void => {
    if (progress.stage !== 'starting') progress.completed.push(progress.stage);
    progress.stage = stage;
    progress.live = undefined;
    upsertSearchAttributes([{ key: stageKey, value: stage }]);
    refresh();
  };
  const absorb = (prefix: MetricPrefix | '', metrics: Metrics): void => {
    Object.assign(progress.metrics, prefixMetrics(prefix, metrics));
    refresh();
  };
  const say = activitySummaries(input.config, datasetLabel);

  upsertSearchAttributes([{ key: datasetKey, value: datasetLabel }]);
  refresh();
  const { runId } = await bookkeeping('bookkeeping: open the run row').startRun({
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
    const ds = await cpu(say.ingest).ingestDataset({ runId, config, dataset: input.dataset });
    progress.datasetVersionId = ds.datasetVersionId;

    const loraRun = config.llm?.finetune?.method === 'lora';
    const crmOnlyLabel = loraRun && patched(LORA_STAGE_LABEL_PATCH);
    enter(crmOnlyLabel ? 'train-crm' : 'train-crm+llm-features');
    const frozenFeatures = !(loraRun && (crmOnlyLabel || patched(LORA_NO_FROZEN_FEATURES_PATCH)));
    const [crm, llm] = await Promise.all([
      gpu(say.trainCrm).trainCrm({ runId, config, datasetVersionId: ds.datasetVersionId }),
      frozenFeatures
        ? gpu(say.extractLlmFeatures).extractLlmFeatures({
            runId,
            config,
            datasetVersionId: ds.datasetVersionId,
          })
        : undefined,
    ]);
    // Stage 1 reports DCNv2 ('crm.*') and the LR baseline ('lr.*') side by side.
    absorb('', crm.metrics);
    if (llm) absorb(METRIC_PREFIX.llm, llm.metrics);

    enter('joint-training');
    const joint = await gpu(say.trainJoint).trainJoint({
      runId,
      config,
      datasetVersionId: ds.datasetVersionId,
      crmArtifact: crm.crmArtifact,
      featuresIndex: llm?.featuresIndex,
      modelSha256: llm?.modelSha256,
    });
    absorb(METRIC_PREFIX.joint, joint.metrics);

    // A LoRA run: llama.cpp with the exported LoRA gives the features calibration and evaluation read.
    let features = llm;
    if (loraRun && joint.loraArtifact && patched(LORA_FEATURES_PATCH)) {
      enter('lora-llm-features');
      features = await gpu(say.extractLoraFeatures).extractLlmFeatures({
        runId,
        config,
        datasetVersionId: ds.datasetVersionId,
        loraArtifact: joint.loraArtifact,
        ...(patched(LORA_SCREENED_VALID_PATCH) ? { crmArtifact: joint.crmArtifact } : {}),
      });
      absorb(METRIC_PREFIX.llm, features.metrics);
    }
    if (!features) {
      throw ApplicationFailure.nonRetryable(
        'llm.finetune.method is "lora" but joint training exported no LoRA: nothing to calibrate on',
        'BAD_CONFIG',
      );
    }

    const models = {
      runId,
      config,
      datasetVersionId: ds.datasetVersionId,
      crmArtifact: joint.crmArtifact,
      adapterArtifact: joint.adapterArtifact,
      featuresIndex: features.featuresIndex,
    };
    // Calibration (validation split) comes first: the alignment evaluation reports the hybrid on test at the
    // calibrated threshold.
    enter('calibration');
    const calibration = await cpu(say.calibrateThreshold).calibrateThreshold(models);
    absorb(METRIC_PREFIX.calibration, calibration.metrics);

    enter('alignment-evaluation');
    const evaluation = await cpu(say.evaluateAlignment(calibration.threshold)).evaluateAlignment({
      ...models,
      threshold: calibration.threshold,
    });
    absorb(METRIC_PREFIX.eval, evaluation.metrics);

    enter('registration');
    const reg = await cpu(say.registerModelVersion).registerModelVersion({
      runId,
      datasetVersionId: ds.datasetVersionId,
      artifacts: {
        crm: joint.crmArtifact,
        adapter: joint.adapterArtifact,
        ...(joint.loraArtifact ? { llmLora: joint.loraArtifact } : {}),
        llmModel: features.modelSha256,
        featuresIndex: features.featuresIndex,
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

    // The model is registered: a report that cannot be rendered is noted, not a failed run (`corella report`
    // renders it again).
    enter('report');
    try {
      const report = await cpu(say.renderReport).renderReport({ runId, completing: true });
      progress.reportArtifact = report.reportArtifact;
      progress.reportPath = report.path;
    } catch (err) {
      if (isCancellation(err)) throw err;
      progress.reportError = rootCause(err);
    }

    enter('done');
    const { live: _live, ...summary } = progress;
    await bookkeeping('bookkeeping: close the run row').finishRun({
      runId,
      status: 'completed',
      summary: { ...summary, stage: 'done' },
    });
    return {
      runId,
      datasetVersionId: ds.datasetVersionId,
      modelVersionId: reg.modelVersionId,
      alias: reg.alias,
      threshold: calibration.threshold,
      metrics: progress.metrics,
      reportArtifact: progress.reportArtifact,
      reportPath: progress.reportPath,
    };
  } catch (err) {
    const cancelled = isCancellation(err);
    progress.error = rootCause(err);
    progress.stage = cancelled ? 'cancelled' : 'failed';
    progress.live = undefined;
    refresh();
    // The run row must say how it ended even when the workflow itself is being cancelled.
    await CancellationScope.nonCancellable(async () => {
      upsertSearchAttributes([{ key: outcomeKey, value: progress.stage }]);
      const { live: _live, ...summary } = progress;
      await bookkeeping('bookkeeping: record how the run ended').finishRun({
        runId,
        status: cancelled ? 'cancelled' : 'failed',
        error: progress.error,
        summary: { ...summary },
      });
    });
    throw err;
  }
}
