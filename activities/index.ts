import { batchScoreActivities } from './batch-score.js';
import { bookkeepingActivities } from './bookkeeping.js';
import type { ActivityContext } from './context.js';
import { withTypedFailures } from './failures.js';
import { corellaActivities } from './corella.js';
import { ingestActivities } from './ingest.js';
import { llmFeatureActivities } from './llm-features.js';
import { recalibrateActivities } from './recalibrate.js';
import { registryActivities } from './registry.js';
import { reportActivities } from './report.js';
import { trainCrmActivities } from './train-crm.js';
import type { CorellaActivities } from './types.js';

/** Every activity, bound to one context, with our typed errors surfacing as Temporal failure types. */
export function createActivities(ctx: ActivityContext): CorellaActivities {
  return withTypedFailures<CorellaActivities>({
    ...bookkeepingActivities(ctx),
    ...ingestActivities(ctx),
    ...trainCrmActivities(ctx),
    ...llmFeatureActivities(ctx),
    ...corellaActivities(ctx),
    ...registryActivities(ctx),
    ...recalibrateActivities(ctx),
    ...batchScoreActivities(ctx),
    ...reportActivities(ctx),
  });
}
