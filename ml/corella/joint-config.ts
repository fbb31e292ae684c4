/**
 * The joint trainer's config (stages 2 and 3): its fields, defaults and the one place they are resolved and
 * checked. trainJoint and the row plan both read a resolved JointConfig, never the raw input.
 */
import { DEFAULT_CALIBRATION_CONFIG } from './calibration.js';
import { CorellaError } from '../errors.js';
import type { AlignPair } from './alignment.js';
import type { SubsetSelection } from './subsets.js';

export interface StageConfig {
  enabled: boolean;
  samples: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
}

export interface JointConfig {
  alpha: number;
  beta: number;
  gamma: number;
  /** crmLearningRate: the CRM is already trained, so stage 2 usually nudges it more gently than the adapter. */
  stage2: StageConfig & { crmLearningRate: number };
  stage3: StageConfig;
  subset: SubsetSelection;
  /** 'hard' sampling weight = entropy^hardPower. */
  hardPower: number;
  /**
   * Draw subsets and validation rows in user blocks of this size (ml/data/user-blocks.ts; match the LLM's
   * historyBlock so the drawn prompts share prefixes). 1 = single rows.
   */
  poolBlock: number;
  /** skipInputs: see AdapterConfig (set it to 4 with llm.itemAffinity: log-odds + three affinity features). */
  adapter: { layers: number[]; skipInputs?: number; inputTail?: number };
  /** pairs omitted = defaultPairs (adapter layer i ↔ CRM layer at the same relative depth). */
  alignment: { pairs?: AlignPair[]; sharedDim: number };
  /** Validation samples for per-stage metrics and the boundary shift (0 = none). */
  validationSamples: number;
  /**
   * After stage 3, Platt-scale the LLM branch's logit on this top fraction of the validation samples by CRM
   * entropy (the rows routing sends to the LLM), folded into the adapter's output layer. 0 = off (the paper
   * uses the branch's probabilities as they are).
   */
  calibrateOutput: number;
  /**
   * Seed of the validation sample. Drawn like calibrateThreshold's rows (same permutation), so with the
   * calibration seed (the default) they are a subset of the calibration rows and share their LLM features.
   */
  validationSeed: number;
  /** Measure the decision-boundary shift before/after stage 2 (needs stage 2 and validationSamples > 0). */
  boundaryShift: boolean;
  /** LLM rows requested per call, so progress and cancellation keep flowing. */
  featureChunkSize: number;
  /** Prefix of the named checkpoint pointers in the store. */
  checkpointName: string;
  /** Continue from the named checkpoint when one exists for the same config. */
  resume: boolean;
  seed: number;
}

export const DEFAULT_JOINT_CONFIG: JointConfig = {
  alpha: 1,
  beta: 1,
  gamma: 0.1,
  stage2: {
    enabled: true,
    samples: 20_000,
    epochs: 2,
    batchSize: 256,
    learningRate: 1e-3,
    crmLearningRate: 1e-4,
  },
  stage3: { enabled: true, samples: 10_000, epochs: 3, batchSize: 256, learningRate: 1e-3 },
  subset: 'random',
  hardPower: 2,
  poolBlock: 1,
  adapter: { layers: [64, 32] },
  alignment: { sharedDim: 32 },
  validationSamples: 5_000,
  calibrateOutput: 0,
  validationSeed: DEFAULT_CALIBRATION_CONFIG.seed,
  boundaryShift: true,
  featureChunkSize: 512,
  checkpointName: 'corella/joint',
  resume: true,
  seed: 7,
};

export type JointConfigInput = Partial<Omit<JointConfig, 'stage2' | 'stage3' | 'adapter' | 'alignment'>> & {
  stage2?: Partial<JointConfig['stage2']>;
  stage3?: Partial<StageConfig>;
  adapter?: Partial<JointConfig['adapter']>;
  alignment?: Partial<JointConfig['alignment']>;
};

function bad(field: string, msg: string): never {
  throw new CorellaError('BAD_CONFIG', `joint config ${field}: ${msg}`, { details: { field } });
}

function checkStage(name: string, s: StageConfig): void {
  if (!Number.isInteger(s.samples) || s.samples < 0)
    bad(`${name}.samples`, `must be an integer ≥ 0, got ${s.samples}`);
  if (!Number.isInteger(s.epochs) || s.epochs < 0)
    bad(`${name}.epochs`, `must be an integer ≥ 0, got ${s.epochs}`);
  if (!Number.isInteger(s.batchSize) || s.batchSize < 1)
    bad(`${name}.batchSize`, `must be an integer ≥ 1, got ${s.batchSize}`);
  if (!(s.learningRate > 0)) bad(`${name}.learningRate`, `must be > 0, got ${s.learningRate}`);
}

export function resolveJointConfig(input: JointConfigInput = {}): JointConfig {
  const d = DEFAULT_JOINT_CONFIG;
  const c: JointConfig = {
    ...d,
    ...input,
    stage2: { ...d.stage2, ...input.stage2 },
    stage3: { ...d.stage3, ...input.stage3 },
    adapter: { ...d.adapter, ...input.adapter },
    alignment: { ...d.alignment, ...input.alignment },
  };
  for (const k of ['alpha', 'beta', 'gamma'] as const) {
    if (!Number.isFinite(c[k]) || c[k] < 0) bad(k, `must be a finite number ≥ 0, got ${c[k]}`);
  }
  checkStage('stage2', c.stage2);
  checkStage('stage3', c.stage3);
  if (!(c.stage2.crmLearningRate > 0))
    bad('stage2.crmLearningRate', `must be > 0, got ${c.stage2.crmLearningRate}`);
  if (c.stage2.enabled && c.alpha === 0 && c.beta === 0 && c.gamma === 0)
    bad('alpha/beta/gamma', 'all zero: stage 2 would learn nothing');
  if (c.subset !== 'random' && c.subset !== 'hard')
    bad('subset', `must be 'random' or 'hard', got ${JSON.stringify(c.subset)}`);
  if (!(c.hardPower >= 0)) bad('hardPower', `must be ≥ 0, got ${c.hardPower}`);
  if (!Number.isInteger(c.poolBlock) || c.poolBlock < 1) bad('poolBlock', `must be an integer ≥ 1`);
  if (!Number.isInteger(c.validationSamples) || c.validationSamples < 0)
    bad('validationSamples', `must be an integer ≥ 0`);
  if (!(c.calibrateOutput >= 0 && c.calibrateOutput <= 1))
    bad('calibrateOutput', `must be a fraction in [0, 1], got ${c.calibrateOutput}`);
  if (!Number.isInteger(c.featureChunkSize) || c.featureChunkSize < 1)
    bad('featureChunkSize', 'must be an integer ≥ 1');
  return c;
}
