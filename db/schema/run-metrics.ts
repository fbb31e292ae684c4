import {
  bigserial,
  doublePrecision,
  integer,
  pgTable,
  text,
  timestamp,
  unique,
  uuid,
} from 'drizzle-orm/pg-core';
import { runs } from './runs.js';

/** Metric series of a run. unique(run, key, step) makes a retried activity overwrite, not duplicate. */
export const runMetrics = pgTable(
  'run_metrics',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    runId: uuid('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    key: text('key').notNull(),
    step: integer('step').notNull().default(0),
    value: doublePrecision('value').notNull(),
    time: timestamp('time', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [unique('run_metrics_run_key_step_uq').on(t.runId, t.key, t.step)],
);

export type RunMetricRow = typeof runMetrics.$inferSelect;
export type NewRunMetricRow = typeof runMetrics.$inferInsert;
