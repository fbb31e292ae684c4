import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetSpec, PipelineConfig, RetrainInput } from '../activities/types.js';
import { canonicalHash } from '../ml/canonical.js';
import { CorellaError } from '../ml/errors.js';
import { repoRoot } from './services/paths.js';

/** Loads a pipeline config file (JSON); `default` names config/default.json. */
export async function loadPipelineConfig(nameOrPath = 'default'): Promise<PipelineConfig> {
  const path = /[/\\]|\.json$/.test(nameOrPath) ? nameOrPath : join(repoRoot, 'config', `${nameOrPath}.json`);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', `cannot read config ${path}: ${(e as Error).message}`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new Error('top level must be an object');
    return parsed as PipelineConfig;
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', `${path}: not a valid config: ${(e as Error).message}`);
  }
}

/** The business key: one workflow per dataset + config, so a duplicate trigger does not start a second run. */
export function retrainWorkflowId(
  dataset: DatasetSpec,
  config: PipelineConfig,
): { id: string; hash: string } {
  const hash = canonicalHash({ dataset, config });
  const label = (dataset.name ?? dataset.source).replace(/[^A-Za-z0-9_-]/g, '-');
  return { id: `retrain-${label}-${hash.slice(0, 12)}`, hash };
}

export function retrainInput(dataset: DatasetSpec, config: PipelineConfig, trigger: string): RetrainInput {
  return { dataset, config, configHash: retrainWorkflowId(dataset, config).hash, trigger };
}

/** A few words on the config for the Temporal UI's memo (the whole config lives in the run row). */
export function configSummary(config: PipelineConfig): Record<string, unknown> {
  const crm = (config.crm ?? {}) as Record<string, unknown>;
  const llm = (config.llm ?? {}) as Record<string, unknown>;
  const joint = (config.joint ?? {}) as Record<string, unknown>;
  return {
    crm: `${String(crm.kind ?? 'dcnv2')} emb ${String(crm.embeddingDim ?? '?')} cross ${String(crm.crossLayers ?? '?')} mlp ${JSON.stringify(crm.mlp ?? [])}`,
    llm: typeof llm.model === 'string' ? llm.model.split('/').pop() : undefined,
    joint: `α ${String(joint.alpha ?? 1)} β ${String(joint.beta ?? 1)} γ ${String(joint.gamma ?? 0.1)} subset ${String(joint.subset ?? 'random')}`,
    routing: config.calibration,
  };
}
