/**
 * The per-process LLM budget: at most `maxConcurrency` LLM jobs run at once, at most `maxQueue` wait for a
 * slot, and each job has a deadline. Whatever goes wrong on the LLM side becomes a fallback reason, never an
 * error: the caller then serves the CRM's answer (route `crm-fallback`).
 *
 * Why a deadline that stops waiting rather than cancels: a llama.cpp evaluation cannot be interrupted
 * mid-batch, so a late job keeps its slot until its current prompt finishes (its signal is aborted, so it
 * stops at the next prompt) while the request that started it has already answered. The late result is
 * dropped. The slot is freed only when the work really ends, so the concurrency limit stays honest.
 */
import { CorellaError } from '../errors.js';
import type { LlmBudget } from './types.js';

export type FallbackReason = 'deadline' | 'queue-full' | 'llm-unavailable' | 'llm-error';

export type BudgetOutcome<T> =
  | { ok: true; value: T; queuedMs: number }
  | { ok: false; reason: FallbackReason; error?: unknown; queuedMs: number };

export const DEFAULT_LLM_BUDGET: LlmBudget = { maxConcurrency: 1, maxQueue: 8, defaultBudgetMs: 250 };

export function resolveBudget(b: Partial<LlmBudget> = {}): LlmBudget {
  const out = { ...DEFAULT_LLM_BUDGET, ...b };
  const check = (name: keyof LlmBudget, min: number): void => {
    const v = out[name];
    if (typeof v !== 'number' || !(v >= min) || (name !== 'defaultBudgetMs' && !Number.isInteger(v)))
      throw new CorellaError('BAD_CONFIG', `LLM budget ${name} must be a number ≥ ${min}, got ${String(v)}`, {
        details: { field: `budget.${name}` },
      });
  };
  check('maxConcurrency', 1);
  check('maxQueue', 0);
  check('defaultBudgetMs', 0);
  return out;
}

interface Waiter {
  start(): void;
  cancelled: boolean;
}

export class LlmLimiter {
  readonly budget: LlmBudget;
  private active = 0;
  private readonly queue: Waiter[] = [];
  /** Jobs still running (a request may have stopped waiting for them): close() waits for these. */
  private readonly inflight = new Map<Promise<unknown>, AbortController>();
  private closed = false;
  /** Fallbacks by reason since start (for metrics). */
  readonly fallbacks: Record<FallbackReason, number> = {
    deadline: 0,
    'queue-full': 0,
    'llm-unavailable': 0,
    'llm-error': 0,
  };

  constructor(budget: Partial<LlmBudget> = {}) {
    this.budget = resolveBudget(budget);
  }

  /** Jobs waiting for a slot. */
  get queueDepth(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active;
  }

  /**
   * Runs `job` within the budget. `budgetMs` counts from `startedAt` (the request's arrival), queueing
   * included; Infinity = no deadline (offline shadow scoring). `bypassQueueLimit` waits however long the
   * queue is (still one of `maxConcurrency`), for callers that are not on a request path.
   */
  async run<T>(
    job: (signal: AbortSignal) => Promise<T>,
    opts: { budgetMs: number; startedAt?: number; bypassQueueLimit?: boolean; signal?: AbortSignal },
  ): Promise<BudgetOutcome<T>> {
    const t0 = opts.startedAt ?? performance.now();
    const remaining = opts.budgetMs - (performance.now() - t0);
    const queuedMs = (): number => performance.now() - t0;
    if (this.closed) return this.fail('llm-unavailable', 0);
    if (remaining <= 0 || opts.signal?.aborted) return this.fail('deadline', queuedMs());
    const needsQueue = this.active >= this.budget.maxConcurrency;
    if (needsQueue && !opts.bypassQueueLimit && this.queue.length >= this.budget.maxQueue)
      return this.fail('queue-full', queuedMs());

    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      if (Number.isFinite(remaining)) {
        timer = setTimeout(() => {
          abort.abort(new Error('LLM deadline passed'));
          resolve('deadline');
        }, remaining);
      }
      opts.signal?.addEventListener(
        'abort',
        () => {
          abort.abort(opts.signal?.reason);
          resolve('deadline');
        },
        { once: true },
      );
    });
    try {
      // Wait for a slot, or the deadline, whichever first.
      if (needsQueue) {
        const waiter: Waiter = { start: () => undefined, cancelled: false };
        const slot = new Promise<'slot'>((resolve) => (waiter.start = () => resolve('slot')));
        this.queue.push(waiter);
        const first = await Promise.race([slot, deadline]);
        if (first === 'deadline') {
          waiter.cancelled = true;
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          else this.release(); // the slot was handed over in the same tick: give it back
          return this.fail('deadline', queuedMs());
        }
      } else {
        this.active++;
      }
      const waited = queuedMs();
      const work = job(abort.signal).then(
        (value) => ({ kind: 'value' as const, value }),
        (error: unknown) => ({ kind: 'error' as const, error }),
      );
      // The slot belongs to the work until it really ends, even when the request stops waiting for it.
      this.inflight.set(work, abort);
      void work.finally(() => {
        this.inflight.delete(work);
        this.release();
      });
      const r = await Promise.race([work, deadline]);
      if (r === 'deadline') return this.fail('deadline', waited);
      if (r.kind === 'error') {
        if (abort.signal.aborted) return this.fail('deadline', waited);
        return { ...this.fail('llm-error', waited), error: r.error };
      }
      return { ok: true, value: r.value, queuedMs: waited };
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Aborts running jobs (they stop at their next prompt) and waits until none runs. */
  async close(): Promise<void> {
    this.closed = true;
    for (const a of this.inflight.values()) a.abort(new Error('the LLM limiter is closing'));
    await Promise.allSettled([...this.inflight.keys()]);
  }

  /** Counts a fallback decided outside the limiter (e.g. no LLM loaded). */
  countFallback(reason: FallbackReason): void {
    this.fallbacks[reason]++;
  }

  private fail(
    reason: FallbackReason,
    queuedMs: number,
  ): { ok: false; reason: FallbackReason; queuedMs: number } {
    this.fallbacks[reason]++;
    return { ok: false, reason, queuedMs };
  }

  private release(): void {
    // Hand the slot straight to the next live waiter (active stays the same), else free it.
    while (this.queue.length > 0) {
      const w = this.queue.shift()!;
      if (w.cancelled) continue;
      w.start();
      return;
    }
    this.active--;
  }
}
