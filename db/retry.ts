import { badInput, DbUnavailableError } from './errors.js';

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
  '53300', // too_many_connections: the server's slots are taken (e.g. by a restart's leftover sessions)
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

const CONNECTION_MESSAGES =
  /Connection terminated|connection timeout|Client has encountered a connection error|Client was closed|terminating connection|the database system is (starting up|shutting down)/i;

/** The error in `error`'s cause chain that says why the connection failed, if it is a connection error. */
export function connectionFailure(
  error: unknown,
): { code?: string; message: string; error: object } | undefined {
  let e: unknown = error;
  for (let depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    const code = (e as { code?: unknown }).code;
    const message = (e as { message?: unknown }).message;
    if (typeof code === 'string' && CONNECTION_CODES.has(code))
      return { code, message: typeof message === 'string' ? message : code, error: e };
    if (typeof message === 'string' && CONNECTION_MESSAGES.test(message)) return { message, error: e };
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Walks the cause chain: drizzle wraps driver errors in DrizzleQueryError. */
export function isConnectionError(error: unknown): boolean {
  return connectionFailure(error) !== undefined;
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

/** How long an activity waits out a database outage before it fails: `CORELLA_DB_WAIT` ("30m", "90s"). */
export const DEFAULT_DB_WAIT_MS = 30 * 60_000;

/** `CORELLA_DB_WAIT` as milliseconds: "30m", "90s", "2h", "500ms" or a plain number of milliseconds. */
export function dbWaitMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.CORELLA_DB_WAIT?.trim();
  if (!raw) return DEFAULT_DB_WAIT_MS;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(raw);
  if (!m) throw badInput('CORELLA_DB_WAIT', 'must be a duration such as 30m, 90s or 2h', raw);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * unit;
}

export interface WaitOptions {
  /** Give up after this long without the database; default CORELLA_DB_WAIT or 30 minutes. */
  windowMs?: number;
  /** First back-off delay, doubled up to maxDelayMs; defaults 1 s and 30 s. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Ends the wait at once (the activity was cancelled): the signal's reason is thrown. */
  signal?: AbortSignal;
  /** Called before each wait, e.g. to log once per outage. */
  onWait?: (failure: DbUnavailableError, waitedMs: number, delayMs: number) => void;
}

/**
 * Runs `fn` and, while it fails because the database is unreachable, runs it again with capped back-off
 * until `windowMs` has passed: an outage (Postgres restarting, a failover) is a wait, not a failed run.
 * `fn` must be safe to repeat from the start, as every activity is (Temporal may retry it anyway). After
 * the window the outage is a DbUnavailableError; other errors pass through unchanged.
 */
export async function waitOutDatabaseOutage<T>(fn: () => Promise<T>, options: WaitOptions = {}): Promise<T> {
  const windowMs = options.windowMs ?? dbWaitMs();
  const base = options.baseDelayMs ?? 1_000;
  const max = options.maxDelayMs ?? 30_000;
  let since: number | undefined;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn();
    } catch (e) {
      if (!isConnectionError(e)) throw e;
      const failure = new DbUnavailableError(e);
      since ??= Date.now();
      const waited = Date.now() - since;
      if (waited >= windowMs) throw failure;
      const delay = Math.min(max, base * 2 ** Math.min(attempt - 1, 16), windowMs - waited);
      options.onWait?.(failure, waited, delay);
      await abortableSleep(delay, options.signal);
    }
  }
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason as Error);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
