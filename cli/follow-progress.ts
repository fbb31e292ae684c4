import type { WorkflowHandle } from '@temporalio/client';
import type { RetrainProgress } from '../activities/types.js';
import type { Progress } from '../ml/progress.js';
import { progressLine } from './output.js';
import { ProgressLog } from './progress-log.js';
import { pendingProgress } from './run-progress.js';

/** What following needs of a workflow handle: its `progress` query and its description. */
export type FollowedWorkflow = Pick<WorkflowHandle, 'query' | 'describe'>;

export interface FollowOptions {
  /** Between polls. */
  intervalMs?: number;
  /** How long an activity waits for a worker before that is said. */
  waitingNoteMs?: number;
  /**
   * Runs one poll's calls under a deadline (`Connection.withDeadline` of the handle's connection). Without
   * it a poll against a dead Temporal lasts as long as the client's retries: measured 18.5 s, the default
   * interceptor's ten attempts backing off to 5 s, and `corella up` waited that long to exit.
   */
  withDeadline?: <T>(deadline: Date, fn: () => Promise<T>) => Promise<T>;
  /** One poll's deadline: a poll past it is skipped like a failed one. */
  pollDeadlineMs?: number;
}

/**
 * Polls the workflow's `progress` query every `intervalMs` and prints each new stage and the running
 * activities' last heartbeats. The returned stop waits for the poll in flight: the caller closes the
 * Temporal connection next, and a call still open then is retried by the client's interceptor on a timer
 * that throws "Channel has been shut down" outside any try, which ended a finished `corella up` with exit 1.
 * With `withDeadline` that wait is bounded: a call past its deadline ends as DEADLINE_EXCEEDED, which the
 * interceptor does not retry, so stop returns within the deadline plus one backoff (at most 5 s).
 */
export function followProgress(
  handle: FollowedWorkflow,
  log: (l: string) => void,
  {
    intervalMs = 2_000,
    waitingNoteMs = 30_000,
    withDeadline = (_deadline, fn) => fn(),
    pollDeadlineMs = 5_000,
  }: FollowOptions = {},
): () => Promise<void> {
  let last = '';
  const waitingNoted = new Map<string, number>();
  let stopped = false;
  let wake: (() => void) | undefined;
  const lines = new ProgressLog();
  const poll = async (): Promise<void> => {
    const p = await handle.query<RetrainProgress>('progress');
    if (p.stage !== last) {
      if (last && process.stderr.isTTY) process.stderr.write('\n');
      last = p.stage;
      log(`  stage: ${p.stage}`);
    }
    // The running activities' last heartbeats: a bar on a terminal, throttled lines in a log.
    for (const a of await pendingProgress(handle)) {
      const waited = a.scheduledAt ? Date.now() - a.scheduledAt.getTime() : 0;
      if (waited >= waitingNoteMs) noteWaiting(a.activity ?? 'activity', a.attempt ?? 1, waited);
      const q = (a.progress ?? {}) as Progress;
      if (typeof q.done !== 'number') continue;
      const label = `    ${q.stage ?? a.activity}`;
      if (process.stderr.isTTY) progressLine(label, q.done, q.total);
      else {
        const line = lines.line(label, q.done, q.total);
        if (line) log(line);
      }
    }
  };
  // An activity that no worker takes: each queue's workers are busy, usually with another open run (a
  // `corella up` that was stopped and never resumed leaves its workflow open, and the next stack's gpu
  // worker, one activity at a time, finishes that run first). Said once per attempt, then every 5 minutes.
  const noteWaiting = (activity: string, attempt: number, waitedMs: number): void => {
    const key = `${activity}#${attempt}`;
    const lastAt = waitingNoted.get(key);
    if (lastAt !== undefined && waitedMs - lastAt < 5 * 60_000) return;
    waitingNoted.set(key, waitedMs);
    if (process.stderr.isTTY && last) process.stderr.write('\n');
    log(
      `    ${activity}: waiting ${Math.round(waitedMs / 1000)} s for a worker; those of its queue are busy ` +
        '(another open run? corella runs list) or none is running',
    );
  };
  const loop = (async () => {
    while (!stopped) {
      try {
        await withDeadline(new Date(Date.now() + pollDeadlineMs), poll);
      } catch {
        // The workflow may not have started its first task yet, or Temporal is away (past the deadline).
      }
      if (stopped) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, intervalMs);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = undefined;
    }
  })();
  return async () => {
    stopped = true;
    wake?.();
    await loop;
  };
}
