import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetSpec, PipelineConfig, RetrainInput } from '../activities/types.js';
import { canonicalHash } from '../ml/canonical.js';
import { CorellaError } from '../ml/errors.js';
import { hashedConfig, parsePipelineConfig, resolvePipelineConfig } from '../schema/pipeline.js';
import { repoRoot } from './services/paths.js';

export function configPath(nameOrPath: string): string {
  return /[/\\]|\.json$/.test(nameOrPath) ? nameOrPath : join(repoRoot, 'config', `${nameOrPath}.json`);
}

/**
 * Loads and validates a pipeline config file (JSON); `default` names config/default.json. Returns the
 * config as written (defaults are resolved where it is used, schema/pipeline.ts); a bad one is a ConfigError
 * naming the file and every bad field, before anything is hashed or started.
 */
export async function loadPipelineConfig(nameOrPath = 'default'): Promise<PipelineConfig> {
  const path = configPath(nameOrPath);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', `cannot read config ${path}: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', `${path}: not valid JSON: ${(e as Error).message}`, {
      details: { file: path },
    });
  }
  parsePipelineConfig(parsed, path);
  // `$schema` is for editors; the run does not carry it.
  const { $schema: _schema, ...config } = parsed as PipelineConfig;
  return config;
}

/**
 * The business key: one workflow per dataset + config, so a duplicate trigger does not start a second run.
 * The config part is schema/pipeline.ts hashedConfig (docs/config.md): resolved, machine-independent.
 */
export function retrainWorkflowId(
  dataset: DatasetSpec,
  config: PipelineConfig,
): { id: string; hash: string } {
  const hash = canonicalHash({ dataset, config: hashedConfig(config) });
  const label = (dataset.name ?? dataset.source).replace(/[^A-Za-z0-9_-]/g, '-');
  return { id: `retrain-${label}-${hash.slice(0, 12)}`, hash };
}

export function retrainInput(dataset: DatasetSpec, config: PipelineConfig, trigger: string): RetrainInput {
  return { dataset, config, configHash: retrainWorkflowId(dataset, config).hash, trigger };
}

/** A few words on the config for the Temporal UI's memo (the whole config lives in the run row). */
export function configSummary(config: PipelineConfig): Record<string, unknown> {
  const { crm, llm, joint } = resolvePipelineConfig(config);
  return {
    crm: `${crm.kind} emb ${crm.embeddingDim} cross ${crm.crossLayers} mlp ${JSON.stringify(crm.mlp)}`,
    llm: llm.model?.split('/').pop(),
    joint: `α ${joint.alpha} β ${joint.beta} γ ${joint.gamma} subset ${joint.subset}`,
    routing: config.calibration,
  };
}
