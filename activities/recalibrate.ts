import { CalibrationRepository } from '../db/repositories/calibrations.js';
import { ModelRepository } from '../db/repositories/models.js';
import { RunRepository } from '../db/repositories/runs.js';
import { calibrateThreshold } from '../ml/corella/calibration.js';
import { evaluateAlignment } from '../ml/corella/evaluation.js';
import { loadCrm } from '../ml/crm/index.js';
import { recentRows, sliceSplit } from '../ml/data/index.js';
import { CorellaError } from '../ml/errors.js';
import { initTf } from '../ml/tf/index.js';
import type { ActivityContext } from './context.js';
import { calibrationConfigOf, calibrationRow, storableThreshold } from './corella-config.js';
import { loadBranchModel, openBranchExtractor } from './llm-branch.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX, prefixMetrics } from './metric-keys.js';
import { recalibrateOnServed } from './recalibrate-served.js';
import type { CorellaActivities, PipelineConfig, RecalibrateResult } from './types.js';

/**
 * Re-derives a model version's entropy threshold on recent data (the newest `windowDays` of the validation
 * split of its own or a newer dataset version, or with `source: 'served'` its logged predictions that got
 * feedback: activities/recalibrate-served.ts) under the routing budget. The new calibration is always
 * stored; the version's threshold changes only when the new one scores better on that window.
 */
export function recalibrateActivities(ctx: ActivityContext): Pick<CorellaActivities, 'recalibrate'> {
  return {
    async recalibrate(input): Promise<RecalibrateResult> {
      const models = new ModelRepository(ctx.db);
      const version = input.modelVersionId
        ? await models.get(Number(input.modelVersionId))
        : await models.champion();
      if (!version) {
        throw new CorellaError(
          'DATA_NOT_AVAILABLE',
          input.modelVersionId
            ? `no model version ${input.modelVersionId}`
            : 'no champion model to recalibrate yet',
        );
      }
      const { crmModel, adapter: adapterSha } = version.artifacts;
      if (!crmModel || !adapterSha)
        throw new CorellaError('BAD_CONFIG', `model version ${version.id} lacks a CRM or adapter artifact`);
      const source = await new RunRepository(ctx.db).get(version.sourceRunId);
      const config = ((source?.config as { config?: PipelineConfig } | undefined)?.config ??
        {}) as PipelineConfig;
      if (input.source !== undefined && input.source !== 'dataset' && input.source !== 'served') {
        throw new CorellaError(
          'BAD_CONFIG',
          `source: must be 'dataset' or 'served', got ${JSON.stringify(input.source)}`,
          {
            details: { field: 'source' },
          },
        );
      }
      if (input.source === 'served')
        return recalibrateOnServed(ctx, input, version, config, activityRunOptions('recalibration'));
      const datasetVersionId = input.datasetVersionId ?? version.datasetVersionId;
      if (!datasetVersionId)
        throw new CorellaError('DATA_NOT_AVAILABLE', `model version ${version.id} has no dataset version`);

      await initTf();
      const dataset = await datasetForVersion(ctx.store, datasetVersionId);
      const crm = await loadCrm(ctx.store, crmModel, dataset.featureMap);
      // The version's LLM branch: its adapter, or its LoRA head with the base model run with its GGUF LoRA.
      const adapter = await loadBranchModel(ctx.store, adapterSha);
      const llm = await openBranchExtractor(config, ctx, adapter).catch((e: unknown) => {
        crm.dispose();
        throw e;
      });
      const run = activityRunOptions('recalibration');
      try {
        const window = sliceSplit(dataset.splits.valid, recentRows(dataset.splits.valid, input.windowDays));
        if (window.size === 0)
          throw new CorellaError('DATA_NOT_AVAILABLE', 'the recalibration window holds no samples');
        const calConfig = {
          ...calibrationConfigOf(config),
          ...(input.maxRoutedFraction !== undefined ? { maxRoutedFraction: input.maxRoutedFraction } : {}),
        };
        const cal = await calibrateThreshold({
          crm,
          adapter,
          llm,
          split: window,
          items: dataset.items,
          config: calConfig,
          ...run,
        });
        const previous = version.calibratedThreshold;
        // The incumbent threshold, scored on the same window (and the same rows), decides whether to switch.
        let applied = previous === null;
        let previousScore = NaN;
        if (previous !== null) {
          const rows = Int32Array.from({ length: Math.min(window.size, cal.n) }, (_, i) => i);
          const ev = await evaluateAlignment({
            crm,
            adapter,
            llm,
            split: window,
            items: dataset.items,
            threshold: previous,
            rows,
            coldItems: calConfig.coldItems,
            ...run,
          });
          const metric = cal.metric;
          previousScore = ev.overall.hybrid[metric];
          const better =
            metric === 'logLoss' ? cal.chosen.logLoss < previousScore : cal.chosen[metric] > previousScore;
          applied = better && Math.abs(storableThreshold(cal.threshold) - previous) > 1e-12;
        }
        const calRow = await new CalibrationRepository(ctx.db).record(
          calibrationRow(input.runId, cal, applied ? version.id : null),
        );
        const metrics: Record<string, number> = {
          windowRows: window.size,
          threshold: storableThreshold(cal.threshold),
          [`new.${cal.metric}`]: cal.chosen[cal.metric],
          routedFraction: cal.chosen.routedFraction,
        };
        if (Number.isFinite(previousScore)) metrics[`previous.${cal.metric}`] = previousScore;
        await new RunRepository(ctx.db).logMetrics(
          input.runId,
          prefixMetrics(METRIC_PREFIX.recalibration, metrics),
        );
        return {
          modelVersionId: String(version.id),
          calibrationId: String(calRow.id),
          threshold: storableThreshold(cal.threshold),
          previousThreshold: previous,
          applied,
          metrics,
        };
      } finally {
        crm.dispose();
        adapter.dispose();
        await llm.dispose();
      }
    },
  };
}
