import { ModelRepository } from '../db/repositories/models.js';
import { RunRepository } from '../db/repositories/runs.js';
import type { Database } from '../db/connection.js';
import type { ModelVersionRow } from '../db/schema/index.js';
import { CorellaError } from '../ml/errors.js';
import type { LlmConfig } from '../ml/llm/index.js';
import type { ServingBundle } from '../ml/serving/engine.js';
import { llmConfigOf } from './corella-config.js';
import { localModelPath } from './llm-model-file.js';
import { withLora } from './llm-lora-file.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { resolvePipelineConfig } from '../schema/pipeline.js';
import type { PipelineConfig } from './types.js';

/** What the serving engine loads for one version (ml/serving/engine.ts). */
export type ServingBundleSpec = ServingBundle;

/** `champion`, `challenger` (any alias) or a version id. */
export type ModelRef = string;

export function isVersionId(ref: ModelRef): boolean {
  return /^[1-9][0-9]*$/.test(ref);
}

/** The version a ref names right now, or undefined when the alias points nowhere. */
export async function resolveModelVersion(db: Database, ref: ModelRef): Promise<ModelVersionRow | undefined> {
  const models = new ModelRepository(db);
  return isVersionId(ref) ? models.get(Number(ref)) : models.byAlias(ref);
}

/**
 * The serving bundle of a model version: its artifacts and threshold from the registry, and the LLM and
 * routing settings from the config of the run that trained it — serving must route exactly as calibration
 * did (cold items included), or the calibrated threshold means something else.
 */
export async function servingBundleOf(
  db: Database,
  home: string,
  version: ModelVersionRow,
  /** When given, an LLM file missing here comes from the store by the version's llmModel sha256. */
  store?: ArtifactStore,
): Promise<ServingBundleSpec> {
  const { crmModel, adapter } = version.artifacts;
  if (!crmModel || !adapter) {
    throw new CorellaError('BAD_CONFIG', `model version ${version.id} lacks a CRM or adapter artifact`);
  }
  if (!version.datasetVersionId) {
    throw new CorellaError('DATA_NOT_AVAILABLE', `model version ${version.id} has no dataset version`);
  }
  const run = await new RunRepository(db).get(version.sourceRunId);
  const config = ((run?.config as { config?: PipelineConfig } | undefined)?.config ?? {}) as PipelineConfig;
  // A config the schema rejects is an error naming the field, not a version served without its LLM.
  const resolved = resolvePipelineConfig(config);
  // No LLM in the training config: nothing to route to.
  let llm: LlmConfig | null = resolved.llm.model === undefined ? null : llmConfigOf(config, home);
  if (llm && store)
    llm = { ...llm, model: await localModelPath(llm.model, version.artifacts.llmModel, store) };
  // A LoRA version: the base model runs with its GGUF LoRA, fetched to this machine (without a store the
  // engine fetches it when it loads, from the store it is given).
  if (llm && store && version.artifacts.llmLora) llm = await withLora(llm, store, version.artifacts.llmLora);
  return {
    modelVersion: String(version.id),
    datasetVersionId: version.datasetVersionId,
    crmArtifact: crmModel,
    adapterArtifact: adapter,
    threshold: version.calibratedThreshold ?? Math.LN2,
    coldItems: resolved.calibration.coldItems,
    llm,
  };
}

export async function resolveServingBundle(
  db: Database,
  home: string,
  ref: ModelRef,
  store?: ArtifactStore,
): Promise<{ bundle: ServingBundleSpec; version: ModelVersionRow }> {
  const version = await resolveModelVersion(db, ref);
  if (!version) {
    throw new CorellaError(
      'DATA_NOT_AVAILABLE',
      isVersionId(ref) ? `no model version ${ref}` : `no model version has the alias ${ref} yet`,
    );
  }
  return { bundle: await servingBundleOf(db, home, version, store), version };
}
