import { index, integer, jsonb, pgTable, serial, text, timestamp, unique, uuid } from 'drizzle-orm/pg-core';
import { modelVersions } from './model-versions.js';
import { runs } from './runs.js';

/**
 * An evaluation result (alignment evaluation, per-bucket metrics, champion/challenger comparison, …).
 * unique(run, kind, model version) with NULLS NOT DISTINCT: a retried activity overwrites its own row.
 */
export const evaluations = pgTable(
  'evaluations',
  {
    id: serial('id').primaryKey(),
    runId: uuid('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    modelVersionId: integer('model_version_id').references(() => modelVersions.id, { onDelete: 'set null' }),
    kind: text('kind').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull().default({}),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    unique('evaluations_run_kind_version_uq').on(t.runId, t.kind, t.modelVersionId).nullsNotDistinct(),
    index('evaluations_model_version_idx').on(t.modelVersionId),
  ],
);

export type EvaluationRow = typeof evaluations.$inferSelect;
export type NewEvaluationRow = typeof evaluations.$inferInsert;
