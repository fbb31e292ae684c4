import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { boundDbError } from '../db/errors.js';
import { dbWaitMs as dbWaitFromEnv, waitOutDatabaseOutage } from '../db/retry.js';
import { CorellaError } from '../ml/errors.js';
import { withPulse } from './heartbeat.js';

/**
 * Longest message a failure carries. Temporal stores failures in the workflow history and refuses large
 * ones ("Failure exceeds size limit"); a driver error quoting its statement once reached many KB.
 */
const MAX_MESSAGE = 2_000;

function clip(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}… (${text.length} characters)` : text;
}

/** A cause chain as bounded failures (no driver error, whose message quotes statements, passes unclipped). */
function boundedCause(e: unknown, depth = 0): ApplicationFailure | undefined {
  if (!(e instanceof Error) || depth >= 3) return undefined;
  const db = boundDbError(e);
  const failure = ApplicationFailure.create({
    message: clip(db?.message ?? e.message),
    type: db?.code ?? e.name,
    cause: db ? undefined : boundedCause(e.cause, depth + 1),
  });
  failure.stack = clip(e.stack ?? '');
  return failure;
}

/**
 * Our typed errors become Temporal failures whose `type` is the error code; bad input is non-retryable.
 * Database errors become DB_UNAVAILABLE / DB_ERROR first, and every message is bounded.
 */
export function toFailure(e: unknown): unknown {
  if (e instanceof ApplicationFailure) return e;
  const typed = e instanceof CorellaError ? e : boundDbError(e);
  if (typed) {
    return ApplicationFailure.create({
      message: clip(typed.message),
      type: typed.code,
      nonRetryable: !typed.retryable,
      details: [typed.details],
      cause: typed === e ? boundedCause(typed.cause) : undefined,
    });
  }
  // Cancellations and other SDK errors pass unchanged; anything else is bounded.
  if (e instanceof Error && e.message.length > MAX_MESSAGE && e.name !== 'CancelledFailure') {
    return ApplicationFailure.create({
      message: clip(e.message),
      type: e.name,
      cause: boundedCause(e.cause),
    });
  }
  return e;
}

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // called outside an activity (unit tests call activity functions directly)
  }
}

/**
 * How long an activity may still wait out a database outage: the configured window, but never past its own
 * start-to-close deadline, so the failure it then raises reaches Temporal (which retries the activity)
 * instead of a silent timeout.
 */
function remainingWindow(ctx: Context | undefined): number | undefined {
  const info = ctx?.info;
  if (!info?.startToCloseTimeoutMs) return undefined;
  const started = info.currentAttemptScheduledTimestampMs ?? Date.now();
  return Math.max(0, started + info.startToCloseTimeoutMs - Date.now() - 10_000);
}

/**
 * Wraps every activity: it heartbeats while it runs, a database outage is waited out (CORELLA_DB_WAIT,
 * default 30 minutes, heartbeating meanwhile so Temporal does not time it out), and a thrown error reaches
 * the workflow typed and bounded.
 */
export function withTypedFailures<T extends object>(activities: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    if (typeof fn !== 'function') continue;
    out[name] = async (...args: unknown[]) => {
      const ctx = activityContext();
      let told = false;
      try {
        return await withPulse(() =>
          waitOutDatabaseOutage(() => (fn as (...a: unknown[]) => Promise<unknown>)(...args), {
            windowMs: limitWindow(remainingWindow(ctx)),
            signal: ctx?.cancellationSignal,
            onWait: (failure, waitedMs) => {
              if (told) return;
              told = true;
              console.warn(
                `activity ${name}: ${failure.message}; waiting for the database (${Math.round(waitedMs / 1000)} s so far)`,
              );
            },
          }),
        );
      } catch (e) {
        throw toFailure(e);
      }
    };
  }
  return out as T;
}

function limitWindow(remaining: number | undefined): number | undefined {
  if (remaining === undefined) return undefined;
  return Math.min(remaining, dbWaitFromEnv());
}

export function stageNotImplemented(stage: string, issue: string): never {
  throw ApplicationFailure.create({
    message: `stage "${stage}" is not implemented yet (${issue}); no result was produced`,
    type: 'STAGE_NOT_IMPLEMENTED',
    nonRetryable: true,
  });
}
