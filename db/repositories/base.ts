import type { Executor } from '../connection.js';
import { withRetry, type RetryOptions } from '../retry.js';

export interface RepositoryOptions {
  /** Connection-error retry of each call (see withRetry); every call is a single idempotent unit. */
  retry?: RetryOptions;
}

export abstract class Repository {
  protected readonly db: Executor;
  private readonly retryOptions: RetryOptions | undefined;

  /** `db` may also be a transaction handle, to compose several repositories in one transaction. */
  constructor(db: Executor, options: RepositoryOptions = {}) {
    this.db = db;
    this.retryOptions = options.retry;
  }

  protected retry<T>(fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, this.retryOptions);
  }
}
