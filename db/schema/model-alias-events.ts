import { bigserial, index, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { modelVersions } from './model-versions.js';

/** Append-only audit trail of alias moves: who moved which alias from which version to which, and why. */
export const modelAliasEvents = pgTable(
  'model_alias_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    modelName: text('model_name').notNull(),
    alias: text('alias').notNull(),
    /** null when the alias did not exist before. */
    fromVersionId: integer('from_version_id').references(() => modelVersions.id, { onDelete: 'restrict' }),
    /** null when the alias was removed. */
    toVersionId: integer('to_version_id').references(() => modelVersions.id, { onDelete: 'restrict' }),
    reason: text('reason').notNull().default(''),
    actor: text('actor').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('model_alias_events_alias_idx').on(t.modelName, t.alias, t.at)],
);

export type ModelAliasEventRow = typeof modelAliasEvents.$inferSelect;
export type NewModelAliasEventRow = typeof modelAliasEvents.$inferInsert;
