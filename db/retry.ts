/**
 * Retry for connection-level failures only (server restarted, connection dropped, server still starting).
 * Constraint violations and bad SQL are never retried: they would fail the same way again.
 */

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EAI_AGAIN',
  '57P01', // admin_shutdown: server stopped/restarted under us
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

const CONNECTION_MESSAGES =
  /Connection terminated|connection timeout|Client has encountered a connection error|Client was closed|terminating connection|the database system is (starting up|shutting down)/i;

/** Walks the cause chain: drizzle wraps driver errors in DrizzleQueryError. */
export function isConnectionError(error: unknown): boolean {
  let e: unknown = error;
  for (let depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string' && CONNECTION_MESSAGES.test(message)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export interface RetryOptions {
  /** Total tries including the first; default 6. */
  attempts?: number;
  /** First back-off delay, doubled each try up to maxDelayMs; default 200 ms. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Run `fn`, retrying it on connection errors with exponential back-off. `fn` must be safe to repeat: our
 * repository writes are idempotent (upserts keyed by business keys) or run in one transaction.
 */
export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 6;
  const base = options.baseDelayMs ?? 200;
  const max = options.maxDelayMs ?? 3_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= attempts || !isConnectionError(e)) throw e;
      const delay = Math.min(max, base * 2 ** (attempt - 1));
      options.onRetry?.(e, attempt, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
