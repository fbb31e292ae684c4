import { pgTable, primaryKey, text, uuid } from 'drizzle-orm/pg-core';
import { runs } from './runs.js';

/** Flat key/value parameters of a run (what MLflow calls params): written once per key, upserted. */
export const runParams = pgTable(
  'run_params',
  {
    runId: uuid('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    key: text('key').notNull(),
    value: text('value').notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.key] })],
);

export type RunParamRow = typeof runParams.$inferSelect;
export type NewRunParamRow = typeof runParams.$inferInsert;
