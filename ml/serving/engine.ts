/**
 * The serving engine: one model version loaded for online scoring. The CRM scores every candidate
 * (micro-batched with concurrent requests); candidates whose routing entropy is above the version's
 * calibrated threshold go to the LLM branch within the per-process LLM budget, and keep the CRM's answer
 * (`crm-fallback`) when the budget or the LLM fails them. Routing is ml/corella/routing.ts's, with the
 * version's cold-item setting, so a request rebuilt from a stored sample gets the offline HybridPredictor's
 * route and probability.
 */
import type { ArtifactStore } from '../artifacts/store.js';
import { LlmAdapter } from '../corella/adapter.js';
import { LoraHead, loadLlmBranchModel, type LlmBranchModel } from '../corella/llm-branch-model.js';
// The offline rule itself, so a served answer routes exactly as evaluation and calibration counted it.
import { isRouted, routingEntropies } from '../corella/routing.js';
import { loadCrm } from '../crm/index.js';
import type { CrmModel } from '../crm/types.js';
import { loadDataset, loadManifest } from '../data/load.js';
import type { CtrDataset } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { LlmConfig } from '../llm/config.js';
import { initTf } from '../tf/index.js';
import { CrmBatcher, type MicroBatchOptions } from './crm-batcher.js';
import { LlmLimiter, type FallbackReason } from './llm-budget.js';
import { OnlineLlm, type OnlineLlmOptions } from './online-llm.js';
import { newSplit, RequestEncoder, type HistoryEntry, type ItemInfo } from './request-encoder.js';
import { SplitPool } from './split-pool.js';
import type {
  CandidateScore,
  LlmBudget,
  LlmUsage,
  Route,
  ScoreRequest,
  ScoreResult,
  Scorer,
  ServingLimits,
} from './types.js';

export interface ServingBundle {
  modelVersion: string;
  datasetVersionId: string;
  crmArtifact: string;
  adapterArtifact: string;
  /** Stored entropy threshold: ln 2 (or more) routes nothing, a negative one routes everything. */
  threshold: number;
  coldItems: boolean;
  /** null = CRM only. */
  llm: LlmConfig | null;
}

export interface ServingEngineOptions {
  budget?: Partial<LlmBudget>;
  limits?: Partial<ServingLimits>;
  microBatch?: MicroBatchOptions;
  /** Overrides the bundle's threshold, e.g. +Infinity for CRM-only serving. */
  threshold?: number;
  /** llama.cpp sequences for the per-user prefix LRU (default max(4, maxConcurrency)). */
  llmSequences?: number;
  log?(msg: string): void;
}

export const DEFAULT_LIMITS: ServingLimits = { maxCandidates: 500, maxHistory: 1000 };

/** Counters since load, for metrics and benchmarks. */
export interface EngineStats {
  requests: number;
  candidates: number;
  routed: number;
  answered: number;
  fallbacks: number;
  promptTokens: number;
  evaluatedTokens: number;
  /** Tokens LLM jobs evaluated after their request had stopped waiting (deadline): paid for, unused. */
  discardedTokens?: number;
}

interface LlmOutcome {
  /** Per candidate asked for: the LLM branch's probability, NaN where it did not answer. */
  p: Float32Array;
  answered: number;
  promptTokens: number;
  evaluatedTokens: number;
  /** Why some (or all) candidates were not answered. */
  reason?: FallbackReason;
  error?: unknown;
}

function badRequest(field: string, message: string): CorellaError {
  return new CorellaError('BAD_REQUEST', `${field}: ${message}`, { details: { field } });
}

export class ServingEngine implements Scorer {
  readonly stats: EngineStats = {
    requests: 0,
    candidates: 0,
    routed: 0,
    answered: 0,
    fallbacks: 0,
    promptTokens: 0,
    evaluatedTokens: 0,
    discardedTokens: 0,
  };
  readonly limits: ServingLimits;
  readonly limiter: LlmLimiter;
  readonly batcher: CrmBatcher;
  readonly encoder: RequestEncoder;
  /** The encoded rows of requests, reused once scored (split-pool.ts says why). */
  readonly splits: SplitPool;
  /** 0..n−1, grown on demand: the row list routing reads, shared by every request. */
  private identity = new Int32Array(0);
  private disposed = false;
  /** Requests being scored: dispose() lets them finish (a hot swap retires an engine under load). */
  private readonly inflight = new Set<Promise<unknown>>();

  private constructor(
    readonly modelVersion: string,
    readonly threshold: number,
    readonly coldItems: boolean,
    dataset: CtrDataset,
    readonly crm: CrmModel,
    private readonly adapter: LlmBranchModel | undefined,
    readonly llm: OnlineLlm | undefined,
    /** Why the LLM branch is not available (undefined when it is). */
    readonly llmUnavailable: string | undefined,
    opts: ServingEngineOptions,
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.limiter = new LlmLimiter(opts.budget);
    this.batcher = new CrmBatcher(crm, opts.microBatch);
    this.splits = new SplitPool((n) => newSplit(dataset.featureMap, n));
    this.encoder = new RequestEncoder(dataset, { pool: this.splits });
  }

  static async load(
    store: ArtifactStore,
    bundle: ServingBundle,
    opts: ServingEngineOptions = {},
  ): Promise<ServingEngine> {
    const log = opts.log ?? (() => undefined);
    const threshold = opts.threshold ?? bundle.threshold;
    if (typeof threshold !== 'number' || Number.isNaN(threshold)) {
      throw new CorellaError('BAD_CONFIG', `threshold: expected a number of nats, got ${String(threshold)}`, {
        details: { field: 'threshold' },
      });
    }
    // Checked before anything is loaded, so a bad option costs nothing.
    const budget = new LlmLimiter(opts.budget).budget;
    await initTf(undefined, opts.log ?? ((m) => console.error(m)));
    const manifest = await loadManifest(store, bundle.datasetVersionId);
    if (!manifest) {
      throw new CorellaError(
        'DATA_NOT_AVAILABLE',
        `dataset version ${bundle.datasetVersionId} of model version ${bundle.modelVersion} is not in the artifact store`,
        { details: { datasetVersionId: bundle.datasetVersionId } },
      );
    }
    const dataset = await loadDataset(store, manifest);
    const crm = await loadCrm(store, bundle.crmArtifact, dataset.featureMap);
    let adapter: LlmAdapter | LoraHead | undefined;
    let llm: OnlineLlm | undefined;
    let why: string | undefined;
    if (!bundle.llm) why = 'the model version has no LLM configured';
    else {
      // Without the LLM the engine still serves (CRM answers, routed candidates fall back), so a broken or
      // missing model file costs the LLM half only.
      try {
        adapter = loadLlmBranchModel(await store.get(bundle.adapterArtifact));
        // A LoRA version's head reads the log-odds of the base model run with its GGUF LoRA.
        const llmConfig =
          adapter instanceof LoraHead && !bundle.llm.lora
            ? {
                ...bundle.llm,
                lora: { path: await store.localPath(adapter.file.loraSha256, 'GGUF LoRA adapter'), scale: 1 },
              }
            : bundle.llm;
        // At least one sequence per concurrent job, so a job never waits for a sequence inside its slot.
        const sequences = Math.max(opts.llmSequences ?? 4, budget.maxConcurrency);
        const llmOpts: OnlineLlmOptions = { sequences };
        llm = await OnlineLlm.load(llmConfig, store, dataset.items, llmOpts);
        if (adapter instanceof LoraHead) adapter.checkBase(llm.modelSha256, 'the served model');
        else if (adapter.featureWidth !== llm.featureDim) {
          throw new CorellaError(
            'BAD_CONFIG',
            `the adapter reads ${adapter.featureWidth} LLM features but the LLM gives ${llm.featureDim}`,
          );
        }
      } catch (e) {
        why = `LLM branch unavailable: ${e instanceof Error ? e.message : String(e)}`;
        adapter?.dispose();
        await llm?.dispose();
        adapter = undefined;
        llm = undefined;
      }
    }
    if (why) log(`model version ${bundle.modelVersion}: ${why}; serving CRM answers only`);
    try {
      return new ServingEngine(
        bundle.modelVersion,
        threshold,
        bundle.coldItems,
        dataset,
        crm,
        adapter,
        llm,
        why,
        opts,
      );
    } catch (e) {
      crm.dispose();
      adapter?.dispose();
      await llm?.dispose();
      throw e;
    }
  }

  llmQueueDepth(): number {
    return this.limiter.queueDepth;
  }

  observe(event: { user: string; item: string; rating: number; ts: number }): void {
    this.encoder.observe(event);
  }

  private validate(req: ScoreRequest): void {
    if (!req || typeof req !== 'object') throw badRequest('body', 'expected a score request object');
    if (!req.user || typeof req.user.id !== 'string' || req.user.id.length === 0)
      throw badRequest('user.id', 'expected a non-empty string');
    if (!Array.isArray(req.candidates)) throw badRequest('candidates', 'expected an array');
    if (req.candidates.length > this.limits.maxCandidates) {
      throw badRequest(
        'candidates',
        `${req.candidates.length} candidates exceed the limit of ${this.limits.maxCandidates}`,
      );
    }
    req.candidates.forEach((c, i) => {
      if (!c || typeof c.item !== 'string') throw badRequest(`candidates[${i}].item`, 'expected a string');
    });
    if (req.history !== undefined) {
      if (!Array.isArray(req.history)) throw badRequest('history', 'expected an array');
      if (req.history.length > this.limits.maxHistory) {
        throw badRequest(
          'history',
          `${req.history.length} events exceed the limit of ${this.limits.maxHistory}`,
        );
      }
      req.history.forEach((e, i) => {
        if (!e || typeof e.item !== 'string') throw badRequest(`history[${i}].item`, 'expected a string');
        if (e.rating !== undefined && !Number.isFinite(e.rating))
          throw badRequest(`history[${i}].rating`, 'expected a finite number');
      });
    }
    if (req.budgetMs !== undefined && !(typeof req.budgetMs === 'number' && req.budgetMs >= 0))
      throw badRequest('budgetMs', 'expected a number ≥ 0');
  }

  score(req: ScoreRequest, opts: { signal?: AbortSignal } = {}): Promise<ScoreResult> {
    return this.track(() => this.scoreNow(req, opts));
  }

  private track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.disposed)
      return Promise.reject(new CorellaError('SERVICE_UNAVAILABLE', 'the serving engine was disposed'));
    const p = fn();
    this.inflight.add(p);
    void p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  private rowsUpTo(n: number): Int32Array {
    if (this.identity.length < n) {
      this.identity = new Int32Array(Math.max(n, this.identity.length * 2));
      for (let i = 0; i < this.identity.length; i++) this.identity[i] = i;
    }
    return this.identity.subarray(0, n);
  }

  private async scoreNow(req: ScoreRequest, opts: { signal?: AbortSignal }): Promise<ScoreResult> {
    const t0 = performance.now();
    this.validate(req);
    const enc = this.encoder.encode(req);
    const n = enc.split.size;
    let pCrm: Float32Array;
    let h: Float32Array;
    const routed: number[] = [];
    let prompts: { history: HistoryEntry[]; targets: ItemInfo[] } | undefined;
    try {
      pCrm = await this.batcher.predict(enc.split);
      h = routingEntropies(pCrm, enc.split, this.rowsUpTo(n), this.coldItems);
      for (let i = 0; i < n; i++) if (isRouted(h[i], this.threshold)) routed.push(i);
      // The prompts' side is read off the rows before they go back to the pool.
      if (routed.length > 0) prompts = { history: enc.history, targets: routed.map((i) => enc.target(i)) };
    } finally {
      this.splits.release(enc.split);
    }
    const crmMs = performance.now() - t0;

    const usage: LlmUsage = {
      routed: routed.length,
      answered: 0,
      fallbacks: 0,
      promptTokens: 0,
      evaluatedTokens: 0,
    };
    let pLlm: Float32Array | undefined;
    let llmMs = 0;
    if (prompts) {
      const t1 = performance.now();
      const r = await this.runLlm(
        req,
        prompts,
        t0,
        req.budgetMs ?? this.limiter.budget.defaultBudgetMs,
        opts.signal,
      );
      llmMs = performance.now() - t1;
      pLlm = new Float32Array(n).fill(NaN);
      for (let k = 0; k < routed.length; k++) pLlm[routed[k]] = r.p[k];
      usage.answered = r.answered;
      usage.fallbacks = routed.length - r.answered;
      if (usage.fallbacks > 0) usage.fallbackReason = r.reason;
      usage.promptTokens = r.promptTokens;
      usage.evaluatedTokens = r.evaluatedTokens;
    }
    const candidates: CandidateScore[] = new Array<CandidateScore>(n);
    for (let i = 0; i < n; i++) {
      const answered = pLlm !== undefined && !Number.isNaN(pLlm[i]);
      const route: Route = answered ? 'llm' : isRouted(h[i], this.threshold) ? 'crm-fallback' : 'crm';
      const c: CandidateScore = {
        item: req.candidates[i].item,
        p: answered ? pLlm![i] : pCrm[i],
        route,
        entropy: h[i],
        pCrm: pCrm[i],
        cold: enc.cold[i],
      };
      if (answered) c.pLlm = pLlm![i];
      candidates[i] = c;
    }
    const s = this.stats;
    s.requests++;
    s.candidates += n;
    s.routed += usage.routed;
    s.answered += usage.answered;
    s.fallbacks += usage.fallbacks;
    s.promptTokens += usage.promptTokens;
    s.evaluatedTokens += usage.evaluatedTokens;
    return { candidates, timings: { totalMs: performance.now() - t0, crmMs, llmMs }, llm: usage };
  }

  /**
   * LLM-branch probabilities for the candidates `prompts.targets` (NaN where not answered). At a deadline
   * the prompts already scored still count: their candidates are answered, the rest fall back.
   */
  private async runLlm(
    req: ScoreRequest,
    prompts: { history: HistoryEntry[]; targets: ItemInfo[] },
    startedAt: number,
    budgetMs: number,
    signal: AbortSignal | undefined,
    bypassQueueLimit = false,
  ): Promise<LlmOutcome> {
    const none = (reason: FallbackReason, error?: unknown): LlmOutcome => ({
      p: new Float32Array(prompts.targets.length).fill(NaN),
      answered: 0,
      promptTokens: 0,
      evaluatedTokens: 0,
      reason,
      error,
    });
    const llm = this.llm;
    const adapter = this.adapter;
    if (!llm || !adapter) {
      this.limiter.countFallback('llm-unavailable');
      return none('llm-unavailable');
    }
    const targets = prompts.targets;
    const progress = llm.progress(targets.length);
    // Set when the request stops waiting: whatever the job evaluates after that is counted as discarded.
    const late: { from?: number } = {};
    const r = await this.limiter.run(
      async (sig) => {
        const f = await llm.features(req.user.id, prompts.history, targets, sig, progress).finally(() => {
          if (late.from !== undefined)
            this.stats.discardedTokens =
              (this.stats.discardedTokens ?? 0) + progress.evaluatedTokens - late.from;
        });
        return { failed: f.failed, error: f.error };
      },
      { budgetMs, startedAt, signal, bypassQueueLimit },
    );
    if (!r.ok) late.from = progress.evaluatedTokens;
    if (!r.ok && r.reason !== 'deadline') return none(r.reason, r.error);
    // At a deadline, a snapshot: the job may still be running and finishing prompts nobody waits for.
    const done = progress.finished();
    const reason: FallbackReason = r.ok ? 'llm-error' : 'deadline';
    const out = none(reason, r.ok ? r.value.error : undefined);
    if (done.length === 0) return out;
    try {
      const q = adapter.predict(progress.subset(done));
      done.forEach((i, k) => (out.p[i] = q[k]));
    } catch (e) {
      return none('llm-error', e);
    }
    out.answered = done.length;
    out.promptTokens = progress.promptTokens;
    out.evaluatedTokens = progress.evaluatedTokens;
    if (out.answered === targets.length) delete out.reason;
    return out;
  }

  /**
   * Computes the item vectors (item-affinity features) of the whole item table in small chunks, each only
   * while the LLM is otherwise idle, so that live requests find them cached. A no-op without item affinity.
   * Resolves with the number of item rows covered; stops early on `signal` or dispose().
   */
  async warmItemVectors(opts: { chunk?: number; signal?: AbortSignal } = {}): Promise<number> {
    const llm = this.llm;
    if (!llm?.usesItemVectors) return 0;
    // Small chunks: a request that arrives meanwhile waits for at most one chunk.
    const chunk = Math.max(1, opts.chunk ?? 4);
    const total = this.encoder.itemCount;
    let done = 0;
    while (done < total && !this.disposed && !opts.signal?.aborted) {
      if (this.limiter.running > 0 || this.limiter.queueDepth > 0) {
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      const rows = Array.from({ length: Math.min(chunk, total - done) }, (_, i) => done + i);
      const r = await this.limiter.run(() => llm.itemVectors(rows), {
        budgetMs: Infinity,
        bypassQueueLimit: true,
      });
      if (!r.ok) break;
      done += rows.length;
    }
    return done;
  }

  /**
   * The LLM branch's answer for every candidate, whatever the threshold says: what recalibration on served
   * traffic needs for rows the CRM answered. Not on a request path, so no deadline and no queue limit (it
   * still takes one of the LLM's concurrency slots). Throws when the LLM branch is not available.
   */
  shadowScore(req: ScoreRequest): Promise<{ item: string; pLlm: number }[]> {
    return this.track(() => this.shadowNow(req));
  }

  private async shadowNow(req: ScoreRequest): Promise<{ item: string; pLlm: number }[]> {
    this.validate(req);
    const enc = this.encoder.encode(req);
    const all = Array.from({ length: enc.split.size }, (_, i) => i);
    const prompts = { history: enc.history, targets: all.map((i) => enc.target(i)) };
    this.splits.release(enc.split);
    if (all.length === 0) return [];
    const r = await this.runLlm(req, prompts, performance.now(), Infinity, undefined, true);
    if (r.answered < all.length) {
      const cause = r.error instanceof Error ? `: ${r.error.message}` : '';
      throw new CorellaError(
        'SERVICE_UNAVAILABLE',
        `shadow scoring failed (${r.reason}${cause})${this.llmUnavailable ? `; ${this.llmUnavailable}` : ''}`,
        { retryable: r.reason !== 'llm-unavailable', cause: r.error },
      );
    }
    return all.map((i) => ({ item: req.candidates[i].item, pLlm: r.p[i] }));
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.allSettled([...this.inflight]);
    await this.batcher.drain();
    await this.limiter.close();
    this.crm.dispose();
    this.adapter?.dispose();
    await this.llm?.dispose();
  }
}
