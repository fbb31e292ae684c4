import { RunRepository } from '../db/repositories/runs.js';
import { llmFeatureRows } from '../ml/corella/row-plan.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import type { ActivityContext } from './context.js';
import { llmConfigFor } from './llm-model-file.js';
import { withLora } from './llm-lora-file.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX, prefixMetrics } from './metric-keys.js';
import { rowPlanConfigOf } from './row-plan.js';
import type { CorellaActivities, LlmFeaturesResult } from './types.js';

/**
 * LLM features for every row later stages will need and can be known now (ml/corella/row-plan.ts): the
 * validation pool (calibration and the joint validation sample), the test pool (evaluation) and, with random
 * subsets, the stage-2/3 training rows. With 'hard' subsets the training rows depend on stage 1, so
 * trainJoint computes them (the cache makes either path pay once).
 * Features are cached in chunks keyed by (model sha256, template, sample id): a retry resumes after the last
 * complete chunk.
 * With `loraArtifact` (a LoRA run, after joint training) the same base model runs with that GGUF LoRA, for
 * the validation and test pools only (what calibration and evaluation read); the cache keys those features
 * by the LoRA's sha256, so they never mix with the frozen model's. Its metrics are keyed `lora.*`.
 */
export function llmFeatureActivities(ctx: ActivityContext): Pick<CorellaActivities, 'extractLlmFeatures'> {
  return {
    async extractLlmFeatures({ runId, config, datasetVersionId, loraArtifact }): Promise<LlmFeaturesResult> {
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const llmCfg = await withLora(await llmConfigFor(config, ctx), ctx.store, loraArtifact);
      const extractor = await LlmFeatureExtractor.open(llmCfg, ctx.store);
      const run = activityRunOptions('llm-features');
      try {
        // The rows come from the row plan that the joint trainer, calibration and evaluation draw from too.
        const plan = llmFeatureRows(dataset.splits, rowPlanConfigOf(config, runId));
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
