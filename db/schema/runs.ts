import { sql } from 'drizzle-orm';
import {
  check,
  index,
  integer,
  jsonb,
  pgTable,
  text,
  timestamp,
  uuid,
  type AnyPgColumn,
} from 'drizzle-orm/pg-core';
import { datasetVersions } from './dataset-versions.js';

// `terminated` and `timed_out` are set only by reconciliation (cli/reconcile.ts): the workflow was ended from
// outside, so its own bookkeeping never ran.
export const RUN_STATUSES = [
  'running',
  'completed',
  'failed',
  'cancelled',
  'terminated',
  'timed_out',
] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** An earlier execution of a re-run workflow id: how it ended, kept when the id is started again. */
export interface RunAttempt {
  attempt: number;
  status: RunStatus;
  error: string | null;
  startedAt: string;
  endedAt: string | null;
}

/** One execution of a workflow (retrain, calibrate, evaluate, …), keyed by its Temporal workflow id. */
export const runs = pgTable(
  'runs',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Business key (`retrain-<dataset>-<config hash>`): a duplicate start maps to the same row. */
    workflowId: text('workflow_id').notNull().unique(),
    kind: text('kind').notNull(),
    config: jsonb('config').$type<Record<string, unknown>>().notNull().default({}),
    status: text('status').$type<RunStatus>().notNull().default('running'),
    error: text('error'),
    codeVersion: text('code_version'),
    /** 1 for the first execution; incremented when a failed/cancelled run is started again. */
    attempt: integer('attempt').notNull().default(1),
    /** The earlier attempts, oldest first: a re-run no longer overwrites how the previous one failed. */
    attempts: jsonb('attempts').$type<RunAttempt[]>().notNull().default([]),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
    endedAt: timestamp('ended_at', { withTimezone: true }),
    datasetVersionId: text('dataset_version_id').references((): AnyPgColumn => datasetVersions.versionId, {
      onDelete: 'restrict',
    }),
    summary: jsonb('summary').$type<Record<string, unknown>>(),
  },
  (t) => [
    check(
      'runs_status_check',
      sql`${t.status} in ('running', 'completed', 'failed', 'cancelled', 'terminated', 'timed_out')`,
    ),
    index('runs_started_idx').on(t.startedAt),
    index('runs_kind_status_idx').on(t.kind, t.status),
    index('runs_dataset_version_idx').on(t.datasetVersionId),
  ],
);

export type RunRow = typeof runs.$inferSelect;
export type NewRunRow = typeof runs.$inferInsert;
