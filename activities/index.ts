import { bookkeepingActivities } from './bookkeeping.js';
import type { ActivityContext } from './context.js';
import { stageNotImplemented, withTypedFailures } from './failures.js';
import { corellaActivities } from './corella.js';
import { ingestActivities } from './ingest.js';
import { llmFeatureActivities } from './llm-features.js';
import { registryActivities } from './registry.js';
import { trainCrmActivities } from './train-crm.js';
import type { CorellaActivities } from './types.js';

/**
 * Every activity, bound to one context. Stages whose ml/ code has not landed fail at once with a
 * non-retryable STAGE_NOT_IMPLEMENTED error: never a fake success.
 */
export function createActivities(ctx: ActivityContext): CorellaActivities {
  const pending = (stage: string, issue: string) => () => Promise.resolve(stageNotImplemented(stage, issue));
  return withTypedFailures<CorellaActivities>({
    ...bookkeepingActivities(ctx),
    ...ingestActivities(ctx),
    ...trainCrmActivities(ctx),
    ...llmFeatureActivities(ctx),
    ...corellaActivities(ctx),
    ...registryActivities(ctx),
    recalibrate: pending('recalibrate', 'issue 7: recalibration'),
  });
}
