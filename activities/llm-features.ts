import { RunRepository } from '../db/repositories/runs.js';
import { jointSubsets, resolveJointConfig } from '../ml/corella/joint.js';
import { samplePool } from '../ml/corella/random.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import type { ActivityContext } from './context.js';
import { calibrationConfigOf, jointConfigOf, llmPoolsOf } from './corella-config.js';
import { llmConfigFor } from './llm-model-file.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import type { CorellaActivities, LlmFeaturesResult } from './types.js';

/**
 * LLM features for every row later stages will need and can be known now: the validation pool (calibration),
 * the test pool (evaluation) and, with random subsets, the stage-2/3 training rows. With 'hard' subsets the
 * training rows depend on stage 1, so trainJoint computes them (the cache makes either path pay once).
 * Features are cached in chunks keyed by (model sha256, template, sample id): a retry resumes after the last
 * complete chunk.
 */
export function llmFeatureActivities(ctx: ActivityContext): Pick<CorellaActivities, 'extractLlmFeatures'> {
  return {
    async extractLlmFeatures({ runId, config, datasetVersionId }): Promise<LlmFeaturesResult> {
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const extractor = await LlmFeatureExtractor.open(await llmConfigFor(config, ctx), ctx.store);
      const run = activityRunOptions('llm-features');
      try {
        const pools = llmPoolsOf(config);
        const cal = calibrationConfigOf(config);
        const work: { name: 'train' | 'valid' | 'test'; rows: Int32Array }[] = [
          {
            name: 'valid',
            rows: samplePool(
              dataset.splits.valid,
              cal.maxRows ?? pools.valid,
              cal.seed ?? pools.seed,
              cal.poolBlock ?? pools.block,
            ),
          },
          { name: 'test', rows: samplePool(dataset.splits.test, pools.test, pools.seed, pools.block) },
        ];
        const joint = resolveJointConfig(jointConfigOf(config, runId));
        if (joint.subset === 'random') {
          const plan = jointSubsets(dataset.splits.train, joint);
          work.unshift({ name: 'train', rows: Int32Array.from([...plan.stage2, ...plan.stage3]).sort() });
        }
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
        await new RunRepository(ctx.db).logMetrics(
          runId,
          Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`llm.${k}`, v])),
        );
        return { featuresIndex: extractor.cache.indexName, modelSha256: extractor.modelSha256, metrics };
      } finally {
        await extractor.dispose();
      }
    },
  };
}
