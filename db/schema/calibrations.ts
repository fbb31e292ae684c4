import {
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  serial,
  text,
  timestamp,
  unique,
  uuid,
} from 'drizzle-orm/pg-core';
import { modelVersions } from './model-versions.js';
import { runs } from './runs.js';

/** One point of a threshold sweep: routing share and the metrics it gives. */
export interface CalibrationPoint {
  threshold: number;
  llmShare: number;
  /**
   * On the chosen point only: why calibration chose it (e.g. no hybrid gain cleared its noise, so nothing
   * is routed). Kept in the curve's jsonb so the reason needs no migration.
   */
  reason?: string;
  [metric: string]: number | string | undefined;
}

/**
 * A threshold calibration. In the retrain pipeline it happens before the model version exists, so
 * `model_version_id` is filled in when the version is registered (or directly, for a recalibration).
 * unique(run, metric) keeps a retried activity from writing twice.
 */
export const calibrations = pgTable(
  'calibrations',
  {
    id: serial('id').primaryKey(),
    runId: uuid('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    modelVersionId: integer('model_version_id').references(() => modelVersions.id, { onDelete: 'set null' }),
    threshold: doublePrecision('threshold').notNull(),
    /** What the threshold optimises, e.g. 'auc' or 'logloss'. */
    metric: text('metric').notNull(),
    curve: jsonb('curve').$type<CalibrationPoint[]>().notNull().default([]),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    unique('calibrations_run_metric_uq').on(t.runId, t.metric),
    index('calibrations_model_version_idx').on(t.modelVersionId),
  ],
);

export type CalibrationRow = typeof calibrations.$inferSelect;
export type NewCalibrationRow = typeof calibrations.$inferInsert;
