/**
 * Layer-wise alignment between the CRM and the LLM branch (CoReLLa stage 2).
 *
 * For each configured pair (CRM layer, adapter layer) two trainable linear projections g_crm and g_llm map
 * the activations into a shared space of width `sharedDim`, and
 *   L_align = mean over pairs of ( mean over the batch of || g_llm(h_llm) − g_crm(h_crm) ||² ).
 * Gradients flow into both networks' activations as well as the projections. Caveat: with unconstrained
 * linear projections the loss can also be lowered by shrinking the projections; γ keeps it a regulariser.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import { dense } from '../tf/dense.js';
import { pairwiseSquaredDistance } from './ops.js';
import { glorotUniform, mulberry32 } from '../random.js';
import { makeVariable, restoreTensor, storeVariable, type StoredTensor } from './weights.js';

export interface AlignPair {
  /** CRM activation name, e.g. 'cross_1' or 'mlp_0'. */
  crm: string;
  /** Adapter activation name, e.g. 'adapter_0'. */
  llm: string;
}

export interface AlignmentConfig {
  pairs: AlignPair[];
  sharedDim: number;
  seed: number;
}

export interface NamedActivation {
  name: string;
  value: tf.Tensor2D;
}

export interface LayerShape {
  name: string;
  width: number;
}

interface Projection {
  w: tf.Variable;
  b: tf.Variable;
}

interface ProjectionFile {
  kind: 'corella-alignment-projections';
  version: 1;
  config: AlignmentConfig;
  crmWidths: Record<string, number>;
  llmWidths: Record<string, number>;
  weights: StoredTensor[];
}

/**
 * Pairs adapter layer i with the CRM layer at the same relative depth (the CRM's activations in order:
 * cross layers then MLP layers), so a 2-layer adapter over a CRM with 3 cross + 2 MLP layers aligns
 * adapter_0 ↔ cross_1 and adapter_1 ↔ mlp_1.
 */
export function defaultPairs(crm: LayerShape[], llm: LayerShape[]): AlignPair[] {
  if (crm.length === 0 || llm.length === 0) return [];
  return llm.map((l, i) => {
    const j = Math.max(0, Math.floor(((i + 1) * crm.length) / llm.length) - 1);
    return { crm: crm[j].name, llm: l.name };
  });
}

/** BAD_CONFIG naming the offending pair when a pair names a layer one of the networks does not expose. */
export function validatePairs(pairs: AlignPair[], crmShapes: LayerShape[], llmShapes: LayerShape[]): void {
  const crm = new Set(crmShapes.map((l) => l.name));
  const llm = new Set(llmShapes.map((l) => l.name));
  pairs.forEach((p, i) => {
    if (!crm.has(p.crm)) {
      throw new CorellaError(
        'BAD_CONFIG',
        `alignment.pairs[${i}].crm: the CRM has no layer ${JSON.stringify(p.crm)} (it has ${[...crm].join(', ') || 'none'})`,
      );
    }
    if (!llm.has(p.llm)) {
      throw new CorellaError(
        'BAD_CONFIG',
        `alignment.pairs[${i}].llm: the adapter has no layer ${JSON.stringify(p.llm)} (it has ${[...llm].join(', ') || 'none'})`,
      );
    }
  });
}

/** The loss on already-projected activations: mean over pairs of mean-over-batch squared L2 distance. */
export function alignmentLoss(projected: { crm: tf.Tensor2D; llm: tf.Tensor2D }[]): tf.Scalar {
  return pairwiseSquaredDistance(projected);
}

export class AlignmentProjections {
  readonly config: AlignmentConfig;
  private readonly crmWidths: Record<string, number>;
  private readonly llmWidths: Record<string, number>;
  private readonly gCrm: Projection[];
  private readonly gLlm: Projection[];

  private constructor(
    config: AlignmentConfig,
    crmWidths: Record<string, number>,
    llmWidths: Record<string, number>,
    init: (name: string, shape: number[]) => tf.Tensor,
  ) {
    this.config = { ...config, pairs: config.pairs.map((p) => ({ ...p })) };
    this.crmWidths = crmWidths;
    this.llmWidths = llmWidths;
    const s = config.sharedDim;
    const proj = (prefix: string, width: number): Projection => ({
      w: makeVariable(init(`${prefix}/w`, [width, s])),
      b: makeVariable(init(`${prefix}/b`, [s])),
    });
    this.gCrm = config.pairs.map((p, i) => proj(`pair_${i}/crm`, crmWidths[p.crm]));
    this.gLlm = config.pairs.map((p, i) => proj(`pair_${i}/llm`, llmWidths[p.llm]));
  }

  /** Validates the pairs against the layers both networks expose; BAD_CONFIG names the offending pair. */
  static create(
    config: AlignmentConfig,
    crmShapes: LayerShape[],
    llmShapes: LayerShape[],
  ): AlignmentProjections {
    if (!Number.isInteger(config.sharedDim) || config.sharedDim < 1) {
      throw new CorellaError(
        'BAD_CONFIG',
        `alignment.sharedDim must be a positive integer, got ${config.sharedDim}`,
      );
    }
    validatePairs(config.pairs, crmShapes, llmShapes);
    const crmWidths = Object.fromEntries(crmShapes.map((l) => [l.name, l.width]));
    const llmWidths = Object.fromEntries(llmShapes.map((l) => [l.name, l.width]));
    const rng = mulberry32(config.seed);
    return new AlignmentProjections(config, crmWidths, llmWidths, (_name, shape) =>
      shape.length === 2
        ? tf.tensor2d(glorotUniform(rng, shape[0], shape[1]), [shape[0], shape[1]])
        : tf.zeros(shape),
    );
  }

  /** Projected activations per pair; throws when a paired activation is missing from the forward pass. */
  project(crmActs: NamedActivation[], llmActs: NamedActivation[]): { crm: tf.Tensor2D; llm: tf.Tensor2D }[] {
    const crmBy = new Map(crmActs.map((a) => [a.name, a.value]));
    const llmBy = new Map(llmActs.map((a) => [a.name, a.value]));
    return this.config.pairs.map((p, i) => {
      const hc = crmBy.get(p.crm);
      const hl = llmBy.get(p.llm);
      if (!hc || !hl) {
        throw new CorellaError(
          'BAD_CONFIG',
          `alignment pair ${i} (${p.crm} ↔ ${p.llm}) has no activation in this forward pass`,
        );
      }
      return {
        crm: dense(hc, this.gCrm[i].w, this.gCrm[i].b),
        llm: dense(hl, this.gLlm[i].w, this.gLlm[i].b),
      };
    });
  }

  /**
   * g_crm(h_crm) per pair, differentiable: the CRM side of a stage-2 step whose LLM side runs elsewhere (the
   * LoRA branch's threads), paired with g_llm(h_llm)'s values in alignmentLoss.
   */
  projectCrm(crmActs: NamedActivation[]): tf.Tensor2D[] {
    const crmBy = new Map(crmActs.map((a) => [a.name, a.value]));
    return this.config.pairs.map((p, i) => {
      const hc = crmBy.get(p.crm);
      if (!hc)
        throw new CorellaError(
          'BAD_CONFIG',
          `alignment pair ${i} (${p.crm} ↔ ${p.llm}) has no CRM activation in this forward pass`,
        );
      return dense(hc, this.gCrm[i].w, this.gCrm[i].b);
    });
  }

  /** g_llm's variables per pair (weight [width, S], bias [S]): what a threaded LLM side differentiates. */
  llmProjections(): { w: tf.Variable; b: tf.Variable }[] {
    return this.gLlm.map((g) => ({ w: g.w, b: g.b }));
  }

  loss(crmActs: NamedActivation[], llmActs: NamedActivation[]): tf.Scalar {
    return tf.tidy(() => alignmentLoss(this.project(crmActs, llmActs)));
  }

  /** Order: for each pair, g_crm.w, g_crm.b, g_llm.w, g_llm.b. */
  trainableVariables(): tf.Variable[] {
    return this.config.pairs.flatMap((_, i) => [
      this.gCrm[i].w,
      this.gCrm[i].b,
      this.gLlm[i].w,
      this.gLlm[i].b,
    ]);
  }

  private variableNames(): string[] {
    return this.config.pairs.flatMap((_, i) => [
      `pair_${i}/crm/w`,
      `pair_${i}/crm/b`,
      `pair_${i}/llm/w`,
      `pair_${i}/llm/b`,
    ]);
  }

  serialize(): string {
    const names = this.variableNames();
    const file: ProjectionFile = {
      kind: 'corella-alignment-projections',
      version: 1,
      config: this.config,
      crmWidths: this.crmWidths,
      llmWidths: this.llmWidths,
      weights: this.trainableVariables().map((v, i) => storeVariable(names[i], v)),
    };
    return JSON.stringify(file);
  }

  static deserialize(data: string | Uint8Array): AlignmentProjections {
    let file: ProjectionFile;
    try {
      file = JSON.parse(
        typeof data === 'string' ? data : Buffer.from(data).toString('utf8'),
      ) as ProjectionFile;
    } catch (e) {
      throw new CorellaError('ARTIFACT_CORRUPT', 'alignment projection artifact is not valid JSON', {
        cause: e,
      });
    }
    if (file?.kind !== 'corella-alignment-projections' || file.version !== 1) {
      throw new CorellaError('ARTIFACT_CORRUPT', 'not an alignment projection artifact');
    }
    const byName = new Map(file.weights.map((w) => [w.name, w]));
    return new AlignmentProjections(file.config, file.crmWidths, file.llmWidths, (name, shape) => {
      const stored = byName.get(name);
      if (!stored)
        throw new CorellaError('ARTIFACT_CORRUPT', `alignment projection artifact lacks weight ${name}`);
      return restoreTensor(stored, shape, 'alignment projections');
    });
  }

  dispose(): void {
    for (const v of this.trainableVariables()) v.dispose();
  }
}
