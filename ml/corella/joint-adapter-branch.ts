/**
 * The frozen-LLM branch of the joint trainer: the LLM's features for every row a stage needs are fetched
 * once, and the trainable part is the LlmAdapter on top of them (see adapter.ts for why the LLM itself
 * stays frozen).
 */
import type { LlmFeatures } from '../llm/types.js';
import { LlmAdapter } from './adapter.js';
import { affinityWidth, fetchFeatures } from './features.js';
import type { BranchForward, JointLlmBranch, JointPart, OpenJointBranch } from './joint-llm-branch.js';

/** Rows [s, e) of a features set, as a new, smaller features set (same order). */
function sliceFeatures(f: LlmFeatures, s: number, e: number): LlmFeatures {
  const d = f.hiddenDim;
  const k = affinityWidth(f);
  return {
    ...f,
    sampleIds: f.sampleIds.slice(s, e),
    pYes: f.pYes.slice(s, e),
    logOdds: f.logOdds.slice(s, e),
    hidden: f.hidden.slice(s * d, e * d),
    ...(f.affinity ? { affinity: f.affinity.slice(s * k, e * k) } : {}),
  };
}

export class AdapterBranch implements JointLlmBranch {
  readonly kind = 'adapter';

  constructor(
    readonly adapter: LlmAdapter,
    private readonly features: Record<JointPart, LlmFeatures>,
  ) {}

  get activationShapes(): { name: string; width: number }[] {
    return this.adapter.activationShapes;
  }

  forward(part: JointPart, local: ArrayLike<number>, opts: { activations?: boolean } = {}): BranchForward {
    return this.adapter.forward(this.adapter.inputTensor(this.features[part], local), opts);
  }

  predict(part: JointPart): Float32Array {
    return this.adapter.predict(this.features[part]);
  }

  trainableVariables() {
    return this.adapter.trainableVariables();
  }

  clone(): AdapterBranch {
    return new AdapterBranch(this.adapter.clone(), this.features);
  }

  rescaleOutput(a: number, b: number): void {
    this.adapter.rescaleOutput(a, b);
  }

  serialize(): string {
    return this.adapter.serialize();
  }

  dispose(): void {
    this.adapter.dispose();
  }
}

/**
 * Fetches the LLM features of the stage-2/3 and validation rows and builds the adapter: fresh (input
 * standardisation fitted on the training rows' features) or, when `saved` is a checkpoint's adapter, as saved.
 */
export const openAdapterBranch: OpenJointBranch<AdapterBranch> = async (args) => {
  const { llm, dataset, rows, cfg } = args;
  const trainRows = new Int32Array(rows.stage2.length + rows.stage3.length);
  trainRows.set(rows.stage2, 0);
  trainRows.set(rows.stage3, rows.stage2.length);
  const chunk = { chunkSize: cfg.featureChunkSize, signal: args.signal, onProgress: args.onProgress };
  const trainF = await fetchFeatures(llm, dataset.splits.train, dataset.items, trainRows, {
    ...chunk,
    stage: 'llm-features-train',
  });
  const validF = await fetchFeatures(llm, dataset.splits.valid, dataset.items, rows.valid, {
    ...chunk,
    stage: 'llm-features-valid',
  });
  const ref = trainRows.length > 0 ? trainF : validF;
  const hiddenDim = ref.hiddenDim;
  let adapter: LlmAdapter;
  if (args.saved) {
    adapter = LlmAdapter.deserialize(args.saved);
  } else {
    adapter = LlmAdapter.create({
      hiddenDim,
      affinityDim: affinityWidth(ref),
      layers: cfg.adapter.layers,
      skipInputs: cfg.adapter.skipInputs,
      inputTail: cfg.adapter.inputTail,
      seed: cfg.seed,
    });
    if (trainRows.length > 0) adapter.fitNormalization(trainF);
  }
  const features = {
    stage2: sliceFeatures(trainF, 0, rows.stage2.length),
    stage3: sliceFeatures(trainF, rows.stage2.length, trainRows.length),
    valid: validF,
  };
  return {
    branch: new AdapterBranch(adapter, features),
    llm: {
      modelSha256: trainF.modelSha256 || validF.modelSha256,
      template: trainF.template || validF.template,
      hiddenDim,
    },
  };
};
