/**
 * The consumer half of the prediction log: moves closed spool segments into Postgres in batches, oldest
 * first, and deletes each segment once every line of it is stored. It runs in the prediction log's worker
 * thread (serve/prediction-log-worker.ts), or in the calling thread when no worker can be started.
 *
 * The spool stays the source of truth: a segment is deleted only after its last batch committed, so a
 * process killed mid-batch (the worker dies with it) leaves the whole segment, and the replay's idempotent
 * keys (request id, index) turn the rows that had committed into no-ops. Nothing lost, nothing twice.
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
import type { HistoryEvent } from '../ml/serving/types.js';
import { SegmentReader, Spool, type SpoolSegment } from './spool.js';

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

export function encodeRecord(r: ServedRequestInput): string {
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

export function decodeRecord(line: string): ServedRequestInput {
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

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** What one batch (or one set-aside entry) did to the counters; the log applies it to its own. */
export interface DrainProgress {
  /** Entries stored in Postgres. */
  flushed: number;
  /** Entries Postgres refused for good (moved to rejected.jsonl). */
  rejected: number;
  /** Unreadable lines skipped (a torn last line, a corrupt line). */
  skippedLines: number;
  /** Spooled entries no longer pending (stored, refused or unreadable). */
  settled: number;
  /** Why the last entry was refused, when one was. */
  rejectedError?: string;
  /**
   * Where the drain stands after this step: the segment and how many of its lines are settled. A drainer
   * that takes over from a dead one starts there (see `resumeAt`), so nothing is counted twice.
   */
  position?: { seq: number; through: number };
}

export class SpoolDrainer {
  private readonly repo: ServingRepository;
  /** Lines of a segment already stored, so a round retried after an outage resumes mid-segment. */
  private readonly done = new Map<number, number>();
  private readonly tornSeen = new Set<number>();
  /** Unreadable lines already counted, per segment (a retried round reads them again). */
  private readonly skippedSeen = new Map<number, Set<number>>();
  /** The segment being drained, kept as bytes (see SegmentReader); rounds never overlap, so one suffices. */
  private readonly reader = new SegmentReader();

  constructor(
    db: Database,
    private readonly dir: string,
    private readonly maxBatch: number,
    private readonly onProgress: (p: DrainProgress) => void,
    /** Lines already settled per segment by a drainer this one replaces (a dead flusher thread). */
    resumeAt: ReadonlyMap<number, number> = new Map(),
  ) {
    // One attempt per call: the log's own back-off replaces withRetry's, so close() never hangs on it.
    this.repo = new ServingRepository(db, { retry: { attempts: 1 } });
    for (const [seq, through] of resumeAt) this.done.set(seq, through);
  }

  /**
   * Stores every segment but the open one (`openSeq`), oldest first. Throws on a connection error or a spool
   * file problem; the round stops there and the next one resumes where this one left off.
   */
  async drain(openSeq: number): Promise<void> {
    for (const seg of Spool.listIn(this.dir)) if (seg.seq !== openSeq) await this.drainSegment(seg);
  }

  private async drainSegment(seg: SpoolSegment): Promise<void> {
    const reader = this.reader;
    reader.load(seg);
    const lines = reader.lineCount;
    if (reader.tornBytes > 0 && !this.tornSeen.has(seg.seq)) {
      this.tornSeen.add(seg.seq);
      this.onProgress({ flushed: 0, rejected: 0, skippedLines: 1, settled: 0 });
    }
    let i = this.done.get(seg.seq) ?? 0;
    while (i < lines) {
      const end = Math.min(lines, i + this.maxBatch);
      const batch: { at: number; input: ServedRequestInput }[] = [];
      let skipped = 0;
      for (let j = i; j < end; j++) {
        try {
          batch.push({ at: j, input: decodeRecord(reader.line(j)) });
        } catch {
          const seen = this.skippedSeen.get(seg.seq) ?? new Set<number>();
          this.skippedSeen.set(seg.seq, seen);
          if (!seen.has(j)) {
            seen.add(j);
            skipped++;
          }
        }
      }
      if (skipped > 0) this.onProgress({ flushed: 0, rejected: 0, skippedLines: skipped, settled: skipped });
      await this.store(seg, batch, end);
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
    batch: { at: number; input: ServedRequestInput }[],
    end: number,
  ): Promise<void> {
    if (batch.length === 0) return;
    try {
      await this.repo.recordServed(batch.map((b) => b.input));
      this.onProgress({
        flushed: batch.length,
        rejected: 0,
        skippedLines: 0,
        settled: batch.length,
        position: { seq: seg.seq, through: end },
      });
      return;
    } catch (e) {
      if (isConnectionError(e)) throw e;
    }
    // Postgres refused the batch for its content: find the entries it refuses and set them aside. Progress
    // is recorded per entry, so an outage in the middle does not count an entry twice.
    for (const b of batch) {
      try {
        await this.repo.recordServed([b.input]);
        const position = { seq: seg.seq, through: b.at + 1 };
        this.onProgress({ flushed: 1, rejected: 0, skippedLines: 0, settled: 1, position });
      } catch (e) {
        if (isConnectionError(e)) throw e;
        appendFileSync(
          join(this.dir, 'rejected.jsonl'),
          JSON.stringify({ error: message(e), line: this.reader.line(b.at) }) + '\n',
        );
        this.onProgress({
          flushed: 0,
          rejected: 1,
          skippedLines: 0,
          settled: 1,
          rejectedError: message(e),
          position: { seq: seg.seq, through: b.at + 1 },
        });
      }
      this.done.set(seg.seq, b.at + 1);
    }
  }
}
