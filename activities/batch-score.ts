import { Context } from '@temporalio/activity';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { canonicalJson } from '../ml/canonical.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { CorellaError, DatasetError } from '../ml/errors.js';
import { throwIfAborted } from '../ml/progress.js';
import {
  DEFAULT_MAX_REQUEST_CANDIDATES,
  formatResultLine,
  groupRequests,
  parseBatch,
  planBatch,
  toScoreRequest,
  verifyChunkOutput,
  type ChunkSpec,
} from '../ml/serving/jsonl-batch.js';
import { ServingEngine, type ServingBundle } from '../ml/serving/engine.js';
import type { LlmBudget, Scorer, ScoreResult, ServingLimits } from '../ml/serving/types.js';
import type { ActivityContext } from './context.js';
import { activityRunOptions } from './heartbeat.js';
import { resolveModelVersion, servingBundleOf } from './serving-bundle.js';
import type { CorellaActivities, RouteCounts, ScorePlanSummary } from './types.js';

/** The plan artifact: everything a chunk needs besides the input, pinned when the run was planned. */
export interface StoredScorePlan {
  format: 'corella-score-plan/1';
  inputSha256: string;
  inputName: string;
  /** The ref as given, and the version and threshold it named at planning time (every chunk uses these). */
  model: string;
  modelVersion: string;
  threshold: number;
  chunkRows: number;
  /** Cap on one request's candidates (the engine's slate limit). */
  maxRequest: number;
  rows: number;
  requests: number;
  chunks: ChunkSpec[];
}

/** What a finished chunk's named pointer holds. */
interface ChunkPointer {
  outputSha256: string;
  rows: number;
  routes: RouteCounts;
}

/** Requests of one chunk scored concurrently: their CRM rows share micro-batches; the LLM takes them in turn. */
const REQUESTS_IN_FLIGHT = 8;

/**
 * Batch work waits for the LLM: no deadline (Infinity) and a queue no batch fills (REQUESTS_IN_FLIGHT per
 * chunk, times the chunks a worker runs at once, which share the engine). The limits that protect online
 * latency would only turn routed rows into fallbacks here, and a batch score must equal the served score of
 * the same row. Cancellation still stops it, through the activity's signal.
 */
export const BATCH_BUDGET: LlmBudget = {
  maxConcurrency: 1,
  maxQueue: 10_000,
  defaultBudgetMs: Infinity,
};

export type ScorerLoader = (
  store: ArtifactStore,
  bundle: ServingBundle,
  opts: { budget: LlmBudget; limits: Partial<ServingLimits>; log(msg: string): void },
) => Promise<Scorer>;

const loadServingEngine: ScorerLoader = (store, bundle, opts) => ServingEngine.load(store, bundle, opts);

/**
 * One loaded engine per worker process, kept between chunks (loading the dataset, the CRM and the LLM costs
 * far more than scoring a chunk) and released after a quiet minute or when another model is asked for.
 */
class ScorerCache {
  private entry: { key: string; scorer: Promise<Scorer>; users: number; stale: boolean } | undefined;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly load: ScorerLoader,
    private readonly idleMs = 60_000,
  ) {}

  async use<T>(store: ArtifactStore, bundle: ServingBundle, fn: (s: Scorer) => Promise<T>): Promise<T> {
    const key = canonicalJson(bundle);
    if (this.entry?.key !== key) {
      this.retire();
      const scorer = this.load(store, bundle, {
        budget: BATCH_BUDGET,
        limits: { maxCandidates: DEFAULT_MAX_REQUEST_CANDIDATES },
        log: warn,
      });
      this.entry = { key, scorer, users: 0, stale: false };
    }
    const entry = this.entry!;
    if (this.idle) clearTimeout(this.idle);
    entry.users++;
    try {
      return await fn(await entry.scorer);
    } catch (e) {
      // A scorer that failed to load is not kept: the next attempt loads it again.
      if (
        this.entry === entry &&
        (await entry.scorer.then(
          () => false,
          () => true,
        ))
      )
        this.entry = undefined;
      throw e;
    } finally {
      entry.users--;
      if (entry.stale && entry.users === 0) void dispose(entry.scorer);
      else if (this.entry === entry && entry.users === 0) {
        this.idle = setTimeout(() => this.retire(), this.idleMs);
        this.idle.unref();
      }
    }
  }

  /** Drops the loaded scorer (released once its users are done): the next use loads it again. */
  invalidate(): void {
    this.retire();
  }

  private retire(): void {
    const old = this.entry;
    this.entry = undefined;
    if (!old) return;
    old.stale = true;
    if (old.users === 0) void dispose(old.scorer);
  }
}

/** The engine may log after the activity that loaded it has ended: fall back to stderr then. */
function warn(msg: string): void {
  try {
    Context.current().log.warn(msg);
  } catch {
    process.stderr.write(`corella score: ${msg}\n`);
  }
}

async function dispose(scorer: Promise<Scorer>): Promise<void> {
  try {
    await (await scorer).dispose();
  } catch {
    // a scorer that never loaded has nothing to release
  }
}

/** The engine names request fields (`user.features.age`); the input file calls them `features.age`. */
function batchField(requestField: string): string {
  return requestField.replace(/^user\.features\./, 'features.').replace(/^user\.id$/, 'user');
}

/** Named pointers live under the workflow id and the plan, so a re-run with another model never reuses one. */
function chunkPointerName(workflowId: string, planSha256: string, chunk: number): string {
  return `score/${workflowId}/${planSha256.slice(0, 16)}/chunk-${chunk}`;
}

async function loadPlan(store: ArtifactStore, planSha256: string): Promise<StoredScorePlan> {
  const plan = JSON.parse((await store.get(planSha256)).toString('utf8')) as StoredScorePlan;
  if (plan.format !== 'corella-score-plan/1') {
    throw new CorellaError('ARTIFACT_CORRUPT', `artifact ${planSha256} is not a batch scoring plan`);
  }
  return plan;
}

async function readRange(path: string, start: number, end: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(end - start);
    const { bytesRead } = await fh.read(buf, 0, buf.length, start);
    if (bytesRead !== buf.length)
      throw new CorellaError('ARTIFACT_CORRUPT', `${path} is shorter than its plan`);
    return buf;
  } finally {
    await fh.close();
  }
}

/**
 * Batch scoring of a JSON-lines artifact through the serving engine: plan the chunks, score each chunk (one
 * activity, resumable: a finished chunk is a named pointer and is never scored twice), join the outputs.
 */
export function batchScoreActivities(
  ctx: ActivityContext,
  deps: { loadScorer?: ScorerLoader } = {},
): Pick<CorellaActivities, 'planScore' | 'scoreChunk' | 'finishScore'> {
  const scorers = new ScorerCache(deps.loadScorer ?? loadServingEngine);
  // The input's hash is checked once per process; each chunk then reads only its own byte range.
  const verifiedInputs = new Map<string, Promise<string>>();
  const inputPath = (sha: string): Promise<string> => {
    let p = verifiedInputs.get(sha);
    if (!p) {
      p = ctx.store.localPath(sha);
      p.catch(() => verifiedInputs.delete(sha));
      verifiedInputs.set(sha, p);
    }
    return p;
  };

  return {
    async planScore({ inputSha256, inputName, model, chunkRows }): Promise<ScorePlanSummary> {
      if (!(Number.isInteger(chunkRows) && chunkRows > 0)) {
        throw new CorellaError('BAD_CONFIG', `chunkRows must be a positive integer, got ${chunkRows}`);
      }
      const name = inputName ?? `artifact ${inputSha256}`;
      // Validated again here (a workflow may be started by other clients than the CLI), in the same pass
      // that plans the chunks; no candidate is kept, so a large file costs its bytes only.
      const { rows, maxRequest, chunks } = planBatch(await ctx.store.get(inputSha256), name, chunkRows);
      const version = await resolveModelVersion(ctx.db, model);
      if (!version) {
        throw new CorellaError(
          'DATA_NOT_AVAILABLE',
          `no model version ${/^\d+$/.test(model) ? model : `has the alias ${model}`}`,
        );
      }
      const bundle = await servingBundleOf(ctx.db, ctx.home, version, ctx.store);
      const plan: StoredScorePlan = {
        format: 'corella-score-plan/1',
        inputSha256,
        inputName: name,
        model,
        modelVersion: bundle.modelVersion,
        threshold: bundle.threshold,
        chunkRows,
        maxRequest,
        rows,
        requests: chunks.reduce((n, c) => n + c.requests, 0),
        chunks,
      };
      const ref = await ctx.store.put(JSON.stringify(plan));
      return {
        planSha256: ref.sha256,
        rows: plan.rows,
        requests: plan.requests,
        chunks: chunks.length,
        modelVersion: plan.modelVersion,
        threshold: plan.threshold,
      };
    },

    async scoreChunk({ workflowId, inputSha256, planSha256, chunk }) {
      const attempt = Context.current().info.attempt;
      const pointerName = chunkPointerName(workflowId, planSha256, chunk);
      const done = await ctx.store.getNamed(pointerName);
      if (done) {
        const p = JSON.parse(done.toString('utf8')) as ChunkPointer;
        if (await ctx.store.has(p.outputSha256)) return { chunk, ...p, reused: true, attempt };
      }
      const plan = await loadPlan(ctx.store, planSha256);
      const spec = plan.chunks[chunk];
      if (!spec || plan.inputSha256 !== inputSha256) {
        throw new CorellaError(
          'BAD_CONFIG',
          `plan ${planSha256} has no chunk ${chunk} of input ${inputSha256}`,
        );
      }
      const data = await readRange(await inputPath(inputSha256), spec.startByte, spec.endByte);
      const { candidates } = parseBatch(data, plan.inputName, spec.startLine);
      const requests = groupRequests(candidates, plan.maxRequest);
      if (candidates.length !== spec.endLine - spec.startLine || requests.length !== spec.requests) {
        throw new CorellaError(
          'ARTIFACT_CORRUPT',
          `chunk ${chunk} of ${plan.inputName} does not match its plan`,
        );
      }

      // The version is pinned by the plan; its bundle is resolved here, so LLM paths are this worker's own.
      const version = await resolveModelVersion(ctx.db, plan.modelVersion);
      if (!version)
        throw new CorellaError('DATA_NOT_AVAILABLE', `model version ${plan.modelVersion} is gone`);
      const bundle = {
        ...(await servingBundleOf(ctx.db, ctx.home, version, ctx.store)),
        threshold: plan.threshold,
      };

      const run = activityRunOptions('score');
      const routes: RouteCounts = { crm: 0, llm: 0, 'crm-fallback': 0 };
      const texts: string[][] = new Array<string[]>(requests.length);
      let scored = 0;
      await scorers.use(ctx.store, bundle, async (scorer) => {
        // A few requests in flight at once: their CRM rows share one micro-batched pass while the LLM
        // takes them one at a time. Each request's lines land in its own slot, so the output keeps input order.
        let next = 0;
        let stopped = false;
        const lane = async (): Promise<void> => {
          try {
            await work();
          } catch (e) {
            stopped = true;
            throw e;
          }
        };
        const work = async (): Promise<void> => {
          while (next < requests.length && !stopped) {
            throwIfAborted(run.signal);
            const k = next++;
            const group = candidates.slice(requests[k].start, requests[k].end);
            let res: ScoreResult;
            try {
              res = await scorer.score(toScoreRequest(group, BATCH_BUDGET.defaultBudgetMs), {
                signal: run.signal,
              });
            } catch (e) {
              // What only the model can judge (a user attribute it does not have) is still a bad input line.
              if (e instanceof CorellaError && e.code === 'BAD_REQUEST') {
                throw new DatasetError(e.message, {
                  file: plan.inputName,
                  line: group[0].line,
                  field: typeof e.details.field === 'string' ? batchField(e.details.field) : undefined,
                });
              }
              throw e;
            }
            throwIfAborted(run.signal);
            if (res.candidates.length !== group.length) {
              throw new Error(`the engine answered ${res.candidates.length} candidates for ${group.length}`);
            }
            // A batch has no latency to protect: a routed row the LLM did not answer fails the attempt (it is
            // retried), never silently replaced by the CRM. Only a version without an LLM answers routed rows
            // with the CRM, as serving does; an LLM that should be there but did not load is loaded afresh.
            const reason = res.llm.fallbackReason;
            if (res.llm.fallbacks > 0 && !(reason === 'llm-unavailable' && bundle.llm === null)) {
              if (reason === 'llm-unavailable') scorers.invalidate();
              throw new CorellaError(
                'SERVICE_UNAVAILABLE',
                `the LLM branch failed ${res.llm.fallbacks} routed candidates of line ${group[0].line} (${reason})`,
                { retryable: true },
              );
            }
            texts[k] = group.map((c, i) => formatResultLine(c, res.candidates[i]));
            for (const c of res.candidates) routes[c.route]++;
            scored += group.length;
            void run.onProgress?.({
              stage: 'score',
              done: scored,
              total: candidates.length,
              message: `chunk ${chunk}`,
            });
          }
        };
        // Settled, not raced: a failed lane stops the others before the engine is handed back.
        const settled = await Promise.allSettled(
          Array.from({ length: Math.min(REQUESTS_IN_FLIGHT, requests.length) }, lane),
        );
        const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      });
      const lines = texts.flat();
      const text = `${lines.join('\n')}\n`;
      verifyChunkOutput(text, { ...spec });
      const out = await ctx.store.put(text);
      // The pointer is written last: a chunk either has all its lines stored under it, or counts as not done.
      const pointer: ChunkPointer = { outputSha256: out.sha256, rows: lines.length, routes };
      await ctx.store.putNamed(pointerName, JSON.stringify(pointer));
      return { chunk, ...pointer, reused: false, attempt };
    },

    async finishScore({ workflowId, planSha256 }) {
      const plan = await loadPlan(ctx.store, planSha256);
      const tmpDir = join(ctx.home, 'tmp');
      await mkdir(tmpDir, { recursive: true });
      const tmp = join(tmpDir, `score-${process.pid}-${randomBytes(6).toString('hex')}.jsonl`);
      // Streamed to a file and stored from there: the output of a large batch need not fit in memory twice.
      const ws = createWriteStream(tmp);
      let rows = 0;
      try {
        for (const spec of plan.chunks) {
          throwIfAborted(Context.current().cancellationSignal);
          const raw = await ctx.store.getNamed(chunkPointerName(workflowId, planSha256, spec.index));
          if (!raw) throw new CorellaError('DATA_NOT_AVAILABLE', `chunk ${spec.index} has not been scored`);
          const p = JSON.parse(raw.toString('utf8')) as ChunkPointer;
          const text = (await ctx.store.get(p.outputSha256)).toString('utf8');
          rows += verifyChunkOutput(text, spec);
          if (!ws.write(text)) await once(ws, 'drain');
        }
        ws.end();
        await once(ws, 'finish');
        if (rows !== plan.rows) throw new Error(`joined ${rows} rows, the input has ${plan.rows}`);
        const ref = await ctx.store.putFile(tmp);
        // The result's blobs are referenced by the workflow result alone, which `corella gc` cannot see: a
        // named entry keeps the input, the plan and the output alive until the batch's pointers are removed.
        await ctx.store.putNamed(
          `score-results/${workflowId}/${planSha256.slice(0, 16)}`,
          JSON.stringify({ inputSha256: plan.inputSha256, planSha256, outputSha256: ref.sha256 }),
        );
        return { outputSha256: ref.sha256, rows, bytes: ref.bytes };
      } finally {
        ws.destroy();
        await rm(tmp, { force: true });
      }
    },
  };
}
