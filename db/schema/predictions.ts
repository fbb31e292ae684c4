import { sql } from 'drizzle-orm';
import {
  boolean,
  check,
  doublePrecision,
  index,
  integer,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core';
import type { Route } from '../../ml/serving/types.js';
import { modelVersions } from './model-versions.js';
import { servedRequests } from './served-requests.js';

export const PREDICTION_ROUTES = ['crm', 'llm', 'crm-fallback'] as const satisfies readonly Route[];

/**
 * One scored candidate. (request_id, idx) is the idempotency key: a spool replay of a batch that already
 * reached Postgres inserts nothing. `at`, `model_version_id` and `user_id` repeat the request's so the
 * recalibration window and the feedback join need no join to `served_requests`.
 */
export const predictions = pgTable(
  'predictions',
  {
    requestId: uuid('request_id')
      .notNull()
      .references(() => servedRequests.requestId, { onDelete: 'cascade' }),
    /** Position of the candidate in the request's slate. */
    idx: integer('idx').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull(),
    modelVersionId: integer('model_version_id')
      .notNull()
      .references(() => modelVersions.id, { onDelete: 'restrict' }),
    userId: text('user_id').notNull(),
    itemId: text('item_id').notNull(),
    p: doublePrecision('p').notNull(),
    pCrm: doublePrecision('p_crm').notNull(),
    /** Only when the LLM branch answered (route 'llm'). */
    pLlm: doublePrecision('p_llm'),
    route: text('route').$type<Route>().notNull(),
    entropy: doublePrecision('entropy').notNull(),
    latencyMs: doublePrecision('latency_ms').notNull(),
    cold: boolean('cold').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.requestId, t.idx] }),
    check('predictions_route_check', sql`${t.route} in ('crm', 'llm', 'crm-fallback')`),
    // The recalibration window: one version's predictions since a time.
    index('predictions_version_at_idx').on(t.modelVersionId, t.at),
    // Feedback without a request id is matched by (user, item) to the predictions before it.
    index('predictions_user_item_at_idx').on(t.userId, t.itemId, t.at),
  ],
);

export type PredictionRow = typeof predictions.$inferSelect;
export type NewPredictionRow = typeof predictions.$inferInsert;
