/**
 * The pipeline config, declared once: each section's schema comes from the ML module that owns it, and the
 * TypeScript types are derived from it. The CLI validates a config file with it before it hashes or starts
 * anything, and the activities validate what they are handed again (a workflow may come from another
 * client). See docs/config.md.
 */
import { z } from 'zod';
import { configIssues } from '../ml/config/issues.js';
import { calibrationSectionSchema, type CalibrationConfig } from '../ml/corella/calibration-config.js';
import { jointSectionSchema } from '../ml/corella/joint-config.js';
import { promotionSchema } from '../ml/corella/promotion-config.js';
import { crmSectionSchema } from '../ml/crm/config.js';
import { llmSectionSchema } from '../ml/llm/config.js';
import { checkCrossRules } from './cross-rules.js';
import { ConfigError } from './errors.js';

export const pipelineSchema = z
  .strictObject({
    $schema: z
      .string()
      .optional()
      .describe('The JSON Schema of this file, for editors (ignored by corella).'),
    crm: crmSectionSchema.prefault({}).describe('Stage 1: the conventional recommender and how it trains.'),
    llm: llmSectionSchema.prefault({}).describe('The LLM branch: the GGUF model, prompts and feature pools.'),
    joint: jointSectionSchema
      .prefault({})
      .describe('Stages 2 and 3: joint training of the CRM and the adapter.'),
    calibration: calibrationSectionSchema
      .prefault({})
      .describe('The entropy threshold that routes to the LLM.'),
    promotion: promotionSchema.prefault({}).describe('When a new model version becomes champion.'),
  })
  .superRefine(checkCrossRules);

/** A config as written (every field optional): what config files, tests and workflow inputs hold. */
export type PipelineConfigInput = z.input<typeof pipelineSchema>;
type Parsed = z.output<typeof pipelineSchema>;

/** Every default filled in, including those one section takes from another. */
export type ResolvedPipelineConfig = Omit<Parsed, 'calibration' | 'joint'> & {
  calibration: CalibrationConfig;
  joint: Parsed['joint'] & { poolBlock: number };
};

/** Validates a config: every problem, with its field path, as one ConfigError (`file` names the source). */
export function parsePipelineConfig(input: unknown, file?: string): Parsed {
  const r = pipelineSchema.safeParse(input ?? {}, { reportInput: true });
  if (!r.success) throw new ConfigError(configIssues(pipelineSchema, r.error), file);
  return r.data;
}

/**
 * The config with every default resolved. The only defaults not written in a section's schema are these
 * cross-section ones: calibration and the joint trainer draw their rows in the LLM's user blocks, and
 * calibration uses the validation pool the LLM features were extracted for.
 */
export function resolvePipelineConfig(input: unknown, file?: string): ResolvedPipelineConfig {
  const c = parsePipelineConfig(input, file);
  const { pools, historyBlock } = c.llm;
  return {
    ...c,
    calibration: {
      ...c.calibration,
      maxRows: c.calibration.maxRows ?? pools.valid,
      seed: c.calibration.seed ?? pools.seed,
      poolBlock: c.calibration.poolBlock ?? historyBlock,
    },
    joint: { ...c.joint, poolBlock: c.joint.poolBlock ?? historyBlock },
  };
}

/**
 * What the workflow id is hashed from (docs/config.md): the resolved config, so spelling a default out or
 * leaving it unset is the same experiment; without `$schema` (editor metadata); with machine-dependent
 * values as written (`llm.threads: 'auto'` stays 'auto', never this machine's core count); and the model
 * named by its sha256 alone when it is known, since the same file at another path is the same model.
 */
export function hashedConfig(input: unknown): Record<string, unknown> {
  const { $schema: _schema, ...c } = resolvePipelineConfig(input);
  const { model, modelSha256, ...llm } = c.llm;
  return { ...c, llm: modelSha256 ? { ...llm, modelSha256 } : { ...llm, model } };
}
