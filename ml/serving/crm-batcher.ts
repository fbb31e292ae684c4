/**
 * CRM micro-batching: the candidates of requests that arrive together are scored in one `crm.predict` call.
 *
 * Why: one DCNv2 forward pass costs a fixed overhead (tensor creation, kernel dispatch, the event-loop hop)
 * plus a small per-row cost, so at high request rates 50-row passes spend most of their time on overhead.
 * Waiting at most `maxWaitMs` for company trades that bounded delay for far fewer passes.
 *
 * The wait is paid only while company actually comes: when the previous batch held a single request (lone
 * requests, e.g. 200 requests/s spread evenly, ~5 ms apart), a new request is scored at the next turn of the
 * event loop instead. That still batches every request that arrived in the same I/O poll (a burst), and a
 * timer wait of ~1-2 ms for a request nobody joins is pure latency.
 */
import type { CrmModel } from '../crm/types.js';
import type { EncodedSplit } from '../data/types.js';
import { SplitPool } from './split-pool.js';

export interface MicroBatchOptions {
  /**
   * Longest a request waits for others to join its batch while requests arrive together (default 1 ms;
   * 0 = never wait beyond the current turn of the event loop).
   */
  maxWaitMs?: number;
  /** Rows per CRM call; a batch is flushed as soon as it holds this many (default 4096). */
  maxRows?: number;
}

interface Pending {
  split: EncodedSplit;
  resolve(p: Float32Array): void;
  reject(e: unknown): void;
}

export interface BatcherStats {
  /** `crm.predict` calls made. */
  calls: number;
  /** Requests (splits) scored. */
  requests: number;
  rows: number;
}

/**
 * Concatenates splits of one feature layout row-wise (every column the CRM reads, plus the text side). With
 * `into` (a split of the total row count in the same layout, e.g. from a SplitPool), writes every column
 * there instead of allocating.
 */
export function concatSplits(parts: EncodedSplit[], into?: EncodedSplit): EncodedSplit {
  if (parts.length === 1) return parts[0];
  const size = parts.reduce((s, p) => s + p.size, 0);
  const first = parts[0];
  const cat = <T extends Int32Array | Float32Array | Float64Array | Uint32Array>(
    pick: (p: EncodedSplit) => T,
    make: (n: number) => T,
  ): T => {
    const total = parts.reduce((s, p) => s + pick(p).length, 0);
    const reuse = into ? pick(into) : undefined;
    const out = reuse && reuse.length === total ? reuse : make(total);
    let at = 0;
    for (const p of parts) {
      out.set(pick(p), at);
      at += pick(p).length;
    }
    return out;
  };
  return {
    name: first.name,
    size,
    labels: cat(
      (p) => p.labels,
      (n) => new Float32Array(n),
    ),
    sampleIds: cat(
      (p) => p.sampleIds,
      (n) => new Uint32Array(n),
    ),
    timestamps: cat(
      (p) => p.timestamps,
      (n) => new Float64Array(n),
    ),
    userRows: cat(
      (p) => p.userRows,
      (n) => new Int32Array(n),
    ),
    categorical: cat(
      (p) => p.categorical,
      (n) => new Int32Array(n),
    ),
    sequences: first.sequences.map((_, k) =>
      cat(
        (p) => p.sequences[k],
        (n) => new Int32Array(n),
      ),
    ),
    dense: cat(
      (p) => p.dense,
      (n) => new Float32Array(n),
    ),
    targetItemRows: cat(
      (p) => p.targetItemRows,
      (n) => new Int32Array(n),
    ),
    historyItemRows: cat(
      (p) => p.historyItemRows,
      (n) => new Int32Array(n),
    ),
    historyRatings: cat(
      (p) => p.historyRatings,
      (n) => new Float32Array(n),
    ),
    historyLen: first.historyLen,
  };
}

/** A split of n rows in the layout of `like` (the widths of its columns per row). */
function emptyLike(like: EncodedSplit, n: number): EncodedSplit {
  const per = (a: { length: number }) => (like.size > 0 ? a.length / like.size : 0);
  return {
    name: like.name,
    size: n,
    labels: new Float32Array(n),
    sampleIds: new Uint32Array(n),
    timestamps: new Float64Array(n),
    userRows: new Int32Array(n),
    categorical: new Int32Array(n * per(like.categorical)),
    sequences: like.sequences.map((q) => new Int32Array(n * per(q))),
    dense: new Float32Array(n * per(like.dense)),
    targetItemRows: new Int32Array(n),
    historyItemRows: new Int32Array(n * per(like.historyItemRows)),
    historyRatings: new Float32Array(n * per(like.historyRatings)),
    historyLen: like.historyLen,
  };
}

export class CrmBatcher {
  readonly stats: BatcherStats = { calls: 0, requests: 0, rows: 0 };
  private readonly maxWaitMs: number;
  private readonly maxRows: number;
  private pending: Pending[] = [];
  private pendingRows = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** Requests in the last batch: more than one means requests are arriving together, worth waiting for. */
  private lastBatchRequests = 0;
  /** One CRM call at a time: tfjs runs synchronously anyway, and later arrivals batch up meanwhile. */
  private running: Promise<void> = Promise.resolve();
  /** The concatenated batches, reused (batches of a recurring total size allocate nothing). */
  private joinedPool: SplitPool | undefined;

  constructor(
    private readonly crm: CrmModel,
    opts: MicroBatchOptions = {},
  ) {
    this.maxWaitMs = Math.max(0, opts.maxWaitMs ?? 1);
    this.maxRows = Math.max(1, opts.maxRows ?? 4096);
  }

  /** Concatenated batches allocated, and reused from the pool. */
  get joinedSplits(): { created: number; reused: number } {
    return { ...(this.joinedPool?.stats ?? { created: 0, reused: 0 }) };
  }

  /** CRM click probabilities for every row of `split`, scored together with whatever else is waiting. */
  predict(split: EncodedSplit): Promise<Float32Array> {
    if (split.size === 0) return Promise.resolve(new Float32Array(0));
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.push({ split, resolve, reject });
      this.pendingRows += split.size;
      if (this.pendingRows >= this.maxRows) this.flush();
      else if (this.lastBatchRequests > 1 && this.maxWaitMs > 0)
        this.timer ??= setTimeout(() => this.flush(), this.maxWaitMs);
      else this.immediate ??= setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    const batch = this.pending;
    this.pending = [];
    this.pendingRows = 0;
    if (batch.length === 0) return;
    this.lastBatchRequests = batch.length;
    this.running = this.running.then(() => this.run(batch));
  }

  private async run(batch: Pending[]): Promise<void> {
    let joined: EncodedSplit | undefined;
    try {
      if (batch.length === 1) joined = batch[0].split;
      else {
        const parts = batch.map((b) => b.split);
        this.joinedPool ??= new SplitPool((n) => emptyLike(parts[0], n));
        joined = concatSplits(parts, this.joinedPool.acquire(parts.reduce((s, p) => s + p.size, 0)));
      }
      this.stats.calls++;
      this.stats.requests += batch.length;
      this.stats.rows += joined.size;
      const p = await this.crm.predict(joined, undefined, Math.max(joined.size, 1));
      let at = 0;
      for (const b of batch) {
        // A view, not a copy: the batch's array lives as long as its last request needs it.
        b.resolve(p.subarray(at, at + b.split.size));
        at += b.split.size;
      }
    } catch (e) {
      for (const b of batch) b.reject(e);
    } finally {
      // Runs are one at a time, so the next batch cannot be writing into this one meanwhile.
      if (joined && batch.length > 1) this.joinedPool!.release(joined);
    }
  }

  /** Rejects nothing: waits for the batches already handed to the CRM. */
  async drain(): Promise<void> {
    this.flush();
    await this.running;
  }
}
