import { DrizzleQueryError } from 'drizzle-orm/errors';
import { describe, expect, it } from 'vitest';
import { isConnectionError, withRetry } from '../../../db/retry.js';

function pgError(code: string, message = 'boom'): Error {
  return Object.assign(new Error(message), { code });
}

describe('isConnectionError', () => {
  it('recognises dropped connections and restarts, also wrapped by drizzle', () => {
    expect(isConnectionError(pgError('ECONNREFUSED'))).toBe(true);
    expect(isConnectionError(pgError('57P01', 'terminating connection due to administrator command'))).toBe(
      true,
    );
    expect(isConnectionError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isConnectionError(new DrizzleQueryError('select 1', [], pgError('08006')))).toBe(true);
  });

  it('does not treat constraint violations or bad SQL as retryable', () => {
    expect(isConnectionError(pgError('23505', 'duplicate key value violates unique constraint'))).toBe(false);
    expect(isConnectionError(new DrizzleQueryError('select', [], pgError('42P01')))).toBe(false);
    expect(isConnectionError('ECONNREFUSED')).toBe(false);
    expect(isConnectionError(undefined)).toBe(false);
  });
});

describe('withRetry', () => {
  it('retries connection errors with growing delays until success', async () => {
    let calls = 0;
    const delays: number[] = [];
    const result = await withRetry(
      async () => {
        calls += 1;
        if (calls < 4) throw pgError('ECONNRESET');
        return 'ok';
      },
      { baseDelayMs: 1, maxDelayMs: 4, onRetry: (_e, _a, d) => delays.push(d) },
    );
    expect(result).toBe('ok');
    expect(calls).toBe(4);
    expect(delays).toEqual([1, 2, 4]);
  });

  it('gives up after the configured attempts with the last error', async () => {
    let calls = 0;
    const err = pgError('57P03');
    await expect(
      withRetry(
        async () => {
          calls += 1;
          throw err;
        },
        { attempts: 3, baseDelayMs: 1 },
      ),
    ).rejects.toBe(err);
    expect(calls).toBe(3);
  });

  it('does not retry other errors', async () => {
    let calls = 0;
    await expect(
      withRetry(async () => {
        calls += 1;
        throw pgError('23505');
      }),
    ).rejects.toThrow('boom');
    expect(calls).toBe(1);
  });
});
