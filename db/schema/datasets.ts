import { pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** A named dataset (e.g. `ml-1m`); its immutable contents live in `dataset_versions`. */
export const datasets = pgTable('datasets', {
  name: text('name').primaryKey(),
  /** DatasetSource of ml/data/types.ts: 'movielens-1m' | 'amazon-books' | … */
  source: text('source').notNull(),
  description: text('description'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

export type DatasetRow = typeof datasets.$inferSelect;
export type NewDatasetRow = typeof datasets.$inferInsert;
