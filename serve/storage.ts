import { isConnectionError } from '../db/retry.js';
import type { Database } from '../db/connection.js';
import { ServingRepository } from '../db/repositories/serving.js';
import { CorellaError } from '../ml/errors.js';
import type { FeedbackInput, FeedbackSink, LoggedRequest, PredictionSink } from './app.js';
import { PredictionLog } from './prediction-log.js';
import type { ServeStorage } from './server.js';

/** A connection failure becomes a typed "unavailable" so the API answers 503, not 500. */
function unavailable(e: unknown): never {
  if (isConnectionError(e))
    throw new CorellaError('SERVICE_UNAVAILABLE', 'the database is unreachable', { cause: e });
  throw e;
}

/** Prediction log (spooled, replayed) and feedback, both in Postgres: what `corella serve` runs with. */
export async function databaseStorage(
  db: Database,
  opts: { spoolDir: string; flushIntervalMs?: number; maxBatch?: number },
): Promise<ServeStorage> {
  const repo = new ServingRepository(db);
  // Small, frequent flushes. The rounds run in the log's worker thread now, so their size no longer
  // costs the request loop; 50 ms × 50 requests is kept because it keeps the backlog (and /metrics'
  // prediction_log_pending) short, and larger batches drained no faster (bench/prediction-log.ts
  // --max-batch 50 vs 500: 200-270 fifty-candidate requests/s either way, Postgres-bound on this machine).
  const log = await PredictionLog.open({
    db,
    spoolDir: opts.spoolDir,
    flushIntervalMs: opts.flushIntervalMs ?? 50,
    maxBatch: opts.maxBatch ?? 50,
  });
  const predictions: PredictionSink = {
    append: (e: LoggedRequest) => log.append(e),
  };
  const feedback: FeedbackSink = {
    async record(fb: FeedbackInput) {
      try {
        const r = await repo.recordFeedback({
          requestId: fb.requestId,
          user: fb.user,
          item: fb.item,
          label: fb.label,
          rating: fb.rating,
          ts: fb.ts,
        });
        return { stored: r.created };
      } catch (e) {
        return unavailable(e);
      }
    },
  };
  return {
    predictions,
    feedback,
    async feedbackSince(since: Date) {
      const rows = await repo.feedbackSince(since);
      return rows.map((r) => ({
        user: r.userId,
        item: r.itemId,
        rating: r.rating ?? r.label,
        ts: r.ts.getTime() / 1000,
      }));
    },
    pending: () => log.counters().pending,
    predictionLog: log,
    close: () => log.close(),
  };
}
