import { Context } from '@temporalio/activity';
import type { LongRunOptions, Progress } from '../ml/progress.js';

// The latest progress of each running activity, re-sent by its pulse between progress reports.
const latest = new WeakMap<Context, unknown>();

/** How often a running activity heartbeats even when its computation reports nothing. */
const PULSE_MS = 1_000;

function currentContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // called outside an activity (unit tests call activity functions directly)
  }
}

/**
 * Heartbeats every second while `fn` runs, carrying the latest progress (or the previous attempt's details,
 * so a checkpoint id survives until new progress arrives). Compute that yields to the event loop — tfjs
 * between batches, node-llama-cpp while native code works — therefore never misses a heartbeat timeout.
 */
export async function withPulse<T>(fn: () => Promise<T>): Promise<T> {
  const ctx = currentContext();
  if (!ctx) return fn();
  const timer = setInterval(() => ctx.heartbeat(latest.get(ctx) ?? ctx.info.heartbeatDetails), PULSE_MS);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}

/**
 * Progress callbacks and cancellation for ml/ code running inside an activity: every progress report becomes
 * a heartbeat (the SDK throttles them), and the activity's cancellation reaches ml/ as an AbortSignal.
 */
export function activityRunOptions(stage: string): LongRunOptions & { lastCheckpoint(): string | undefined } {
  const ctx = Context.current();
  let last: Progress | undefined = ctx.info.heartbeatDetails as Progress | undefined;
  return {
    signal: ctx.cancellationSignal,
    onProgress: (p) => {
      last = { ...p, stage: p.stage || stage, checkpoint: p.checkpoint ?? last?.checkpoint };
      latest.set(ctx, last);
      ctx.heartbeat(last);
    },
    lastCheckpoint: () => last?.checkpoint,
  };
}
