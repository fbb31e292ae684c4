import { CalibrationRepository } from '../db/repositories/calibrations.js';
import { RunRepository } from '../db/repositories/runs.js';
import { ServingRepository, type ServedWindowRow } from '../db/repositories/serving.js';
import type { ModelVersionRow } from '../db/schema/index.js';
import { calibrateOnServed, shadowCandidates } from '../ml/corella/served-calibration.js';
import { CorellaError } from '../ml/errors.js';
import { throwIfAborted, type LongRunOptions } from '../ml/progress.js';
import { ServingEngine } from '../ml/serving/engine.js';
import type { ScoreRequest } from '../ml/serving/types.js';
import type { ActivityContext } from './context.js';
import { calibrationConfigOf, calibrationRow, storableThreshold } from './corella-config.js';
import { METRIC_PREFIX, prefixMetrics } from './metric-keys.js';
import { servingBundleOf } from './serving-bundle.js';
import type { PipelineConfig, RecalibrateInput, RecalibrateResult } from './types.js';

export const DEFAULT_SERVED_WINDOW_DAYS = 7;
export const DEFAULT_SHADOW_ROWS = 256;

interface ShadowOutcome {
  scored: number;
  /** Why nothing could be shadow-scored (no LLM in the version, or it failed to load). */
  unavailable?: string;
}

/**
 * LLM answers for rows the server did not route, so thresholds below the current one can be judged.
 *
 * Shadow scoring runs offline, here in the recalibration activity, from the logged requests, not online on
 * the server's spare LLM capacity: the LLM budget exists to protect live requests, and "spare" capacity
 * vanishes exactly when traffic is heavy, which is when drift happens; here it costs worker time only,
 * heartbeats and retries like any activity, and needs no server running. The engine is the serving engine
 * itself (same request encoding, prompts and adapter), so an offline answer is the answer the server would
 * have given. A request logged without a history is rescored on the dataset's history only: replaying
 * feedback into it would leak the very outcomes being predicted.
 */
async function shadowScore(
  ctx: ActivityContext,
  version: ModelVersionRow,
  rows: ServedWindowRow[],
  want: Int32Array,
  pLlm: Float64Array,
  run: LongRunOptions,
): Promise<ShadowOutcome> {
  const bundle = await servingBundleOf(ctx.db, ctx.home, version, ctx.store);
  if (!bundle.llm) return { scored: 0, unavailable: 'the model version has no LLM configured' };
  const engine = await ServingEngine.load(ctx.store, bundle, { budget: { maxConcurrency: 1 } });
  try {
    if (engine.llmUnavailable) return { scored: 0, unavailable: engine.llmUnavailable };
    // One shadow request per logged request: its candidates share the user's prompt prefix.
    const byRequest = new Map<string, number[]>();
    for (const i of want) {
      const list = byRequest.get(rows[i].requestId) ?? [];
      list.push(i);
      byRequest.set(rows[i].requestId, list);
    }
    let scored = 0;
    for (const idx of byRequest.values()) {
      throwIfAborted(run.signal);
      const first = rows[idx[0]];
      const req: ScoreRequest = {
        user: { id: first.userId },
        candidates: idx.map((i) => ({ item: rows[i].itemId })),
        ...(first.history ? { history: first.history } : {}),
      };
      let answers: { item: string; pLlm: number }[];
      try {
        answers = await engine.shadowScore(req);
      } catch (e) {
        // A logged request this engine refuses (e.g. a history over its limit) stays without LLM answers;
        // an LLM failure is worth a retry of the activity.
        if (e instanceof CorellaError && e.code === 'BAD_REQUEST') continue;
        throw e;
      }
      answers.forEach((a, k) => (pLlm[idx[k]] = a.pLlm));
      scored += idx.length;
      await run.onProgress?.({ stage: 'shadow-scoring', done: scored, total: want.length });
    }
    return { scored };
  } finally {
    await engine.dispose();
  }
}

/**
 * The routed share `threshold` had when it was calibrated, when on record: the newest calibration of the
 * version that chose that threshold (not this run's own, which a retry may already have linked), at that
 * point of its curve.
 */
async function calibratedShare(
  ctx: ActivityContext,
  versionId: number,
  threshold: number | null,
  runId: string,
): Promise<number | null> {
  if (threshold === null) return null;
  const same = (t: number) => Math.abs(t - threshold) < 1e-9;
  const cals = await new CalibrationRepository(ctx.db).listForModelVersion(versionId);
  const setter = cals.reverse().find((c) => c.runId !== runId && same(c.threshold));
  return setter?.curve.find((p) => same(p.threshold))?.llmShare ?? null;
}

/**
 * Recalibration on served traffic: the window is the version's logged predictions that received feedback
 * in the last `windowDays`. Applying writes the version's threshold (with the calibration, in one
 * transaction); the database trigger of migration 0002 then notifies the servers, which swap to it.
 */
export async function recalibrateOnServed(
  ctx: ActivityContext,
  input: RecalibrateInput & { runId: string },
  version: ModelVersionRow,
  config: PipelineConfig,
  run: LongRunOptions,
): Promise<RecalibrateResult> {
  const windowDays = input.windowDays ?? DEFAULT_SERVED_WINDOW_DAYS;
  const shadowRows = input.shadowRows ?? DEFAULT_SHADOW_ROWS;
  if (!Number.isInteger(shadowRows) || shadowRows < 0) {
    throw new CorellaError('BAD_CONFIG', `shadowRows: must be an integer >= 0, got ${shadowRows}`, {
      details: { field: 'shadowRows' },
    });
  }
  const rows = await new ServingRepository(ctx.db).recalibrationWindow({
    modelVersionId: version.id,
    windowDays,
  });
  if (rows.length === 0) {
    throw new CorellaError(
      'DATA_NOT_AVAILABLE',
      `no logged prediction of model version ${version.id} received feedback in the last ${windowDays} days`,
      { details: { modelVersionId: version.id, windowDays } },
    );
  }
  const calConfig = {
    ...calibrationConfigOf(config),
    ...(input.maxRoutedFraction !== undefined ? { maxRoutedFraction: input.maxRoutedFraction } : {}),
  };
  const maxRoutedFraction = calConfig.maxRoutedFraction ?? 0.2;
  const entropy = Float64Array.from(rows, (r) => r.entropy);
  const pLlm = Float64Array.from(rows, (r) => r.pLlm ?? NaN);
  const want = shadowCandidates(entropy, pLlm, shadowRows);
  const shadow = want.length > 0 ? await shadowScore(ctx, version, rows, want, pLlm, run) : { scored: 0 };

  // A retried attempt must decide as the first did: the first may already have applied its threshold, so the
  // version's threshold is no longer the one being replaced. The first attempt records the threshold it
  // started from before it applies anything.
  const runs = new RunRepository(ctx.db);
  const recorded = (await runs.latestMetrics([input.runId])).get(input.runId)?.[
    'recalibration.previousThreshold'
  ];
  const currentThreshold =
    recorded === undefined ? version.calibratedThreshold : Number.isNaN(recorded) ? null : recorded;
  const cal = calibrateOnServed(
    {
      pServed: Float64Array.from(rows, (r) => r.p),
      pCrm: Float64Array.from(rows, (r) => r.pCrm),
      entropy,
      pLlm,
      labels: Float64Array.from(rows, (r) => r.label),
      routedLive: Uint8Array.from(rows, (r) => (r.route === 'crm' ? 0 : 1)),
    },
    {
      maxRoutedFraction,
      currentThreshold,
      metric: calConfig.metric,
      quantiles: calConfig.quantiles,
      calibratedRoutedFraction: await calibratedShare(ctx, version.id, currentThreshold, input.runId),
    },
  );
  const threshold = storableThreshold(cal.threshold);
  const metrics: Record<string, number> = {
    windowRows: cal.n,
    threshold,
    [`new.${cal.metric}`]: cal.chosen[cal.metric],
    routedFraction: cal.chosen.routedFraction,
    liveRoutedFraction: cal.drift.liveRoutedFraction,
    llmRows: cal.llmRows,
    shadowScored: shadow.scored,
    'served.auc': cal.served.auc,
    'served.logLoss': cal.served.logLoss,
    'served.acc': cal.served.acc,
    previousThreshold: currentThreshold ?? NaN,
  };
  if (cal.current) metrics[`previous.${cal.metric}`] = cal.current[cal.metric];
  if (cal.drift.calibratedRoutedFraction !== null) {
    metrics.calibratedRoutedFraction = cal.drift.calibratedRoutedFraction;
    metrics.drift = cal.drift.delta!;
  }
  await runs.logMetrics(input.runId, prefixMetrics(METRIC_PREFIX.recalibration, metrics));
  // Upsert by (run, metric): a retry rewrites this row; applying sets the version's threshold with it.
  const calRow = await new CalibrationRepository(ctx.db).record(
    calibrationRow(input.runId, cal, cal.apply ? version.id : null),
  );
  return {
    modelVersionId: String(version.id),
    calibrationId: String(calRow.id),
    threshold,
    previousThreshold: currentThreshold,
    applied: cal.apply,
    metrics,
    source: 'served',
    drift: {
      liveRoutedFraction: cal.drift.liveRoutedFraction,
      calibratedRoutedFraction: cal.drift.calibratedRoutedFraction,
      newRoutedFraction: cal.chosen.routedFraction,
      overBudget: cal.drift.overBudget,
    },
    served: { auc: cal.served.auc, logLoss: cal.served.logLoss, acc: cal.served.acc },
    ...(shadow.unavailable ? { note: `no shadow scoring: ${shadow.unavailable}` } : {}),
  };
}
