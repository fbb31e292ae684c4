import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { throwIfAborted } from '../../progress.js';
import { currentTfBackend } from '../../tf/backend.js';
import { FrozenPrefixCache } from './frozen-prefix.js';
import type { LlamaTf } from './llama-forward.js';
import type { LoraAdapter, LoraHostWeights } from './lora.js';
import { chainLogOdds, evalGroups } from './lora-eval.js';
import {
  jointProjectionVariables,
  jointSampleGrads,
  modelBlocks,
  sampleGrads,
  type AdaptedBlocks,
  type JointTerms,
} from './lora-loss.js';
import { LoraWorkers, type HostSample } from './lora-parallel.js';
import type { SampleGrads } from './lora-worker.js';

export interface LoraSample {
  tokens: readonly number[];
  /** Click label, 0 or 1. */
  label: number;
  /** Loss weight (default 1), e.g. class weights that balance the labels; the batch loss is Σw·l / Σw. */
  weight?: number;
}

/** Everything a resumed run needs: the LoRA weights and Adam's step count and moments (host copies). */
export interface LoraTrainerState {
  weights: LoraHostWeights;
  adamIterations: number;
  /** First moments then second moments, in `adapter.variables()` order (empty before the first step). */
  adamMoments: Float32Array[];
}

export interface LoraTrainerOptions {
  /** The two answer tokens [yes, no]. */
  answerTokens: [number, number];
  learningRate?: number;
  /** Bytes of frozen-prefix outputs to keep in memory (default 1 GiB). */
  cacheBytes?: number;
  /**
   * A frozen-prefix cache to share (trainers of several seeds or learning rates over the same adapted
   * blocks); the trainer then neither builds nor disposes its own. Its firstLayer must be the adapter's.
   */
  frozen?: FrozenPrefixCache;
  /**
   * Label smoothing ε: targets become y·(1−ε) + ε/2, which bounds the log-odds the LoRA is pushed to and
   * so how far a few hundred rows can overfit (default 0).
   */
  labelSmoothing?: number;
  /** Layers whose last-token output `outputs()` returns (the alignment loss's LLM layers); default none. */
  hiddenLayers?: number[];
  /**
   * Threads of `step()` (default 1), 1..16: with n > 1, this thread and n − 1 worker threads (each holding
   * a copy of the adapted blocks) claim the batch's samples one by one, the samples' gradients are added in
   * sample order and one Adam step is taken here. The bits are the same at every n > 1 whatever the timing,
   * and equal the one-thread step up to float32 summation order. `step()`, `parallelGradients()`,
   * `jointGradients()` and the evaluation pass `evalLogOdds()` (the same bits at every n) are parallel;
   * gradients() and outputs() run on this thread.
   */
  threads?: number;
  /** Aborting it terminates the worker threads (a cancelled run does not leave them behind). */
  signal?: AbortSignal;
  /**
   * Bytes that a one-thread step may hold in one gradient tape (default 1.5 GiB; see tapeBytes below). A
   * batch estimated above it is stepped sample by sample on this thread, as the workers step it.
   */
  tapeBytes?: number;
  /**
   * The backend's heap (default 4 GiB, tfjs-wasm's ceiling, per thread: each worker has a heap of its own).
   * A sample whose own tape and adapted blocks' weights are estimated above it is refused with a typed
   * error before the step, since no split can make one sample's tape smaller.
   */
  heapBytes?: number;
}

/**
 * Evaluation groups per thread in one round of a parallel evaluation: enough that a thread slowed by the
 * machine's load leaves little idle time at the round's end, few enough that a round's inputs in shared
 * memory stay near 60 MB on SmolLM2's prompts.
 */
const EVAL_ROUND_GROUPS = 2;

/** The most threads a trainer accepts: beyond the cores, workers only add copies of the adapted blocks. */
export const MAX_LORA_THREADS = 16;

/**
 * Why a budget: a tape keeps every intermediate of every adapted block, for every token of every sample,
 * until the backward pass ends. tfjs-wasm's heap stops at 4 GiB, and past it the module aborts with an
 * untyped `RuntimeError: Aborted()` that kills the backend for the rest of the process. Measured on
 * SmolLM2-135M (tf.profile's peak, ml-1m prompts of 143 and 405 tokens): 335 KB per token per adapted
 * block, the same at both lengths, so the activations, not the T² attention scores, dominate. So a batch of
 * 8 pipeline prompts at k = 16 (about 4 GiB) aborted, while one sample of k = 30 needs about 2 GiB. The
 * default leaves room beside the weights (425 MB for all 30 blocks) and the frozen cache's tensors.
 */
const DEFAULT_TAPE_BYTES = 1.5 * 2 ** 30;

/**
 * Tape bytes per token per adapted block: about 40 float32 values per unit of width, forward and backward
 * (337 KB for SmolLM2-135M's 576 + 1536, against the 335 KB measured).
 */
export function tapeBytesPerToken(hp: { nEmbd: number; nFf: number }): number {
  return 4 * 40 * (hp.nEmbd + hp.nFf);
}

/** Float32 bytes of one block's weights as the trainer holds them (dequantized), norms included. */
export function blockWeightBytes(hp: {
  nEmbd: number;
  nFf: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
}): number {
  const q = hp.nHead * hp.headDim;
  const kv = hp.nHeadKv * hp.headDim;
  return 4 * (2 * hp.nEmbd * q + 2 * hp.nEmbd * kv + 3 * hp.nEmbd * hp.nFf + 2 * hp.nEmbd);
}

/**
 * Trains LoRA factors on L_llm = BCE(label, p), p = e^yes / (e^yes + e^no) = σ(logit_yes − logit_no): the
 * paper's LLM loss, the same two-way softmax that the scorer reads from llama.cpp. Only the adapted blocks
 * run forward and backward; their input comes from the frozen-prefix cache, and the top block computes
 * the last position only (its output is all the loss reads).
 */
export class LoraTrainer {
  readonly frozen: FrozenPrefixCache;
  private readonly optimizer: tf.AdamOptimizer;
  private readonly answerRows: tf.Tensor2D;
  readonly hiddenLayers: readonly number[];
  private readonly labelSmoothing: number;
  private readonly ownsFrozen: boolean;
  readonly threads: number;
  private readonly workers?: LoraWorkers;
  private readonly blocks: AdaptedBlocks;
  private readonly onAbort?: () => void;
  private readonly signal?: AbortSignal;
  private readonly tapeBytes: number;
  private readonly heapBytes: number;

  constructor(
    readonly model: LlamaTf,
    readonly adapter: LoraAdapter,
    opts: LoraTrainerOptions,
  ) {
    for (const t of opts.answerTokens) {
      if (!Number.isInteger(t) || t < 0 || t >= model.hp.nVocab)
        throw new CorellaError(
          'BAD_CONFIG',
          `answer token ${t} is outside the vocabulary (field answerTokens)`,
          {
            details: { field: 'answerTokens' },
          },
        );
    }
    this.labelSmoothing = opts.labelSmoothing ?? 0;
    if (!(this.labelSmoothing >= 0 && this.labelSmoothing < 1))
      throw new CorellaError(
        'BAD_CONFIG',
        `label smoothing ${opts.labelSmoothing} is not in [0, 1) (field labelSmoothing)`,
        {
          details: { field: 'labelSmoothing' },
        },
      );
    this.hiddenLayers = [...(opts.hiddenLayers ?? [])];
    for (const l of this.hiddenLayers) {
      if (!Number.isInteger(l) || l < 0 || l >= model.hp.nLayer)
        throw new CorellaError(
          'BAD_CONFIG',
          `hidden layer ${l} is not in 0..${model.hp.nLayer - 1} (field hiddenLayers)`,
          {
            details: { field: 'hiddenLayers' },
          },
        );
    }
    const keep = this.hiddenLayers.filter((l) => l < adapter.firstLayer);
    if (opts.frozen) {
      const f = opts.frozen;
      if (
        f.model !== model ||
        f.firstLayer !== adapter.firstLayer ||
        keep.some((l) => !f.keepLayers.includes(l))
      )
        throw new CorellaError(
          'BAD_CONFIG',
          `the shared frozen cache starts at block ${f.firstLayer} keeping [${f.keepLayers.join(', ')}]; the adapter needs block ${adapter.firstLayer} keeping [${keep.join(', ')}] (field frozen)`,
          { details: { field: 'frozen' } },
        );
    }
    this.ownsFrozen = !opts.frozen;
    this.frozen =
      opts.frozen ?? new FrozenPrefixCache(model, adapter.firstLayer, opts.cacheBytes ?? 2 ** 30, keep);
    const threads = opts.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_LORA_THREADS)
      throw new CorellaError(
        'BAD_CONFIG',
        `LoRA training threads ${String(opts.threads)} is not an integer in 1..${MAX_LORA_THREADS} (field threads)`,
        { details: { field: 'threads' } },
      );
    this.threads = threads;
    this.tapeBytes = opts.tapeBytes ?? DEFAULT_TAPE_BYTES;
    if (!(this.tapeBytes > 0))
      throw new CorellaError(
        'BAD_CONFIG',
        `LoRA tape budget ${String(opts.tapeBytes)} is not a positive number of bytes (field tapeBytes)`,
        { details: { field: 'tapeBytes' } },
      );
    this.heapBytes = opts.heapBytes ?? 4 * 2 ** 30;
    if (!(this.heapBytes > 0))
      throw new CorellaError(
        'BAD_CONFIG',
        `LoRA heap size ${String(opts.heapBytes)} is not a positive number of bytes (field heapBytes)`,
        { details: { field: 'heapBytes' } },
      );
    throwIfAborted(opts.signal);
    this.optimizer = tf.train.adam(opts.learningRate ?? 1e-3);
    // [2, nEmbd]: the loss needs these two rows of the output matrix, never the whole vocabulary.
    this.answerRows = model.outputRows(opts.answerTokens);
    this.blocks = modelBlocks(model, adapter.firstLayer, this.answerRows);
    if (threads > 1) {
      // Started now, so they load while the caller warms the frozen cache; the first step waits for them.
      this.workers = new LoraWorkers(
        model,
        adapter,
        this.answerRows.dataSync() as Float32Array,
        this.labelSmoothing,
        currentTfBackend()?.backend ?? 'wasm',
        threads - 1,
      );
      const workers = this.workers;
      this.onAbort = () => void workers.close();
      opts.signal?.addEventListener('abort', this.onAbort, { once: true });
    }
    this.signal = opts.signal;
  }

  /** Training samples computed so far by this thread ([0]) and by each worker (empty with threads = 1). */
  get samplesByThread(): readonly number[] {
    return this.workers?.computed ?? [];
  }

  /**
   * Blocks until every worker thread has started (a step does not wait: while they load, this thread
   * computes the batch alone). For benchmarks and tests that need every thread in the first step.
   */
  waitForWorkers(): void {
    this.workers?.waitReady();
  }

  /** Seconds this thread computed samples in parallel steps, and waited for the workers (LoraWorkers.seconds). */
  get threadSeconds(): { own: number; wait: number } {
    return { ...(this.workers?.seconds ?? { own: 0, wait: 0 }) };
  }

  /** Worker threads still running (0 with threads = 1, and after dispose() or an abort once they exit). */
  get liveWorkers(): number {
    return this.workers?.alive ?? 0;
  }

  /** logit_yes − logit_no of `tokens` under the current LoRA, as a differentiable scalar. */
  logOdds(tokens: readonly number[]): tf.Scalar {
    const { logOdds, hidden } = this.outputs(tokens);
    hidden.dispose();
    return logOdds;
  }

  /**
   * The log-odds and the last-token outputs of `hiddenLayers` ([layers, nEmbd], in that order; [0, nEmbd]
   * when none). Both are differentiable in the LoRA weights; the rows of frozen layers are constants.
   */
  outputs(tokens: readonly number[]): { logOdds: tf.Scalar; hidden: tf.Tensor2D } {
    return tf.tidy(() => {
      const x = this.frozen.input(tokens);
      const T = tokens.length;
      const rows = new Map<number, tf.Tensor2D>();
      for (const [l, v] of this.frozen.lastHidden(tokens)) rows.set(l, tf.tensor2d(v, [1, v.length]));
      const top = this.model.hp.nLayer - 1;
      const last = this.model.runLayers(x, this.adapter.firstLayer, this.model.hp.nLayer, {
        lora: this.adapter.layerLora(),
        lastOnly: true,
        onLayer: (l, y) => {
          if (this.hiddenLayers.includes(l))
            rows.set(l, l === top ? y : (tf.slice(y, [T - 1, 0], [1, -1]) as tf.Tensor2D));
        },
      });
      const z = tf.matMul(this.model.finalNorm(last), this.answerRows, false, true); // [1, 2]
      const logOdds = tf.reshape(
        tf.sub(tf.slice(z, [0, 0], [1, 1]), tf.slice(z, [0, 1], [1, 1])),
        [],
      ) as tf.Scalar;
      const hidden = this.hiddenLayers.length
        ? (tf.concat(
            this.hiddenLayers.map((l) => rows.get(l)!),
            0,
          ) as tf.Tensor2D)
        : (tf.zeros([0, this.model.hp.nEmbd]) as tf.Tensor2D);
      return { logOdds, hidden };
    });
  }

  /** Mean BCE over `batch` (differentiable). */
  loss(batch: readonly LoraSample[]): tf.Scalar {
    if (batch.length === 0) throw new CorellaError('BAD_CONFIG', 'empty LoRA training batch');
    return tf.tidy(() => {
      const z = tf.stack(batch.map((s) => this.logOdds(s.tokens)));
      const y = tf.tensor1d(batch.map((s) => s.label));
      if (this.labelSmoothing === 0 && batch.every((s) => s.weight === undefined))
        return tf.losses.sigmoidCrossEntropy(y, z) as tf.Scalar;
      const w = tf.tensor1d(batch.map((s) => s.weight ?? 1));
      return tf.losses.sigmoidCrossEntropy(y, z, w, this.labelSmoothing, tf.Reduction.MEAN) as tf.Scalar;
    });
  }

  /**
   * Whether `step()` differentiates the batch in one tape: one thread, and the tape's estimate
   * (tapeBytesPerToken × tokens × adapted blocks) within the budget. Otherwise each sample has a tape of
   * its own and the gradients are added in sample order, on the workers or on this thread alone, with the
   * same bits either way. Depends on the batch only, so a resumed run chooses as the first run did.
   */
  oneTape(batch: readonly { tokens: readonly number[] }[]): boolean {
    if (this.workers) return false;
    const tokens = batch.reduce((a, s) => a + s.tokens.length, 0);
    return tokens * this.adaptedBlocks * tapeBytesPerToken(this.model.hp) <= this.tapeBytes;
  }

  private get adaptedBlocks(): number {
    return this.model.hp.nLayer - this.adapter.firstLayer;
  }

  /** One Adam step on the batch's mean BCE; returns the loss before the step. */
  step(batch: readonly LoraSample[], signal?: AbortSignal): number {
    this.checkBatch(batch, signal);
    if (!this.oneTape(batch)) return this.parallelStep(batch);
    const cost = this.optimizer.minimize(() => this.loss(batch), true, this.adapter.variables());
    const v = cost!.dataSync()[0];
    cost!.dispose();
    return v;
  }

  private checkBatch(batch: readonly LoraSample[], signal?: AbortSignal): void {
    if (signal?.aborted) void this.workers?.close();
    throwIfAborted(signal);
    throwIfAborted(this.signal);
    if (batch.length === 0) throw new CorellaError('BAD_CONFIG', 'empty LoRA training batch');
    const { hp } = this.model;
    const blocks = this.adaptedBlocks;
    const weights = blocks * blockWeightBytes(hp);
    for (const [i, s] of batch.entries()) {
      const need = s.tokens.length * blocks * tapeBytesPerToken(hp) + weights;
      if (need > this.heapBytes)
        throw new CorellaError(
          'BAD_CONFIG',
          `LoRA training sample ${i} has ${s.tokens.length} tokens: its tape over ${blocks} adapted blocks ` +
            `and their weights need about ${(need / 2 ** 30).toFixed(2)} GiB, above the backend's heap of ` +
            `${(this.heapBytes / 2 ** 30).toFixed(2)} GiB (field layers: adapt fewer blocks, or shorten the ` +
            `prompt's history)`,
          { details: { field: 'layers', sample: i, tokens: s.tokens.length, blocks, bytes: need } },
        );
      if (s.label !== 0 && s.label !== 1)
        throw new CorellaError('BAD_CONFIG', `LoRA training label ${s.label} is not 0 or 1 (field label)`, {
          details: { field: 'label' },
        });
      if (s.weight !== undefined && !(s.weight >= 0 && Number.isFinite(s.weight)))
        throw new CorellaError(
          'BAD_CONFIG',
          `LoRA training weight ${s.weight} is not a finite number ≥ 0 (field weight)`,
          {
            details: { field: 'weight' },
          },
        );
    }
  }

  /**
   * The step on `threads` threads: every sample's first-adapted-block input is put in shared memory, this
   * thread and the workers claim samples one by one and compute each one's w·BCE and gradient, which are
   * then added in sample order, divided by Σw and applied: Σᵢ ∂(wᵢ·lᵢ)/∂θ / Σw is the gradient of the
   * one-thread mean loss. Who computed a sample does not change its bits, so the step gives the same bits
   * at any thread count above 1 and whatever the timing.
   */
  private parallelStep(batch: readonly LoraSample[]): number {
    const { loss, grads } = this.parallelGradients(batch);
    const named = this.adapter
      .variables()
      .map((v, j) => ({ name: v.name, tensor: tf.tensor(grads[j], v.shape) }));
    this.optimizer.applyGradients(named);
    tf.dispose(named.map((g) => g.tensor));
    return loss;
  }

  /**
   * The batch's mean loss and its gradients (in `adapter.variables()` order) computed on the trainer's
   * threads, as `step()` computes them, for an optimiser that is not this trainer's (the joint trainer's
   * stage 3 steps the LoRA with its own Adam, which its checkpoints hold). With threads = 1 this thread
   * computes every sample, one tape each: the bits of any thread count, in a tape of one sample's size.
   */
  parallelGradients(
    batch: readonly LoraSample[],
    signal?: AbortSignal,
  ): { loss: number; grads: Float32Array[] } {
    this.checkBatch(batch, signal);
    const samples = batch.map((s) => {
      const x = this.frozen.input(s.tokens);
      const input = x.dataSync() as Float32Array;
      x.dispose();
      return { input, tokens: s.tokens.length, label: s.label, weight: s.weight ?? 1 };
    });
    const vars = this.adapter.variables();
    const lora = this.adapter.layerLora();
    const results = this.runSamples(samples, (s) =>
      sampleGrads(this.blocks, vars, lora, this.labelSmoothing, s.input, s),
    );
    const { grads: acc, sum } = sumSampleResults(results);
    const total = batch.reduce((a, s) => a + (s.weight ?? 1), 0);
    for (const a of acc) for (let i = 0; i < a.length; i++) a[i] /= total;
    return { loss: sum / total, grads: acc };
  }

  /**
   * The LLM side of a joint (stage-2) step on the trainer's threads: Σᵢ sᵢ / B and its gradient, sᵢ being
   * sample i's α·BCE(y, a·z + b) + (γ/P)·Σₚ ‖g_llm,ₚ(rms(hₚ)) − cₚ‖² with cₚ the CRM side's value that the
   * sample brings (jointSampleGrads). That is exactly the one-tape stage-2 loss's gradient with respect to the
   * LoRA and g_llm, up to float32 summation order. Also returns what the CRM side needs back: every sample's
   * logit and g_llm(h) per pair ([B·S] each). Gradients: adapter.variables(), then each pair's g_llm weight
   * and bias. With threads = 1 this thread computes every sample (as parallelGradients); `terms.pairs[k].hidden`
   * indexes hiddenLayers.
   */
  jointGradients(
    batch: readonly { tokens: readonly number[]; label: number; targets: Float32Array }[],
    terms: Omit<JointTerms, 'hiddenLayers'>,
    signal?: AbortSignal,
  ): { loss: number; logits: Float32Array; projected: Float32Array[]; grads: Float32Array[] } {
    this.checkBatch(batch, signal);
    const P = terms.pairs.length;
    const S = terms.sharedDim;
    for (const p of terms.pairs)
      if (!(p.hidden >= 0 && p.hidden < this.hiddenLayers.length))
        throw new CorellaError(
          'BAD_CONFIG',
          `alignment pair reads hidden layer #${p.hidden}, not one of the trainer's ${this.hiddenLayers.length} (field hiddenLayers)`,
          {
            details: { field: 'hiddenLayers' },
          },
        );
    const full: JointTerms = { ...terms, hiddenLayers: [...this.hiddenLayers] };
    const frozenLayers = this.hiddenLayers.filter((l) => l < this.adapter.firstLayer);
    const samples = batch.map((s) => {
      if (s.targets.length !== P * S)
        throw new CorellaError(
          'BAD_CONFIG',
          `a joint sample has ${s.targets.length} alignment targets, not ${P}·${S}`,
        );
      const x = this.frozen.input(s.tokens);
      const input = x.dataSync() as Float32Array;
      x.dispose();
      const rows = P > 0 ? this.frozen.lastHidden(s.tokens) : new Map<number, Float32Array>();
      const frozenRows = frozenLayers.map((l): [number, Float32Array] => [l, rows.get(l)!]);
      return {
        input,
        tokens: s.tokens.length,
        label: s.label,
        weight: 1,
        joint: { targets: s.targets, frozenRows },
      };
    });
    const vars = this.adapter.variables();
    const lora = this.adapter.layerLora();
    const projVars = jointProjectionVariables(full, this.model.hp.nEmbd);
    let results;
    try {
      results = this.runSamples(
        samples,
        (s) => jointSampleGrads(this.blocks, vars, projVars, lora, full, s.input, { ...s, ...s.joint! }),
        full,
      );
    } finally {
      tf.dispose(projVars);
    }
    const B = batch.length;
    const { grads: acc, sum } = sumSampleResults(results);
    for (const a of acc) for (let i = 0; i < a.length; i++) a[i] /= B;
    const logits = Float32Array.from(results, (r) => r.logit!);
    const projected = Array.from({ length: P }, (_, k) => {
      const out = new Float32Array(B * S);
      results.forEach((r, i) => out.set(r.projected!.subarray(k * S, (k + 1) * S), i * S));
      return out;
    });
    return { loss: sum / B, logits, projected, grads: acc };
  }

  /**
   * Every sample's result, in sample order: claimed by this thread and the workers, or, with threads = 1,
   * computed here one after another by the same function the workers run.
   */
  private runSamples(
    samples: readonly HostSample[],
    own: (s: HostSample) => Omit<SampleGrads, 'index'>,
    joint?: JointTerms,
  ): Omit<SampleGrads, 'index'>[] {
    if (this.workers) return this.workers.run(this.adapter.toHostSync(), samples, own, joint);
    return samples.map((s) => {
      throwIfAborted(this.signal);
      return own(s);
    });
  }

  /** Gradients of the batch's mean BCE with respect to every LoRA variable, in `adapter.variables()` order. */
  gradients(batch: readonly LoraSample[]): { loss: number; grads: Float32Array[] } {
    const vars = this.adapter.variables();
    const { value, grads } = tf.variableGrads(() => this.loss(batch), vars);
    const out = vars.map((v) => grads[v.name].dataSync() as Float32Array);
    const loss = value.dataSync()[0];
    tf.dispose([value, ...Object.values(grads)]);
    return { loss, grads: out };
  }

  /** A checkpoint of the weights and the optimizer. */
  async state(): Promise<LoraTrainerState> {
    const named = await this.optimizer.getWeights();
    const [iter, ...moments] = named;
    return {
      weights: await this.adapter.toHost(),
      adamIterations: (await iter.tensor.data())[0],
      adamMoments: await Promise.all(moments.map(async (m) => (await m.tensor.data()) as Float32Array)),
    };
  }

  /**
   * Restores a checkpoint taken by `state()` of a trainer with the same adapter config. Adam's moments are
   * matched to variables by position (tfjs does the same), so the next step continues the interrupted run.
   */
  async restore(s: LoraTrainerState): Promise<void> {
    const vars = this.adapter.variables();
    if (s.adamMoments.length !== 0 && s.adamMoments.length !== 2 * vars.length) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `LoRA checkpoint has ${s.adamMoments.length} Adam moments for ${vars.length} variables`,
      );
    }
    s.adamMoments.forEach((m, i) => {
      if (m.length !== vars[i % vars.length].size)
        throw new CorellaError('ARTIFACT_CORRUPT', `LoRA checkpoint Adam moment ${i} has the wrong size`);
    });
    this.adapter.load(s.weights);
    if (s.adamMoments.length === 0) return;
    const tensors = [
      { name: 'iter', tensor: tf.scalar(s.adamIterations, 'int32') },
      ...s.adamMoments.map((m, i) => ({
        name: `${vars[i % vars.length].name}/${i < vars.length ? 'm' : 'v'}`,
        tensor: tf.tensor(m, vars[i % vars.length].shape),
      })),
    ];
    await this.optimizer.setWeights(tensors);
    tf.dispose(tensors.map((t) => t.tensor));
  }

  /**
   * logit_yes − logit_no of each prompt under the current LoRA, for evaluation (no gradients), in order.
   * Equal to `logOdds` per prompt up to float32 rounding (tested): the prompts are cut into groups that each
   * reuse shared prefixes (lora-eval.ts), and the groups are claimed by this thread and the workers, a
   * round of a few groups per thread at a time, so that the inputs in shared memory stay small. The same
   * bits at every thread count.
   */
  evalLogOdds(prompts: readonly (readonly number[])[], signal?: AbortSignal): Float32Array {
    const lora = this.adapter.layerLora();
    const groups = evalGroups(prompts.length);
    const out = new Float32Array(prompts.length);
    const nEmbd = this.model.hp.nEmbd;
    // `input(j)`: prompt j's first adapted block input.
    const own = (g: [number, number], input: (j: number) => tf.Tensor2D) =>
      chainLogOdds(this.blocks, lora, prompts.slice(g[0], g[1]), (i) => input(g[0] + i), signal);
    const workers = this.workers;
    if (!workers) {
      for (const g of groups)
        out.set(
          own(g, (j) => this.frozen.input(prompts[j])),
          g[0],
        );
      return out;
    }
    const weights = this.adapter.toHostSync();
    const perRound = EVAL_ROUND_GROUPS * (workers.size + 1);
    for (let r = 0; r < groups.length; r += perRound) {
      throwIfAborted(signal);
      const round = groups.slice(r, r + perRound);
      const lo = round[0][0];
      const hi = round[round.length - 1][1];
      const part = prompts.slice(lo, hi);
      // Each prompt's input is read from the frozen cache once; this thread's groups use the same floats.
      const inputs = part.map((t) => this.frozen.inputData(t));
      const local = round.map(([s, e]): [number, number] => [s - lo, e - lo]);
      const got = workers.evaluate(weights, part, inputs, local, (g) =>
        own(round[g], (j) => tf.tensor2d(inputs[j - lo], [prompts[j].length, nEmbd])),
      );
      got.forEach((z, g) => out.set(z, round[g][0]));
    }
    return out;
  }

  /** P(yes) of `tokens` under the current LoRA. */
  pYes(tokens: readonly number[]): number {
    const z = this.logOdds(tokens);
    const v = z.dataSync()[0];
    z.dispose();
    return 1 / (1 + Math.exp(-v));
  }

  /** Terminates the worker threads and waits for them to exit (dispose() does the same without waiting). */
  async close(): Promise<void> {
    if (this.onAbort) this.signal?.removeEventListener('abort', this.onAbort);
    await this.workers?.close();
  }

  dispose(): void {
    void this.close();
    if (this.ownsFrozen) this.frozen.dispose();
    this.optimizer.dispose();
    this.answerRows.dispose();
  }
}

/**
 * The per-sample results' losses and gradients summed in sample order (into the first sample's arrays), so
 * the threaded steps add in the order the one-thread step does.
 */
function sumSampleResults(results: readonly { sum: number; grads: Float32Array[] }[]): {
  grads: Float32Array[];
  sum: number;
} {
  const acc = results[0].grads;
  let sum = results[0].sum;
  for (const r of results.slice(1)) {
    sum += r.sum;
    r.grads.forEach((g, j) => {
      const a = acc[j];
      for (let i = 0; i < a.length; i++) a[i] += g[i];
    });
  }
  return { grads: acc, sum };
}
