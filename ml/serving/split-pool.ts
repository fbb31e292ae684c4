/**
 * Encoded splits for requests, reused: a 50-candidate request's rows are a dozen typed arrays (about 20 KB
 * with a 20-item history), and each array larger than 64 bytes is an off-heap ArrayBuffer that V8 tracks,
 * counts as external memory and sweeps. At 200 requests/s that was 2,400 such buffers a second; with the
 * pool, a server answering a steady slate size allocates none after warm-up.
 *
 * Splits are kept per row count (a request's arrays have exactly its length, as every consumer of
 * `EncodedSplit` expects). A released split is handed out again as is: its user overwrites every column
 * the CRM reads (the encoder leaves `labels` and `sampleIds` as made, zeros and 0..n−1; the micro-batcher's
 * concatenation overwrites everything).
 */
import type { EncodedSplit } from '../data/types.js';

export interface SplitPoolOptions {
  /** Splits kept per row count (default 4: a few requests in flight at once). */
  perSize?: number;
  /** Row counts kept (default 8); beyond it, the least recently released count is dropped. */
  sizes?: number;
}

export class SplitPool {
  private readonly free = new Map<number, EncodedSplit[]>();
  private readonly perSize: number;
  private readonly sizes: number;
  /** Splits handed out that were new, and that came from the pool (for tests and benchmarks). */
  readonly stats = { created: 0, reused: 0 };

  /** `make(n)`: a new split of n rows in the pooled layout. */
  constructor(
    private readonly make: (n: number) => EncodedSplit,
    opts: SplitPoolOptions = {},
  ) {
    this.perSize = Math.max(1, opts.perSize ?? 4);
    this.sizes = Math.max(1, opts.sizes ?? 8);
  }

  acquire(n: number): EncodedSplit {
    const s = this.free.get(n)?.pop();
    if (s) {
      this.stats.reused++;
      return s;
    }
    this.stats.created++;
    return this.make(n);
  }

  /** Gives `split` back; the caller must hold no view into it any more. */
  release(split: EncodedSplit): void {
    const n = split.size;
    let list = this.free.get(n);
    if (list)
      this.free.delete(n); // re-inserted below: Map order is release recency
    else list = [];
    if (list.length < this.perSize) list.push(split);
    this.free.set(n, list);
    if (this.free.size > this.sizes) this.free.delete(this.free.keys().next().value!);
  }
}
