/**
 * The prediction log's flusher, in a worker thread: reading spool segments, decoding their JSON, building the
 * INSERTs and the pg protocol work all happen here, so the event loop that answers requests keeps only the
 * one synchronous spool append per request (measured: the flusher was the largest cost on that loop).
 *
 * Protocol with serve/prediction-log.ts: `{type: 'drain', id, openSeq}` runs one round over every closed
 * segment and answers `{type: 'done', id, error?, connection?}`; each stored or refused batch is reported as
 * `{type: 'progress', ...DrainProgress}` as it happens; `{type: 'close'}` ends the pool and the thread. The
 * main thread owns the spool's open segment (append, rotate, fsync) and the counters; this thread only reads
 * and deletes closed segments, so the two never touch the same file for writing.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { openDatabase } from '../db/connection.js';
import { isConnectionError } from '../db/retry.js';
import { message, SpoolDrainer, type DrainProgress } from './spool-drainer.js';

export interface WorkerData {
  databaseUrl: string;
  dir: string;
  maxBatch: number;
}

export type ToWorker = { type: 'drain'; id: number; openSeq: number } | { type: 'close' };
export type FromWorker =
  | { type: 'ready' }
  | ({ type: 'progress' } & DrainProgress)
  | { type: 'done'; id: number; error?: string; connection?: boolean };

/**
 * Lowest CPU priority for this thread only (Linux: setpriority on a thread id touches that thread). The
 * flusher is background work sharing cores with the request thread: measured pinned to one core, its drain
 * rounds preempted requests (the request thread's profile showed the worker's CPU time as wall time inside
 * `postMessage`), and a backlog it leaves is safe in the spool. Elsewhere (no /proc/thread-self) it keeps the
 * default priority.
 */
function yieldToRequests(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, 19);
  } catch {
    // Not Linux, or not permitted: the default priority is only slower, never wrong.
  }
}
yieldToRequests();

const port = parentPort;
if (!port) throw new Error('serve/prediction-log-worker.ts runs only as a worker thread');
const data = workerData as WorkerData;
// One connection: rounds never overlap, and the server's own pool keeps its four for requests and feedback.
const handle = openDatabase(data.databaseUrl, {
  max: 1,
  connectionTimeoutMillis: 2_000,
  onIdleError: () => {},
});
const post = (m: FromWorker) => port.postMessage(m);
const drainer = new SpoolDrainer(handle.db, data.dir, data.maxBatch, (p) => post({ type: 'progress', ...p }));

port.on('message', (m: ToWorker) => {
  if (m.type === 'close') {
    void handle.close().finally(() => port.close());
    return;
  }
  drainer.drain(m.openSeq).then(
    () => post({ type: 'done', id: m.id }),
    (e: unknown) => post({ type: 'done', id: m.id, error: message(e), connection: isConnectionError(e) }),
  );
});
post({ type: 'ready' });
