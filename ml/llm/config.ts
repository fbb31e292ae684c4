import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { parseSection } from '../config/issues.js';
import { itemAffinityInputSchema, resolveItemAffinity, type ResolvedItemAffinity } from './item-affinity.js';
import { TEMPLATES } from './prompts.js';
import { finetuneSchema } from './tf/finetune-config.js';

const int = (min: number) => z.number().int().min(min);

/**
 * Everything that decides how the LLM branch loads a model and scores prompts. One shape for the pipeline's
 * `llm` section and for direct callers (serving, benches), so a default is written once.
 */
export const llmConfigShape = {
  /** Local `.gguf` path or an `hf:` URI (resolved into `modelCacheDir`). */
  model: z.string().min(1).describe("Local .gguf path or an 'hf:' URI."),
  /** `false` (default) = CPU; a named backend that is not available fails with GPU_UNAVAILABLE. */
  gpu: z.union([z.literal(false), z.enum(['auto', 'cuda', 'vulkan'])]).default(false),
  /** Layers to offload when a GPU is used: a count, 'auto' or 'max'. */
  gpuLayers: z.union([int(0), z.enum(['auto', 'max'])]).default('auto'),
  /**
   * CPU threads per context. 'auto' = the machine's core count, looked up when the model is opened and not
   * before: a config (and the workflow id hashed from it) must not depend on the machine that wrote it.
   */
  threads: z.union([int(1), z.literal('auto')]).default('auto'),
  contextSize: int(1).default(2048),
  batchSize: int(1).default(512),
  /** Parallel sequences (one worker each); helps on GPU, rarely on a 2-core CPU. */
  sequences: int(1).default(1),
  lora: z.strictObject({ path: z.string().min(1), scale: z.number().optional() }).optional(),
  /** Prompt template name (see prompts.ts). */
  template: z.enum(Object.keys(TEMPLATES) as [string, ...string[]]).default('paper'),
  /** The two answer words; each must be one token when tokenized with trimLeadingSpace. */
  answers: z
    .strictObject({ yes: z.string().min(1), no: z.string().min(1) })
    .refine((a) => a.yes !== a.no, { message: 'need two different answer words' })
    .default({ yes: 'Yes', no: 'No' }),
  /** Extract the final hidden state (same pass as the answer, except for models with pooled embeddings). */
  hidden: z.boolean().default(true),
  maxHistoryItems: int(1).optional(),
  /**
   * Anchors history windows per block of this many consecutive samples of a user (1 = every sample slides
   * its own window). The block's k-th sample sees maxHistoryItems + k items, so its prompt extends the
   * previous one and prefix reuse evaluates only the new item and the target. Pools sampled in the same
   * blocks get the speed-up; others still get correct (just longer) prompts.
   */
  historyBlock: int(1).default(1),
  /**
   * Flash attention (default false). On the CPU it shifted SmolLM2's Yes/No log-odds by up to ~0.2 and made
   * them depend on how a prompt was split into batches, which breaks exact prefix reuse; off, they are
   * bit-identical across splits.
   */
  flashAttention: z.boolean().default(false),
  /** Tokens kept free for the target item so history truncation does not depend on the target's title. */
  targetReserveTokens: int(0).default(48),
  /**
   * Append item-affinity features (ml/llm/item-affinity.ts) to each sample's hidden state: the target's
   * LLM item vector compared with those of the history items. Off by default (the paper's inputs only).
   */
  itemAffinity: itemAffinityInputSchema.optional(),
} as const;

/** Item vectors are hidden states: affinity needs hidden extraction. */
export function checkLlmHidden(c: { hidden: boolean; itemAffinity?: unknown }, ctx: z.RefinementCtx): void {
  if (c.itemAffinity && c.hidden === false)
    ctx.addIssue({
      code: 'custom',
      path: ['itemAffinity'],
      message: 'item vectors are hidden states: it needs hidden extraction (hidden: true)',
    });
}

export const llmConfigSchema = z
  .strictObject({ ...llmConfigShape, modelCacheDir: z.string().optional() })
  .superRefine(checkLlmHidden);

export type LlmConfig = z.input<typeof llmConfigSchema>;
export type LlmGpu = z.output<typeof llmConfigShape.gpu>;

export type ResolvedLlmConfig = Omit<z.output<typeof llmConfigSchema>, 'threads' | 'itemAffinity'> & {
  threads: number;
  itemAffinity: ResolvedItemAffinity | undefined;
};

export function resolveLlmConfig(c: LlmConfig): ResolvedLlmConfig {
  const parsed = parseSection(llmConfigSchema, c, 'llm config');
  return {
    ...parsed,
    threads: parsed.threads === 'auto' ? availableParallelism() : parsed.threads,
    itemAffinity: resolveItemAffinity(parsed.itemAffinity),
  };
}

/**
 * The pipeline's `llm` section. `model` is usually left out of config files: the CLI fills it with the
 * resolved model file and its sha256 (`modelSha256`), which identifies the model in the workflow id. `pools`
 * are the rows that get LLM features up front (the LLM is the expensive part of a run), drawn in user blocks
 * of `historyBlock` so their prompts share prefixes.
 */
export const llmSectionSchema = z
  .strictObject({
    ...llmConfigShape,
    model: llmConfigShape.model.optional(),
    modelSha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'expected a sha256 (64 hex digits)')
      .optional()
      .describe('sha256 of the model file (set by the CLI).'),
    pools: z
      .strictObject({
        valid: int(0)
          .default(2000)
          .describe('Validation rows with LLM features (calibration, joint validation).'),
        test: int(0).default(2000).describe('Test rows with LLM features (the alignment evaluation).'),
        hybridTest: int(0)
          .default(0)
          .describe(
            'Test rows for the hybrid-vs-CRM figure alone: the CRM scores them all, the LLM only the rows the calibrated threshold routes (0 = none).',
          ),
        seed: z.number().int().default(11),
      })
      .prefault({}),
    finetune: finetuneSchema.default({ method: 'none' }),
  })
  .superRefine(checkLlmHidden);

export type LlmSection = z.output<typeof llmSectionSchema>;
