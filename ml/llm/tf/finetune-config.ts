import { CorellaError } from '../../errors.js';
import type { LoraConfig } from './lora.js';
import { PROJECTIONS, type Projection } from './llama-weights.js';

/**
 * `llm.finetune` (issue 19): `none` keeps today's frozen LLM + adapter; `lora` trains LoRA factors of the
 * GGUF model through the TensorFlow.js forward pass. The shape is checked here, where no model is loaded;
 * what depends on the model (layers ≤ its block count, rank ≤ its width) is checked by resolveLoraConfig.
 */
export type FinetuneConfig = { method: 'none' } | ({ method: 'lora' } & LoraConfig);

function bad(field: string, message: string): CorellaError {
  return new CorellaError('BAD_CONFIG', `llm config field finetune.${field}: ${message}`, {
    details: { field: `finetune.${field}` },
  });
}

function posInt(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw bad(field, `expected a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

export function parseFinetuneConfig(raw: unknown): FinetuneConfig {
  if (raw === undefined) return { method: 'none' };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw bad('method', 'expected an object');
  const c = raw as Record<string, unknown>;
  const known = new Set(['method', 'layers', 'rank', 'alpha', 'targets', 'seed']);
  for (const k of Object.keys(c)) if (!known.has(k)) throw bad(k, 'is not a finetune option');
  if (c.method === 'none') {
    const extra = Object.keys(c).filter((k) => k !== 'method');
    if (extra.length) throw bad(extra[0], `has no meaning with method "none"`);
    return { method: 'none' };
  }
  if (c.method !== 'lora') throw bad('method', `expected "lora" or "none", got ${JSON.stringify(c.method)}`);
  const out: FinetuneConfig = { method: 'lora' };
  if (c.layers !== undefined) out.layers = c.layers === 'all' ? 'all' : posInt('layers', c.layers);
  if (c.rank !== undefined) out.rank = posInt('rank', c.rank);
  if (c.alpha !== undefined) {
    if (typeof c.alpha !== 'number' || !Number.isFinite(c.alpha) || c.alpha <= 0)
      throw bad('alpha', `expected a positive number, got ${JSON.stringify(c.alpha)}`);
    out.alpha = c.alpha;
  }
  if (c.targets !== undefined) {
    if (!Array.isArray(c.targets) || c.targets.length === 0)
      throw bad('targets', 'expected a non-empty list');
    for (const t of c.targets) {
      if (typeof t !== 'string' || !(t in PROJECTIONS))
        throw bad('targets', `${JSON.stringify(t)} is not one of ${Object.keys(PROJECTIONS).join(', ')}`);
    }
    if (new Set(c.targets).size !== c.targets.length) throw bad('targets', 'lists a projection twice');
    out.targets = c.targets as Projection[];
  }
  if (c.seed !== undefined) {
    if (typeof c.seed !== 'number' || !Number.isInteger(c.seed) || c.seed < 0)
      throw bad('seed', 'expected an integer ≥ 0');
    out.seed = c.seed;
  }
  return out;
}
