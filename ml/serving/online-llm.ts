/**
 * The LLM branch for live requests: prompts for one request's routed candidates, scored on the model right
 * away, giving the same features `LlmFeatureExtractor` gives for the same prompt (pYes, log-odds, the final
 * hidden state, and the item-affinity features when `llm.itemAffinity` is on).
 *
 * Why not the extractor's feature cache: it is keyed by dataset sample id, and live requests have none (the
 * same user, item and history can come with a different history tomorrow). Item vectors, in contrast, depend
 * on the item alone, so they do come from the extractor's item cache.
 *
 * Cost: a request's prompts differ only after the history, so they run back to back on one llama.cpp
 * sequence, whose KV cache keeps the shared prefix (LlmScorer's prefix reuse): the history is evaluated once
 * per request, then each target and the template tail. A small LRU keeps each recent user on the sequence
 * that holds their prefix, so the next request of the same user starts with it cached.
 */
import type { ArtifactStore } from '../artifacts/store.js';
import type { ItemTable } from '../data/types.js';
import { resolveLlmConfig, type LlmConfig, type ResolvedLlmConfig } from '../llm/config.js';
import { LlmFeatureExtractor } from '../llm/features.js';
import { AFFINITY_FEATURES, affinityFeatures, centredUnit, itemPromptText } from '../llm/item-affinity.js';
import { loadLlm, type LoadedLlm } from '../llm/model.js';
import { PromptBuilder, templateByName, type BuiltPrompt } from '../llm/prompts.js';
import { LlmScorer } from '../llm/scorer.js';
import type { LlmFeatures } from '../llm/types.js';
import type { HistoryEntry, ItemInfo } from './request-encoder.js';

export interface OnlineLlmOptions {
  /** llama.cpp sequences kept (each one user's prefix); at least the LLM concurrency. Default 4. */
  sequences?: number;
  /** Unknown-item vectors kept in memory (items outside the item table). Default 1024. */
  textVectorCache?: number;
}

export interface OnlineFeatures {
  features: LlmFeatures;
  /** Tokens of the scored prompts, and tokens actually evaluated (prefix reuse makes this far smaller). */
  promptTokens: number;
  evaluatedTokens: number;
}

interface Slot {
  index: number;
  owner: string | undefined;
  busy: boolean;
  lastUsed: number;
}

/** Users mapped to sequences, least recently used first out; a busy sequence is never handed out. */
export class StickySequences {
  private readonly slots: Slot[];
  private readonly waiters: (() => void)[] = [];
  private clock = 0;

  constructor(count: number) {
    this.slots = Array.from({ length: count }, (_, index) => ({
      index,
      owner: undefined,
      busy: false,
      lastUsed: 0,
    }));
  }

  /** The user's own sequence when it is free (its prefix is cached), else the least recently used free one. */
  async acquire(user: string): Promise<{ index: number; warm: boolean }> {
    for (;;) {
      const own = this.slots.find((s) => s.owner === user && !s.busy);
      const pick =
        own ?? this.slots.filter((s) => !s.busy).sort((a, b) => a.lastUsed - b.lastUsed)[0] ?? undefined;
      if (pick) {
        pick.busy = true;
        pick.lastUsed = ++this.clock;
        const warm = pick.owner === user;
        pick.owner = user;
        return { index: pick.index, warm };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  release(index: number): void {
    this.slots[index].busy = false;
    this.waiters.shift()?.();
  }

  /** The KV content of `index` no longer belongs to its owner (e.g. an item prompt ran there). */
  disown(index: number): void {
    this.slots[index].owner = undefined;
  }
}

export class OnlineLlm {
  readonly sequences: StickySequences;
  private readonly textVectors = new Map<string, Float64Array>();

  private constructor(
    readonly config: ResolvedLlmConfig,
    private readonly llm: LoadedLlm,
    private readonly scorer: LlmScorer,
    readonly builder: PromptBuilder,
    /** Present when item affinity is on: the item-vector cache lives there. */
    private readonly extractor: LlmFeatureExtractor | undefined,
    private readonly items: ItemTable,
    private readonly textVectorCap: number,
  ) {
    this.sequences = new StickySequences(scorer.sequences);
  }

  static async load(
    config: LlmConfig,
    store: ArtifactStore,
    items: ItemTable,
    opts: OnlineLlmOptions = {},
  ): Promise<OnlineLlm> {
    const base = resolveLlmConfig(config);
    const cfg: ResolvedLlmConfig = { ...base, sequences: Math.max(1, opts.sequences ?? 4) };
    const template = templateByName(cfg.template);
    let extractor: LlmFeatureExtractor | undefined;
    let llm: LoadedLlm | undefined;
    let scorer: LlmScorer | undefined;
    try {
      if (cfg.itemAffinity) {
        extractor = await LlmFeatureExtractor.open(config, store);
        // Loads (or computes once) the reference centre now rather than on the first live request.
        await extractor.itemUnitVectors(items, []);
      }
      llm = await loadLlm(cfg);
      scorer = await LlmScorer.create(llm, cfg);
      const model = llm.model;
      // The same builder options as the extractor's, so a live prompt is token-for-token an offline one.
      const builder = new PromptBuilder(
        {
          tokenize: (t, s, o) => model.tokenize(t, s, o),
          bos: model.tokens.shouldPrependBosToken ? model.tokens.bos : null,
        },
        template,
        {
          contextSize: cfg.contextSize,
          maxHistoryItems: cfg.maxHistoryItems,
          historyBlock: cfg.historyBlock,
          targetReserveTokens: cfg.targetReserveTokens,
        },
      );
      return new OnlineLlm(cfg, llm, scorer, builder, extractor, items, opts.textVectorCache ?? 1024);
    } catch (e) {
      await scorer?.dispose();
      await llm?.dispose();
      await extractor?.dispose();
      throw e;
    }
  }

  get modelSha256(): string {
    return this.llm.modelSha256;
  }

  /** Width of `LlmFeatures.hidden`: the hidden state, plus the affinity features when on. */
  get featureDim(): number {
    return this.scorer.hiddenDim + (this.config.itemAffinity ? AFFINITY_FEATURES.length : 0);
  }

  /**
   * The prompts of a request's targets. A live prompt is a block's first sample (historyBlock offset 0):
   * there is no block of stored samples to anchor a window to, and the offset-0 window is the plain
   * most-recent `maxHistoryItems`, which is what a sliding-window (historyBlock 1) extraction shows too.
   */
  prompts(history: HistoryEntry[], targets: ItemInfo[]): BuiltPrompt[] {
    const h = history.map((e) => ({ title: e.title, rating: e.rating, genres: e.genres }));
    return targets.map((t) => this.builder.build(h, t.title, undefined, this.config.maxHistoryItems));
  }

  /**
   * Features for `targets` of one request, in order. Runs on the user's sticky sequence; `signal` stops it
   * between prompts.
   */
  async features(
    user: string,
    history: HistoryEntry[],
    targets: ItemInfo[],
    signal?: AbortSignal,
  ): Promise<OnlineFeatures> {
    const prompts = this.prompts(history, targets).map((p) => p.tokens);
    const { index } = await this.sequences.acquire(user);
    let evaluatedTokens = 0;
    try {
      let extra: { values: Float32Array; evaluated: number } | undefined;
      if (this.config.itemAffinity) {
        extra = await this.affinity(index, history, targets, signal);
        evaluatedTokens += extra.evaluated;
      }
      const scores = await this.scorer.scoreOn(index, prompts, {
        reusePrefix: true,
        signal,
        onScored: (_i, _s, evaluated) => {
          evaluatedTokens += evaluated;
        },
      });
      const n = targets.length;
      const hd = this.scorer.hiddenDim;
      const wd = this.featureDim;
      const f: LlmFeatures = {
        modelSha256: this.llm.modelSha256,
        template: this.builder.template.name,
        hiddenDim: wd,
        sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
        pYes: Float32Array.from(scores, (s) => s.pYes),
        logOdds: Float32Array.from(scores, (s) => s.logOdds),
        hidden: new Float32Array(n * wd),
      };
      scores.forEach((s, i) => {
        if (s.hidden) f.hidden.set(s.hidden.subarray(0, hd), i * wd);
        if (extra) f.hidden.set(extra.values.subarray(i * 3, i * 3 + 3), i * wd + hd);
      });
      return { features: f, promptTokens: prompts.reduce((a, p) => a + p.length, 0), evaluatedTokens };
    } finally {
      this.sequences.release(index);
    }
  }

  /** The three item-affinity features per target, over the same window the extractor compares. */
  private async affinity(
    seq: number,
    history: HistoryEntry[],
    targets: ItemInfo[],
    signal?: AbortSignal,
  ): Promise<{ values: Float32Array; evaluated: number }> {
    const aff = this.config.itemAffinity!;
    const max = aff.historyItems ?? this.config.maxHistoryItems;
    const window = max === undefined ? history : history.slice(Math.max(0, history.length - max));
    const known = [...window.map((e) => e.itemRow), ...targets.map((t) => t.row)].filter((r) => r >= 0);
    const { centre, vectors } = await this.extractor!.itemUnitVectors(this.items, known, { signal });
    let evaluated = 0;
    const vec = async (row: number, title: string): Promise<Float64Array> => {
      if (row >= 0) return vectors.get(row)!;
      // An item outside the item table: its vector from its raw id as the title, computed here.
      let v = this.textVectors.get(title);
      if (!v) {
        const toks = this.builder.standalone(itemPromptText(aff.prompt, title));
        const [s] = await this.scorer.scoreOn(seq, [toks], {
          reusePrefix: true,
          signal,
          onScored: (_i, _s, e) => {
            evaluated += e;
          },
        });
        this.sequences.disown(seq);
        v = centredUnit(s.hidden ?? new Float32Array(centre.length), centre);
        if (this.textVectors.size >= this.textVectorCap) this.textVectors.clear();
        this.textVectors.set(title, v);
      }
      return v;
    };
    const hist: Float64Array[] = [];
    for (const e of window) hist.push(await vec(e.itemRow, e.title));
    const ratings = window.map((e) => e.rating);
    const values = new Float32Array(targets.length * 3);
    for (let i = 0; i < targets.length; i++)
      values.set(affinityFeatures(await vec(targets[i].row, targets[i].title), hist, ratings), i * 3);
    return { values, evaluated };
  }

  async dispose(): Promise<void> {
    await this.scorer.dispose();
    await this.llm.dispose();
    await this.extractor?.dispose();
  }
}
