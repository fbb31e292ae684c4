import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, text, timestamp, uuid, type AnyPgColumn } from 'drizzle-orm/pg-core';
import { runs } from './runs.js';

/** Content-addressed blobs known to the platform; the bytes live in the ArtifactStore at `uri`. */
export const artifacts = pgTable(
  'artifacts',
  {
    sha256: text('sha256').primaryKey(),
    uri: text('uri').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    mediaType: text('media_type').notNull().default('application/octet-stream'),
    producingRunId: uuid('producing_run_id').references((): AnyPgColumn => runs.id, { onDelete: 'set null' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    check('artifacts_sha256_check', sql`${t.sha256} ~ '^[0-9a-f]{64}$'`),
    check('artifacts_bytes_check', sql`${t.bytes} >= 0`),
    index('artifacts_producing_run_idx').on(t.producingRunId),
  ],
);

export type ArtifactRow = typeof artifacts.$inferSelect;
export type NewArtifactRow = typeof artifacts.$inferInsert;
