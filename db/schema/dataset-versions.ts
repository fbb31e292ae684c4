import { index, jsonb, pgTable, text, timestamp, type AnyPgColumn } from 'drizzle-orm/pg-core';
import { artifacts } from './artifacts.js';
import { datasets } from './datasets.js';

export interface DatasetInputFile {
  name: string;
  sha256: string;
  bytes: number;
}

/**
 * One immutable ingestion result. The primary key is the manifest's versionId (a hash of source, params and
 * input hashes), so ingesting the same inputs with the same params twice maps to the same row.
 */
export const datasetVersions = pgTable(
  'dataset_versions',
  {
    versionId: text('version_id').primaryKey(),
    datasetName: text('dataset_name')
      .notNull()
      .references(() => datasets.name, { onDelete: 'restrict' }),
    source: text('source').notNull(),
    params: jsonb('params').$type<Record<string, unknown>>().notNull().default({}),
    inputSha256s: jsonb('input_sha256s').$type<DatasetInputFile[]>().notNull().default([]),
    /** Users, items, dropped rows by reason, … */
    counts: jsonb('counts').$type<Record<string, unknown>>().notNull().default({}),
    /** Per split: size, positives, positive rate. */
    splitSizes: jsonb('split_sizes').$type<Record<string, unknown>>().notNull().default({}),
    featureMapSha256: text('feature_map_sha256').references((): AnyPgColumn => artifacts.sha256, {
      onDelete: 'restrict',
    }),
    /** The full DatasetManifest as written by ingestion. */
    manifest: jsonb('manifest').$type<Record<string, unknown>>().notNull().default({}),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('dataset_versions_dataset_idx').on(t.datasetName, t.createdAt)],
);

export type DatasetVersionRow = typeof datasetVersions.$inferSelect;
export type NewDatasetVersionRow = typeof datasetVersions.$inferInsert;
