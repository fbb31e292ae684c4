import { resolve } from 'node:path';
import { sha256File, sha256Hex, type ArtifactStore } from '../artifacts/store.js';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import { CorellaError } from '../errors.js';
import { throwIfAborted, yieldToEventLoop, type LongRunOptions, type Progress } from '../progress.js';
import { resolveLlmConfig, type LlmConfig, type ResolvedLlmConfig } from './config.js';
import { LlmFeatureCache, type FeatureCacheKey } from './feature-cache.js';
import {
  AFFINITY_FEATURES,
  affinityFeatures,
  affinityWindow,
  centreOf,
  centredUnit,
  itemPromptText,
  referenceItemRows,
} from './item-affinity.js';
import { assertGgufFile, loadLlm, resolveModelPath, type LoadedLlm } from './model.js';
import { PromptBuilder, templateByName, type BuiltPrompt, type PromptTemplate } from './prompts.js';
import { LlmScorer, type ScorerStats } from './scorer.js';
import type { LlmFeatures, LlmFeatureSource } from './types.js';

export interface ExtractOptions extends LongRunOptions {
  /** Samples per cache chunk: the unit of resumption (default 256). */
  chunkSize?: number;
  /** Reuse each user's KV-cached history prefix (default true; false = the naive path, for benchmarks). */
  reusePrefix?: boolean;
}

export interface ExtractReport {
  requested: number;
  fromCache: number;
  computed: number;
  chunksWritten: number;
  promptTokens: number;
  evaluatedTokens: number;
  seconds: number;
}

/** Describes how a template renders, so a changed template never reuses features cached under its name. */
function templateFingerprint(t: PromptTemplate): string {
  return [
    t.text,
    t.entry('TITLE', 4.5, 'GENRES'),
    t.entry('TITLE', 3, ''),
    `separator-leads:${t.separator}`,
    t.emptyHistory,
  ].join('\u0000');
}

/**
 * The LLM branch's feature extractor: builds prompts for split rows, scores them with the model and caches
 * the results in chunks in the artifact store, keyed by (model sha256, template, sample id). The model is
 * loaded only when some requested sample is not cached yet.
 */
export class LlmFeatureExtractor implements LlmFeatureSource {
  readonly cache: LlmFeatureCache;
  lastReport: ExtractReport | undefined;
  private llm: LoadedLlm | undefined;
  private scorer: LlmScorer | undefined;
  private builder: PromptBuilder | undefined;
  private loaded = false;
  /** Item-vector caches by item-table fingerprint, with their reference centre once known. */
  private readonly itemCaches = new Map<string, { cache: LlmFeatureCache; centre?: Float64Array }>();
  private readonly itemFingerprints = new WeakMap<ItemTable, string>();

  private constructor(
    readonly config: ResolvedLlmConfig,
    readonly modelPath: string,
    readonly modelSha256: string,
    readonly template: PromptTemplate,
    private readonly store: ArtifactStore,
    private readonly key: FeatureCacheKey,
  ) {
    this.cache = new LlmFeatureCache(store, key);
  }

  /**
   * `namespace` separates caches whose sample ids could collide, e.g. the dataset version id: sample ids are
   * only unique within one dataset version.
   */
  static async open(
    config: LlmConfig,
    store: ArtifactStore,
    opts: { namespace?: string } = {},
  ): Promise<LlmFeatureExtractor> {
    const cfg = resolveLlmConfig(config);
    const template = templateByName(cfg.template);
    const modelPath = await resolveModelPath(cfg.model, cfg.modelCacheDir);
    await assertGgufFile(modelPath, 'model file');
    if (cfg.lora) await assertGgufFile(resolve(cfg.lora.path), 'LoRA adapter');
    const [modelSha256, loraSha256] = await Promise.all([
      sha256File(modelPath),
      cfg.lora ? sha256File(resolve(cfg.lora.path)) : Promise.resolve(undefined),
    ]);
    const key: FeatureCacheKey = {
      namespace: opts.namespace,
      modelSha256,
      loraSha256,
      loraScale: cfg.lora ? (cfg.lora.scale ?? 1) : undefined,
      template: template.name,
      templateText: templateFingerprint(template),
      answers: cfg.answers,
      contextSize: cfg.contextSize,
      maxHistoryItems: cfg.maxHistoryItems,
      historyBlock: cfg.historyBlock > 1 && cfg.maxHistoryItems !== undefined ? cfg.historyBlock : undefined,
      targetReserveTokens: cfg.targetReserveTokens,
      hidden: cfg.hidden,
      flashAttention: cfg.flashAttention,
    };
    const ex = new LlmFeatureExtractor(
      { ...cfg, model: modelPath },
      modelPath,
      modelSha256,
      template,
      store,
      key,
    );
    await ex.cache.load();
    return ex;
  }

  /** Work counters of the underlying scorer (zero until the model had to be used). */
  get stats(): ScorerStats {
    return this.scorer ? { ...this.scorer.stats } : { prompts: 0, promptTokens: 0, evaluatedTokens: 0 };
  }

  get modelLoaded(): boolean {
    return this.loaded;
  }

  private async ensureModel(): Promise<{ llm: LoadedLlm; scorer: LlmScorer; builder: PromptBuilder }> {
    if (!this.llm || !this.scorer || !this.builder) {
      const llm = await loadLlm(this.config);
      try {
        if (llm.modelSha256 !== this.modelSha256) {
          throw new CorellaError(
            'BAD_MODEL_FILE',
            `model file ${this.modelPath} changed while in use (sha256 differs)`,
          );
        }
        this.scorer = await LlmScorer.create(llm, this.config);
      } catch (e) {
        await llm.dispose();
        throw e;
      }
      this.llm = llm;
      this.loaded = true;
      this.builder = new PromptBuilder(
        {
          tokenize: (t, s, o) => llm.model.tokenize(t, s, o),
          bos: llm.model.tokens.shouldPrependBosToken ? llm.model.tokens.bos : null,
        },
        this.template,
        {
          contextSize: this.config.contextSize,
          maxHistoryItems: this.config.maxHistoryItems,
          historyBlock: this.config.historyBlock,
          targetReserveTokens: this.config.targetReserveTokens,
        },
      );
    }
    return { llm: this.llm, scorer: this.scorer, builder: this.builder };
  }

  /** The prompt of one split row (loads the model for its tokenizer). */
  async prompt(split: EncodedSplit, items: ItemTable, row: number): Promise<BuiltPrompt & { text: string }> {
    const { llm, builder } = await this.ensureModel();
    const p = builder.buildForRow(split, items, row);
    return { ...p, text: llm.model.detokenize(p.tokens) };
  }

  /**
   * The prompt tokens of split rows and the [yes, no] answer tokens, from the builder extract() uses (loads
   * the model for its tokenizer): the LoRA trainer (issue 19) trains on exactly the prompts llama.cpp scores.
   */
  async promptTokens(): Promise<{
    promptOf(split: EncodedSplit, items: ItemTable, row: number): readonly number[];
    answerTokens: [number, number];
  }> {
    const { llm, builder } = await this.ensureModel();
    return {
      promptOf: (split, items, row) => builder.buildForRow(split, items, row).tokens,
      answerTokens: [llm.yesToken, llm.noToken],
    };
  }

  features(split: EncodedSplit, items: ItemTable, rows: ArrayLike<number>): Promise<LlmFeatures> {
    return this.extract(split, items, rows);
  }

  async extract(
    split: EncodedSplit,
    items: ItemTable,
    rows: ArrayLike<number>,
    opts: ExtractOptions = {},
  ): Promise<LlmFeatures> {
    const t0 = performance.now();
    const chunkSize = opts.chunkSize ?? 256;
    if (!Number.isInteger(chunkSize) || chunkSize <= 0)
      throw new CorellaError('BAD_CONFIG', `chunkSize must be a positive integer`);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (!Number.isInteger(r) || r < 0 || r >= split.size) {
        throw new CorellaError(
          'BAD_DATASET',
          `row ${r} is outside split ${split.name} (size ${split.size})`,
          { details: { row: r } },
        );
      }
    }
    // One computation per distinct sample id; rows already cached are skipped.
    const missing: number[] = [];
    const seen = new Set<number>();
    for (let i = 0; i < rows.length; i++) {
      const id = split.sampleIds[rows[i]];
      if (seen.has(id)) continue;
      seen.add(id);
      if (!this.cache.has(id)) missing.push(rows[i]);
    }
    const report: ExtractReport = {
      requested: rows.length,
      fromCache: seen.size - missing.length,
      computed: 0,
      chunksWritten: 0,
      promptTokens: 0,
      evaluatedTokens: 0,
      seconds: 0,
    };
    if (missing.length > 0) await this.compute(split, items, missing, opts, chunkSize, report, t0);

    const hiddenDim = this.cache.hiddenDim ?? this.scorer?.hiddenDim ?? 0;
    const n = rows.length;
    let out: LlmFeatures = {
      modelSha256: this.modelSha256,
      template: this.template.name,
      hiddenDim,
      sampleIds: new Uint32Array(n),
      pYes: new Float32Array(n),
      logOdds: new Float32Array(n),
      hidden: new Float32Array(n * hiddenDim),
    };
    for (let i = 0; i < n; i++) {
      const id = split.sampleIds[rows[i]];
      out.sampleIds[i] = id;
      if (!this.cache.copyInto(id, i, out, hiddenDim))
        throw new Error(`internal: sample ${id} missing after extraction`);
    }
    if (this.config.itemAffinity) out = await this.appendAffinity(split, items, rows, out, opts);
    report.seconds = (performance.now() - t0) / 1000;
    this.lastReport = report;
    return out;
  }

  private async compute(
    split: EncodedSplit,
    items: ItemTable,
    missing: number[],
    opts: ExtractOptions,
    chunkSize: number,
    report: ExtractReport,
    t0: number,
  ): Promise<void> {
    throwIfAborted(opts.signal);
    const { scorer, builder } = await this.ensureModel();
    // Users together, in time order: consecutive prompts then share the longest KV-cached prefix.
    missing.sort(
      (a, b) =>
        split.userRows[a] - split.userRows[b] ||
        split.timestamps[a] - split.timestamps[b] ||
        split.sampleIds[a] - split.sampleIds[b],
    );
    // Fail on a prompt that can never fit before doing any work.
    for (const r of missing) builder.checkFits(split, items, r);

    const total = missing.length;
    let done = 0;
    let lastReport = 0;
    const hiddenDim = scorer.hiddenDim;
    const progress = async (force: boolean, checkpoint?: string): Promise<void> => {
      if (!opts.onProgress) return;
      const now = performance.now();
      if (!force && now - lastReport < 1000) return;
      lastReport = now;
      const secs = Math.max((now - t0) / 1000, 1e-9);
      const rate = done / secs;
      const p: Progress = {
        stage: 'llm-features',
        done,
        total,
        samplesPerSec: rate,
        tokensPerSec: report.promptTokens / secs,
        etaSec: rate > 0 ? (total - done) / rate : undefined,
        checkpoint,
        message: `${report.fromCache} cached, ${report.evaluatedTokens} tokens evaluated`,
      };
      await opts.onProgress(p);
    };

    for (let start = 0; start < total; start += chunkSize) {
      const chunkRows = missing.slice(start, start + chunkSize);
      const prompts = chunkRows.map((r) => builder.buildForRow(split, items, r).tokens);
      const byUser = new Map<number, number[]>();
      chunkRows.forEach((r, i) => {
        const u = split.userRows[r];
        const g = byUser.get(u);
        if (g) g.push(i);
        else byUser.set(u, [i]);
      });
      const m = chunkRows.length;
      const chunk = {
        sampleIds: new Uint32Array(m),
        pYes: new Float32Array(m),
        logOdds: new Float32Array(m),
        hidden: new Float32Array(m * hiddenDim),
        hiddenDim,
      };
      const finished: boolean[] = new Array<boolean>(m).fill(false);
      try {
        await scorer.score(
          prompts,
          {
            reusePrefix: opts.reusePrefix ?? true,
            signal: opts.signal,
            onScored: async (i, s, evaluated) => {
              chunk.sampleIds[i] = split.sampleIds[chunkRows[i]];
              chunk.pYes[i] = s.pYes;
              chunk.logOdds[i] = s.logOdds;
              if (hiddenDim > 0 && s.hidden) chunk.hidden.set(s.hidden, i * hiddenDim);
              finished[i] = true;
              done++;
              report.computed++;
              report.promptTokens += prompts[i].length;
              report.evaluatedTokens += evaluated;
              await progress(false);
            },
          },
          [...byUser.values()],
        );
      } catch (e) {
        // Cancelled between samples: keep what is complete as a (smaller) whole chunk, then stop.
        if (opts.signal?.aborted) await this.savePartial(chunk, finished, report);
        throw e;
      }
      const sha = await this.cache.append(chunk);
      report.chunksWritten++;
      await progress(true, sha);
      await yieldToEventLoop();
    }
  }

  private async savePartial(
    chunk: {
      sampleIds: Uint32Array;
      pYes: Float32Array;
      logOdds: Float32Array;
      hidden: Float32Array;
      hiddenDim: number;
    },
    finished: boolean[],
    report: ExtractReport,
  ): Promise<void> {
    const idx = finished.flatMap((f, i) => (f ? [i] : []));
    if (idx.length === 0) return;
    const d = chunk.hiddenDim;
    const part = {
      sampleIds: Uint32Array.from(idx, (i) => chunk.sampleIds[i]),
      pYes: Float32Array.from(idx, (i) => chunk.pYes[i]),
      logOdds: Float32Array.from(idx, (i) => chunk.logOdds[i]),
      hidden: new Float32Array(idx.length * d),
      hiddenDim: d,
    };
    idx.forEach((i, j) => part.hidden.set(chunk.hidden.subarray(i * d, (i + 1) * d), j * d));
    await this.cache.append(part);
    report.chunksWritten++;
  }

  /**
   * Centred unit item vectors (the inputs of the item-affinity features) for item rows, from the item cache,
   * computing the missing ones; and the centre they are taken about. For live serving, whose samples are
   * not split rows: the vectors are exactly the ones `extract` compares.
   */
  async itemUnitVectors(
    items: ItemTable,
    rows: ArrayLike<number>,
    opts: ExtractOptions = {},
  ): Promise<{ centre: Float64Array; vectors: Map<number, Float64Array> }> {
    const aff = this.config.itemAffinity;
    if (!aff) throw new CorellaError('BAD_CONFIG', 'item vectors need llm.itemAffinity');
    const entry = await this.itemCache(items);
    const refs = referenceItemRows(items.ids.length, aff.referenceItems);
    const need = new Set<number>(entry.centre ? [] : refs);
    for (let i = 0; i < rows.length; i++) need.add(rows[i]);
    const missing = [...need].filter((it) => !entry.cache.has(it)).sort((a, b) => a - b);
    if (missing.length > 0) await this.computeItemVectors(items, missing, entry.cache, opts);
    const d = entry.cache.hiddenDim ?? 0;
    const scratch = { pYes: new Float32Array(1), logOdds: new Float32Array(1), hidden: new Float32Array(d) };
    const raw = (it: number): Float32Array => {
      if (!entry.cache.copyInto(it, 0, scratch, d)) throw new Error(`internal: item ${it} has no vector`);
      return scratch.hidden.slice();
    };
    entry.centre ??= centreOf(refs.map(raw), d);
    const centre = entry.centre;
    const vectors = new Map<number, Float64Array>();
    for (let i = 0; i < rows.length; i++)
      if (!vectors.has(rows[i])) vectors.set(rows[i], centredUnit(raw(rows[i]), centre));
    return { centre, vectors };
  }

  /** The features with each row's item-affinity features (LlmFeatures.affinity, AFFINITY_FEATURES order). */
  private async appendAffinity(
    split: EncodedSplit,
    items: ItemTable,
    rows: ArrayLike<number>,
    f: LlmFeatures,
    opts: ExtractOptions,
  ): Promise<LlmFeatures> {
    const aff = this.config.itemAffinity!;
    const windows = Array.from({ length: rows.length }, (_, i) =>
      aff.historyItems === undefined
        ? affinityWindow(split, rows[i], this.config.maxHistoryItems, this.config.historyBlock)
        : affinityWindow(split, rows[i], aff.historyItems, 1),
    );
    const need: number[] = [];
    for (let i = 0; i < rows.length; i++) need.push(split.targetItemRows[rows[i]], ...windows[i].items);
    const { vectors } = await this.itemUnitVectors(items, need, opts);
    const vec = (it: number): Float64Array => vectors.get(it)!;
    const k = AFFINITY_FEATURES.length;
    const affinity = new Float32Array(rows.length * k);
    for (let i = 0; i < rows.length; i++) {
      const w = windows[i];
      affinity.set(affinityFeatures(vec(split.targetItemRows[rows[i]]), w.items.map(vec), w.ratings), i * k);
    }
    return { ...f, affinity };
  }

  /**
   * Item vectors are cached per model and item prompt, under a fingerprint of the item titles (item rows are
   * only meaningful within one item table).
   */
  private async itemCache(items: ItemTable): Promise<{ cache: LlmFeatureCache; centre?: Float64Array }> {
    let fp = this.itemFingerprints.get(items);
    if (!fp) {
      fp = sha256Hex(items.titles.join('\u0000'));
      this.itemFingerprints.set(items, fp);
    }
    let entry = this.itemCaches.get(fp);
    if (!entry) {
      const aff = this.config.itemAffinity!;
      const cache = new LlmFeatureCache(this.store, {
        namespace: `items:${fp}`,
        modelSha256: this.key.modelSha256,
        loraSha256: this.key.loraSha256,
        loraScale: this.key.loraScale,
        template: 'item-affinity',
        templateText: `${aff.prompt}\u0000referenceItems:${aff.referenceItems}`,
        answers: this.key.answers,
        contextSize: this.key.contextSize,
        targetReserveTokens: 0,
        hidden: true,
        flashAttention: this.key.flashAttention,
      });
      await cache.load();
      entry = { cache };
      this.itemCaches.set(fp, entry);
    }
    return entry;
  }

  private async computeItemVectors(
    items: ItemTable,
    missing: number[],
    cache: LlmFeatureCache,
    opts: ExtractOptions,
  ): Promise<void> {
    throwIfAborted(opts.signal);
    const { scorer, builder } = await this.ensureModel();
    const d = scorer.hiddenDim;
    if (d === 0) throw new CorellaError('BAD_CONFIG', 'itemAffinity needs hidden-state extraction');
    const prompt = this.config.itemAffinity!.prompt;
    const t0 = performance.now();
    const chunkSize = 256;
    for (let start = 0; start < missing.length; start += chunkSize) {
      const part = missing.slice(start, start + chunkSize);
      const prompts = part.map((it) => builder.standalone(itemPromptText(prompt, items.titles[it] ?? '')));
      const scores = await scorer.score(prompts, { reusePrefix: true, signal: opts.signal });
      const m = part.length;
      const chunk = {
        sampleIds: Uint32Array.from(part),
        pYes: Float32Array.from(scores, (s) => s.pYes),
        logOdds: Float32Array.from(scores, (s) => s.logOdds),
        hidden: new Float32Array(m * d),
        hiddenDim: d,
      };
      scores.forEach((s, i) => s.hidden && chunk.hidden.set(s.hidden, i * d));
      const sha = await cache.append(chunk);
      const done = Math.min(missing.length, start + chunkSize);
      const secs = Math.max((performance.now() - t0) / 1000, 1e-9);
      await opts.onProgress?.({
        stage: 'llm-item-vectors',
        done,
        total: missing.length,
        samplesPerSec: done / secs,
        checkpoint: sha,
        message: `item vectors for the affinity features (${done}/${missing.length})`,
      });
      await yieldToEventLoop();
    }
  }

  async dispose(): Promise<void> {
    await this.scorer?.dispose();
    await this.llm?.dispose();
    this.scorer = undefined;
    this.llm = undefined;
  }
}
