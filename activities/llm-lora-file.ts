import type { ArtifactStore } from '../ml/artifacts/store.js';
import type { LlmConfig } from '../ml/llm/index.js';

/**
 * `llm` with the GGUF LoRA `loraSha256` applied at scale 1 (the scale the joint trainer's ΔW was trained
 * at), fetched from the artifact store into this worker's local copy: llama.cpp reads adapters from disk,
 * and a LoRA travels between workers by its sha256 only. No tfjs or llama.cpp here (the serving bundle
 * imports it).
 */
export async function withLora(
  llm: LlmConfig,
  store: ArtifactStore,
  loraSha256: string | undefined,
): Promise<LlmConfig> {
  if (loraSha256 === undefined) return llm;
  return { ...llm, lora: { path: await store.localPath(loraSha256, 'GGUF LoRA adapter'), scale: 1 } };
}
