/** Progress reported by long computations; activities forward it as Temporal heartbeat details. */
export interface Progress {
  stage: string;
  done: number;
  total?: number;
  epoch?: number;
  step?: number;
  samplesPerSec?: number;
  tokensPerSec?: number;
  etaSec?: number;
  /** Id of the last checkpoint written (artifact sha256 or named key), for resumption. */
  checkpoint?: string;
  message?: string;
}

export type ProgressFn = (p: Progress) => void | Promise<void>;

/** Options every long computation accepts: progress and cooperative cancellation. */
export interface LongRunOptions {
  onProgress?: ProgressFn;
  signal?: AbortSignal;
}

/** Yields to the event loop so heartbeats, cancellation and I/O keep flowing between compute chunks. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const reason: unknown = signal.reason;
    throw reason instanceof Error ? reason : new Error('cancelled');
  }
}
