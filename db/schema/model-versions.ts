import { doublePrecision, index, jsonb, pgTable, serial, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { datasetVersions } from './dataset-versions.js';
import { runs } from './runs.js';

/** sha256s of the artifacts that make up a model version (all recorded in `artifacts`). */
export interface ModelArtifacts {
  crmModel?: string;
  adapter?: string;
  llmModel?: string;
  /** With llm.finetune lora: the GGUF LoRA adapter that llama.cpp applies to llmModel (issue 19). */
  llmLora?: string;
  featureMap?: string;
  [name: string]: string | undefined;
}

export const DEFAULT_MODEL_NAME = 'corella';

/**
 * A registered model. `source_run_id` is unique: registering the same run twice (an activity retry) yields
 * the same version. `model_name` groups versions that aliases choose between (e.g. one per dataset).
 */
export const modelVersions = pgTable(
  'model_versions',
  {
    id: serial('id').primaryKey(),
    modelName: text('model_name').notNull().default(DEFAULT_MODEL_NAME),
    sourceRunId: uuid('source_run_id')
      .notNull()
      .unique()
      .references(() => runs.id, { onDelete: 'restrict' }),
    datasetVersionId: text('dataset_version_id').references(() => datasetVersions.versionId, {
      onDelete: 'restrict',
    }),
    artifacts: jsonb('artifacts').$type<ModelArtifacts>().notNull().default({}),
    metrics: jsonb('metrics').$type<Record<string, unknown>>().notNull().default({}),
    /** CRM-entropy threshold above which samples go to the LLM; null until calibrated. */
    calibratedThreshold: doublePrecision('calibrated_threshold'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('model_versions_name_idx').on(t.modelName, t.createdAt),
    index('model_versions_dataset_version_idx').on(t.datasetVersionId),
  ],
);

export type ModelVersionRow = typeof modelVersions.$inferSelect;
export type NewModelVersionRow = typeof modelVersions.$inferInsert;
