import { integer, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';
import { modelVersions } from './model-versions.js';

/** Well-known aliases; others are allowed (any lowercase word). */
export type ModelAlias = 'champion' | 'challenger' | (string & {});

/** Where an alias points now. Every change also writes a `model_alias_events` row in the same transaction. */
export const modelAliases = pgTable(
  'model_aliases',
  {
    modelName: text('model_name').notNull(),
    alias: text('alias').$type<ModelAlias>().notNull(),
    modelVersionId: integer('model_version_id')
      .notNull()
      .references(() => modelVersions.id, { onDelete: 'restrict' }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.modelName, t.alias] })],
);

export type ModelAliasRow = typeof modelAliases.$inferSelect;
export type NewModelAliasRow = typeof modelAliases.$inferInsert;
