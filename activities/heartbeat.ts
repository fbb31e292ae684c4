import { Context } from '@temporalio/activity';
import type { LongRunOptions, Progress } from '../ml/progress.js';

// The latest progress of each running activity, re-sent by its pulse between progress reports.
const latest = new WeakMap<Context, unknown>();

/**
 * How often a running activity heartbeats even when its computation reports nothing. The SDK sends at most
 * one heartbeat per throttle interval (workers set it to 2 s), and a heartbeat's reply is the only way a
 * cancellation or termination reaches the activity (as `cancellationSignal`, which ml/ sees): so a stopped
 * run's training ends within about 2 s, and a dead worker is noticed after the 30 s heartbeat timeout.
 */
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

/** How often a running activity tells its retrain workflow its progress (each signal is a history event). */
const SIGNAL_MS = 10_000;

/**
 * Forwards progress to the retrain workflow as a signal, so its current details in the Temporal UI show
 * what the running activity is doing (a workflow cannot read heartbeats). Best effort: a lost signal only
 * leaves the details a little behind, and an activity without a client (unit tests) sends nothing.
 */
function progressSignaller(ctx: Context): (p: Progress) => void {
  if (ctx.info.workflowType !== 'retrainWorkflow') return () => undefined;
  let lastSent = 0;
  let lastStage: string | undefined;
  return (p) => {
    const now = Date.now();
    if (now - lastSent < SIGNAL_MS && p.stage === lastStage) return;
    lastSent = now;
    lastStage = p.stage;
    try {
      const exec = ctx.info.workflowExecution;
      if (!exec) return;
      const live = {
        activity: ctx.info.activityType,
        stage: p.stage,
        epoch: p.epoch,
        done: p.done,
        total: p.total,
        samplesPerSec: p.samplesPerSec,
        etaSec: p.etaSec,
        message: p.message,
      };
      ctx.client.workflow
        .getHandle(exec.workflowId, exec.runId)
        .signal('activityProgress', live)
        .catch(() => undefined);
    } catch {
      // no client in this context
    }
  };
}

/** Observers of every activity's progress (the worker's Prometheus metrics: samples/s, tokens/s). */
const progressObservers = new Set<(activityType: string, p: Progress) => void>();

/** Registers an observer of activity progress; returns its removal. Observers must not throw. */
export function observeActivityProgress(fn: (activityType: string, p: Progress) => void): () => void {
  progressObservers.add(fn);
  return () => progressObservers.delete(fn);
}

/**
 * Progress callbacks and cancellation for ml/ code running inside an activity: every progress report becomes
 * a heartbeat (the SDK throttles them), and the activity's cancellation reaches ml/ as an AbortSignal.
 */
export function activityRunOptions(stage: string): LongRunOptions & { lastCheckpoint(): string | undefined } {
  const ctx = Context.current();
  let last: Progress | undefined = ctx.info.heartbeatDetails as Progress | undefined;
  const signal = progressSignaller(ctx);
  return {
    signal: ctx.cancellationSignal,
    onProgress: (p) => {
      last = { ...p, stage: p.stage || stage, checkpoint: p.checkpoint ?? last?.checkpoint };
      latest.set(ctx, last);
      ctx.heartbeat(last);
      signal(last);
      for (const observe of progressObservers) observe(ctx.info.activityType, last);
    },
    lastCheckpoint: () => last?.checkpoint,
  };
}
