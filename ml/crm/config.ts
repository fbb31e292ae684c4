import { CorellaError } from '../errors.js';
import type { CrmConfig } from './types.js';

/** The bench/issue shape: embedding 16, 3 full-rank cross layers stacked before an MLP 256-128. */
export function defaultCrmConfig(
  kind: CrmConfig['kind'] = 'dcnv2',
  overrides: Partial<CrmConfig> = {},
): CrmConfig {
  const base: CrmConfig =
    kind === 'lr'
      ? {
          kind,
          embeddingDim: 1,
          crossLayers: 0,
          crossStructure: 'crossnet_only',
          mlp: [],
          dropout: 0,
          batchNorm: false,
          l2Embedding: 0,
          seed: 42,
        }
      : {
          kind,
          embeddingDim: 16,
          crossLayers: 3,
          crossStructure: 'stacked',
          mlp: [256, 128],
          dropout: 0,
          batchNorm: false,
          l2Embedding: 1e-6,
          seed: 42,
        };
  return { ...base, ...overrides, kind };
}

function bad(field: string, msg: string): never {
  throw new CorellaError('BAD_CONFIG', `CRM config field ${field}: ${msg}`, { details: { field } });
}

function posInt(v: unknown, field: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    bad(field, `expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Checks a config and returns it with the LR baseline normalised (its embedding width is 1 and it has no
 * cross or MLP layers whatever was passed), so checkpoints store exactly what was trained.
 */
export function resolveCrmConfig(c: CrmConfig): CrmConfig {
  if (c.kind !== 'dcnv2' && c.kind !== 'lr')
    bad('kind', `expected 'dcnv2' or 'lr', got ${JSON.stringify(c.kind)}`);
  const seed = posInt(c.seed, 'seed', 0);
  if (typeof c.l2Embedding !== 'number' || !(c.l2Embedding >= 0))
    bad('l2Embedding', `expected a number ≥ 0, got ${JSON.stringify(c.l2Embedding)}`);
  if (c.kind === 'lr') {
    return {
      kind: 'lr',
      embeddingDim: 1,
      crossLayers: 0,
      crossStructure: 'crossnet_only',
      mlp: [],
      dropout: 0,
      batchNorm: false,
      l2Embedding: c.l2Embedding,
      seed,
    };
  }
  posInt(c.embeddingDim, 'embeddingDim');
  posInt(c.crossLayers, 'crossLayers', 0);
  if (!['stacked', 'parallel', 'crossnet_only'].includes(c.crossStructure)) {
    bad(
      'crossStructure',
      `expected stacked, parallel or crossnet_only, got ${JSON.stringify(c.crossStructure)}`,
    );
  }
  if (!Array.isArray(c.mlp)) bad('mlp', 'expected an array of layer widths');
  c.mlp.forEach((w, i) => posInt(w, `mlp[${i}]`));
  if (typeof c.dropout !== 'number' || !(c.dropout >= 0 && c.dropout < 1))
    bad('dropout', `expected 0 ≤ dropout < 1, got ${JSON.stringify(c.dropout)}`);
  if (typeof c.batchNorm !== 'boolean') bad('batchNorm', 'expected a boolean');
  if (c.crossStructure !== 'crossnet_only' && c.mlp.length === 0)
    bad('mlp', `structure ${c.crossStructure} needs at least one MLP layer`);
  if (c.crossStructure === 'crossnet_only' && c.crossLayers === 0)
    bad('crossLayers', 'crossnet_only needs at least one cross layer');
  let lowRank: CrmConfig['lowRank'];
  if (c.lowRank !== undefined) {
    lowRank = {
      rank: posInt(c.lowRank.rank, 'lowRank.rank'),
      experts: posInt(c.lowRank.experts, 'lowRank.experts'),
    };
  }
  const out: CrmConfig = {
    kind: 'dcnv2',
    embeddingDim: c.embeddingDim,
    crossLayers: c.crossLayers,
    crossStructure: c.crossStructure,
    mlp: [...c.mlp],
    dropout: c.dropout,
    batchNorm: c.batchNorm,
    l2Embedding: c.l2Embedding,
    seed,
  };
  if (lowRank) out.lowRank = lowRank;
  return out;
}
