import { Context } from '@temporalio/activity';
import { RunRepository } from '../db/repositories/runs.js';
import { defaultCrmConfig, saveCrm, trainCrm, type CrmConfig } from '../ml/crm/index.js';
import { ctrMetrics } from '../ml/metrics/index.js';
import { initTf } from '../ml/tf/index.js';
import type { ActivityContext } from './context.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX } from './metric-keys.js';
import type { CorellaActivities, Metrics, TrainCrmResult } from './types.js';

const MODEL_KEYS = [
  'embeddingDim',
  'crossLayers',
  'crossStructure',
  'lowRank',
  'mlp',
  'dropout',
  'batchNorm',
  'l2Embedding',
  'seed',
] as const;

/** The model part of the `crm` config section (the rest are trainer settings). */
export function crmModelConfig(section: Record<string, unknown>, kind: CrmConfig['kind']): CrmConfig {
  const overrides: Record<string, unknown> = {};
  if (kind !== 'lr') for (const k of MODEL_KEYS) if (section[k] !== undefined) overrides[k] = section[k];
  if (section.seed !== undefined) overrides.seed = section.seed;
  return defaultCrmConfig(kind, overrides as Partial<CrmConfig>);
}

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/** Stage 1: the CRM on all training samples, checkpointed per epoch; the LR baseline beside it. */
export function trainCrmActivities(ctx: ActivityContext): Pick<CorellaActivities, 'trainCrm'> {
  return {
    async trainCrm({ runId, config, datasetVersionId }): Promise<TrainCrmResult> {
      const section = (config.crm ?? {}) as Record<string, unknown>;
      const tf = await initTf();
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const run = activityRunOptions('train-crm');
      const trainer = {
        store: ctx.store,
        epochs: num(section.epochs, 3),
        batchSize: num(section.batchSize, 1024),
        lr: num(section.learningRate, 1e-3),
        patience: num(section.patience, 1),
        lrDecay: num(section.lrDecay, 0.5),
        signal: run.signal,
        onProgress: run.onProgress,
      };
      const runs = new RunRepository(ctx.db);
      const metrics: Metrics = {};
      const kinds: CrmConfig['kind'][] = section.baseline === false ? ['dcnv2'] : ['dcnv2', 'lr'];
      let crmArtifact = '';
      for (const kind of kinds) {
        const prefix = kind === 'dcnv2' ? METRIC_PREFIX.crm : METRIC_PREFIX.lr;
        // A retried attempt resumes from the last epoch checkpoint of the same run.
        // The first epoch this attempt works on shows how much a retry had to redo.
        let startEpoch: number | undefined;
        const result = await trainCrm(dataset, crmModelConfig(section, kind), {
          ...trainer,
          onProgress: (p) => {
            if (startEpoch === undefined && p.epoch !== undefined) startEpoch = p.epoch;
            return trainer.onProgress?.({ ...p, stage: `train-${prefix}` });
          },
          checkpointKey: `runs/${runId}/${prefix}-checkpoint`,
          resumeFrom: 'latest',
        });
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
          if (kind === 'dcnv2') {
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
