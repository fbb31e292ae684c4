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
import type { Token } from 'node-llama-cpp';
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
  /** Targets whose prompt could not be built (e.g. a title longer than the context): not scored. */
  failed: number[];
  /** Why the first of them failed. */
  error?: unknown;
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
  private itemLock: Promise<void> = Promise.resolve();

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

  /** Feature columns before the log-odds: the hidden state, plus the affinity features when on. */
  get featureDim(): number {
    return this.scorer.hiddenDim + (this.config.itemAffinity ? AFFINITY_FEATURES.length : 0);
  }

  /**
   * The prompts of a request's targets. A live prompt is a block's first sample (historyBlock offset 0):
   * there is no block of stored samples to anchor a window to, and the offset-0 window is the plain
   * most-recent `maxHistoryItems`, which is what a sliding-window (historyBlock 1) extraction shows too.
   */
  prompts(history: HistoryEntry[], targets: ItemInfo[]): BuiltPrompt[] {
    const h = promptHistory(history);
    return targets.map((t) => this.prompt(h, t));
  }

  private prompt(history: ReturnType<typeof promptHistory>, target: ItemInfo): BuiltPrompt {
    return this.builder.build(history, target.title, undefined, this.config.maxHistoryItems);
  }

  /** An empty progress record for `n` targets, to pass to `features`. */
  progress(n: number): FeatureProgress {
    return new FeatureProgress(
      n,
      this.scorer.hiddenDim,
      this.config.itemAffinity ? AFFINITY_FEATURES.length : 0,
      this.llm.modelSha256,
      this.builder.template.name,
    );
  }

  /**
   * Features for `targets` of one request, written into `progress` as each prompt is scored, so a caller
   * whose deadline passes can still use the finished ones. Runs on the user's sticky sequence; `signal`
   * stops it between prompts.
   */
  async features(
    user: string,
    history: HistoryEntry[],
    targets: ItemInfo[],
    signal?: AbortSignal,
    progress: FeatureProgress = this.progress(targets.length),
  ): Promise<OnlineFeatures> {
    // One unbuildable prompt (a title longer than the context) costs its own candidate, not the request's.
    const h = promptHistory(history);
    const built: (Token[] | undefined)[] = [];
    const failed: number[] = [];
    let error: unknown;
    for (let i = 0; i < targets.length; i++) {
      try {
        built.push(this.prompt(h, targets[i]).tokens);
      } catch (e) {
        built.push(undefined);
        failed.push(i);
        error ??= e;
      }
    }
    if (failed.length === targets.length) throw error;
    const live = built.flatMap((t, i) => (t ? [i] : []));
    const prompts = built as Token[][];
    const { index } = await this.sequences.acquire(user);
    const f = progress.features;
    const hd = this.scorer.hiddenDim;
    try {
      if (this.config.itemAffinity) {
        const extra = await this.affinity(
          index,
          history,
          live.map((i) => targets[i]),
          signal,
        );
        progress.evaluatedTokens += extra.evaluated;
        live.forEach((i, k) => f.affinity!.set(extra.values.subarray(k * 3, k * 3 + 3), i * 3));
      }
      // In token order, so that consecutive targets also share their leading tokens ("The ...", a common
      // word): the KV cache keeps the longest common prefix with the previous prompt, not only the history.
      const order = [...live].sort((a, b) => compareTokens(prompts[a], prompts[b]));
      await this.scorer.scoreOn(
        index,
        order.map((i) => prompts[i]),
        {
          reusePrefix: true,
          signal,
          onScored: (k, s, evaluated) => {
            const i = order[k];
            f.pYes[i] = s.pYes;
            f.logOdds[i] = s.logOdds;
            if (s.hidden) f.hidden.set(s.hidden.subarray(0, hd), i * hd);
            progress.evaluatedTokens += evaluated;
            progress.promptTokens += prompts[i].length;
            progress.done[i] = 1;
          },
        },
      );
      return {
        features: f,
        promptTokens: progress.promptTokens,
        evaluatedTokens: progress.evaluatedTokens,
        failed,
        error,
      };
    } finally {
      this.sequences.release(index);
    }
  }

  /**
   * Centred unit vectors of item rows through the extractor, one call at a time: its scorer has one
   * sequence, and concurrent LLM jobs (maxConcurrency > 1) must not evaluate on it together.
   */
  itemVectors(rows: number[]): Promise<{ centre: Float64Array; vectors: Map<number, Float64Array> }> {
    const ex = this.extractor;
    if (!ex) return Promise.reject(new Error('item vectors need llm.itemAffinity'));
    const run = this.itemLock.then(() => ex.itemUnitVectors(this.items, rows));
    this.itemLock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Whether item affinity is on (item vectors are part of the features). */
  get usesItemVectors(): boolean {
    return this.extractor !== undefined;
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
    // No signal: item vectors missing from the cache are computed to the end and cached even when the
    // request's deadline passes meanwhile. Cancelled, a request would drop them unsaved and the next one
    // would start over, so a catalogue never warmed up would fall back for ever.
    signal?.throwIfAborted();
    const { centre, vectors } = await this.itemVectors(known);
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

function promptHistory(history: HistoryEntry[]): { title: string; rating: number; genres: string }[] {
  return history.map((e) => ({ title: e.title, rating: e.rating, genres: e.genres }));
}

function compareTokens(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Features of one request's targets as they are scored; `done[i]` = target i is complete. */
export class FeatureProgress {
  readonly done: Uint8Array;
  readonly features: LlmFeatures;
  /** Tokens of the finished prompts. */
  promptTokens = 0;
  /** Tokens evaluated so far (finished prompts, item vectors computed live). */
  evaluatedTokens = 0;

  constructor(n: number, hiddenDim: number, affinityDim: number, modelSha256: string, template: string) {
    this.done = new Uint8Array(n);
    this.features = {
      modelSha256,
      template,
      hiddenDim,
      sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
      pYes: new Float32Array(n),
      logOdds: new Float32Array(n),
      hidden: new Float32Array(n * hiddenDim),
      ...(affinityDim > 0 ? { affinity: new Float32Array(n * affinityDim) } : {}),
    };
  }

  /** Indices of the finished targets. */
  finished(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.done.length; i++) if (this.done[i]) out.push(i);
    return out;
  }

  /** The features of `rows` only, row-aligned with `rows` (a copy: the job may still be writing). */
  subset(rows: number[]): LlmFeatures {
    const f = this.features;
    const d = f.hiddenDim;
    const hidden = new Float32Array(rows.length * d);
    rows.forEach((r, k) => hidden.set(f.hidden.subarray(r * d, (r + 1) * d), k * d));
    const out: LlmFeatures = {
      ...f,
      sampleIds: Uint32Array.from(rows),
      pYes: Float32Array.from(rows, (r) => f.pYes[r]),
      logOdds: Float32Array.from(rows, (r) => f.logOdds[r]),
      hidden,
    };
    if (f.affinity) {
      const a = f.affinity;
      const k = AFFINITY_FEATURES.length;
      out.affinity = new Float32Array(rows.length * k);
      rows.forEach((r, j) => out.affinity!.set(a.subarray(r * k, (r + 1) * k), j * k));
    }
    return out;
  }
}
