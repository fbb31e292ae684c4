/**
 * The LoRA branch of the joint trainer (llm.finetune.method = "lora", issue 19): the LLM's own weights
 * train, through LoRA factors on the tfjs twin of the GGUF model (ml/llm/tf), instead of an adapter on
 * frozen llama.cpp features. L_llm is the BCE of p = e^yes / (e^yes + e^no) of the fine-tuned model, and
 * L_align pairs CRM layers with the last-token outputs of real transformer blocks.
 *
 * What this module adds to LoraBranch: the joint trainer's rows turned into prompts, and the one-time
 * frozen pass over all of them (on worker threads, stored so a retried activity skips it) before the first
 * step, since the stage loops call forward() synchronously.
 */
import { FileArtifactStore, type ArtifactStore } from '../artifacts/store.js';
import type { CtrDataset, EncodedSplit } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { FinetuneConfig } from '../llm/tf/finetune-config.js';
import { warmFrozenParallel } from '../llm/tf/frozen-parallel.js';
import { FrozenOutputStore } from '../llm/tf/frozen-store.js';
import type { LlamaTf } from '../llm/tf/llama-forward.js';
import { LoraAdapter } from '../llm/tf/lora.js';
import { LoraBranch } from '../llm/tf/lora-branch.js';
import type { LongRunOptions } from '../progress.js';
import type { JointPart } from './joint-llm-branch.js';

/**
 * What the joint trainer needs from its caller to run the LoRA branch: the tfjs twin of the GGUF model and
 * the pipeline's prompts (the tokenizer is node-llama-cpp's, so the caller builds them).
 */
export interface LoraBranchSource {
  model: LlamaTf;
  /** The GGUF `model` was loaded from (the frozen-pass workers load their own copy). */
  modelPath: string;
  modelSha256: string;
  template: string;
  /** [yes, no] answer tokens. */
  answerTokens: [number, number];
  /** The pipeline's prompt of one row (PromptBuilder.buildForRow's tokens). */
  promptOf: (split: EncodedSplit, row: number) => readonly number[];
  /** LLM blocks for L_align (default: the top block). */
  alignLayers?: number[];
}

/** The alignable layers of a LoRA branch on `model` (its activationShapes), known before it is built. */
export function loraBranchShapes(src: Pick<LoraBranchSource, 'model' | 'alignLayers'>) {
  const hp = src.model.hp;
  return (src.alignLayers ?? [hp.nLayer - 1]).map((l) => ({ name: `llm_block_${l}`, width: hp.nEmbd }));
}

export interface OpenLoraBranchArgs extends LongRunOptions, LoraBranchSource {
  finetune: Extract<FinetuneConfig, { method: 'lora' }>;
  dataset: CtrDataset;
  /** stage2 and stage3 rows of train, valid rows of valid (the row plan). */
  rows: Record<JointPart, Int32Array>;
  /** Where the frozen outputs persist across retries (optional). */
  store?: ArtifactStore;
  /** A checkpoint's serialized branch. */
  saved?: Uint8Array;
}

export interface OpenedLoraBranch {
  branch: LoraBranch<JointPart>;
  llm: { modelSha256: string; template: string; hiddenDim: number };
  /** The one-time frozen pass: prompts read back from the store, computed, its wall time and threads. */
  frozen: FrozenPassReport;
}

export interface FrozenPassReport {
  fromStore: number;
  computed: number;
  seconds: number;
  threads: number;
}

export async function openLoraBranch(a: OpenLoraBranchArgs): Promise<OpenedLoraBranch> {
  if (a.finetune.method !== 'lora')
    throw new CorellaError('BAD_CONFIG', `llm.finetune.method is ${String(a.finetune.method)}, not "lora"`, {
      details: { field: 'llm.finetune.method' },
    });
  const { train, valid } = a.dataset.splits;
  const prompts = {
    stage2: Array.from(a.rows.stage2, (r) => a.promptOf(train, r)),
    stage3: Array.from(a.rows.stage3, (r) => a.promptOf(train, r)),
    valid: Array.from(a.rows.valid, (r) => a.promptOf(valid, r)),
  };
  const { method: _method, frozenMemoryMb, frozenThreads, threads: trainThreads, ...loraCfg } = a.finetune;
  const frozenBytes = frozenBudget(frozenMemoryMb, a.store);
  const common = {
    model: a.model,
    answerTokens: a.answerTokens,
    prompts,
    frozenBytes,
    threads: trainThreads,
    signal: a.signal,
  };
  const branch = a.saved
    ? LoraBranch.deserialize<JointPart>(Buffer.from(a.saved).toString('utf8'), common)
    : new LoraBranch<JointPart>({
        ...common,
        adapter: LoraAdapter.create(a.model.hp, loraCfg),
        alignLayers: a.alignLayers,
      });
  try {
    const all = [...prompts.stage2, ...prompts.stage3, ...prompts.valid];
    const frozenStore = a.store
      ? new FrozenOutputStore(
          a.store,
          {
            namespace: a.dataset.manifest.versionId,
            modelSha256: a.modelSha256,
            firstLayer: branch.adapter.firstLayer,
            keepLayers: branch.frozen.keepLayers,
          },
          a.model.hp.nEmbd,
        )
      : undefined;
    // A bounded cache reads its evicted entries back from the store that the frozen pass fills.
    if (frozenStore && frozenBytes !== undefined) branch.frozen.attachStore(frozenStore);
    const onProgress = (done: number, total: number) =>
      void a.onProgress?.({ stage: 'llm-frozen-pass', done, total });
    const t0 = Date.now();
    const threads = frozenThreads ?? 2;
    const r =
      threads > 1
        ? await warmFrozenParallel(branch.frozen, all, {
            modelPath: a.modelPath,
            threads,
            store: frozenStore,
            signal: a.signal,
            onProgress,
          })
        : await branch.frozen.warm(all, { store: frozenStore, signal: a.signal, onProgress });
    return {
      branch,
      llm: { modelSha256: a.modelSha256, template: a.template, hiddenDim: a.model.hp.nEmbd },
      frozen: { ...r, seconds: (Date.now() - t0) / 1000, threads },
    };
  } catch (e) {
    branch.dispose();
    throw e;
  }
}

/** 2 GiB of decoded frozen outputs: ~4,600 SmolLM2 prompts of ~197 tokens, a LoRA run well under 4 GB. */
export const DEFAULT_FROZEN_MEMORY_MB = 2048;

/**
 * The frozen cache's budget in bytes, or undefined for "keep every entry". Only a local folder store can
 * give evicted entries back synchronously (the stage loops call forward() without an await), so the default
 * budget applies there, and a budget asked for without one is refused rather than silently ignored.
 */
function frozenBudget(mb: number | undefined, store: ArtifactStore | undefined): number | undefined {
  const local = store instanceof FileArtifactStore;
  if (mb !== undefined && !local)
    throw new CorellaError(
      'BAD_CONFIG',
      `llm.finetune.frozenMemoryMb ${mb} needs a local artifact store to read evicted frozen outputs back from; this run has ${store ? 'a remote store' : 'none'}`,
      { details: { field: 'llm.finetune.frozenMemoryMb' } },
    );
  if (!local) return undefined;
  return (mb ?? DEFAULT_FROZEN_MEMORY_MB) * 2 ** 20;
}
