import { sql } from 'drizzle-orm';
import { bigserial, check, index, pgTable, real, text, timestamp, unique, uuid } from 'drizzle-orm/pg-core';

/**
 * An observed outcome (`POST /v1/feedback`). `request_id` has no foreign key on purpose: feedback can arrive
 * before the prediction log's spool has reached Postgres (or for a request logged while Postgres was down),
 * and it must still be stored. unique(user, item, ts) makes a retried POST a no-op.
 */
export const feedback = pgTable(
  'feedback',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    requestId: uuid('request_id'),
    userId: text('user_id').notNull(),
    itemId: text('item_id').notNull(),
    /** 0 or 1: given, or derived from `rating` by the dataset's label rule. */
    label: real('label').notNull(),
    rating: real('rating'),
    /** When the outcome happened (client time). */
    ts: timestamp('ts', { withTimezone: true }).notNull(),
    receivedAt: timestamp('received_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    unique('feedback_user_item_ts_uq').on(t.userId, t.itemId, t.ts),
    check('feedback_label_check', sql`${t.label} in (0, 1)`),
    index('feedback_request_item_idx').on(t.requestId, t.itemId),
    // The server replays feedback received since its model's dataset into user histories at load.
    index('feedback_received_at_idx').on(t.receivedAt),
    index('feedback_ts_idx').on(t.ts),
  ],
);

export type FeedbackRow = typeof feedback.$inferSelect;
export type NewFeedbackRow = typeof feedback.$inferInsert;
