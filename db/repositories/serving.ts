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
import { ArrayLiteral } from './array-literal.js';
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

function isProbability(v: unknown): boolean {
  return typeof v === 'number' && v >= 0 && v <= 1; // NaN fails both comparisons
}

function isNonNegative(v: unknown): boolean {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/**
 * The fast test of one candidate: no field name is built for a valid one. Validation runs on the request
 * thread (append) and twice in the flusher, and building the seven `entry.candidates[i].x` names per
 * candidate up front was a measurable share of what both allocated.
 */
function candidateValid(c: ServedCandidateInput): boolean {
  return (
    typeof c === 'object' &&
    c !== null &&
    typeof c.item === 'string' &&
    c.item.trim() !== '' &&
    isProbability(c.p) &&
    isProbability(c.pCrm) &&
    (c.pLlm === undefined || c.pLlm === null || isProbability(c.pLlm)) &&
    (PREDICTION_ROUTES as readonly string[]).includes(c.route) &&
    isNonNegative(c.entropy) &&
    isNonNegative(c.latencyMs) &&
    typeof c.cold === 'boolean'
  );
}

/** The slow path for a candidate the fast test refused: throws the error naming the field. */
function validateCandidate(c: ServedCandidateInput, f: string): void {
  if (typeof c !== 'object' || c === null) throw badInput(f, 'must be an object', c);
  requireText(`${f}.item`, c.item);
  requireProbability(`${f}.p`, c.p);
  requireProbability(`${f}.pCrm`, c.pCrm);
  if (c.pLlm !== undefined && c.pLlm !== null) requireProbability(`${f}.pLlm`, c.pLlm);
  if (!(PREDICTION_ROUTES as readonly string[]).includes(c.route))
    throw badInput(`${f}.route`, `must be one of ${PREDICTION_ROUTES.join(', ')}`, c.route);
  requireNonNegative(`${f}.entropy`, c.entropy);
  requireNonNegative(`${f}.latencyMs`, c.latencyMs);
  if (typeof c.cold !== 'boolean') throw badInput(`${f}.cold`, 'must be a boolean', c.cold);
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
  const cs = e.candidates;
  for (let i = 0; i < cs.length; i++)
    if (!candidateValid(cs[i])) validateCandidate(cs[i], `${field}.candidates[${i}]`);
}

interface RequestColumns {
  id: string;
  at: string;
  version: string;
  user: string;
  history: string;
  budget: string;
  threshold: string;
}

interface CandidateColumns {
  /** The candidate's request, 1-based within its chunk (the ordinality it is joined on). */
  ri: string;
  idx: string;
  item: string;
  p: string;
  pCrm: string;
  pLlm: string;
  route: string;
  entropy: string;
  latency: string;
  cold: string;
}

/** The request columns of entries[r0, r1) as array literals (validated entries only). */
function requestColumns(entries: ServedRequestInput[], r0: number, r1: number): RequestColumns {
  const n = r1 - r0;
  const id = new ArrayLiteral(n);
  const at = new ArrayLiteral(n);
  const version = new ArrayLiteral(n);
  const user = new ArrayLiteral(n);
  const history = new ArrayLiteral(n);
  const budget = new ArrayLiteral(n);
  const threshold = new ArrayLiteral(n);
  for (let r = r0; r < r1; r++) {
    const e = entries[r];
    id.raw(e.requestId); // a uuid (validated): no array syntax characters
    at.raw(e.at.toISOString());
    version.number(e.modelVersionId);
    user.text(e.userId);
    history.nullableText(e.history === null ? null : JSON.stringify(e.history));
    budget.nullableNumber(e.budgetMs);
    threshold.number(e.threshold);
  }
  return {
    id: id.toString(),
    at: at.toString(),
    version: version.toString(),
    user: user.toString(),
    history: history.toString(),
    budget: budget.toString(),
    threshold: threshold.toString(),
  };
}

/** The candidate columns of entries[r0, r1) (`rows` candidates in all) as array literals. */
function candidateColumns(
  entries: ServedRequestInput[],
  r0: number,
  r1: number,
  rows: number,
): CandidateColumns {
  const ri = new ArrayLiteral(rows);
  const idx = new ArrayLiteral(rows);
  const item = new ArrayLiteral(rows);
  const p = new ArrayLiteral(rows);
  const pCrm = new ArrayLiteral(rows);
  const pLlm = new ArrayLiteral(rows);
  const route = new ArrayLiteral(rows);
  const entropy = new ArrayLiteral(rows);
  const latency = new ArrayLiteral(rows);
  const cold = new ArrayLiteral(rows);
  for (let r = r0; r < r1; r++) {
    const cs = entries[r].candidates;
    for (let i = 0; i < cs.length; i++) {
      const c = cs[i];
      ri.number(r - r0 + 1);
      idx.number(i);
      item.text(c.item);
      p.number(c.p);
      pCrm.number(c.pCrm);
      pLlm.nullableNumber(c.pLlm);
      route.raw(c.route); // one of PREDICTION_ROUTES (validated)
      entropy.number(c.entropy);
      latency.number(c.latencyMs);
      cold.raw(c.cold ? 't' : 'f');
    }
  }
  return {
    ri: ri.toString(),
    idx: idx.toString(),
    item: item.toString(),
    p: p.toString(),
    pCrm: pCrm.toString(),
    pLlm: pLlm.toString(),
    route: route.toString(),
    entropy: entropy.toString(),
    latency: latency.toString(),
    cold: cold.toString(),
  };
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
    // One array parameter per column (INSERT … SELECT FROM unnest): a 50-candidate slate is a dozen
    // parameters, not 600, which is what lets the flusher keep up with a busy server. Each column goes as one
    // literal written here (db/repositories/array-literal.ts says why not pg's own array serialisation), and
    // the request's columns are sent once per request, not repeated per candidate: the predictions insert
    // joins them back by the request's position (WITH ORDINALITY).
    const requests = requestColumns(entries, 0, entries.length);
    const chunks: { requests: RequestColumns; candidates: CandidateColumns }[] = [];
    for (let r0 = 0; r0 < entries.length;) {
      let r1 = r0;
      let rows = 0;
      while (r1 < entries.length && (r1 === r0 || rows + entries[r1].candidates.length <= PREDICTION_CHUNK))
        rows += entries[r1++].candidates.length;
      if (rows > 0)
        chunks.push({
          requests: r0 === 0 && r1 === entries.length ? requests : requestColumns(entries, r0, r1),
          candidates: candidateColumns(entries, r0, r1, rows),
        });
      r0 = r1;
    }
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const stored = await tx.execute(sql`
          INSERT INTO ${servedRequests} (request_id, at, model_version_id, user_id, history, budget_ms, threshold)
          SELECT * FROM unnest(${requests.id}::uuid[], ${requests.at}::timestamptz[], ${requests.version}::int[],
            ${requests.user}::text[], ${requests.history}::jsonb[], ${requests.budget}::float8[],
            ${requests.threshold}::float8[])
          ON CONFLICT (request_id) DO NOTHING`);
        let preds = 0;
        for (const { requests: r, candidates: c } of chunks) {
          const result = await tx.execute(sql`
            INSERT INTO ${predictions} (request_id, idx, at, model_version_id, user_id, item_id, p, p_crm, p_llm,
              route, entropy, latency_ms, cold)
            SELECT r.request_id, c.idx, r.at, r.version, r.user_id, c.item, c.p, c.p_crm, c.p_llm, c.route,
              c.entropy, c.latency, c.cold
            FROM unnest(${c.ri}::int[], ${c.idx}::int[], ${c.item}::text[], ${c.p}::float8[], ${c.pCrm}::float8[],
              ${c.pLlm}::float8[], ${c.route}::text[], ${c.entropy}::float8[], ${c.latency}::float8[],
              ${c.cold}::bool[]) AS c(ri, idx, item, p, p_crm, p_llm, route, entropy, latency, cold)
            JOIN unnest(${r.id}::uuid[], ${r.at}::timestamptz[], ${r.version}::int[], ${r.user}::text[])
              WITH ORDINALITY AS r(request_id, at, version, user_id, ri) USING (ri)
            ON CONFLICT (request_id, idx) DO NOTHING`);
          preds += result.rowCount ?? 0;
        }
        return { requests: stored.rowCount ?? 0, predictions: preds };
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
