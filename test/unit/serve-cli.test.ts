import { describe, expect, it } from 'vitest';
import { UsageError } from '../../cli/args.js';
import { serveOptionsFrom, thresholdFlag } from '../../cli/commands/serve.js';
import { isLoopback } from '../../serve/server.js';

describe('corella serve flags', () => {
  it('reads thresholds, budgets and limits', () => {
    expect(thresholdFlag(undefined)).toBeUndefined();
    expect(thresholdFlag('calibrated')).toBeUndefined();
    expect(thresholdFlag('inf')).toBe(Infinity);
    expect(thresholdFlag('-inf')).toBe(-Infinity);
    expect(thresholdFlag('0.4')).toBe(0.4);
    const o = serveOptionsFrom({
      port: '0',
      'llm-concurrency': '2',
      'budget-ms': '300',
      'max-candidates': '50',
    });
    expect(o.port).toBe(0);
    expect(o.budget).toEqual({ maxConcurrency: 2, defaultBudgetMs: 300 });
    expect(o.limits).toEqual({ maxCandidates: 50 });
  });

  it.each([
    [{ threshold: 'high' }, /--threshold/],
    [{ threshold: '' }, /--threshold/],
    [{ port: '99999' }, /--port/],
    [{ port: 'http' }, /--port/],
    [{ 'llm-concurrency': '0' }, /--llm-concurrency must be a positive integer/],
    [{ 'llm-queue': '1.5' }, /--llm-queue must be a positive integer/],
    [{ 'budget-ms': '-3' }, /--budget-ms must be a positive integer/],
    [{ 'max-candidates': 'many' }, /--max-candidates must be a positive integer/],
  ])('rejects %o with a usage error naming the flag', (values, message) => {
    expect(() => serveOptionsFrom(values)).toThrow(UsageError);
    expect(() => serveOptionsFrom(values)).toThrow(message);
  });

  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1']) expect(isLoopback(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.org']) expect(isLoopback(h)).toBe(false);
  });
});
