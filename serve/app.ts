import { randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
} from 'fastify';
import { CorellaError } from '../ml/errors.js';
import type { ScoreRequest, ServingLimits } from '../ml/serving/types.js';
import type { PredictionLogEntry } from './prediction-log.js';
import type { ServeMetrics } from './metrics.js';
import type { ModelHolder } from './model-holder.js';
import { errorSchema, feedbackRequestSchema, scoreRequestSchema, scoreResponseSchema } from './schemas.js';

/** One scored request as the prediction log stores it. */
export type LoggedRequest = PredictionLogEntry;

export interface PredictionSink {
  /** Cheap and synchronous: it must never block or fail the request. */
  append(entry: LoggedRequest): void;
}

export interface FeedbackInput {
  requestId?: string;
  user: string;
  item: string;
  label: number;
  rating?: number;
  ts: Date;
}

export interface FeedbackSink {
  record(fb: FeedbackInput): Promise<{ stored: boolean }>;
}

export interface AppOptions {
  holder: ModelHolder;
  metrics: ServeMetrics;
  limits: ServingLimits;
  predictions?: PredictionSink;
  feedback?: FeedbackSink;
  /** Ratings at or above it count as positive feedback (the dataset's label rule). Default 4. */
  positiveRating?: number;
  /** Bearer token every /v1 route checks; required when bound beyond loopback. */
  token?: string;
  /** Database reachability for /readyz. */
  databaseReady?(): Promise<boolean>;
  bodyLimit?: number;
  /** JSON request logs (serve/logging.ts); none when omitted. */
  logger?: FastifyBaseLogger;
}

interface ErrorBody {
  error: { code: string; message: string; field?: string; requestId?: string };
}

function sendError(reply: FastifyReply, status: number, body: ErrorBody['error']): FastifyReply {
  return reply.code(status).type('application/json').send({ error: body });
}

/** `/body/candidates/3/item` → `candidates[3].item`, the way a user names the field. */
export function fieldOf(instancePath: string, missing?: string): string {
  const parts = instancePath.split('/').filter(Boolean);
  if (parts[0] === 'body') parts.shift();
  if (missing) parts.push(missing);
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The HTTP API. Errors are typed JSON bodies that name the field; a 5xx says only that something failed and
 * under which request id, because stack traces and driver messages never reach a client.
 */
export function buildApp(o: AppOptions): FastifyInstance {
  const app = Fastify({
    ...(o.logger ? { loggerInstance: o.logger } : { logger: false }),
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    genReqId: () => randomUUID(),
    // Closed objects must reject unknown fields, not strip them; and "5" is not a number.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  const endpointOf = (url: string | undefined) => url ?? 'unknown';

  app.addHook('onResponse', async (req, reply) => {
    const endpoint = endpointOf(req.routeOptions.url);
    o.metrics.requests.inc({ endpoint, status: String(reply.statusCode) });
    o.metrics.latency.observe({ endpoint }, reply.elapsedTime / 1000);
  });

  if (o.token) {
    const token = o.token;
    app.addHook('onRequest', async (req, reply) => {
      if (!req.url.startsWith('/v1/')) return;
      if (!tokenMatches(req.headers.authorization, token)) {
        reply.header('www-authenticate', 'Bearer');
        return sendError(reply, 401, { code: 'UNAUTHORIZED', message: 'missing or wrong bearer token' });
      }
    });
  }

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.validation) {
      const v = err.validation[0];
      const missing =
        (v?.params as { missingProperty?: string; additionalProperty?: string } | undefined) ?? {};
      const field = fieldOf(v?.instancePath ?? '', missing.missingProperty ?? missing.additionalProperty);
      const message =
        v?.keyword === 'additionalProperties'
          ? `${field}: unknown field`
          : `${field || 'body'}: ${v?.message ?? 'invalid'}`;
      return sendError(reply, 400, { code: 'BAD_REQUEST', message, field: field || undefined });
    }
    if (err instanceof CorellaError && ['BAD_REQUEST', 'BAD_CONFIG'].includes(err.code as string)) {
      const field = (err.details as { field?: string } | undefined)?.field;
      return sendError(reply, 400, { code: 'BAD_REQUEST', message: err.message, field });
    }
    const status = err.statusCode ?? 500;
    if (status === 413) {
      return sendError(reply, 413, { code: 'PAYLOAD_TOO_LARGE', message: 'request body is too large' });
    }
    if (status >= 400 && status < 500) {
      // Fastify's own client errors (malformed JSON, wrong content type) carry safe messages.
      return sendError(reply, status, { code: 'BAD_REQUEST', message: err.message });
    }
    // The client gets the request id only; the cause goes to the server's own log (a no-op without one).
    req.log.error({ err }, 'internal error while serving the request');
    return sendError(reply, 500, {
      code: 'INTERNAL',
      message: 'internal error while serving the request',
      requestId: String(req.id),
    });
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(reply, 404, { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` }),
  );

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const model = o.holder.current;
    const db = o.databaseReady ? await o.databaseReady().catch(() => false) : true;
    const ready = model !== undefined && db;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      model: model ? { version: String(model.versionId), threshold: model.threshold } : null,
      database: db ? 'ok' : 'unreachable',
    });
  });

  app.get('/metrics', async (_req, reply) => {
    reply.type(o.metrics.registry.contentType);
    return o.metrics.registry.metrics();
  });

  app.post<{ Body: ScoreRequest }>(
    '/v1/score',
    {
      schema: {
        body: scoreRequestSchema(o.limits),
        response: { 200: scoreResponseSchema, '4xx': errorSchema, '5xx': errorSchema },
      },
    },
    async (req, reply) => {
      const lease = o.holder.acquire();
      if (!lease) {
        return sendError(reply, 503, { code: 'NOT_READY', message: 'no model version is loaded yet' });
      }
      const requestId = String(req.id);
      const t0 = performance.now();
      try {
        const { model } = lease;
        const result = await model.scorer.score(req.body);
        const seconds = (performance.now() - t0) / 1000;
        o.metrics.scoredRequest(result, seconds);
        o.predictions?.append({
          requestId,
          at: new Date(),
          modelVersionId: model.versionId,
          user: req.body.user.id,
          history: req.body.history ?? null,
          budgetMs: req.body.budgetMs ?? null,
          threshold: model.threshold,
          candidates: result.candidates,
          latencyMs: seconds * 1000,
        });
        return {
          requestId,
          modelVersion: String(model.versionId),
          threshold: model.threshold,
          candidates: result.candidates,
          timings: result.timings,
          llm: result.llm,
        };
      } finally {
        lease.release();
      }
    },
  );

  app.post<{
    Body: { requestId?: string; user: string; item: string; label?: number; rating?: number; ts: number };
  }>(
    '/v1/feedback',
    { schema: { body: feedbackRequestSchema, response: { '4xx': errorSchema, '5xx': errorSchema } } },
    async (req, reply) => {
      const b = req.body;
      const label = b.label ?? ((b.rating ?? 0) >= (o.positiveRating ?? 4) ? 1 : 0);
      const fb: FeedbackInput = {
        requestId: b.requestId,
        user: b.user,
        item: b.item,
        label,
        rating: b.rating,
        ts: new Date(b.ts * 1000),
      };
      if (!o.feedback) {
        return sendError(reply, 503, { code: 'UNAVAILABLE', message: 'feedback storage is not configured' });
      }
      let stored: boolean;
      try {
        ({ stored } = await o.feedback.record(fb));
      } catch (e) {
        if (!(e instanceof CorellaError && e.code === 'SERVICE_UNAVAILABLE')) throw e;
        // A database outage: the client may retry, the idempotency key keeps it single.
        return sendError(reply, 503, {
          code: 'SERVICE_UNAVAILABLE',
          message: 'feedback could not be stored right now; retry later',
        });
      }
      const model = o.holder.current;
      model?.scorer.observe({ user: b.user, item: b.item, rating: b.rating ?? label, ts: b.ts });
      return reply.code(stored ? 201 : 200).send({ stored });
    },
  );

  return app;
}
