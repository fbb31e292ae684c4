import {
  TokenBias,
  type ControlledEvaluateInputItem,
  type LlamaContext,
  type LlamaContextSequence,
  type Token,
} from 'node-llama-cpp';
import { resolve } from 'node:path';
import { CorellaError } from '../errors.js';
import { throwIfAborted } from '../progress.js';
import type { ResolvedLlmConfig } from './config.js';
import type { LoadedLlm } from './model.js';

export interface PromptScore {
  pYes: number;
  logOdds: number;
  /** Final hidden state of the prompt (absent when hidden extraction is off). */
  hidden?: Float32Array;
}

/** Counters so callers and tests can see how much LLM work was actually done. */
export interface ScorerStats {
  prompts: number;
  /** Tokens of the scored prompts (what a naive evaluator would process). */
  promptTokens: number;
  /** Tokens actually run through the model (prefix reuse makes this smaller). */
  evaluatedTokens: number;
}

export interface ScoreOptions {
  /** Reuse the KV cache for the prefix shared with the previous prompt on the same sequence (default true). */
  reusePrefix?: boolean;
  signal?: AbortSignal;
  /** Called after each prompt, in completion order. */
  onScored?(index: number, score: PromptScore, evaluatedTokens: number): void | Promise<void>;
}

/** node-llama-cpp's embedding context, reached through fields it does not export (pinned 3.21.1). */
interface EmbeddingInternals {
  _llamaContext: LlamaContext;
  _sequence: LlamaContextSequence;
}
interface ContextInternals {
  _ctx: { getEmbedding(inputTokensLength: number): Float64Array | number[] };
}

interface Worker {
  gen: LlamaContextSequence;
  /** Set when `gen`'s own context also yields the hidden state (one pass per prompt). */
  fused?: LlamaContext;
  /** A separate embedding context, for models whose embeddings are pooled over the prompt. */
  hidden?: { context: LlamaContext; sequence: LlamaContextSequence };
}

// Large enough to lift both answer tokens above every other logit, small enough that float32 keeps ~1e-5 of
// the difference between them: after top-k 2 the softmax over the two is e^yes / (e^yes + e^no).
const ANSWER_BIAS = 200;

/**
 * Scores token prompts: P(yes) from the next-token logits of the two answer tokens, and the prompt's final
 * hidden state, read from the same evaluation (embeddings-enabled context) unless the model pools its
 * embeddings, which takes a second pass in an embedding context. With prefix reuse each sequence keeps its KV cache and only
 * evaluates the tokens after the longest prefix shared with the previous prompt.
 */
export class LlmScorer {
  readonly stats: ScorerStats = { prompts: 0, promptTokens: 0, evaluatedTokens: 0 };
  private readonly bias: TokenBias;

  private constructor(
    readonly llm: LoadedLlm,
    private readonly contexts: LlamaContext[],
    private readonly workers: Worker[],
  ) {
    this.bias = new TokenBias(llm.model.tokenizer);
    this.bias.set(llm.yesToken, { logit: ANSWER_BIAS });
    this.bias.set(llm.noToken, { logit: ANSWER_BIAS });
  }

  static async create(llm: LoadedLlm, cfg: ResolvedLlmConfig): Promise<LlmScorer> {
    const contexts: LlamaContext[] = [];
    const lora = cfg.lora
      ? { adapters: [{ filePath: resolve(cfg.lora.path), scale: cfg.lora.scale ?? 1 }] }
      : undefined;
    // A one-sequence context with embeddings on (node-llama-cpp's private `_embeddings`, pinned 3.21.1).
    const embeddingsContext = async (): Promise<LlamaContext> => {
      const ctx = await llm.model.createContext({
        contextSize: cfg.contextSize,
        batchSize: cfg.batchSize,
        threads: cfg.threads,
        flashAttention: cfg.flashAttention,
        lora,
        _embeddings: true,
      } as Parameters<typeof llm.model.createContext>[0]);
      contexts.push(ctx);
      return ctx;
    };
    try {
      const workers: Worker[] = [];
      if (cfg.hidden && !llm.pooledEmbeddings) {
        // One pass per prompt: an embeddings-enabled context still produces logits, and the last output
        // row's embedding is the prompt's final hidden state. llama.cpp hands out "the last output" of the
        // context's latest batch, so each sequence gets a context of its own to keep reads unambiguous.
        for (let s = 0; s < cfg.sequences; s++) {
          const ctx = await embeddingsContext();
          workers.push({ gen: ctx.getSequence(), fused: ctx });
        }
        return new LlmScorer(llm, contexts, workers);
      }
      const gen = await llm.model.createContext({
        contextSize: cfg.contextSize,
        batchSize: cfg.batchSize,
        sequences: cfg.sequences,
        threads: cfg.threads,
        flashAttention: cfg.flashAttention,
        lora,
      });
      contexts.push(gen);
      for (let s = 0; s < cfg.sequences; s++) {
        const w: Worker = { gen: gen.getSequence() };
        if (cfg.hidden) {
          // Pooled embeddings (mean/cls/...) need the whole prompt in an embedding context of their own.
          if (lora) {
            // createEmbeddingContext takes no LoRA, so an embedding-mode context is made directly.
            const ctx = await embeddingsContext();
            w.hidden = { context: ctx, sequence: ctx.getSequence() };
          } else {
            const emb = await llm.model.createEmbeddingContext({
              contextSize: cfg.contextSize,
              batchSize: cfg.batchSize,
              threads: cfg.threads,
              // flash attention: inherited from the model's defaultContextFlashAttention
            });
            const inner = emb as unknown as EmbeddingInternals;
            contexts.push(inner._llamaContext);
            w.hidden = { context: inner._llamaContext, sequence: inner._sequence };
          }
        }
        workers.push(w);
      }
      return new LlmScorer(llm, contexts, workers);
    } catch (e) {
      await Promise.all(contexts.map((c) => c.dispose()));
      if (e instanceof CorellaError) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      if (cfg.lora && /lora|adapter/i.test(msg)) {
        throw new CorellaError(
          'BAD_MODEL_FILE',
          `LoRA adapter ${cfg.lora.path} could not be applied: ${msg}`,
          { cause: e },
        );
      }
      throw e;
    }
  }

  get hiddenDim(): number {
    const w = this.workers[0];
    return w.hidden || w.fused ? this.llm.hiddenDim : 0;
  }

  /** True when pYes and the hidden state come from one evaluation of the prompt. */
  get singlePass(): boolean {
    return this.workers[0].fused !== undefined;
  }

  get sequences(): number {
    return this.workers.length;
  }

  /**
   * Scores `prompts`. Prompts are handed to sequences in `groups` (default: contiguous slices, one per
   * sequence); keep each user's prompts in one group and in order so they share a KV-cached prefix.
   */
  async score(prompts: Token[][], opts: ScoreOptions = {}, groups?: number[][]): Promise<PromptScore[]> {
    const reuse = opts.reusePrefix ?? true;
    const out: PromptScore[] = new Array<PromptScore>(prompts.length);
    const queue = groups ?? this.defaultGroups(prompts.length);
    let next = 0;
    const run = async (w: Worker): Promise<void> => {
      while (next < queue.length) {
        const group = queue[next++];
        for (const i of group) {
          throwIfAborted(opts.signal);
          const r = await this.scoreOne(w, prompts[i], reuse);
          out[i] = r.score;
          this.stats.prompts++;
          this.stats.promptTokens += prompts[i].length;
          this.stats.evaluatedTokens += r.evaluated;
          await opts.onScored?.(i, r.score, r.evaluated);
        }
      }
    };
    await Promise.all(this.workers.map(run));
    return out;
  }

  /**
   * Scores `prompts` in order on sequence `index` only. For callers that manage the KV caches themselves:
   * the serving engine keeps each user on a "sticky" sequence, so the user's history prefix, evaluated by
   * one request, is still cached for the next (`score` hands groups to whichever sequence is free).
   * Calls for one index must not overlap; different indices may run at once.
   */
  async scoreOn(index: number, prompts: Token[][], opts: ScoreOptions = {}): Promise<PromptScore[]> {
    const w = this.workers[index];
    if (!w) throw new RangeError(`sequence ${index} does not exist (${this.workers.length} sequences)`);
    const reuse = opts.reusePrefix ?? true;
    const out: PromptScore[] = [];
    for (let i = 0; i < prompts.length; i++) {
      throwIfAborted(opts.signal);
      const r = await this.scoreOne(w, prompts[i], reuse);
      out.push(r.score);
      this.stats.prompts++;
      this.stats.promptTokens += prompts[i].length;
      this.stats.evaluatedTokens += r.evaluated;
      await opts.onScored?.(i, r.score, r.evaluated);
    }
    return out;
  }

  private defaultGroups(n: number): number[][] {
    const k = this.workers.length;
    const size = Math.ceil(n / k);
    const groups: number[][] = [];
    for (let s = 0; s < n; s += size)
      groups.push(Array.from({ length: Math.min(size, n - s) }, (_, j) => s + j));
    return groups;
  }

  private async align(seq: LlamaContextSequence, tokens: Token[], reuse: boolean): Promise<number> {
    // At least the last token is always evaluated: its output is what we read.
    const keep = reuse
      ? Math.min(seq.compareContextTokens(tokens).firstDifferentIndex, tokens.length - 1)
      : 0;
    if (seq.nextTokenIndex > keep)
      await seq.eraseContextTokenRanges([{ start: keep, end: seq.nextTokenIndex }]);
    return keep;
  }

  private async scoreOne(
    w: Worker,
    tokens: Token[],
    reuse: boolean,
  ): Promise<{ score: PromptScore; evaluated: number }> {
    if (tokens.length === 0) throw new CorellaError('PROMPT_TOO_LONG', 'empty prompt');
    if (tokens.length >= w.gen.contextSize) {
      throw new CorellaError(
        'PROMPT_TOO_LONG',
        `prompt of ${tokens.length} tokens does not fit the context of ${w.gen.contextSize}`,
      );
    }
    const keep = await this.align(w.gen, tokens, reuse);
    const rest = tokens.slice(keep);
    const input: ControlledEvaluateInputItem[] = rest.slice(0, -1);
    input.push([
      rest[rest.length - 1],
      {
        generateNext: {
          probabilities: true,
          options: { temperature: 1, topK: 2, topP: 1, minP: 0, seed: 1, tokenBias: this.bias },
        },
      },
    ]);
    const res = await w.gen.controlledEvaluate(input);
    const probs = res[res.length - 1]?.next.probabilities;
    if (!probs) throw new Error('llama.cpp returned no next-token probabilities');
    const py = probs.get(this.llm.yesToken) ?? 0;
    const pn = probs.get(this.llm.noToken) ?? 0;
    const total = py + pn;
    if (!(total > 0)) throw new Error('answer tokens have no probability mass (bias did not apply)');
    const pYes = py / total;
    // Clamp so a saturated softmax still gives a finite log-odds.
    const logOdds = Math.log(Math.max(py, 1e-38)) - Math.log(Math.max(pn, 1e-38));
    let evaluated = rest.length;
    let hidden: Float32Array | undefined;
    if (w.fused) {
      hidden = Float32Array.from((w.fused as unknown as ContextInternals)._ctx.getEmbedding(tokens.length));
    } else if (w.hidden) {
      const h = await this.hiddenState(w.hidden, tokens, reuse && !this.llm.pooledEmbeddings);
      hidden = h.vector;
      evaluated += h.evaluated;
    }
    return { score: { pYes, logOdds, hidden }, evaluated };
  }

  private async hiddenState(
    h: { context: LlamaContext; sequence: LlamaContextSequence },
    tokens: Token[],
    reuse: boolean,
  ): Promise<{ vector: Float32Array; evaluated: number }> {
    const keep = await this.align(h.sequence, tokens, reuse);
    const rest = tokens.slice(keep);
    // Same evaluation node-llama-cpp's getEmbeddingFor does, minus clearing the state and appending EOS.
    const it = h.sequence.evaluate(rest, { _noSampling: true } as Parameters<
      LlamaContextSequence['evaluate']
    >[1]);
    for await (const _ of it) break;
    const v = (h.context as unknown as ContextInternals)._ctx.getEmbedding(tokens.length);
    return { vector: Float32Array.from(v), evaluated: rest.length };
  }

  async dispose(): Promise<void> {
    await Promise.all(this.contexts.map((c) => c.dispose()));
  }
}
