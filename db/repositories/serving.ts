import { asc, gte, sql } from 'drizzle-orm';
import type { LabelRule } from '../../ml/data/build.js';
import type { HistoryEvent, Route } from '../../ml/serving/types.js';
import { badInput } from '../errors.js';
import {
  feedback,
  PREDICTION_ROUTES,
  predictions,
  servedRequests,
  type FeedbackRow,
} from '../schema/index.js';
import { Repository } from './base.js';
import { requireFinite, requireId, requireText, requireUuid } from './validate.js';

/** One scored candidate as logged: the engine's CandidateScore plus its latency. */
export interface ServedCandidateInput {
  item: string;
  p: number;
  pCrm: number;
  pLlm?: number | null;
  route: Route;
  entropy: number;
  latencyMs: number;
  cold: boolean;
}

export interface ServedRequestInput {
  requestId: string;
  at: Date;
  modelVersionId: number;
  userId: string;
  /** As supplied with the request; null when the server used the user's known history. */
  history: HistoryEvent[] | null;
  budgetMs: number | null;
  /** The routing threshold in force; +Infinity in CRM-only mode, -Infinity when everything is routed. */
  threshold: number;
  candidates: ServedCandidateInput[];
}

export interface RecordServedResult {
  /** Rows actually inserted; fewer than given when a batch is replayed. */
  requests: number;
  predictions: number;
}

export interface FeedbackInput {
  requestId?: string | null;
  user: string;
  item: string;
  /** 0 or 1. When absent, derived from `rating` with the dataset's label rule. */
  label?: number;
  rating?: number | null;
  /** When the outcome happened: a Date, an ISO string, or seconds since epoch (as history events). */
  ts: Date | string | number;
}

export interface RecordFeedbackResult {
  row: FeedbackRow;
  /** False for a retried POST (same user, item and ts): the stored row is returned unchanged. */
  created: boolean;
}

/** A logged prediction that received feedback, with what shadow scoring needs from its request. */
export interface ServedWindowRow {
  requestId: string;
  idx: number;
  at: Date;
  userId: string;
  itemId: string;
  p: number;
  pCrm: number;
  pLlm: number | null;
  route: Route;
  entropy: number;
  cold: boolean;
  /** The routing threshold the server used for this request. */
  threshold: number;
  history: HistoryEvent[] | null;
  label: number;
}

export interface RecalibrationWindowQuery {
  modelVersionId: number;
  windowDays: number;
  /** End of the window; default now. */
  now?: Date;
  /** Newest rows first when limited. */
  limit?: number;
}

/** MovieLens' rule (rating ≥ 4 is a positive), the default of ml/data/ingest.ts for rated data. */
const DEFAULT_LABEL_RULE: LabelRule = { kind: 'min', threshold: 4 };

// Rows per INSERT of predictions: bounds one statement's memory on both sides.
const PREDICTION_CHUNK = 20_000;

function requireProbability(field: string, value: unknown): number {
  const p = requireFinite(field, value);
  if (p < 0 || p > 1) throw badInput(field, 'must be a probability in [0, 1]', value);
  return p;
}

function requireNonNegative(field: string, value: unknown): number {
  const v = requireFinite(field, value);
  if (v < 0) throw badInput(field, 'must be >= 0', value);
  return v;
}

function requireDate(field: string, value: unknown): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime()))
    throw badInput(field, 'must be a valid Date', value);
  return value;
}

/** Checks one log entry; `field` prefixes the names in the error (e.g. `entries[3]`). */
export function validateServedRequest(e: ServedRequestInput, field = 'entry'): void {
  if (typeof e !== 'object' || e === null) throw badInput(field, 'must be an object', e);
  requireUuid(`${field}.requestId`, e.requestId);
  requireDate(`${field}.at`, e.at);
  requireId(`${field}.modelVersionId`, e.modelVersionId);
  requireText(`${field}.userId`, e.userId);
  if (e.history !== null && !Array.isArray(e.history))
    throw badInput(`${field}.history`, 'must be an array of events or null', e.history);
  if (e.budgetMs !== null) requireNonNegative(`${field}.budgetMs`, e.budgetMs);
  // Any number: +Infinity is CRM-only serving, a negative threshold (down to -Infinity) routes everything.
  if (typeof e.threshold !== 'number' || Number.isNaN(e.threshold))
    throw badInput(`${field}.threshold`, 'must be a number (±Infinity allowed)', e.threshold);
  if (!Array.isArray(e.candidates)) throw badInput(`${field}.candidates`, 'must be an array', e.candidates);
  e.candidates.forEach((c, i) => {
    const f = `${field}.candidates[${i}]`;
    requireText(`${f}.item`, c.item);
    requireProbability(`${f}.p`, c.p);
    requireProbability(`${f}.pCrm`, c.pCrm);
    if (c.pLlm !== undefined && c.pLlm !== null) requireProbability(`${f}.pLlm`, c.pLlm);
    if (!(PREDICTION_ROUTES as readonly string[]).includes(c.route))
      throw badInput(`${f}.route`, `must be one of ${PREDICTION_ROUTES.join(', ')}`, c.route);
    requireNonNegative(`${f}.entropy`, c.entropy);
    requireNonNegative(`${f}.latencyMs`, c.latencyMs);
    if (typeof c.cold !== 'boolean') throw badInput(`${f}.cold`, 'must be a boolean', c.cold);
  });
}

function feedbackTime(ts: FeedbackInput['ts']): Date {
  const d =
    ts instanceof Date
      ? ts
      : typeof ts === 'number' && Number.isFinite(ts)
        ? new Date(ts * 1000)
        : typeof ts === 'string' && ts.trim() !== ''
          ? new Date(ts)
          : undefined;
  if (!d || Number.isNaN(d.getTime()))
    throw badInput('ts', 'must be a Date, an ISO time or seconds since epoch', ts);
  return d;
}

function labelFromRating(rating: number, rule: LabelRule): number {
  return (rule.kind === 'min' ? rating >= rule.threshold : rating === rule.value) ? 1 : 0;
}

/** The storage side of serving: the prediction log, feedback, and the served-traffic calibration window. */
export class ServingRepository extends Repository {
  /**
   * Store a batch of served requests and their candidates in one transaction. Keys are the server's
   * request id and the candidate's slate position, with ON CONFLICT DO NOTHING: replaying a spool segment
   * that partly or fully reached Postgres inserts only what is missing. Every entry is validated first;
   * one bad entry rejects the batch and nothing is written.
   */
  async recordServed(entries: ServedRequestInput[]): Promise<RecordServedResult> {
    if (!Array.isArray(entries)) throw badInput('entries', 'must be an array', entries);
    entries.forEach((e, i) => validateServedRequest(e, `entries[${i}]`));
    if (entries.length === 0) return { requests: 0, predictions: 0 };
    // One array parameter per column (INSERT … SELECT FROM unnest): a 50-candidate slate is 12 parameters,
    // not 600, which is what lets the flusher keep up with a busy server (bench/prediction-log.ts).
    const rq = {
      id: entries.map((e) => e.requestId),
      at: entries.map((e) => e.at.toISOString()),
      version: entries.map((e) => e.modelVersionId),
      user: entries.map((e) => e.userId),
      history: entries.map((e) => (e.history === null ? null : JSON.stringify(e.history))),
      budget: entries.map((e) => e.budgetMs),
      threshold: entries.map((e) => e.threshold),
    };
    const total = entries.reduce((n, e) => n + e.candidates.length, 0);
    const pr = {
      id: new Array<string>(total),
      idx: new Array<number>(total),
      at: new Array<string>(total),
      version: new Array<number>(total),
      user: new Array<string>(total),
      item: new Array<string>(total),
      p: new Array<number>(total),
      pCrm: new Array<number>(total),
      pLlm: new Array<number | null>(total),
      route: new Array<string>(total),
      entropy: new Array<number>(total),
      latency: new Array<number>(total),
      cold: new Array<boolean>(total),
    };
    let k = 0;
    entries.forEach((e, r) => {
      e.candidates.forEach((c, idx) => {
        pr.id[k] = e.requestId;
        pr.idx[k] = idx;
        pr.at[k] = rq.at[r];
        pr.version[k] = e.modelVersionId;
        pr.user[k] = e.userId;
        pr.item[k] = c.item;
        pr.p[k] = c.p;
        pr.pCrm[k] = c.pCrm;
        pr.pLlm[k] = c.pLlm ?? null;
        pr.route[k] = c.route;
        pr.entropy[k] = c.entropy;
        pr.latency[k] = c.latencyMs;
        pr.cold[k] = c.cold;
        k++;
      });
    });
    const a = sql.param.bind(sql);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const requests = await tx.execute(sql`
          INSERT INTO ${servedRequests} (request_id, at, model_version_id, user_id, history, budget_ms, threshold)
          SELECT * FROM unnest(${a(rq.id)}::uuid[], ${a(rq.at)}::timestamptz[], ${a(rq.version)}::int[],
            ${a(rq.user)}::text[], ${a(rq.history)}::jsonb[], ${a(rq.budget)}::float8[], ${a(rq.threshold)}::float8[])
          ON CONFLICT (request_id) DO NOTHING`);
        let preds = 0;
        for (let i = 0; i < total; i += PREDICTION_CHUNK) {
          const col = <T>(xs: T[]) => a(xs.slice(i, i + PREDICTION_CHUNK));
          const r = await tx.execute(sql`
            INSERT INTO ${predictions} (request_id, idx, at, model_version_id, user_id, item_id, p, p_crm, p_llm,
              route, entropy, latency_ms, cold)
            SELECT * FROM unnest(${col(pr.id)}::uuid[], ${col(pr.idx)}::int[], ${col(pr.at)}::timestamptz[],
              ${col(pr.version)}::int[], ${col(pr.user)}::text[], ${col(pr.item)}::text[], ${col(pr.p)}::float8[],
              ${col(pr.pCrm)}::float8[], ${col(pr.pLlm)}::float8[], ${col(pr.route)}::text[],
              ${col(pr.entropy)}::float8[], ${col(pr.latency)}::float8[], ${col(pr.cold)}::bool[])
            ON CONFLICT (request_id, idx) DO NOTHING`);
          preds += r.rowCount ?? 0;
        }
        return { requests: requests.rowCount ?? 0, predictions: preds };
      }),
    );
  }

  /**
   * Store an observed outcome. Idempotent by (user, item, ts): a retried POST returns the stored row.
   * Bad input throws a typed error naming the field before anything is written.
   */
  async recordFeedback(
    input: FeedbackInput,
    opts: { labelRule?: LabelRule } = {},
  ): Promise<RecordFeedbackResult> {
    if (typeof input !== 'object' || input === null) throw badInput('feedback', 'must be an object', input);
    if (input.requestId !== undefined && input.requestId !== null) requireUuid('requestId', input.requestId);
    requireText('user', input.user);
    requireText('item', input.item);
    const ts = feedbackTime(input.ts);
    const rating = input.rating ?? null;
    if (rating !== null) requireFinite('rating', rating);
    let label: number;
    if (input.label !== undefined) {
      if (input.label !== 0 && input.label !== 1) throw badInput('label', 'must be 0 or 1', input.label);
      label = input.label;
    } else if (rating !== null) {
      label = labelFromRating(rating, opts.labelRule ?? DEFAULT_LABEL_RULE);
    } else {
      throw badInput('label', 'a label (0 or 1) or a rating is required', input.label);
    }
    const values = {
      requestId: input.requestId ?? null,
      userId: input.user,
      itemId: input.item,
      label,
      rating,
      ts,
    };
    return this.retry(async () => {
      const [created] = await this.db
        .insert(feedback)
        .values(values)
        .onConflictDoNothing({ target: [feedback.userId, feedback.itemId, feedback.ts] })
        .returning();
      if (created) return { row: created, created: true };
      const [existing] = await this.db
        .select()
        .from(feedback)
        .where(
          sql`${feedback.userId} = ${values.userId} AND ${feedback.itemId} = ${values.itemId} AND ${feedback.ts} = ${ts}`,
        );
      if (!existing) throw new Error('feedback conflict without a stored row'); // cannot happen: rows are never deleted
      return { row: existing, created: false };
    });
  }

  /**
   * Feedback since a time, oldest first (the server replays it into user histories at load). `by` picks
   * the clock: the outcome's own `ts` (default) or when the server received it. Every row unless `limit`
   * is given: a silently truncated replay would leave users' histories short.
   */
  async feedbackSince(
    since: Date,
    opts: { by?: 'ts' | 'receivedAt'; limit?: number } = {},
  ): Promise<FeedbackRow[]> {
    requireDate('since', since);
    const column = opts.by === 'receivedAt' ? feedback.receivedAt : feedback.ts;
    if (opts.limit !== undefined && (!Number.isSafeInteger(opts.limit) || opts.limit <= 0))
      throw badInput('limit', 'must be a positive integer', opts.limit);
    return this.retry(() => {
      const q = this.db
        .select()
        .from(feedback)
        .where(gte(column, since))
        .orderBy(asc(column), asc(feedback.id));
      return opts.limit === undefined ? q : q.limit(opts.limit);
    });
  }

  /**
   * The served-traffic calibration window: the version's predictions of the last `windowDays` that received
   * feedback. A feedback row with a request id labels that request's candidate of the same item; one without
   * labels the user's prediction of that item made at or before the outcome. Each prediction takes its
   * earliest matching outcome, so a prediction is counted once.
   */
  async recalibrationWindow(q: RecalibrationWindowQuery): Promise<ServedWindowRow[]> {
    requireId('modelVersionId', q.modelVersionId);
    const days = requireFinite('windowDays', q.windowDays);
    if (days <= 0) throw badInput('windowDays', 'must be > 0', q.windowDays);
    const now = q.now ?? new Date();
    requireDate('now', now);
    const from = new Date(now.getTime() - days * 86_400_000);
    const limit = q.limit ?? 1_000_000;
    if (!Number.isSafeInteger(limit) || limit <= 0)
      throw badInput('limit', 'must be a positive integer', q.limit);
    return this.retry(async () => {
      const result = await this.db.execute<{
        request_id: string;
        idx: number;
        at: string | Date;
        user_id: string;
        item_id: string;
        p: number;
        p_crm: number;
        p_llm: number | null;
        route: Route;
        entropy: number;
        cold: boolean;
        threshold: number;
        history: HistoryEvent[] | null;
        label: number;
      }>(sql`
        SELECT p.request_id, p.idx, p.at, p.user_id, p.item_id, p.p, p.p_crm, p.p_llm, p.route, p.entropy,
               p.cold, r.threshold, r.history, f.label
        FROM ${predictions} p
        JOIN ${servedRequests} r ON r.request_id = p.request_id
        JOIN LATERAL (
          SELECT m.label FROM (
            (SELECT fb.label, 0 AS pri, fb.ts, fb.id FROM ${feedback} fb
              WHERE fb.request_id = p.request_id AND fb.item_id = p.item_id
              ORDER BY fb.ts, fb.id LIMIT 1)
            UNION ALL
            (SELECT fb.label, 1 AS pri, fb.ts, fb.id FROM ${feedback} fb
              WHERE fb.request_id IS NULL AND fb.user_id = p.user_id AND fb.item_id = p.item_id
                AND fb.ts >= p.at
              ORDER BY fb.ts, fb.id LIMIT 1)
          ) m ORDER BY m.pri, m.ts, m.id LIMIT 1
        ) f ON true
        WHERE p.model_version_id = ${q.modelVersionId} AND p.at >= ${from} AND p.at <= ${now}
        ORDER BY p.at DESC, p.request_id, p.idx
        LIMIT ${limit}`);
      return result.rows.map((r) => ({
        requestId: r.request_id,
        idx: Number(r.idx),
        at: new Date(r.at),
        userId: r.user_id,
        itemId: r.item_id,
        p: Number(r.p),
        pCrm: Number(r.p_crm),
        pLlm: r.p_llm === null ? null : Number(r.p_llm),
        route: r.route,
        entropy: Number(r.entropy),
        cold: r.cold,
        threshold: Number(r.threshold),
        history: r.history,
        label: Number(r.label),
      }));
    });
  }

  /**
   * The served routed fraction over time: logged candidates of a version per time bucket of `bucketSeconds`,
   * how many went to the LLM branch, and the mean threshold the requests were served with.
   */
  async routedOverTime(
    modelVersionId: number,
    bucketSeconds = 3600,
  ): Promise<{ at: Date; rows: number; routed: number; threshold: number | null }[]> {
    requireId('modelVersionId', modelVersionId);
    if (!Number.isInteger(bucketSeconds) || bucketSeconds < 1) {
      throw badInput('bucketSeconds', 'must be a positive integer', bucketSeconds);
    }
    return this.retry(async () => {
      const r = await this.db.execute<{
        at: string | Date;
        rows: number;
        routed: number;
        threshold: number | null;
      }>(sql`
        SELECT to_timestamp(floor(extract(epoch from p.at) / ${bucketSeconds}) * ${bucketSeconds}) AS at,
               count(*)::int AS rows,
               (count(*) FILTER (WHERE p.route = 'llm'))::int AS routed,
               avg(CASE WHEN s.threshold = 'Infinity'::float8 OR s.threshold = '-Infinity'::float8 THEN NULL
                        ELSE s.threshold END)::float8 AS threshold
        FROM ${predictions} p JOIN ${servedRequests} s ON s.request_id = p.request_id
        WHERE p.model_version_id = ${modelVersionId}
        GROUP BY 1 ORDER BY 1`);
      return r.rows.map((x) => ({
        at: new Date(x.at),
        rows: Number(x.rows),
        routed: Number(x.routed),
        threshold: x.threshold === null ? null : Number(x.threshold),
      }));
    });
  }

  /** Logged rows of a version (or all), for metrics and tests. */
  async countPredictions(modelVersionId?: number): Promise<number> {
    if (modelVersionId !== undefined) requireId('modelVersionId', modelVersionId);
    return this.retry(async () => {
      const r = await this.db.execute<{ n: number }>(
        modelVersionId === undefined
          ? sql`SELECT count(*)::int AS n FROM ${predictions}`
          : sql`SELECT count(*)::int AS n FROM ${predictions} WHERE model_version_id = ${modelVersionId}`,
      );
      return Number(r.rows[0]?.n ?? 0);
    });
  }
}
