import { Context } from '@temporalio/activity';
import type { LongRunOptions, Progress } from '../ml/progress.js';

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
      ctx.heartbeat(last);
    },
    lastCheckpoint: () => last?.checkpoint,
  };
}

/** The checkpoint named by the previous attempt's last heartbeat, if this is a retry. */
export function previousCheckpoint(): string | undefined {
  const details = Context.current().info.heartbeatDetails as Progress | undefined;
  return details?.checkpoint;
}
