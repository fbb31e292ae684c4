import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import type { FrozenPrefixCache } from './frozen-prefix.js';
import type { LlamaTf } from './llama-forward.js';
import { LoraAdapter } from './lora.js';
import { rmsNormalized } from './lora-loss.js';
import { LoraTrainer } from './lora-train.js';

export interface LoraBranchOptions<P extends string> {
  model: LlamaTf;
  adapter: LoraAdapter;
  /** [yes, no] tokens. */
  answerTokens: [number, number];
  /** Each part's prompts (tokens), in the part's row order; a batch names rows by position. */
  prompts: Record<P, readonly (readonly number[])[]>;
  /**
   * LLM blocks whose last-token output the alignment loss pairs with CRM layers (default: the top block,
   * whose output is the final hidden state before the norm).
   */
  alignLayers?: number[];
  /** A frozen-prefix cache to share with other branches over the same adapted blocks (see LoraTrainer). */
  frozen?: FrozenPrefixCache;
  /**
   * Bytes of decoded frozen outputs in memory when this branch builds its own cache (default 64 GiB, i.e.
   * everything; a budget below the working set needs a store attached to `frozen` before the frozen pass).
   */
  frozenBytes?: number;
  /**
   * Threads of the LoRA's training steps (default 1; see LoraTrainer's `threads`): the branch-only (stage 3
   * and reference) steps through `parallelGradients`, the joint stage-2 step's LLM side through
   * `parallelJointGradients`.
   */
  threads?: number;
  /** Aborting it terminates the training worker threads. */
  signal?: AbortSignal;
  /** One tape's budget at one thread (LoraTrainer's `tapeBytes`); larger batches go sample by sample. */
  tapeBytes?: number;
  /** Output affine a·z + b on the log-odds z (the output calibration); default identity. */
  output?: { a: number; b: number };
}

/** Re-exported: the alignment's row normalisation lives with the loss the worker threads compute. */
export { rmsNormalized };

/**
 * The LLM branch of the joint step when the LLM itself trains: the click logit is a·z + b with z the
 * Yes/No log-odds of the tfjs llama under LoRA, so L_llm is the paper's BCE of p = e^yes/(e^yes + e^no)
 * (a = 1, b = 0 until the output calibration rescales it). The alignment loss reads real transformer
 * layers: the last-token outputs of `alignLayers`, differentiable through the LoRA when the layer is adapted.
 *
 * It has the shape of ml/corella's JointLlmBranch (structurally: ml/llm may not import ml/corella), so the
 * joint loops, checkpoint and output calibration treat it as they treat the frozen-LLM adapter. The
 * trainable variables are the LoRA factors; the joint trainer's optimiser steps them. Why a·z + b and not
 * an adapter on top: what llama.cpp serves with the exported GGUF LoRA is exactly z, so the served branch
 * is z through an affine map, nothing that the export would lose.
 */
export class LoraBranch<P extends string = string> {
  readonly kind = 'lora';
  readonly alignLayers: readonly number[];
  private readonly trainer: LoraTrainer;
  private a: number;
  private b: number;

  constructor(private readonly opts: LoraBranchOptions<P>) {
    const hp = opts.model.hp;
    this.alignLayers = [...(opts.alignLayers ?? [hp.nLayer - 1])];
    this.trainer = new LoraTrainer(opts.model, opts.adapter, {
      answerTokens: opts.answerTokens,
      hiddenLayers: [...this.alignLayers],
      frozen: opts.frozen,
      cacheBytes: opts.frozenBytes ?? 64 * 2 ** 30,
      threads: opts.threads,
      signal: opts.signal,
      tapeBytes: opts.tapeBytes,
    });
    this.a = opts.output?.a ?? 1;
    this.b = opts.output?.b ?? 0;
  }

  get adapter(): LoraAdapter {
    return this.opts.adapter;
  }

  get frozen(): FrozenPrefixCache {
    return this.trainer.frozen;
  }

  get output(): { a: number; b: number } {
    return { a: this.a, b: this.b };
  }

  get activationShapes(): { name: string; width: number }[] {
    return this.alignLayers.map((l) => ({ name: `llm_block_${l}`, width: this.opts.model.hp.nEmbd }));
  }

  private promptsOf(part: P): readonly (readonly number[])[] {
    const p = this.opts.prompts[part];
    if (!p) throw new CorellaError('BAD_CONFIG', `the LoRA branch has no prompts for part ${part}`);
    return p;
  }

  /**
   * Logits [B] and, when asked, the align layers' last-token outputs [B, nEmbd] each, RMS-normalized
   * (rmsNormalized; differentiable).
   */
  forward(
    part: P,
    local: ArrayLike<number>,
    opts: { activations?: boolean; training?: boolean } = {},
  ): { logits: tf.Tensor1D; activations: { name: string; value: tf.Tensor2D }[] } {
    const tokens = this.tokensOf(part, local);
    if (local.length === 0) throw new CorellaError('BAD_CONFIG', 'empty LoRA branch batch');
    return tf.tidy(() => {
      const outs = tokens.map((t) => this.trainer.outputs(t));
      const z = tf.stack(outs.map((o) => o.logOdds)) as tf.Tensor1D;
      const logits = this.a === 1 && this.b === 0 ? z : (tf.add(tf.mul(z, this.a), this.b) as tf.Tensor1D);
      const activations = opts.activations
        ? this.alignLayers.map((l, j) => ({
            name: `llm_block_${l}`,
            value: rmsNormalized(
              tf.concat(
                outs.map((o) => tf.slice(o.hidden, [j, 0], [1, -1])),
                0,
              ) as tf.Tensor2D,
            ),
          }))
        : [];
      return { logits, activations };
    });
  }

  /**
   * The prompts of rows `local` of `part`. One check for every caller, so that a row outside the part is the
   * same typed error whether the step is split, one tape or only being sized (splitJoint).
   */
  private tokensOf(part: P, local: ArrayLike<number>): (readonly number[])[] {
    const prompts = this.promptsOf(part);
    return Array.from(local, (i) => {
      const tokens = prompts[i];
      if (!tokens)
        throw new CorellaError('BAD_CONFIG', `row ${i} is outside part ${part} (${prompts.length} rows)`);
      return tokens;
    });
  }

  /** The prompts of rows `local` of `part`, with their labels. */
  private samplesOf(part: P, local: ArrayLike<number>, labels: ArrayLike<number>) {
    return this.tokensOf(part, local).map((tokens, j) => ({ tokens, label: labels[j] }));
  }

  /**
   * The mean BCE of rows `local` of `part` against `labels` and its gradients, named as trainableVariables(),
   * computed sample by sample on the trainer's threads; undefined when one tape of forward() serves (one
   * thread and a batch within the trainer's tape budget, LoraTrainer.oneTape), and the caller differentiates
   * forward(). Equal to that gradient up to float32 summation order, and the same bits at every thread
   * count, so a resumed run is byte-identical. With an output affine other than the identity, the loss is
   * BCE(y, a·z + b): the joint per-sample loss with α = 1 and no alignment pairs.
   */
  parallelGradients(
    part: P,
    local: ArrayLike<number>,
    labels: ArrayLike<number>,
  ): { loss: number; grads: { name: string; tensor: tf.Tensor }[] } | undefined {
    const batch = this.samplesOf(part, local, labels);
    if (this.trainer.oneTape(batch)) return undefined;
    const vars = this.trainableVariables();
    const { loss, grads } =
      this.a === 1 && this.b === 0
        ? this.trainer.parallelGradients(batch)
        : this.trainer.jointGradients(
            batch.map((s) => ({ ...s, targets: new Float32Array(0) })),
            { alpha: 1, gamma: 0, output: { a: this.a, b: this.b }, pairs: [], sharedDim: 0 },
          );
    return { loss, grads: vars.map((v, j) => ({ name: v.name, tensor: tf.tensor(grads[j], v.shape) })) };
  }

  /**
   * Whether the stage-2 step on rows `local` of `part` is split (parallelJointGradients computes the LLM
   * side sample by sample) rather than one tape over the CRM and forward(): as for parallelGradients.
   */
  splitJoint(part: P, local: ArrayLike<number>): boolean {
    return !this.trainer.oneTape(this.tokensOf(part, local).map((tokens) => ({ tokens })));
  }

  /**
   * The LLM side of one stage-2 step, sample by sample on the trainer's threads (the caller asks when
   * splitJoint() says so; otherwise it differentiates forward() in its own tape). The CRM side of every alignment pair comes in as values
   * (`pairs[k].targets`, g_crm(h_crm) of the batch's rows, [B·S]) with g_llm's current weights; out come the
   * gradients of α·L_llm + γ·L_align with respect to the LoRA (named as trainableVariables()) and g_llm
   * (per pair), exactly those of the one-tape loss up to float32 summation order, and the values the CRM
   * side needs: the click logits a·z + b and g_llm(rms(h)) per pair ([B·S]).
   */
  parallelJointGradients(
    part: P,
    local: ArrayLike<number>,
    labels: ArrayLike<number>,
    step: {
      alpha: number;
      gamma: number;
      sharedDim: number;
      pairs: { llm: string; w: Float32Array; b: Float32Array; targets: Float32Array }[];
    },
  ):
    | {
        loss: number;
        logits: Float32Array;
        projected: Float32Array[];
        grads: { name: string; tensor: tf.Tensor }[];
        projectionGrads: { w: Float32Array; b: Float32Array }[];
      }
    | undefined {
    const S = step.sharedDim;
    const P = step.pairs.length;
    const names = this.activationShapes.map((a) => a.name);
    const pairs = step.pairs.map((p, k) => {
      const hidden = names.indexOf(p.llm);
      if (hidden < 0)
        throw new CorellaError(
          'BAD_CONFIG',
          `alignment pair ${k} reads ${p.llm}; the LoRA branch has ${names.join(', ')}`,
        );
      if (p.targets.length !== local.length * S)
        throw new CorellaError(
          'BAD_CONFIG',
          `alignment pair ${k} has ${p.targets.length} target values for ${local.length} rows of width ${S}`,
        );
      return { hidden, w: p.w, b: p.b };
    });
    const batch = this.tokensOf(part, local).map((tokens, j) => {
      const targets = new Float32Array(P * S);
      step.pairs.forEach((p, k) => targets.set(p.targets.subarray(j * S, (j + 1) * S), k * S));
      return { tokens, label: labels[j], targets };
    });
    const r = this.trainer.jointGradients(batch, {
      alpha: step.alpha,
      gamma: step.gamma,
      output: { a: this.a, b: this.b },
      pairs,
      sharedDim: S,
    });
    const vars = this.trainableVariables();
    return {
      loss: r.loss,
      logits: r.logits,
      projected: r.projected,
      grads: vars.map((v, j) => ({ name: v.name, tensor: tf.tensor(r.grads[j], v.shape) })),
      projectionGrads: pairs.map((_, k) => ({
        w: r.grads[vars.length + 2 * k],
        b: r.grads[vars.length + 2 * k + 1],
      })),
    };
  }

  /** Training samples computed so far by this thread ([0]) and by each worker (empty with threads = 1). */
  get samplesByThread(): readonly number[] {
    return this.trainer.samplesByThread;
  }

  /** Seconds this thread computed its samples in parallel steps, and waited for the workers. */
  get threadSeconds(): { own: number; wait: number } {
    return this.trainer.threadSeconds;
  }

  /** Blocks until the training worker threads have started (see LoraTrainer.waitForWorkers). */
  waitForWorkers(): void {
    this.trainer.waitForWorkers();
  }

  /** Training worker threads still running (0 with threads = 1 and after dispose()). */
  get liveWorkers(): number {
    return this.trainer.liveWorkers;
  }

  /**
   * P(click) = σ(a·z + b) for every row of `part`, in order. z comes from the trainer's evaluation pass
   * (prefix reuse within groups, on all its threads), so scoring a part costs about a third of its tokens
   * and uses both cores; it equals σ of forward()'s logits up to float32 rounding.
   */
  predict(part: P): Float32Array {
    const z = this.logOdds(part);
    return Float32Array.from(z, (v) => 1 / (1 + Math.exp(-(this.a * v + this.b))));
  }

  /** The log-odds z (before the output affine) of every row of `part`: what llama.cpp with the LoRA reads. */
  logOdds(part: P): Float32Array {
    return this.trainer.evalLogOdds(this.promptsOf(part), this.opts.signal);
  }

  trainableVariables(): tf.Variable[] {
    return this.opts.adapter.variables();
  }

  /** Same weights, its own variables; it shares the frozen cache (the frozen blocks are the same). */
  clone(): LoraBranch<P> {
    return new LoraBranch({
      ...this.opts,
      adapter: this.opts.adapter.clone(),
      frozen: this.trainer.frozen,
      output: { a: this.a, b: this.b },
    });
  }

  rescaleOutput(a: number, b: number): void {
    if (!Number.isFinite(a) || !Number.isFinite(b))
      throw new CorellaError('BAD_CONFIG', `output rescale ${a}·z + ${b} is not finite`);
    this.b = a * this.b + b;
    this.a = a * this.a;
  }

  serialize(): string {
    return JSON.stringify({
      format: 'corella-lora-branch/1',
      output: { a: this.a, b: this.b },
      alignLayers: this.alignLayers,
      adapter: this.opts.adapter.serialize(),
    });
  }

  /** Restores a serialized branch onto `model` (the adapter's shapes are checked against it). */
  static deserialize<P extends string>(
    text: string,
    opts: Omit<LoraBranchOptions<P>, 'adapter' | 'output' | 'alignLayers'>,
  ): LoraBranch<P> {
    let raw: {
      format?: unknown;
      output?: { a: number; b: number };
      alignLayers?: number[];
      adapter?: string;
    };
    try {
      raw = JSON.parse(text) as typeof raw;
    } catch (e) {
      throw new CorellaError('ARTIFACT_CORRUPT', 'serialized LoRA branch is not valid JSON', { cause: e });
    }
    if (raw.format !== 'corella-lora-branch/1' || !raw.output || !raw.adapter)
      throw new CorellaError('ARTIFACT_CORRUPT', `serialized LoRA branch has format ${String(raw.format)}`);
    const adapter = LoraAdapter.deserialize(opts.model.hp, raw.adapter);
    return new LoraBranch({ ...opts, adapter, output: raw.output, alignLayers: raw.alignLayers });
  }

  /** Disposes the adapter and (unless shared) the frozen cache. */
  dispose(): void {
    this.trainer.dispose();
    this.opts.adapter.dispose();
  }
}
