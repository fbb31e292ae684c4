import { DatasetError } from '../errors.js';

export type OnBadLine = 'error' | 'skip';

export interface Where {
  file: string;
  line?: number;
  field?: string;
  excerpt?: string;
}

/**
 * Decides what a malformed line does: with 'error' it aborts the whole ingestion (nothing is written),
 * with 'skip' it is counted under its reason so the manifest can report what was thrown away.
 */
export class BadLineSink {
  constructor(
    readonly mode: OnBadLine,
    readonly dropped: Record<string, number>,
  ) {}

  bad(reason: string, message: string, where: Where): void {
    if (this.mode === 'error') throw new DatasetError(message, { ...where, reason });
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
  }

  /** Rows removed on purpose (filters, short histories): never an error. */
  drop(reason: string, count = 1): void {
    if (count > 0) this.dropped[reason] = (this.dropped[reason] ?? 0) + count;
  }
}
