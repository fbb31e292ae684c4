/**
 * The prediction log of the serving path: every scored candidate reaches the `predictions` table, off the
 * request path, and survives a Postgres outage or a killed server.
 *
 * `append` validates the entry and writes it to the spool (serve/spool.ts) synchronously: no database
 * round trip, no await, no throw, so the request path never waits on or fails because of the log. A
 * background flusher moves closed spool segments into Postgres in batches of `maxBatch` requests with the
 * idempotent `ServingRepository.recordServed`, and deletes a segment once all of it is stored. While
 * Postgres is unreachable (a connection error, as db/retry.ts recognises them) the flusher backs off and
 * the spool grows; once it is back the backlog drains in order. Whatever a previous process left in the
 * spool is drained the same way at open. An entry Postgres refuses for good (e.g. a version id it does not
 * know) would block its segment forever, so it is moved to `rejected.jsonl` beside the segments and
 * counted instead.
 *
 * The flusher (serve/spool-drainer.ts) runs in a worker thread (serve/prediction-log-worker.ts) with a
 * connection of its own: decoding spooled JSON, building the INSERTs and the pg protocol work were the
 * largest cost on the event loop that answers requests. This thread keeps the append, the rotation and the
 * counters, and tells the worker when to drain. When the worker cannot start (or no database URL is known)
 * the same drainer runs here instead. On a SIGKILL the worker dies with the process; whatever it was storing
 * is still in its segment, which is deleted only after its last batch committed, so the next process
 * replays it and the idempotent keys drop the rows that had committed.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Database } from '../db/connection.js';
import { validateServedRequest, type ServedRequestInput } from '../db/repositories/serving.js';
import type { CandidateScore, HistoryEvent } from '../ml/serving/types.js';
import type { FromWorker, ToWorker, WorkerData } from './prediction-log-worker.js';
import { Spool } from './spool.js';
import { encodeRecord, message, SpoolDrainer, type DrainProgress } from './spool-drainer.js';

export interface PredictionLogEntry {
  requestId: string;
  /** When the request arrived: a Date or epoch milliseconds. */
  at: Date | number;
  /** The served version's id (the engine's `modelVersion` string is accepted). */
  modelVersionId: number | string;
  /** The user id. */
  user: string;
  /** The history supplied with the request, or null when the server used the user's known one. */
  history: HistoryEvent[] | null;
  budgetMs: number | null;
  /** The routing threshold in force (+Infinity in CRM-only mode). */
  threshold: number;
  /**
   * Each candidate's latency, or (`latencyMs` here) one for the whole request: the server passes the
   * engine's candidate objects as they are, because copying 50 of them per request to add one field was a
   * quarter of the log's allocation (25 KB a 50-candidate slate, measured).
   */
  candidates: (CandidateScore & { latencyMs?: number })[];
  /** The request's latency, for candidates that carry none. */
  latencyMs?: number;
}

export interface PredictionLogOptions {
  db: Database;
  spoolDir: string;
  /** The flusher thread's connection; default: the URL `db`'s pool was opened with. */
  databaseUrl?: string;
  /** Flush from a worker thread (default true); false flushes on this thread's event loop. */
  worker?: boolean;
  /** Period of the background flusher; default 200 ms. */
  flushIntervalMs?: number;
  /** Requests per Postgres transaction; default 500. */
  maxBatch?: number;
  /** Background fsync period of the spool; default 50 ms. */
  fsyncIntervalMs?: number;
  /** Longest back-off between flush attempts while Postgres is down; default 5 s. */
  maxBackoffMs?: number;
  maxSegmentBytes?: number;
  /** Told about flush failures (a log line); the counters carry them too. */
  onError?: (error: unknown) => void;
}

/** For /metrics. */
export interface PredictionLogCounters {
  /** Entries appended to the spool by this process. */
  spooled: number;
  /** Entries confirmed stored in Postgres by this process (including those an earlier process spooled). */
  flushed: number;
  /** Entries in the spool not yet stored. */
  pending: number;
  /** Entries refused: invalid at append, or refused by Postgres for a reason other than the connection. */
  rejected: number;
  /** Unreadable spool lines skipped (a torn last line after a kill). */
  skippedLines: number;
  /** The last flush failure, or null once a flush round succeeded. */
  lastError: string | null;
}

function toInput(e: PredictionLogEntry): ServedRequestInput {
  return {
    requestId: e.requestId,
    at: e.at instanceof Date ? e.at : new Date(e.at),
    modelVersionId: typeof e.modelVersionId === 'string' ? Number(e.modelVersionId) : e.modelVersionId,
    userId: e.user,
    history: e.history ?? null,
    budgetMs: e.budgetMs ?? null,
    threshold: e.threshold,
    candidates: e.candidates.map((c) => ({
      item: c.item,
      p: c.p,
      pCrm: c.pCrm,
      pLlm: c.pLlm, // undefined when not routed: JSON.stringify leaves it out, and no spread per candidate
      route: c.route,
      entropy: c.entropy,
      latencyMs: (c.latencyMs ?? e.latencyMs)!, // validateServedRequest refuses a missing one
      cold: c.cold,
    })),
  };
}

/** Where drain rounds run: this thread or the worker. */
interface Flusher {
  drain(openSeq: number): Promise<void>;
  close(): Promise<void>;
}

function inThreadFlusher(
  db: Database,
  dir: string,
  maxBatch: number,
  onProgress: (p: DrainProgress) => void,
  resumeAt?: ReadonlyMap<number, number>,
): Flusher {
  const drainer = new SpoolDrainer(db, dir, maxBatch, onProgress, resumeAt);
  return { drain: (openSeq) => drainer.drain(openSeq), close: () => Promise.resolve() };
}

/**
 * The worker's entry point. Under tsx (the sources, or vitest) a worker thread does not inherit the TypeScript
 * loader, so a small CommonJS bootstrap registers tsx in the worker before importing the .ts entry; compiled
 * (dist/) the .js entry starts directly.
 */
function spawnWorker(data: WorkerData): Worker {
  const self = import.meta.url;
  if (!self.endsWith('.ts'))
    return new Worker(new URL('./prediction-log-worker.js', self), { workerData: data });
  // tsx's ESM entry (its CommonJS one cannot register from an eval'd worker script).
  const tsx = pathToFileURL(
    createRequire(self)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  ).href;
  const entry = new URL('./prediction-log-worker.ts', self).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { eval: true, workerData: data });
}

class WorkerFlusher implements Flusher {
  private readonly worker: Worker;
  /** Settles when the worker has loaded (or failed to). */
  readonly ready: Promise<void>;
  private readonly waiting = new Map<number, { resolve(): void; reject(e: Error): void }>();
  private nextId = 1;
  private dead: Error | undefined;
  private readonly exited: Promise<void>;
  /** Lines settled per segment as the worker reported them: where a successor drainer resumes. */
  readonly positions = new Map<number, number>();

  constructor(data: WorkerData, onProgress: (p: DrainProgress) => void) {
    this.worker = spawnWorker(data);
    // Idle, the worker must not keep the process alive; while a round is awaited it must (see drain).
    this.worker.unref();
    let started: () => void = () => {};
    let failed: (e: Error) => void = () => {};
    this.ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    this.ready.catch(() => undefined);
    this.worker.on('message', (m: FromWorker) => {
      if (m.type === 'ready') started();
      else if (m.type === 'progress') {
        // Once the worker is dead its successor owns the counters; a late report is dropped with its
        // position, so the successor stores that batch again (a no-op by the idempotent keys), counted once.
        if (this.dead) return;
        const { type: _type, ...p } = m;
        if (p.position) this.positions.set(p.position.seq, p.position.through);
        onProgress(p);
      } else if (m.type === 'done') {
        const w = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        if (this.waiting.size === 0) this.worker.unref();
        if (m.error === undefined) w?.resolve();
        else w?.reject(new Error(m.error));
      }
    });
    const die = (e: Error) => {
      this.dead ??= e;
      failed(e);
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    this.worker.on('error', (e) => die(e));
    this.exited = new Promise<void>((resolve) =>
      this.worker.once('exit', (code) => {
        die(new Error(`the prediction log's flusher thread exited (code ${code})`));
        resolve();
      }),
    );
  }

  get failure(): Error | undefined {
    return this.dead;
  }

  get thread(): Worker {
    return this.worker;
  }

  async drain(openSeq: number): Promise<void> {
    await this.ready;
    if (this.dead) throw this.dead;
    const id = this.nextId++;
    const done = new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.worker.ref();
    this.worker.postMessage({ type: 'drain', id, openSeq } satisfies ToWorker);
    return done;
  }

  async close(): Promise<void> {
    if (!this.dead) {
      this.worker.postMessage({ type: 'close' } satisfies ToWorker);
      this.worker.ref();
      const t = setTimeout(() => void this.worker.terminate(), 5_000);
      await this.exited;
      clearTimeout(t);
    }
  }
}

/** The URL a pool made by db/connection.ts was opened with. */
function urlOf(db: Database): string | undefined {
  const options = (db.$client as unknown as { options?: { connectionString?: string } }).options;
  return options?.connectionString;
}

export class PredictionLog {
  private readonly spool: Spool;
  private readonly opts: PredictionLogOptions;
  private readonly maxBatch: number;
  private readonly timer: NodeJS.Timeout;
  private readonly c: PredictionLogCounters;
  private flusher: Flusher;
  private round: Promise<void> | undefined;
  private failures = 0;
  private nextAttemptAt = 0;
  private closing = false;

  private constructor(spool: Spool, opts: PredictionLogOptions) {
    this.spool = spool;
    this.opts = opts;
    this.maxBatch = opts.maxBatch ?? 500;
    this.c = {
      spooled: 0,
      flushed: 0,
      pending: spool.inherited,
      rejected: 0,
      skippedLines: 0,
      lastError: null,
    };
    this.flusher = this.startFlusher();
    this.timer = setInterval(() => void this.tick(), opts.flushIntervalMs ?? 200);
    this.timer.unref();
  }

  /** Opens the spool directory and starts draining what an earlier process left there. */
  static async open(opts: PredictionLogOptions): Promise<PredictionLog> {
    const spool = Spool.open(opts.spoolDir, {
      fsyncIntervalMs: opts.fsyncIntervalMs,
      maxSegmentBytes: opts.maxSegmentBytes,
    });
    const log = new PredictionLog(spool, opts);
    void log.tick();
    return log;
  }

  /** Where the flusher runs: 'worker' (a thread of its own) or 'thread' (this event loop). */
  get flusherThread(): 'worker' | 'thread' {
    return this.flusher instanceof WorkerFlusher ? 'worker' : 'thread';
  }

  /** The flusher's worker thread while one runs (diagnostics; tests terminate it to check the hand-over). */
  get flusherWorker(): Worker | undefined {
    return this.flusher instanceof WorkerFlusher ? this.flusher.thread : undefined;
  }

  private readonly progress = (p: DrainProgress): void => {
    this.c.flushed += p.flushed;
    this.c.rejected += p.rejected;
    this.c.skippedLines += p.skippedLines;
    this.c.pending -= p.settled;
    if (p.rejectedError !== undefined) {
      this.c.lastError = p.rejectedError;
      this.opts.onError?.(new Error(p.rejectedError));
    }
  };

  private startFlusher(): Flusher {
    const url = this.opts.databaseUrl ?? urlOf(this.opts.db);
    if (this.opts.worker !== false && url) {
      try {
        return new WorkerFlusher(
          { databaseUrl: url, dir: this.spool.dir, maxBatch: this.maxBatch },
          this.progress,
        );
      } catch (e) {
        this.opts.onError?.(e);
      }
    }
    return inThreadFlusher(this.opts.db, this.spool.dir, this.maxBatch, this.progress);
  }

  /** Spools one served request. Never throws and never waits: a bad entry is counted as rejected. */
  append(entry: PredictionLogEntry): void {
    if (this.closing) {
      this.reject(new Error('prediction log is closed'));
      return;
    }
    let line: string;
    try {
      const input = toInput(entry);
      validateServedRequest(input);
      line = encodeRecord(input);
    } catch (e) {
      this.reject(e);
      return;
    }
    try {
      this.spool.append(line);
    } catch (e) {
      // Disk full or similar: the request is still served, the loss is counted and reported.
      this.reject(e);
      return;
    }
    this.c.spooled += 1;
    this.c.pending += 1;
  }

  counters(): PredictionLogCounters {
    return { ...this.c };
  }

  /** Runs a flush round now (ignoring back-off) and waits for it; for tests and shutdown. */
  async flush(): Promise<void> {
    await this.round;
    this.nextAttemptAt = 0;
    await this.runRound();
  }

  /** Stops the flusher, stores what it can in one last round, and closes the spool (the rest stays). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.timer);
    await this.round;
    await this.spool.rotate();
    this.nextAttemptAt = 0;
    await this.runRound();
    await this.spool.close();
    await this.flusher.close();
  }

  private reject(e: unknown): void {
    this.c.rejected += 1;
    this.c.lastError = message(e);
  }

  private tick(): Promise<void> {
    if (this.round || Date.now() < this.nextAttemptAt) return this.round ?? Promise.resolve();
    return this.runRound();
  }

  private runRound(): Promise<void> {
    this.round ??= this.drain().finally(() => (this.round = undefined));
    return this.round;
  }

  private async drain(): Promise<void> {
    try {
      // While older segments wait (an outage), keep appending to the open one unless it is full.
      if (!this.closing) await this.spool.rotate({ onlyIfFull: (await this.spool.closedSegmentCount()) > 0 });
      await this.flusher.drain(this.spool.openSeq);
      this.failures = 0;
      this.c.lastError = null;
    } catch (e) {
      // A worker that could not start or died: the same drainer on this thread from now on (the spool
      // holds every line it had not finished, so nothing is lost by switching).
      if (this.flusher instanceof WorkerFlusher && this.flusher.failure) {
        this.opts.onError?.(this.flusher.failure);
        this.flusher = inThreadFlusher(
          this.opts.db,
          this.spool.dir,
          this.maxBatch,
          this.progress,
          this.flusher.positions,
        );
      }
      // A connection error, or a spool file problem: either way, report it and try again later.
      this.opts.onError?.(e);
      this.c.lastError = message(e);
      this.failures += 1;
      const base = this.opts.flushIntervalMs ?? 200;
      this.nextAttemptAt = Date.now() + Math.min(this.opts.maxBackoffMs ?? 5_000, base * 2 ** this.failures);
    }
  }
}
