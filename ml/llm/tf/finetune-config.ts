import { z } from 'zod';
import { parseSection } from '../../config/issues.js';
import { CorellaError } from '../../errors.js';
import { PROJECTIONS, type Projection } from './llama-weights.js';

const projections = Object.keys(PROJECTIONS) as Projection[];

/**
 * `llm.finetune` (issue 19): `none` keeps today's frozen LLM + adapter; `lora` trains LoRA factors of the
 * GGUF model through the TensorFlow.js forward pass. The shape is checked here, where no model is loaded;
 * what depends on the model (layers ≤ its block count, rank ≤ its width) is checked by resolveLoraConfig.
 */
export const finetuneSchema = z.discriminatedUnion('method', [
  z.strictObject({ method: z.literal('none') }),
  z.strictObject({
    method: z.literal('lora'),
    /** Adapt the top `layers` blocks (default 2); 'all' or the block count adapts every block. */
    layers: z.union([z.number().int().min(1), z.literal('all')]).optional(),
    rank: z.number().int().min(1).optional(),
    /** ΔW = (alpha / rank)·B·A, as llama.cpp applies a GGUF adapter at scale 1 (default alpha = rank). */
    alpha: z.number().positive().optional(),
    /** Projections to adapt (default q and v, as in the LoRA paper and CoReLLa). */
    targets: z
      .array(z.enum(projections as [Projection, ...Projection[]]))
      .min(1)
      .refine((t) => new Set(t).size === t.length, { message: 'lists a projection twice' })
      .optional(),
    seed: z.number().int().min(0).optional(),
    /**
     * Megabytes of decoded frozen outputs held in memory during training (default 2048 with a local artifact
     * store; without one every entry stays in memory, and setting it is an error). Evicted entries are read
     * back from the store bit for bit (ml/llm/tf/frozen-prefix.ts).
     */
    frozenMemoryMb: z.number().positive().optional(),
    /**
     * Threads of the LoRA's training steps, 1..16 (default 1: measured under load, see docs/llm-branch.md):
     * the branch-only steps (stage 3 and the reference fit) and, split exactly, stage 2's joint step (the
     * CRM side on the calling thread, the LoRA's samples on every thread).
     */
    threads: z.number().int().min(1).max(16).optional(),
    /**
     * Worker threads of the one-time frozen pass, 1..16 (default 2, this machine's cores; 1 runs it on the
     * calling thread). Its own setting, not llm.threads: that one is llama.cpp's threads per context, which
     * config/ml-1m-cpu.json sets to 1 because llama.cpp runs fastest here at 1 thread × 2 sequences, and
     * the frozen pass that followed it ran on one core. Every count gives the same bits.
     */
    frozenThreads: z.number().int().min(1).max(16).optional(),
  }),
]);

export type FinetuneConfig = z.output<typeof finetuneSchema>;

export function parseFinetuneConfig(raw: unknown): FinetuneConfig {
  if (raw === undefined) return { method: 'none' };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new CorellaError('BAD_CONFIG', 'llm config field finetune.method: expected an object', {
      details: { field: 'finetune.method' },
    });
  try {
    return parseSection(finetuneSchema, raw, 'llm config', ['finetune']);
  } catch (e) {
    // The field is the option, not one entry of it (`finetune.targets`, not `finetune.targets[1]`).
    if (e instanceof CorellaError && typeof e.details.field === 'string')
      e.details.field = e.details.field.replace(/\[\d+\]$/, '');
    throw e;
  }
}
