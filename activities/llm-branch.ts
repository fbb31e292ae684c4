import { LoraHead, loadLlmBranchModel } from '../ml/corella/llm-branch-model.js';
import type { LlmAdapter } from '../ml/corella/adapter.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { LlmFeatureExtractor } from '../ml/llm/index.js';
import { checkLoraForBase } from '../ml/llm/tf/lora-check.js';
import { withLora } from './llm-lora-file.js';
import { llmConfigFor } from './llm-model-file.js';
import type { PipelineConfig } from './types.js';

/**
 * How activities open a model version's LLM branch (issue 19): the branch artifact is either an LlmAdapter
 * (frozen LLM) or a LoraHead, and a LoRA head's features come from the base model run with its GGUF LoRA.
 * The LoRA travels by sha256; each worker fetches it from the artifact store to a local file, because
 * llama.cpp reads adapters from disk.
 */

export async function loadBranchModel(store: ArtifactStore, sha256: string): Promise<LlmAdapter | LoraHead> {
  return loadLlmBranchModel(await store.get(sha256, 'LLM branch artifact'));
}

/** The LoRA a branch model needs its features computed with (none for an adapter). */
export function loraOf(model: LlmAdapter | LoraHead | undefined): string | undefined {
  return model instanceof LoraHead ? model.file.loraSha256 : undefined;
}

/**
 * The feature extractor the branch model reads: the run's LLM, with the LoRA of a LoRA head, whose base
 * model must be the one this worker opened and whose tensors must fit it (a typed BAD_MODEL_FILE
 * otherwise, before any feature is read).
 */
export async function openBranchExtractor(
  config: PipelineConfig,
  ctx: { home: string; store: ArtifactStore },
  model: LlmAdapter | LoraHead | undefined,
): Promise<LlmFeatureExtractor> {
  const llm = await withLora(await llmConfigFor(config, ctx), ctx.store, loraOf(model));
  const ex = await LlmFeatureExtractor.open(llm, ctx.store);
  try {
    if (model instanceof LoraHead) {
      model.checkBase(ex.modelSha256, `the run's model ${ex.modelPath}`);
      // Now, not when a row first needs llama.cpp: a LoRA that does not fit is a typed error naming the
      // tensor, whether or not every feature happens to be cached already.
      if (llm.lora) await checkLoraForBase(ex.modelPath, llm.lora.path);
    }
  } catch (e) {
    await ex.dispose();
    throw e;
  }
  return ex;
}
