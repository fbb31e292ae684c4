import { Connection, WorkflowFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, RetryState } from '@temporalio/common';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { EXIT } from '../../cli/args.js';
import { failureExitCode, isUnavailable } from '../../cli/failure.js';
import { freePort } from '../../cli/services/ports.js';
import { boundDbError } from '../../db/errors.js';
import { dbWaitMs, isConnectionError } from '../../db/retry.js';
import { CorellaError } from '../../ml/errors.js';

async function thrown(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

function failedRun(type: string): WorkflowFailedError {
  const app = ApplicationFailure.create({ message: 'x', type, cause: new Error('inner') });
  const activity = new ActivityFailure(
    'Activity task failed',
    'ingestDataset',
    '1',
    RetryState.NON_RETRYABLE_FAILURE,
    'w',
    app,
  );
  return new WorkflowFailedError('Workflow execution failed', activity, RetryState.NON_RETRYABLE_FAILURE);
}

describe('errors at the edges are short, typed and mapped to the README exit codes', () => {
  it('a refused Postgres connection is DB_UNAVAILABLE naming the address', async () => {
    const port = await freePort();
    const client = new pg.Client({ host: '127.0.0.1', port, connectionTimeoutMillis: 2_000 });
    const e = await thrown(client.connect());
    expect(isConnectionError(e)).toBe(true);
    const bounded = boundDbError(e);
    expect(bounded?.code).toBe('DB_UNAVAILABLE');
    expect(bounded?.message).toBe(`DB_UNAVAILABLE: ECONNREFUSED 127.0.0.1:${port}`);
    expect(bounded?.retryable).toBe(true);
  });

  it('an unreachable Temporal frontend counts as unavailable (gRPC 14 or the connection error)', async () => {
    const port = await freePort();
    const e = await thrown(Connection.connect({ address: `127.0.0.1:${port}`, connectTimeout: 2_000 }));
    expect(isUnavailable(e)).toBe(true);
    expect(
      isUnavailable(Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 })),
    ).toBe(true);
    expect(isUnavailable(new Error('something else'))).toBe(false);
  });

  it('a failed run exits 4 for bad input, 3 for a vanished service, 1 otherwise', () => {
    expect(failureExitCode(failedRun('BAD_DATASET'))).toBe(EXIT.badInput);
    expect(failureExitCode(failedRun('BAD_CONFIG'))).toBe(EXIT.badInput);
    expect(failureExitCode(failedRun('DB_UNAVAILABLE'))).toBe(EXIT.unavailable);
    expect(failureExitCode(failedRun('SERVICE_UNAVAILABLE'))).toBe(EXIT.unavailable);
    expect(failureExitCode(failedRun('ARTIFACT_CORRUPT'))).toBe(EXIT.runFailed);
    expect(failureExitCode(failedRun('Error'))).toBe(EXIT.runFailed);
  });

  it('CORELLA_DB_WAIT takes durations and names itself when malformed', () => {
    expect(dbWaitMs({})).toBe(30 * 60_000);
    expect(dbWaitMs({ CORELLA_DB_WAIT: '90s' })).toBe(90_000);
    expect(dbWaitMs({ CORELLA_DB_WAIT: '2h' })).toBe(7_200_000);
    expect(dbWaitMs({ CORELLA_DB_WAIT: '1500' })).toBe(1_500);
    let e: unknown;
    try {
      dbWaitMs({ CORELLA_DB_WAIT: 'soon' });
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(CorellaError);
    expect((e as CorellaError).message).toMatch(/^CORELLA_DB_WAIT: must be a duration/);
  });
});
