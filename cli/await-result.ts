import type { WorkflowHandle } from '@temporalio/client';
import { isUnavailable } from './failure.js';

export interface AwaitResultOptions {
  log: (line: string) => void;
  /** How long Temporal may stay unreachable before the error is thrown (exit 3); default unbounded. */
  giveUpMs?: number;
  /** Polled every 200 ms: when it returns a message, waiting ends with that error. */
  stop?: () => string | undefined;
}

/**
 * A workflow's result, waiting through a Temporal frontend that is briefly unreachable. While `up`'s
 * supervisor restarts a dead dev server, the long poll fails with gRPC status 14: the run itself continues
 * on the restarted server (its state is in SQLite), so that is a wait, not a failed run.
 */
export async function resultThroughOutages<T>(handle: WorkflowHandle, opts: AwaitResultOptions): Promise<T> {
  let since: number | undefined;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    try {
      const stopped = new Promise<never>((_, reject) => {
        timer = setInterval(() => {
          const why = opts.stop?.();
          if (why !== undefined) reject(new Error(why));
        }, 200);
      });
      return (await Promise.race([handle.result(), stopped])) as T;
    } catch (e) {
      if (!isUnavailable(e) || opts.stop?.() !== undefined) throw e;
      if (since === undefined) {
        since = Date.now();
        opts.log('Temporal is unreachable; waiting for it to come back');
      }
      if (Date.now() - since > (opts.giveUpMs ?? Infinity)) throw e;
      await new Promise((r) => setTimeout(r, 2_000));
    } finally {
      clearInterval(timer);
    }
  }
}
