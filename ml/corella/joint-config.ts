/**
 * The joint trainer's config (stages 2 and 3): its fields, defaults and the one place they are resolved and
 * checked. trainJoint and the row plan both read a resolved JointConfig, never the raw input. The pipeline's
 * `joint` section is the same schema without the fields a run sets itself (schema/pipeline.ts).
 */
import { z } from 'zod';
import { parseSection } from '../config/issues.js';
import { DEFAULT_CALIBRATION_CONFIG } from './calibration-config.js';

const int = (min: number) => z.number().int().min(min);

function stage(d: { samples: number; epochs: number }) {
  return {
    enabled: z.boolean().default(true),
    samples: int(0).default(d.samples),
    epochs: int(0).default(d.epochs),
    batchSize: int(1).default(256),
    learningRate: z.number().positive().default(1e-3),
  };
}

const jointShape = {
  alpha: z.number().min(0).default(1).describe('Weight of the CRM loss in stage 2.'),
  beta: z.number().min(0).default(1).describe('Weight of the LLM-branch loss in stage 2.'),
  gamma: z.number().min(0).default(0.1).describe('Weight of the layer-wise alignment loss in stage 2.'),
  /** crmLearningRate: the CRM is already trained, so stage 2 usually nudges it more gently than the adapter. */
  stage2: z
    .strictObject({
      ...stage({ samples: 20_000, epochs: 2 }),
      crmLearningRate: z.number().positive().default(1e-4),
    })
    .prefault({}),
  stage3: z.strictObject(stage({ samples: 10_000, epochs: 3 })).prefault({}),
  subset: z.enum(['random', 'hard']).default('random'),
  /** 'hard' sampling weight = entropy^hardPower. */
  hardPower: z.number().min(0).default(2),
  /**
   * Draw subsets and validation rows in user blocks of this size (ml/data/user-blocks.ts; match the LLM's
   * historyBlock so the drawn prompts share prefixes). 1 = single rows.
   */
  poolBlock: int(1).default(1),
  /** skipInputs / inputTail: see AdapterConfig (4 with llm.itemAffinity: log-odds + three affinity features). */
  adapter: z
    .strictObject({
      layers: z.array(int(1)).default([64, 32]),
      skipInputs: int(0).optional(),
      inputTail: int(1).optional(),
    })
    .prefault({}),
  /** pairs omitted = defaultPairs (adapter layer i ↔ CRM layer at the same relative depth). */
  alignment: z
    .strictObject({
      pairs: z.array(z.strictObject({ crm: z.string().min(1), llm: z.string().min(1) })).optional(),
      sharedDim: int(1).default(32),
    })
    .prefault({}),
  /** Validation samples for per-stage metrics and the boundary shift (0 = none). */
  validationSamples: int(0).default(5_000),
  /**
   * After stage 3, Platt-scale the LLM branch's logit on this top fraction of the validation samples by CRM
   * entropy (the rows routing sends to the LLM), folded into the adapter's output layer. 0 = off (the paper
   * uses the branch's probabilities as they are).
   */
  calibrateOutput: z.number().min(0).max(1).default(0),
  /**
   * Seed of the validation sample. Drawn like calibrateThreshold's rows (same permutation), so with the
   * calibration seed (the default) they are a subset of the calibration rows and share their LLM features.
   */
  validationSeed: z.number().int().default(DEFAULT_CALIBRATION_CONFIG.seed),
  /** Measure the decision-boundary shift before/after stage 2 (needs stage 2 and validationSamples > 0). */
  boundaryShift: z.boolean().default(true),
  /** LLM rows requested per call, so progress and cancellation keep flowing. */
  featureChunkSize: int(1).default(512),
  /** Prefix of the named checkpoint pointers in the store. */
  checkpointName: z.string().min(1).default('corella/joint'),
  /** Continue from the named checkpoint when one exists for the same config. */
  resume: z.boolean().default(true),
  seed: z.number().int().default(7),
} as const;

function checkLosses(
  c: { alpha: number; beta: number; gamma: number; stage2: { enabled: boolean } },
  ctx: z.RefinementCtx,
): void {
  if (c.stage2.enabled && c.alpha === 0 && c.beta === 0 && c.gamma === 0)
    ctx.addIssue({
      code: 'custom',
      path: ['alpha'],
      message: 'alpha, beta and gamma are all zero: stage 2 would learn nothing',
    });
}

export const jointConfigSchema = z.strictObject(jointShape).superRefine(checkLosses);

/**
 * The pipeline's `joint` section: a run names its own checkpoints and always resumes them, and the user
 * blocks follow `llm.historyBlock` unless set.
 */
const { checkpointName: _name, resume: _resume, ...sectionShape } = jointShape;

export const jointSectionSchema = z
  .strictObject({
    ...sectionShape,
    poolBlock: int(1).optional().describe('User block size of the drawn rows (default: llm.historyBlock).'),
  })
  .superRefine(checkLosses);

export type JointConfig = z.output<typeof jointConfigSchema>;
export type StageConfig = JointConfig['stage3'];
export type JointConfigInput = z.input<typeof jointConfigSchema>;

export const DEFAULT_JOINT_CONFIG: JointConfig = jointConfigSchema.parse({});

export function resolveJointConfig(input: JointConfigInput = {}): JointConfig {
  return parseSection(jointConfigSchema, input, 'joint config');
}
