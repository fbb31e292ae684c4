import { z } from 'zod';
import { parseSection } from '../config/issues.js';
import type { CrmConfig } from './types.js';

const int = (min: number) => z.number().int().min(min);

/**
 * The model part of a CRM config. One schema for the pipeline's `crm` section, checkpoints and direct
 * callers, so a default or a range is written once; `kind` chooses the model (`lr` is the logistic
 * regression baseline run through the same harness).
 */
export const crmModelShape = {
  kind: z.enum(['dcnv2', 'lr']).default('dcnv2').describe("The model: 'dcnv2' or the 'lr' baseline."),
  embeddingDim: int(1).default(16),
  crossLayers: int(0).default(3),
  crossStructure: z.enum(['stacked', 'parallel', 'crossnet_only']).default('stacked'),
  lowRank: z
    .strictObject({ rank: int(1), experts: int(1) })
    .optional()
    .describe('DCN-Mix: low-rank mixture of experts in the cross layers; absent = full rank.'),
  mlp: z.array(int(1)).default([256, 128]),
  dropout: z.number().min(0).lt(1).default(0),
  batchNorm: z.boolean().default(false),
  l2Embedding: z.number().min(0).default(1e-6),
  seed: int(0).default(42),
} as const;

type ModelFields = z.output<z.ZodObject<typeof crmModelShape>>;

/** Structure rules of DCNv2 (the LR baseline ignores its structure fields, see resolveCrmConfig). */
export function checkCrmStructure(c: ModelFields, ctx: z.RefinementCtx): void {
  if (c.kind === 'lr') return;
  if (c.crossStructure !== 'crossnet_only' && c.mlp.length === 0)
    ctx.addIssue({
      code: 'custom',
      path: ['mlp'],
      message: `structure ${c.crossStructure} needs at least one MLP layer`,
    });
  if (c.crossStructure === 'crossnet_only' && c.crossLayers === 0)
    ctx.addIssue({
      code: 'custom',
      path: ['crossLayers'],
      message: 'crossnet_only needs at least one cross layer',
    });
}

export const crmModelSchema = z.strictObject(crmModelShape).superRefine(checkCrmStructure);

/** The LR baseline's structure: whatever was passed, it has 1-wide embeddings and no cross or MLP layers. */
const LR_STRUCTURE = {
  embeddingDim: 1,
  crossLayers: 0,
  crossStructure: 'crossnet_only',
  mlp: [],
  dropout: 0,
  batchNorm: false,
} as const;

/** The bench/issue shape: embedding 16, 3 full-rank cross layers stacked before an MLP 256-128. */
export function defaultCrmConfig(
  kind: CrmConfig['kind'] = 'dcnv2',
  overrides: Partial<CrmConfig> = {},
): CrmConfig {
  // Defaults come from the schema; overrides are checked later, by resolveCrmConfig in the model.
  const base = crmModelSchema.parse({ kind });
  const out: CrmConfig =
    kind === 'lr' ? { ...base, ...LR_STRUCTURE, mlp: [], l2Embedding: 0 } : { ...base, mlp: [...base.mlp] };
  return { ...out, ...overrides, kind };
}

/**
 * Checks a config and returns it with the LR baseline normalised (its embedding width is 1 and it has no
 * cross or MLP layers whatever was passed), so checkpoints store exactly what was trained. The key order is
 * fixed: checkpoints compare configs as JSON.
 */
export function resolveCrmConfig(input: CrmConfig): CrmConfig {
  const c = parseSection(crmModelSchema, input, 'CRM config');
  const structure = c.kind === 'lr' ? { ...LR_STRUCTURE, mlp: [] } : c;
  const out: CrmConfig = {
    kind: c.kind,
    embeddingDim: structure.embeddingDim,
    crossLayers: structure.crossLayers,
    crossStructure: structure.crossStructure,
    mlp: [...structure.mlp],
    dropout: structure.dropout,
    batchNorm: structure.batchNorm,
    l2Embedding: c.l2Embedding,
    seed: c.seed,
  };
  if (c.kind !== 'lr' && c.lowRank) out.lowRank = { rank: c.lowRank.rank, experts: c.lowRank.experts };
  return out;
}

/**
 * The pipeline's `crm` section: the model fields plus how stage 1 trains it. `threads` sizes the native
 * kernels' intra-op pool ('auto': the cores this process may use, at most 4; results do not depend on it);
 * `dataParallel` uses a gradient worker thread instead (wasm/cpu backends, no batch norm); `baseline`
 * also trains the LR baseline beside the chosen model, for the `lr.*` metrics.
 */
export const crmSectionSchema = z
  .strictObject({
    ...crmModelShape,
    epochs: int(1).default(3),
    batchSize: int(1).default(1024),
    learningRate: z.number().positive().default(1e-3),
    patience: int(0).default(1).describe('Epochs without a validation-AUC improvement before stopping.'),
    lrDecay: z
      .number()
      .positive()
      .max(1)
      .default(0.5)
      .describe('Learning-rate factor after each epoch without improvement.'),
    threads: z
      .union([int(1).max(64), z.literal('auto')])
      .default('auto')
      .describe(
        "Threads each training step is split over; 'auto' = the cores this process may use, loaded or not (at most 4).",
      ),
    dataParallel: z
      .boolean()
      .default(false)
      .describe('With threads ≥ 2: a gradient worker thread takes half of each batch, instead of the pool.'),
    baseline: z
      .boolean()
      .default(true)
      .describe("Also train the 'lr' baseline beside the model (lr.* metrics)."),
  })
  .superRefine((c, ctx) => {
    checkCrmStructure(c, ctx);
    if (c.dataParallel && c.batchNorm)
      ctx.addIssue({
        code: 'custom',
        path: ['dataParallel'],
        message:
          'data-parallel training (dataParallel: true) needs batchNorm: false (batch statistics are per thread)',
      });
  });

export type CrmSection = z.output<typeof crmSectionSchema>;
export type CrmSectionInput = z.input<typeof crmSectionSchema>;

/** The model part of a resolved `crm` section, for the given kind (the section's model or its baseline). */
export function crmModelConfig(section: CrmSection, kind: CrmConfig['kind'] = section.kind): CrmConfig {
  const fields = Object.fromEntries(
    Object.keys(crmModelShape).map((k) => [k, section[k as keyof typeof crmModelShape]]),
  ) as unknown as CrmConfig;
  // The baseline is a plain LR whatever the section's structure says; it keeps the section's seed.
  return resolveCrmConfig(
    kind === 'lr' ? defaultCrmConfig('lr', { seed: section.seed }) : { ...fields, kind },
  );
}
