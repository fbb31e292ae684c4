import { Context } from '@temporalio/activity';
import { RunRepository } from '../db/repositories/runs.js';
import { crmModelConfig } from '../ml/crm/config.js';
import { saveCrm, trainCrm, type CrmConfig, type TrainCrmOptions } from '../ml/crm/index.js';
import { resolvePipelineConfig } from '../schema/pipeline.js';
import { ctrMetrics } from '../ml/metrics/index.js';
import { initTf } from '../ml/tf/index.js';
import type { ActivityContext } from './context.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX } from './metric-keys.js';
import type { CorellaActivities, Metrics, PipelineConfig, TrainCrmResult } from './types.js';

/** What stage 1 trains, read from the `crm` section: the trainer settings and the models with their prefixes. */
export interface StageOnePlan {
  trainer: Pick<
    TrainCrmOptions,
    'epochs' | 'batchSize' | 'lr' | 'patience' | 'lrDecay' | 'threads' | 'dataParallel'
  >;
  /** The `crm.kind` model first (metrics `crm.*`, its artifact goes on to joint training), then the baseline. */
  models: { prefix: (typeof METRIC_PREFIX)['crm' | 'lr']; config: CrmConfig }[];
}

/**
 * Stage 1: the CRM `crm.kind` names on all training samples, checkpointed per epoch; with `crm.baseline`
 * (default) the LR baseline beside a DCNv2 model, for the `lr.*` metrics. A bad section is a BAD_CONFIG
 * error naming the field, never a silent fallback to a default.
 */
export function stageOnePlan(config: PipelineConfig): StageOnePlan {
  const crm = resolvePipelineConfig(config).crm;
  const models: StageOnePlan['models'] = [{ prefix: METRIC_PREFIX.crm, config: crmModelConfig(crm) }];
  if (crm.baseline && crm.kind !== 'lr')
    models.push({ prefix: METRIC_PREFIX.lr, config: crmModelConfig(crm, 'lr') });
  return {
    trainer: {
      epochs: crm.epochs,
      batchSize: crm.batchSize,
      lr: crm.learningRate,
      patience: crm.patience,
      lrDecay: crm.lrDecay,
      threads: crm.threads,
      dataParallel: crm.dataParallel,
    },
    models,
  };
}

export function trainCrmActivities(ctx: ActivityContext): Pick<CorellaActivities, 'trainCrm'> {
  return {
    async trainCrm({ runId, config, datasetVersionId }): Promise<TrainCrmResult> {
      const plan = stageOnePlan(config);
      const tf = await initTf();
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const run = activityRunOptions('train-crm');
      const trainer = { ...plan.trainer, store: ctx.store, signal: run.signal, onProgress: run.onProgress };
      const runs = new RunRepository(ctx.db);
      const metrics: Metrics = {};
      let crmArtifact = '';
      for (const { prefix, config: modelConfig } of plan.models) {
        // A retried attempt resumes from the last epoch checkpoint of the same run.
        // The first epoch this attempt works on shows how much a retry had to redo.
        let startEpoch: number | undefined;
        const result = await trainCrm(dataset, modelConfig, {
          ...trainer,
          onProgress: (p) => {
            if (startEpoch === undefined && p.epoch !== undefined) startEpoch = p.epoch;
            return trainer.onProgress?.({ ...p, stage: `train-${prefix}` });
          },
          checkpointKey: `runs/${runId}/${prefix}-checkpoint`,
          resumeFrom: 'latest',
        });
        // Decided once when training started ('auto' reads the machine then); results do not depend on it.
        Context.current().log.info(`${prefix}: ${result.threadsReason}, ${result.threads} thread(s)`);
        try {
          const test = dataset.splits.test;
          const probs = await result.model.predict(test);
          const m = ctrMetrics(test.labels, probs, test.userRows);
          Object.assign(metrics, {
            [`${prefix}.valid.auc`]: result.bestValidAuc,
            [`${prefix}.test.auc`]: m.auc,
            [`${prefix}.test.logloss`]: m.logLoss,
            [`${prefix}.test.acc`]: m.acc,
            [`${prefix}.epochs`]: result.epochsRun,
            [`${prefix}.trainSamplesPerSec`]: result.trainSamplesPerSec,
            [`${prefix}.attempt`]: Context.current().info.attempt,
            [`${prefix}.startEpoch`]: startEpoch ?? result.epochsRun,
          });
          if (m.userAuc !== undefined) metrics[`${prefix}.test.userAuc`] = m.userAuc;
          // Curves by 1-based epoch: step 0 holds the run's summary value of the same key (the best epoch's).
          for (const h of result.history) {
            await runs.logMetrics(
              runId,
              { [`${prefix}.train.loss`]: h.trainLoss, [`${prefix}.valid.auc`]: h.validAuc },
              h.epoch + 1,
            );
          }
          if (prefix === METRIC_PREFIX.crm) {
            const ref = await saveCrm(result.model, ctx.store, {
              runId,
              datasetVersionId,
              backend: tf.backend,
            });
            crmArtifact = ref.sha256;
          }
        } finally {
          result.model.dispose();
        }
      }
      await runs.logMetrics(runId, metrics);
      return { crmArtifact, backend: tf.backend, metrics };
    },
  };
}
