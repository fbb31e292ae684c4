import { z } from 'zod';
import { pipelineSchema } from './pipeline.js';

/**
 * The JSON Schema of a config file as written (defaults are shown, not required), for editors: the shipped
 * configs point at config/schema.json through `$schema`. Cross-section rules cannot be expressed in it;
 * `corella config show` checks those.
 */
export function pipelineJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(pipelineSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'corella pipeline config',
  };
}
