import { RunRepository } from '../db/repositories/runs.js';
import type { CorellaActivities } from './types.js';
import type { ActivityContext } from './context.js';
import { codeVersion } from './code-version.js';
import { parsePipelineConfig } from '../schema/pipeline.js';

/** Run rows: the workflow's record in Postgres of how each run went. */
export function bookkeepingActivities(
  ctx: ActivityContext,
): Pick<CorellaActivities, 'startRun' | 'finishRun' | 'recordMetrics'> {
  const runs = new RunRepository(ctx.db);
  return {
    async startRun(input) {
      // The first activity to see a retrain's config: a bad one (from a client that did not validate it)
      // fails here, non-retryable, before a run row or anything else is written.
      if (input.kind === 'retrain')
        parsePipelineConfig((input.config as { config?: unknown } | undefined)?.config);
      const row = await runs.start({
        workflowId: input.workflowId,
        kind: input.kind,
        config: (input.config ?? {}) as Record<string, unknown>,
        codeVersion: codeVersion(),
        params: { dataset: input.datasetLabel },
      });
      return { runId: row.id };
    },
    async finishRun(input) {
      if (input.status === 'completed') {
        const metrics = (input.summary?.metrics ?? {}) as Record<string, number>;
        await runs.finish(input.runId, { summary: input.summary, metrics });
      } else {
        await runs.fail(input.runId, input.error ?? input.status, input.status);
      }
    },
    async recordMetrics(input) {
      await runs.logMetrics(input.runId, input.metrics, input.step ?? 0);
    },
  };
}
