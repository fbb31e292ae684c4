/**
 * The LLM branch of a model version as calibration, evaluation, recalibration and serving use it: something
 * that turns llama.cpp's LLM features of a row into P(click). Two kinds, one loader:
 * - `llm.finetune.method = "none"`: the LlmAdapter on the frozen model's features (adapter.ts);
 * - `"lora"`: a LoraHead, the affine click logit a·z + b on the Yes/No log-odds z of the base model run with
 *   the version's exported GGUF LoRA (issue 19).
 *
 * Why the LoRA side is only a head: what the joint trainer trained in tfjs is the LoRA itself, and llama.cpp
 * serves it from the exported GGUF. The branch's logit was a·z + b on z (lora-branch.ts; the output
 * calibration folds its Platt scale into a and b), so the head is all that is left to store besides the
 * GGUF — and it says which LoRA and which base model its z must come from.
 */
import { CorellaError } from '../errors.js';
import type { LlmFeatures } from '../llm/types.js';
import { LlmAdapter } from './adapter.js';

export interface LlmBranchModel {
  /** P(click) for every row of `f`, in order. */
  predict(f: LlmFeatures): Float32Array;
  dispose(): void;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** The stored "branch" artifact of a LoRA model version (in place of the adapter artifact). */
export interface LoraHeadFile {
  kind: 'corella-llm-branch';
  version: 1;
  branch: 'lora';
  /** sha256 of the GGUF LoRA adapter file (its own artifact, `llmLora` in the model version). */
  loraSha256: string;
  /** sha256 of the base GGUF the LoRA was trained on: the LoRA applies to that model only. */
  baseModelSha256: string;
  /** Prompt template of the features z is read from. */
  template: string;
  /** Click logit a·z + b on the log-odds z = logit(yes) − logit(no). */
  head: { a: number; b: number };
  /** What was adapted, for reports (the GGUF itself is what llama.cpp reads). */
  lora: { firstLayer: number; rank: number; alpha: number; targets: string[] };
}

function corrupt(field: string, why: string): CorellaError {
  return new CorellaError('ARTIFACT_CORRUPT', `LoRA branch artifact field ${field}: ${why}`, {
    details: { field },
  });
}

export class LoraHead implements LlmBranchModel {
  readonly kind = 'lora';

  constructor(readonly file: LoraHeadFile) {}

  get a(): number {
    return this.file.head.a;
  }

  get b(): number {
    return this.file.head.b;
  }

  /**
   * sigmoid(a·z + b). The features must come from the base model with this head's LoRA applied (the
   * feature cache keys them by the LoRA's sha256); the base model is checked here, the LoRA by whoever opened
   * llama.cpp with it (LlmFeatures carries no LoRA hash).
   */
  predict(f: LlmFeatures): Float32Array {
    if (f.modelSha256 && f.modelSha256 !== this.file.baseModelSha256) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `LLM features of model ${f.modelSha256.slice(0, 12)}… given to a LoRA head trained on base ${this.file.baseModelSha256.slice(0, 12)}…`,
        { details: { field: 'baseModelSha256', modelSha256: f.modelSha256 } },
      );
    }
    const { a, b } = this.file.head;
    return Float32Array.from(f.logOdds, (z) => 1 / (1 + Math.exp(-(a * z + b))));
  }

  serialize(): string {
    return JSON.stringify(this.file);
  }

  /** The head of a LoRA version, refusing a model whose sha256 is not the LoRA's base (before llama.cpp). */
  checkBase(modelSha256: string | undefined, what = 'the LLM model'): void {
    if (modelSha256 !== undefined && modelSha256 !== this.file.baseModelSha256) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `the version's LoRA ${this.file.loraSha256.slice(0, 12)}… was trained on base model ${this.file.baseModelSha256.slice(0, 12)}…, not ${what} ${modelSha256.slice(0, 12)}…`,
        { details: { field: 'baseModelSha256', modelSha256, baseModelSha256: this.file.baseModelSha256 } },
      );
    }
  }

  dispose(): void {
    // Plain numbers: nothing to free.
  }

  static parse(raw: unknown): LoraHead {
    const f = raw as Partial<LoraHeadFile>;
    if (f?.kind !== 'corella-llm-branch' || f.version !== 1 || f.branch !== 'lora')
      throw corrupt('kind', `not a LoRA branch artifact (${String(f?.kind)} v${String(f?.version)})`);
    for (const k of ['loraSha256', 'baseModelSha256'] as const)
      if (typeof f[k] !== 'string' || !SHA256_RE.test(f[k])) throw corrupt(k, 'expected a sha256');
    if (typeof f.template !== 'string') throw corrupt('template', 'expected a string');
    if (!f.head || !Number.isFinite(f.head.a) || !Number.isFinite(f.head.b))
      throw corrupt('head', 'expected finite a and b');
    if (!f.lora || !Number.isInteger(f.lora.firstLayer) || !Array.isArray(f.lora.targets))
      throw corrupt('lora', 'expected firstLayer, rank, alpha and targets');
    return new LoraHead(f as LoraHeadFile);
  }
}

/**
 * The branch model of a stored adapter / branch artifact: an LlmAdapter for the frozen-LLM mode, a LoraHead
 * for the LoRA mode. The only place that tells them apart by their bytes.
 */
export function loadLlmBranchModel(bytes: Uint8Array | string): LlmAdapter | LoraHead {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CorellaError('ARTIFACT_CORRUPT', 'LLM branch artifact is not valid JSON', { cause: e });
  }
  if ((raw as { kind?: unknown })?.kind === 'corella-llm-branch') return LoraHead.parse(raw);
  return LlmAdapter.deserialize(text);
}
