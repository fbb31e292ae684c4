/**
 * The LLM limiter alone, with jobs that are plain timers: the concurrency and queue limits, deadlines that
 * stop waiting without freeing the slot early, errors as fallbacks, and closing.
 */
import { describe, expect, it } from 'vitest';
import { LlmLimiter, resolveBudget } from '../../../ml/serving/llm-budget.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A job that takes `ms` unless aborted (it then rejects at once, as the scorer does between prompts). */
function job(ms: number, log: string[], name: string) {
  return (signal: AbortSignal) =>
    new Promise<string>((resolve, reject) => {
      log.push(`start ${name}`);
      const t = setTimeout(() => {
        log.push(`end ${name}`);
        resolve(name);
      }, ms);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        log.push(`abort ${name}`);
        reject(new Error('aborted'));
      });
    });
}

describe('LlmLimiter', () => {
  it('runs at most maxConcurrency jobs, queues up to maxQueue, and refuses beyond', async () => {
    const l = new LlmLimiter({ maxConcurrency: 1, maxQueue: 1, defaultBudgetMs: 1000 });
    const log: string[] = [];
    const a = l.run(job(30, log, 'a'), { budgetMs: 1000 });
    const b = l.run(job(10, log, 'b'), { budgetMs: 1000 });
    expect(l.running).toBe(1);
    expect(l.queueDepth).toBe(1);
    const c = await l.run(job(10, log, 'c'), { budgetMs: 1000 });
    expect(c).toMatchObject({ ok: false, reason: 'queue-full' });
    expect(await a).toMatchObject({ ok: true, value: 'a' });
    expect(await b).toMatchObject({ ok: true, value: 'b' });
    // b started only after a ended.
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b']);
    expect(l.running).toBe(0);
    expect(l.fallbacks['queue-full']).toBe(1);
  });

  it('a deadline returns on time while the job keeps its slot until it stops', async () => {
    const l = new LlmLimiter({ maxConcurrency: 1, maxQueue: 4 });
    const log: string[] = [];
    const t0 = performance.now();
    const r = await l.run(job(10_000, log, 'slow'), { budgetMs: 40, startedAt: t0 });
    const took = performance.now() - t0;
    expect(r).toMatchObject({ ok: false, reason: 'deadline' });
    // On time = at the deadline, not before it (a timer may fire a millisecond or two early by
    // performance.now, since libuv schedules in whole milliseconds from its cached loop time) and not when the
    // 10 s job would end. The upper bound is loose on purpose: a loaded CI machine delays timers by tens of
    // milliseconds, and that is not what this test is about.
    expect(took).toBeGreaterThanOrEqual(40 - 3);
    expect(took).toBeLessThan(2000);
    // The job was told to stop; its slot is released when it does.
    await sleep(5);
    expect(log).toEqual(['start slow', 'abort slow']);
    expect(l.running).toBe(0);
  });

  it('a deadline counts queueing: a waiter that never gets a slot falls back and leaves the queue', async () => {
    const l = new LlmLimiter({ maxConcurrency: 1, maxQueue: 4 });
    const log: string[] = [];
    const a = l.run(job(1500, log, 'a'), { budgetMs: 5000 });
    const t0 = performance.now();
    const b = await l.run(job(10, log, 'b'), { budgetMs: 30, startedAt: t0 });
    expect(b).toMatchObject({ ok: false, reason: 'deadline' });
    // b gave up at its own deadline, while a still held the slot (not when a ended and freed it).
    expect(log).toEqual(['start a']);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(l.queueDepth).toBe(0);
    expect(await a).toMatchObject({ ok: true });
    expect(log).toEqual(['start a', 'end a']);
    expect(l.running).toBe(0);
    // Already past its budget on arrival: no work at all.
    const late = await l.run(job(1, log, 'late'), { budgetMs: 5, startedAt: performance.now() - 10 });
    expect(late).toMatchObject({ ok: false, reason: 'deadline' });
    expect(log).not.toContain('start late');
  });

  it('a failing job is an llm-error outcome, not a rejection', async () => {
    const l = new LlmLimiter();
    const r = await l.run(() => Promise.reject(new Error('boom')), { budgetMs: 100 });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe('llm-error');
      expect((r.error as Error).message).toBe('boom');
    }
    expect(l.running).toBe(0);
  });

  it('close() aborts running jobs, waits for them, and refuses new ones', async () => {
    const l = new LlmLimiter();
    const log: string[] = [];
    const r = l.run(job(10_000, log, 'x'), { budgetMs: 60_000 });
    await sleep(1);
    await l.close();
    expect(log).toEqual(['start x', 'abort x']);
    expect(await r).toMatchObject({ ok: false, reason: 'deadline' });
    expect(await l.run(job(1, log, 'y'), { budgetMs: 100 })).toMatchObject({ reason: 'llm-unavailable' });
  });

  it('rejects nonsensical budgets', () => {
    expect(() => resolveBudget({ maxConcurrency: 0 })).toThrow(/maxConcurrency/);
    expect(() => resolveBudget({ maxConcurrency: 1.5 })).toThrow(
      expect.objectContaining({ code: 'BAD_CONFIG', details: { field: 'budget.maxConcurrency' } }),
    );
    expect(() => resolveBudget({ maxQueue: -1 })).toThrow(/maxQueue/);
    expect(resolveBudget({ defaultBudgetMs: 50 }).defaultBudgetMs).toBe(50);
  });
});
