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
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Database } from '../db/connection.js';
import {
  ServingRepository,
  validateServedRequest,
  type ServedRequestInput,
} from '../db/repositories/serving.js';
import { isConnectionError } from '../db/retry.js';
import type { CandidateScore, HistoryEvent } from '../ml/serving/types.js';
import { Spool, type SpoolSegment } from './spool.js';

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
  candidates: (CandidateScore & { latencyMs: number })[];
}

export interface PredictionLogOptions {
  db: Database;
  spoolDir: string;
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

/** On-disk form: JSON has no Infinity, and a Date must become a string anyway. */
interface SpoolRecord {
  v: 1;
  requestId: string;
  at: string;
  modelVersionId: number;
  userId: string;
  history: HistoryEvent[] | null;
  budgetMs: number | null;
  threshold: number | 'Infinity' | '-Infinity';
  candidates: ServedRequestInput['candidates'];
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
      ...(c.pLlm !== undefined ? { pLlm: c.pLlm } : {}),
      route: c.route,
      entropy: c.entropy,
      latencyMs: c.latencyMs,
      cold: c.cold,
    })),
  };
}

function encode(r: ServedRequestInput): string {
  const rec: SpoolRecord = {
    v: 1,
    requestId: r.requestId,
    at: r.at.toISOString(),
    modelVersionId: r.modelVersionId,
    userId: r.userId,
    history: r.history,
    budgetMs: r.budgetMs,
    threshold: r.threshold === Infinity ? 'Infinity' : r.threshold === -Infinity ? '-Infinity' : r.threshold,
    candidates: r.candidates,
  };
  return JSON.stringify(rec);
}

function decode(line: string): ServedRequestInput {
  const rec = JSON.parse(line) as SpoolRecord;
  if (rec?.v !== 1) throw new Error('not a prediction log record');
  const input: ServedRequestInput = {
    requestId: rec.requestId,
    at: new Date(rec.at),
    modelVersionId: rec.modelVersionId,
    userId: rec.userId,
    history: rec.history,
    budgetMs: rec.budgetMs,
    threshold:
      rec.threshold === 'Infinity' ? Infinity : rec.threshold === '-Infinity' ? -Infinity : rec.threshold,
    candidates: rec.candidates,
  };
  validateServedRequest(input);
  return input;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class PredictionLog {
  private readonly spool: Spool;
  private readonly repo: ServingRepository;
  private readonly opts: PredictionLogOptions;
  private readonly maxBatch: number;
  private readonly timer: NodeJS.Timeout;
  private readonly c: PredictionLogCounters;
  /** Lines of a segment already stored, so a round retried after an outage resumes mid-segment. */
  private readonly done = new Map<number, number>();
  private readonly tornSeen = new Set<number>();
  /** Unreadable lines already counted, per segment (a retried round reads them again). */
  private readonly skippedSeen = new Map<number, Set<number>>();
  private round: Promise<void> | undefined;
  private failures = 0;
  private nextAttemptAt = 0;
  private closing = false;

  private constructor(spool: Spool, opts: PredictionLogOptions) {
    this.spool = spool;
    this.opts = opts;
    // One attempt per call: the flusher's own back-off replaces withRetry's, so close() never hangs on it.
    this.repo = new ServingRepository(opts.db, { retry: { attempts: 1 } });
    this.maxBatch = opts.maxBatch ?? 500;
    this.c = {
      spooled: 0,
      flushed: 0,
      pending: spool.inherited,
      rejected: 0,
      skippedLines: 0,
      lastError: null,
    };
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
      line = encode(input);
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
      if (!this.closing) await this.spool.rotate({ onlyIfFull: this.spool.closedSegments().length > 0 });
      for (const seg of this.spool.closedSegments()) await this.drainSegment(seg);
      this.failures = 0;
      this.c.lastError = null;
    } catch (e) {
      // A connection error, or a spool file problem: either way, report it and try again later.
      this.opts.onError?.(e);
      this.c.lastError = message(e);
      this.failures += 1;
      const base = this.opts.flushIntervalMs ?? 200;
      this.nextAttemptAt = Date.now() + Math.min(this.opts.maxBackoffMs ?? 5_000, base * 2 ** this.failures);
    }
  }

  /** Stores one closed segment and deletes it; throws on a connection error (the round stops there). */
  private async drainSegment(seg: SpoolSegment): Promise<void> {
    const { lines, tornBytes } = Spool.read(seg);
    if (tornBytes > 0 && !this.tornSeen.has(seg.seq)) {
      this.tornSeen.add(seg.seq);
      this.c.skippedLines += 1;
    }
    let i = this.done.get(seg.seq) ?? 0;
    while (i < lines.length) {
      const end = Math.min(lines.length, i + this.maxBatch);
      const batch: { at: number; line: string; input: ServedRequestInput }[] = [];
      for (let j = i; j < end; j++) {
        try {
          batch.push({ at: j, line: lines[j], input: decode(lines[j]) });
        } catch {
          const seen = this.skippedSeen.get(seg.seq) ?? new Set<number>();
          this.skippedSeen.set(seg.seq, seen);
          if (!seen.has(j)) {
            seen.add(j);
            this.c.skippedLines += 1;
            this.c.pending -= 1;
          }
        }
      }
      await this.store(seg, batch);
      i = end;
      this.done.set(seg.seq, i);
    }
    Spool.remove(seg);
    this.done.delete(seg.seq);
    this.tornSeen.delete(seg.seq);
    this.skippedSeen.delete(seg.seq);
  }

  private async store(
    seg: SpoolSegment,
    batch: { at: number; line: string; input: ServedRequestInput }[],
  ): Promise<void> {
    if (batch.length === 0) return;
    try {
      await this.repo.recordServed(batch.map((b) => b.input));
      this.c.flushed += batch.length;
      this.c.pending -= batch.length;
      return;
    } catch (e) {
      if (isConnectionError(e)) throw e;
    }
    // Postgres refused the batch for its content: find the entries it refuses and set them aside. Progress
    // is recorded per entry, so an outage in the middle does not count an entry twice.
    for (const b of batch) {
      try {
        await this.repo.recordServed([b.input]);
        this.c.flushed += 1;
      } catch (e) {
        if (isConnectionError(e)) throw e;
        appendFileSync(
          join(this.spool.dir, 'rejected.jsonl'),
          JSON.stringify({ error: message(e), line: b.line }) + '\n',
        );
        this.c.rejected += 1;
        this.c.lastError = message(e);
        this.opts.onError?.(e);
      }
      this.c.pending -= 1;
      this.done.set(seg.seq, b.at + 1);
    }
  }
}
