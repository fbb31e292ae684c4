import { stat } from 'node:fs/promises';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import type { LlmConfig } from '../ml/llm/index.js';
import { llmConfigOf } from './corella-config.js';
import type { PipelineConfig } from './types.js';

/**
 * The run's LLM config with a model file this worker can open. A run's config names the model by the path
 * it had where the run was started, plus its sha256. A worker on another machine (nothing shared but
 * Temporal, Postgres and the object store) has no such path; node-llama-cpp still needs a local file, so the
 * model comes from the artifact store by its hash, downloaded once into this worker's read-through cache
 * (`corella retrain`/`up` upload it when the store is remote). A path that exists locally is used as it is
 * (the single-machine case, and a worker that keeps models on its own disk), and hf: URIs are resolved by
 * the LLM code into the worker's model cache as before.
 */
export async function llmConfigFor(
  config: PipelineConfig,
  ctx: { home: string; store: ArtifactStore },
): Promise<LlmConfig> {
  const cfg = llmConfigOf(config, ctx.home);
  const sha = (config.llm as { modelSha256?: unknown } | undefined)?.modelSha256;
  return {
    ...cfg,
    model: await localModelPath(cfg.model, typeof sha === 'string' ? sha : undefined, ctx.store),
  };
}

/**
 * `model` itself when it is an hf:/http URI or a file on this machine; otherwise the store's copy of blob
 * `sha256` (downloaded into the local cache) when the store has it; otherwise `model` unchanged, so the
 * LLM code reports the missing file by the name the user gave.
 */
export async function localModelPath(
  model: string,
  sha256: string | undefined,
  store: ArtifactStore,
): Promise<string> {
  if (/^(hf:|https?:)/.test(model) || sha256 === undefined) return model;
  const local = await stat(model).then(
    (s) => s.isFile(),
    () => false,
  );
  if (local || !(await store.has(sha256))) return model;
  return store.localPath(sha256, `LLM model file (${model} where the run started)`);
}
