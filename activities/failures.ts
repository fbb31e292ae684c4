import { ApplicationFailure } from '@temporalio/common';
import { CorellaError } from '../ml/errors.js';
import { withPulse } from './heartbeat.js';

/** Our typed errors become Temporal failures whose `type` is the error code; bad input is non-retryable. */
export function toFailure(e: unknown): unknown {
  if (e instanceof CorellaError) {
    return ApplicationFailure.create({
      message: e.message,
      type: e.code,
      nonRetryable: !e.retryable,
      details: [e.details],
      cause: e,
    });
  }
  return e;
}

/** Wraps every activity: a thrown CorellaError reaches the workflow with its code, and it heartbeats while it runs. */
export function withTypedFailures<T extends object>(activities: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    if (typeof fn !== 'function') continue;
    out[name] = async (...args: unknown[]) => {
      try {
        return await withPulse(() => (fn as (...a: unknown[]) => Promise<unknown>)(...args));
      } catch (e) {
        throw toFailure(e);
      }
    };
  }
  return out as T;
}

export function stageNotImplemented(stage: string, issue: string): never {
  throw ApplicationFailure.create({
    message: `stage "${stage}" is not implemented yet (${issue}); no result was produced`,
    type: 'STAGE_NOT_IMPLEMENTED',
    nonRetryable: true,
  });
}
