import { doublePrecision, index, integer, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import type { HistoryEvent } from '../../ml/serving/types.js';
import { modelVersions } from './model-versions.js';

/**
 * One scored request, as the server saw it: enough to score its candidates again offline (the shadow scoring
 * of served-traffic recalibration replays `history` through the serving engine). The request id is the
 * server's, so a replayed spool batch maps onto the same row.
 */
export const servedRequests = pgTable(
  'served_requests',
  {
    requestId: uuid('request_id').primaryKey(),
    at: timestamp('at', { withTimezone: true }).notNull(),
    modelVersionId: integer('model_version_id')
      .notNull()
      .references(() => modelVersions.id, { onDelete: 'restrict' }),
    userId: text('user_id').notNull(),
    /** The history supplied with the request; null when the server used the user's known history. */
    history: jsonb('history').$type<HistoryEvent[]>(),
    /** The request's LLM deadline (ms) as applied, the request's own or the server default. */
    budgetMs: doublePrecision('budget_ms'),
    /** The routing entropy threshold in force (+Infinity in CRM-only mode). */
    threshold: doublePrecision('threshold').notNull(),
  },
  (t) => [index('served_requests_version_at_idx').on(t.modelVersionId, t.at)],
);

export type ServedRequestRow = typeof servedRequests.$inferSelect;
export type NewServedRequestRow = typeof servedRequests.$inferInsert;
