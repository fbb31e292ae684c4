import { RunRepository } from '../db/repositories/runs.js';
import { calibrationPlan } from '../ml/corella/calibration.js';
import { llmFeatureRows, type LlmFeatureRows } from '../ml/corella/row-plan.js';
import { loadCrm } from '../ml/crm/index.js';
import type { CtrDataset } from '../ml/data/index.js';
import { initTf } from '../ml/tf/index.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import type { ActivityContext } from './context.js';
import { llmConfigFor } from './llm-model-file.js';
import { withLora } from './llm-lora-file.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX, prefixMetrics } from './metric-keys.js';
import { calibrationConfigOf } from './corella-config.js';
import { rowPlanConfigOf } from './row-plan.js';
import type { CorellaActivities, LlmFeaturesResult, PipelineConfig } from './types.js';

/**
 * With the joint CRM (`crmArtifact`, a LoRA run's second pass), the validation rows are exactly those the
 * calibration will ask the LLM branch for: the calibration pool's top `curveMaxFraction` by that CRM's
 * entropy (ml/corella/calibration calibrationPlan). Nothing after joint training reads the joint validation
 * sample through llama.cpp, so it is not extracted again. Without it, the whole plan (the frozen pass, before
 * any CRM exists).
 */
async function featureRows(
  ctx: ActivityContext,
  dataset: CtrDataset,
  config: PipelineConfig,
  runId: string,
  crmArtifact: string | undefined,
): Promise<LlmFeatureRows> {
  const plan = llmFeatureRows(dataset.splits, rowPlanConfigOf(config, runId));
  if (!crmArtifact) return plan;
  await initTf();
  const crm = await loadCrm(ctx.store, crmArtifact, dataset.featureMap);
  try {
    const { llmRows } = await calibrationPlan(crm, dataset.splits.valid, calibrationConfigOf(config));
    return { ...plan, valid: Int32Array.from(llmRows).sort() };
  } finally {
    crm.dispose();
  }
}

/**
 * LLM features for every row later stages will need and can be known now (ml/corella/row-plan.ts): the
 * validation pool (calibration and the joint validation sample), the test pool (evaluation) and, with random
 * subsets, the stage-2/3 training rows. With 'hard' subsets the training rows depend on stage 1, so
 * trainJoint computes them (the cache makes either path pay once).
 * Features are cached in chunks keyed by (model sha256, template, sample id): a retry resumes after the last
 * complete chunk.
 * With `loraArtifact` (a LoRA run, after joint training) the same base model runs with that GGUF LoRA, for
 * the validation and test pools only (what calibration and evaluation read); the cache keys those features
 * by the LoRA's sha256, so they never mix with the frozen model's. Its metrics are keyed `lora.*`. With
 * `crmArtifact` too, the validation rows are the ones calibration will route-test (featureRows above).
 */
export function llmFeatureActivities(ctx: ActivityContext): Pick<CorellaActivities, 'extractLlmFeatures'> {
  return {
    async extractLlmFeatures({
      runId,
      config,
      datasetVersionId,
      loraArtifact,
      crmArtifact,
    }): Promise<LlmFeaturesResult> {
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const llmCfg = await withLora(await llmConfigFor(config, ctx), ctx.store, loraArtifact);
      const extractor = await LlmFeatureExtractor.open(llmCfg, ctx.store);
      const run = activityRunOptions('llm-features');
      try {
        // The rows come from the row plan that the joint trainer, calibration and evaluation draw from too.
        const plan = await featureRows(ctx, dataset, config, runId, loraArtifact ? crmArtifact : undefined);
        const splits = loraArtifact ? (['valid', 'test'] as const) : (['train', 'valid', 'test'] as const);
        const work = splits.flatMap((name) => {
          const rows = plan[name];
          return rows ? [{ name, rows }] : [];
        });
        const metrics: Record<string, number> = {};
        let computed = 0;
        let seconds = 0;
        for (const w of work) {
          await extractor.extract(dataset.splits[w.name], dataset.items, w.rows, {
            signal: run.signal,
            onProgress: (p) => run.onProgress?.({ ...p, stage: `llm-features:${w.name}` }),
          });
          const report = extractor.lastReport;
          metrics[`${w.name}.rows`] = w.rows.length;
          if (report) {
            metrics[`${w.name}.fromCache`] = report.fromCache;
            computed += report.computed;
            seconds += report.seconds;
          }
        }
        metrics.computed = computed;
        metrics.seconds = seconds;
        if (seconds > 0) metrics.samplesPerSec = computed / seconds;
        const out = loraArtifact
          ? Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`lora.${k}`, v]))
          : metrics;
        await new RunRepository(ctx.db).logMetrics(runId, prefixMetrics(METRIC_PREFIX.llm, out));
        return {
          featuresIndex: extractor.cache.indexName,
          modelSha256: extractor.modelSha256,
          metrics: out,
        };
      } finally {
        await extractor.dispose();
      }
    },
  };
}
