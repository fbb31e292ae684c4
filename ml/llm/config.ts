import { availableParallelism } from 'node:os';
import { CorellaError } from '../errors.js';
import { resolveItemAffinity, type ItemAffinityConfig, type ResolvedItemAffinity } from './item-affinity.js';

export type LlmGpu = 'auto' | 'cuda' | 'vulkan' | false;

/** Everything that decides how the LLM branch loads a model and scores prompts. */
export interface LlmConfig {
  /** Local `.gguf` path or an `hf:` URI (resolved into `modelCacheDir`). */
  model: string;
  modelCacheDir?: string;
  /** `false` (default) = CPU; a named backend that is not available fails with GPU_UNAVAILABLE. */
  gpu?: LlmGpu;
  /** Layers to offload when a GPU is used: a count, 'auto' or 'max'. */
  gpuLayers?: number | 'auto' | 'max';
  /** Explicit CPU threads per context (llama.cpp otherwise guesses, badly when others share the machine). */
  threads?: number;
  contextSize?: number;
  batchSize?: number;
  /** Parallel sequences (one worker each); helps on GPU, rarely on a 2-core CPU. */
  sequences?: number;
  lora?: { path: string; scale?: number };
  /** Prompt template name (see prompts.ts). */
  template?: string;
  /** The two answer words; each must be one token when tokenized with trimLeadingSpace. */
  answers?: { yes: string; no: string };
  /** Extract the final hidden state (same pass as the answer, except for models with pooled embeddings). */
  hidden?: boolean;
  maxHistoryItems?: number;
  /**
   * Anchors history windows per block of this many consecutive samples of a user (1 = every sample slides
   * its own window). The block's k-th sample sees maxHistoryItems + k items, so its prompt extends the
   * previous one and prefix reuse evaluates only the new item and the target. Pools sampled in the same
   * blocks get the speed-up; others still get correct (just longer) prompts.
   */
  historyBlock?: number;
  /**
   * Flash attention (default false). On the CPU it shifted SmolLM2's Yes/No log-odds by up to ~0.2 and made
   * them depend on how a prompt was split into batches, which breaks exact prefix reuse; off, they are
   * bit-identical across splits.
   */
  flashAttention?: boolean;
  /** Tokens kept free for the target item so history truncation does not depend on the target's title. */
  targetReserveTokens?: number;
  /**
   * Append item-affinity features (ml/llm/item-affinity.ts) to each sample's hidden state: the target's
   * LLM item vector compared with those of the history items. Off by default (the paper's inputs only).
   */
  itemAffinity?: ItemAffinityConfig | boolean;
}

export type ResolvedLlmConfig = Required<
  Omit<LlmConfig, 'lora' | 'modelCacheDir' | 'maxHistoryItems' | 'itemAffinity'>
> &
  Pick<LlmConfig, 'lora' | 'modelCacheDir' | 'maxHistoryItems'> & {
    itemAffinity: ResolvedItemAffinity | undefined;
  };

function bad(field: string, message: string): CorellaError {
  return new CorellaError('BAD_CONFIG', `llm config field ${field}: ${message}`, { details: { field } });
}

function positiveInt(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw bad(field, `expected a positive integer, got ${String(v)}`);
  return v;
}

export function resolveLlmConfig(c: LlmConfig): ResolvedLlmConfig {
  if (typeof c.model !== 'string' || c.model.length === 0)
    throw bad('model', 'expected a .gguf path or hf: URI');
  const gpu = c.gpu ?? false;
  if (!(gpu === false || gpu === 'auto' || gpu === 'cuda' || gpu === 'vulkan')) {
    throw bad('gpu', `expected 'auto', 'cuda', 'vulkan' or false, got ${JSON.stringify(gpu)}`);
  }
  const gpuLayers = c.gpuLayers ?? 'auto';
  if (typeof gpuLayers === 'number') positiveIntOrZero('gpuLayers', gpuLayers);
  else if (gpuLayers !== 'auto' && gpuLayers !== 'max')
    throw bad('gpuLayers', `expected a count, 'auto' or 'max'`);
  const answers = c.answers ?? { yes: 'Yes', no: 'No' };
  if (!answers.yes || !answers.no || answers.yes === answers.no)
    throw bad('answers', 'need two different answer words');
  if (c.itemAffinity && c.hidden === false)
    throw bad('itemAffinity', 'item vectors are hidden states: it needs hidden extraction (hidden: true)');
  const lora = c.lora;
  if (lora !== undefined) {
    if (typeof lora.path !== 'string' || lora.path.length === 0)
      throw bad('lora.path', 'expected a GGUF adapter path');
    if (lora.scale !== undefined && !Number.isFinite(lora.scale))
      throw bad('lora.scale', 'expected a finite number');
  }
  return {
    model: c.model,
    modelCacheDir: c.modelCacheDir,
    gpu,
    gpuLayers,
    threads: positiveInt('threads', c.threads ?? availableParallelism()),
    contextSize: positiveInt('contextSize', c.contextSize ?? 2048),
    batchSize: positiveInt('batchSize', c.batchSize ?? 512),
    sequences: positiveInt('sequences', c.sequences ?? 1),
    lora,
    template: c.template ?? 'paper',
    answers,
    hidden: c.hidden ?? true,
    flashAttention: c.flashAttention ?? false,
    maxHistoryItems:
      c.maxHistoryItems === undefined ? undefined : positiveInt('maxHistoryItems', c.maxHistoryItems),
    historyBlock: positiveInt('historyBlock', c.historyBlock ?? 1),
    targetReserveTokens: positiveIntOrZero('targetReserveTokens', c.targetReserveTokens ?? 48),
    itemAffinity: resolveItemAffinity(c.itemAffinity),
  };
}

function positiveIntOrZero(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw bad(field, `expected an integer ≥ 0, got ${String(v)}`);
  return v;
}
