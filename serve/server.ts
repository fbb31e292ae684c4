import { sql } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { resolveModelVersion, servingBundleOf, type ModelRef } from '../activities/serving-bundle.js';
import { openDatabase, type DatabaseHandle } from '../db/connection.js';
import { ModelRepository } from '../db/repositories/models.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { CorellaError } from '../ml/errors.js';
import { DEFAULT_LIMITS, ServingEngine } from '../ml/serving/engine.js';
import type { LlmBudget, ServingLimits } from '../ml/serving/types.js';
import { serveLogger } from './logging.js';
import { buildApp, type FeedbackSink, type PredictionSink } from './app.js';
import { ModelFollower, type ResolvedRef } from './follower.js';
import { ServeMetrics } from './metrics.js';
import { ModelHolder, type LoadedModel } from './model-holder.js';
import type { PredictionLog } from './prediction-log.js';

export interface ServeOptions {
  databaseUrl: string;
  store: ArtifactStore;
  /** CORELLA_HOME: LLM model cache and the default spool folder. */
  home: string;
  /** Alias or version id to follow (default champion). */
  model?: ModelRef;
  host?: string;
  port?: number;
  /** Required when host is not a loopback address. */
  token?: string;
  budget?: Partial<LlmBudget>;
  limits?: Partial<ServingLimits>;
  /** Overrides the version's threshold: +Infinity serves CRM-only (benchmarks), −Infinity LLM-only. */
  threshold?: number;
  microBatch?: { maxWaitMs?: number; maxRows?: number };
  pollMs?: number;
  /** Where the prediction log's write-ahead spool lives (default <home>/serve-spool). */
  spoolDir?: string;
  /** Prediction log and feedback storage; made from the database when omitted (serve/storage.ts). */
  storage?: (db: DatabaseHandle['db']) => Promise<ServeStorage>;
  log?(msg: string): void;
}

export interface ServeStorage {
  predictions?: PredictionSink;
  feedback?: FeedbackSink;
  /** Users' feedback since a time, to replay into a freshly loaded model's histories. */
  feedbackSince?(since: Date): Promise<{ user: string; item: string; rating: number; ts: number }[]>;
  pending?(): number;
  /** The spooled prediction log behind `predictions`, when there is one (its counters, its flusher). */
  predictionLog?: PredictionLog;
  close?(): Promise<void>;
}

export interface RunningServer {
  url: string;
  app: FastifyInstance;
  holder: ModelHolder;
  metrics: ServeMetrics;
  follower: ModelFollower;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * `corella serve`: follows an alias (or pins a version), loads its engine and answers HTTP. Needs Postgres and
 * the artifact store, not Temporal. Startup fails loudly on a misconfiguration (a public bind without a
 * token) but not on a missing model: /readyz then says "not ready" until a version appears.
 */
export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const host = o.host ?? '127.0.0.1';
  if (!isLoopback(host) && !o.token) {
    throw new CorellaError(
      'BAD_CONFIG',
      `binding ${host} exposes the API beyond this machine: set CORELLA_SERVE_TOKEN (bearer token for /v1)`,
      { details: { field: 'host' } },
    );
  }
  const ref = o.model ?? 'champion';
  const logger = serveLogger();
  const log =
    o.log ??
    (logger ? (m: string) => logger.info(m) : (m: string) => process.stderr.write(`corella serve: ${m}\n`));
  const handle = openDatabase(o.databaseUrl, {
    max: 4,
    connectionTimeoutMillis: 2_000,
    onIdleError: () => {},
  });
  const storage = o.storage ? await o.storage(handle.db) : {};
  const holder = new ModelHolder();
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const metrics = new ServeMetrics({
    queueDepth: () => holder.current?.scorer.llmQueueDepth() ?? 0,
    logPending: () => storage.pending?.() ?? 0,
  });

  const resolve = async (): Promise<ResolvedRef | undefined> => {
    const v = await resolveModelVersion(handle.db, ref);
    return v ? { versionId: v.id, threshold: v.calibratedThreshold ?? Math.LN2 } : undefined;
  };
  const load = async (r: ResolvedRef): Promise<LoadedModel> => {
    const version = await new ModelRepository(handle.db).get(r.versionId);
    if (!version) throw new CorellaError('DATA_NOT_AVAILABLE', `model version ${r.versionId} vanished`);
    const bundle = await servingBundleOf(handle.db, o.home, version, o.store);
    const t0 = performance.now();
    const scorer = await ServingEngine.load(o.store, bundle, {
      budget: o.budget,
      limits,
      microBatch: o.microBatch,
      threshold: o.threshold,
      log,
    });
    // Feedback that arrived after the model's data was cut extends the users' histories.
    const events = await storage.feedbackSince?.(version.createdAt).catch(() => []);
    for (const e of events ?? []) scorer.observe(e);
    log(
      `loaded model version ${version.id} (threshold ${bundle.threshold}) in ${Math.round(performance.now() - t0)} ms`,
    );
    return {
      key: `${r.versionId}@${r.threshold}`,
      versionId: r.versionId,
      threshold: scorer.threshold,
      scorer,
    };
  };

  const follower = new ModelFollower({
    databaseUrl: o.databaseUrl,
    holder,
    resolve,
    load,
    pollMs: o.pollMs,
    log,
    onSwap: (from, to) => {
      metrics.swaps.inc({ outcome: 'ok' });
      metrics.served(String(to.versionId));
      if (from) log(`switched from model version ${from.versionId} to ${to.versionId}`);
    },
    onSwapError: () => metrics.swaps.inc({ outcome: 'error' }),
  });

  const app = buildApp({
    logger,
    holder,
    metrics,
    limits,
    predictions: storage.predictions,
    feedback: storage.feedback,
    token: o.token,
    databaseReady: async () => {
      await handle.db.execute(sql`select 1`);
      return true;
    },
  });
  try {
    await follower.start();
    if (!holder.current) log(`no model version has the alias ${ref} yet: not ready until one appears`);
    await app.listen({ host, port: o.port ?? 8080 });
  } catch (e) {
    await follower.close();
    await app.close().catch(() => undefined);
    await holder.close();
    await storage.close?.();
    await handle.close();
    throw e;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (o.port ?? 8080);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    app,
    holder,
    metrics,
    follower,
    close: () =>
      (closing ??= (async () => {
        await follower.close();
        await app.close();
        await holder.close();
        await storage.close?.();
        await handle.close();
      })()),
  };
}
