export type { LlmFeatures, LlmFeatureSource } from './types.js';
export { resolveLlmConfig, type LlmConfig, type LlmGpu, type ResolvedLlmConfig } from './config.js';
export { loadLlm, llamaFor, assertGgufFile, resolveModelPath, type LoadedLlm } from './model.js';
export {
  PromptBuilder,
  TEMPLATES,
  templateByName,
  type BuiltPrompt,
  type PromptTemplate,
  type PromptTokenizer,
} from './prompts.js';
export { LlmScorer, type PromptScore, type ScoreOptions, type ScorerStats } from './scorer.js';
export {
  LlmFeatureCache,
  cacheKeyId,
  encodeChunk,
  decodeChunk,
  type FeatureCacheKey,
  type FeatureChunk,
} from './feature-cache.js';
export { LlmFeatureExtractor, type ExtractOptions, type ExtractReport } from './features.js';
