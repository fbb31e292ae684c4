import { and, asc, desc, eq, inArray, like, or, sql } from 'drizzle-orm';
import { CorellaError } from '../../ml/errors.js';
import type { Executor } from '../connection.js';
import { NotFoundError, badInput } from '../errors.js';
import {
  artifacts,
  RUN_STATUSES,
  runMetrics,
  runParams,
  runs,
  type ArtifactRow,
  type RunMetricRow,
  type RunRow,
  type RunStatus,
} from '../schema/index.js';
import { Repository } from './base.js';
import { isUuid, requireNumber, requireText, requireUuid } from './validate.js';

export interface StartRunInput {
  /** Temporal workflow id (the business key). */
  workflowId: string;
  kind: string;
  config?: Record<string, unknown>;
  codeVersion?: string | null;
  datasetVersionId?: string | null;
  params?: Record<string, unknown>;
}

export interface MetricInput {
  key: string;
  value: number;
  step?: number;
  time?: Date;
}

export type MetricsInput = MetricInput[] | Record<string, number>;

export interface FinishRunInput {
  summary?: Record<string, unknown>;
  metrics?: MetricsInput;
  datasetVersionId?: string | null;
}

/** Ended states Temporal lets a workflow id be reused after (ALLOW_DUPLICATE_FAILED_ONLY). */
const REOPENABLE = new Set<RunStatus>(['failed', 'cancelled', 'terminated', 'timed_out']);

/** How reconciliation settles a run row whose workflow closed without recording its end. */
export interface RunReconciliation {
  status: Exclude<RunStatus, 'running'>;
  /** When the workflow execution closed (Temporal's close time). */
  endedAt: Date;
  /** Human-readable: stored as the run's error (unless completed) and in summary.reconciliation. */
  note: string;
  details?: Record<string, unknown>;
}

export interface ListRunsFilter {
  kind?: string;
  status?: RunStatus;
  limit?: number;
  offset?: number;
}

export interface RunDetails {
  run: RunRow;
  params: Record<string, string>;
  /** Every point, ordered by key then step. */
  metrics: RunMetricRow[];
  artifacts: ArtifactRow[];
}

function normaliseMetrics(metrics: MetricsInput, defaultStep = 0): MetricInput[] {
  const list = Array.isArray(metrics)
    ? metrics
    : Object.entries(metrics).map(([key, value]) => ({ key, value, step: defaultStep }));
  list.forEach((m, i) => {
    requireText(`metrics[${i}].key`, m.key);
    requireNumber(`metrics[${i}].value (${m.key})`, m.value);
    if (m.step !== undefined && (!Number.isSafeInteger(m.step) || m.step < 0)) {
      throw badInput(`metrics[${i}].step (${m.key})`, 'must be a non-negative integer', m.step);
    }
  });
  return list;
}

function paramText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

async function upsertParams(tx: Executor, runId: string, params: Record<string, unknown>): Promise<void> {
  const rows = Object.entries(params).map(([key, value]) => ({ runId, key, value: paramText(value) }));
  if (rows.length === 0) return;
  await tx
    .insert(runParams)
    .values(rows)
    .onConflictDoUpdate({ target: [runParams.runId, runParams.key], set: { value: sql`excluded.value` } });
}

async function upsertMetrics(tx: Executor, runId: string, metrics: MetricInput[]): Promise<void> {
  if (metrics.length === 0) return;
  // Last write wins within one call too: Postgres refuses to update the same row twice in one statement.
  const byKey = new Map<string, MetricInput>();
  for (const m of metrics) byKey.set(`${m.key}\u0000${m.step ?? 0}`, m);
  await tx
    .insert(runMetrics)
    .values(
      [...byKey.values()].map((m) => ({
        runId,
        key: m.key,
        step: m.step ?? 0,
        value: m.value,
        time: m.time ?? new Date(),
      })),
    )
    .onConflictDoUpdate({
      target: [runMetrics.runId, runMetrics.key, runMetrics.step],
      set: { value: sql`excluded.value`, time: sql`excluded.time` },
    });
}

export class RunRepository extends Repository {
  /**
   * Idempotent by workflow id: a retried or duplicated start returns the existing row unchanged while it is
   * running or completed. Starting a failed or cancelled run again (Temporal allows reusing the id then)
   * puts it back to running and increments `attempt`.
   */
  async start(input: StartRunInput): Promise<RunRow> {
    requireText('workflowId', input.workflowId);
    requireText('kind', input.kind);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const inserted = await tx
          .insert(runs)
          .values({
            workflowId: input.workflowId,
            kind: input.kind,
            config: input.config ?? {},
            codeVersion: input.codeVersion ?? null,
            datasetVersionId: input.datasetVersionId ?? null,
          })
          .onConflictDoNothing({ target: runs.workflowId })
          .returning();
        let run = inserted[0];
        if (!run) {
          const [existing] = await tx
            .select()
            .from(runs)
            .where(eq(runs.workflowId, input.workflowId))
            .for('update');
          if (!existing) throw new NotFoundError('run with workflow id', input.workflowId);
          run = existing;
          if (REOPENABLE.has(existing.status)) {
            [run] = await tx
              .update(runs)
              .set({
                status: 'running',
                error: null,
                endedAt: null,
                startedAt: new Date(),
                attempt: existing.attempt + 1,
                attempts: [
                  ...existing.attempts,
                  {
                    attempt: existing.attempt,
                    status: existing.status,
                    error: existing.error,
                    startedAt: existing.startedAt.toISOString(),
                    endedAt: existing.endedAt?.toISOString() ?? null,
                  },
                ],
                config: input.config ?? existing.config,
                codeVersion: input.codeVersion ?? existing.codeVersion,
                datasetVersionId: input.datasetVersionId ?? existing.datasetVersionId,
              })
              .where(eq(runs.id, existing.id))
              .returning();
          }
        }
        if (input.params) await upsertParams(tx, run.id, input.params);
        return run;
      }),
    );
  }

  async get(id: string): Promise<RunRow | undefined> {
    requireUuid('runId', id);
    return this.retry(async () => (await this.db.select().from(runs).where(eq(runs.id, id)))[0]);
  }

  async getByWorkflowId(workflowId: string): Promise<RunRow | undefined> {
    return this.retry(
      async () => (await this.db.select().from(runs).where(eq(runs.workflowId, workflowId)))[0],
    );
  }

  async setDatasetVersion(runId: string, datasetVersionId: string): Promise<RunRow> {
    requireUuid('runId', runId);
    return this.retry(async () => {
      const [row] = await this.db
        .update(runs)
        .set({ datasetVersionId })
        .where(eq(runs.id, runId))
        .returning();
      if (!row) throw new NotFoundError('run', runId);
      return row;
    });
  }

  /** Mark completed; summary and final metrics land in the same transaction. */
  async finish(runId: string, input: FinishRunInput = {}): Promise<RunRow> {
    requireUuid('runId', runId);
    const metrics = input.metrics ? normaliseMetrics(input.metrics) : [];
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const [row] = await tx
          .update(runs)
          .set({
            status: 'completed',
            error: null,
            endedAt: new Date(),
            ...(input.summary !== undefined ? { summary: input.summary } : {}),
            ...(input.datasetVersionId !== undefined ? { datasetVersionId: input.datasetVersionId } : {}),
          })
          .where(eq(runs.id, runId))
          .returning();
        if (!row) throw new NotFoundError('run', runId);
        await upsertMetrics(tx, runId, metrics);
        return row;
      }),
    );
  }

  /** Mark failed (or cancelled) with the error text; a stack is not stored, only the message chain. */
  async fail(runId: string, error: unknown, status: 'failed' | 'cancelled' = 'failed'): Promise<RunRow> {
    requireUuid('runId', runId);
    const text = errorText(error);
    return this.retry(async () => {
      const [row] = await this.db
        .update(runs)
        .set({ status, error: text, endedAt: new Date() })
        .where(eq(runs.id, runId))
        .returning();
      if (!row) throw new NotFoundError('run', runId);
      return row;
    });
  }

  /**
   * Settles a `running` row whose workflow ended without its own bookkeeping (terminated from outside,
   * timed out). The row is locked while `decide` looks at Temporal, so a new execution's `start` waits
   * for the decision instead of being overwritten by it; a row that is no longer running is left alone
   * (idempotent). Returns the updated row, or undefined when nothing changed.
   */
  async reconcile(
    runId: string,
    decide: (row: RunRow) => Promise<RunReconciliation | undefined>,
  ): Promise<RunRow | undefined> {
    requireUuid('runId', runId);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const [row] = await tx.select().from(runs).where(eq(runs.id, runId)).for('update');
        if (!row) throw new NotFoundError('run', runId);
        if (row.status !== 'running') return undefined;
        const outcome = await decide(row);
        if (!outcome) return undefined;
        const reconciliation = {
          status: outcome.status,
          note: outcome.note,
          closedAt: outcome.endedAt.toISOString(),
          reconciledAt: new Date().toISOString(),
          ...(outcome.details ?? {}),
        };
        const [updated] = await tx
          .update(runs)
          .set({
            status: outcome.status,
            error: outcome.status === 'completed' ? row.error : outcome.note,
            endedAt: outcome.endedAt,
            summary: { ...(row.summary ?? {}), reconciliation },
          })
          .where(and(eq(runs.id, runId), eq(runs.status, 'running')))
          .returning();
        return updated;
      }),
    );
  }

  /** Sets top-level keys of the run's summary, keeping the others (e.g. the report artifact of a re-render). */
  async mergeSummary(runId: string, patch: Record<string, unknown>): Promise<RunRow> {
    requireUuid('runId', runId);
    return this.retry(async () => {
      const [row] = await this.db
        .update(runs)
        .set({ summary: sql`coalesce(${runs.summary}, '{}'::jsonb) || ${JSON.stringify(patch)}::jsonb` })
        .where(eq(runs.id, runId))
        .returning();
      if (!row) throw new NotFoundError('run', runId);
      return row;
    });
  }

  async cancel(runId: string, reason = 'cancelled'): Promise<RunRow> {
    return this.fail(runId, reason, 'cancelled');
  }

  async logParams(runId: string, params: Record<string, unknown>): Promise<void> {
    requireUuid('runId', runId);
    return this.retry(() => upsertParams(this.db, runId, params));
  }

  /** Upsert by (run, key, step): re-logging a point (activity retry) overwrites it. */
  async logMetrics(runId: string, metrics: MetricsInput, step = 0): Promise<void> {
    requireUuid('runId', runId);
    const list = normaliseMetrics(metrics, step);
    return this.retry(() => upsertMetrics(this.db, runId, list));
  }

  /** Newest first. */
  async list(filter: ListRunsFilter = {}): Promise<RunRow[]> {
    if (filter.status !== undefined && !RUN_STATUSES.includes(filter.status)) {
      throw badInput('status', `must be one of ${RUN_STATUSES.join(', ')}`, filter.status);
    }
    const conditions = [
      filter.kind !== undefined ? eq(runs.kind, filter.kind) : undefined,
      filter.status !== undefined ? eq(runs.status, filter.status) : undefined,
    ].filter((c) => c !== undefined);
    return this.retry(() =>
      this.db
        .select()
        .from(runs)
        .where(conditions.length ? and(...conditions) : undefined)
        .orderBy(desc(runs.startedAt), desc(runs.id))
        .limit(filter.limit ?? 50)
        .offset(filter.offset ?? 0),
    );
  }

  /** By run id (uuid) or workflow id. */
  /**
   * A run by its id, its workflow id, or a unique prefix of either (`runs list` prints 8 characters of the
   * id). An ambiguous prefix is an error that lists what it matches; no match is undefined.
   */
  async find(ref: string): Promise<RunRow | undefined> {
    requireText('run', ref);
    return this.retry(async () => {
      const [exact] = await this.db
        .select()
        .from(runs)
        .where(isUuid(ref) ? eq(runs.id, ref) : eq(runs.workflowId, ref));
      if (exact) return exact;
      // LIKE wildcards in the reference are literal text.
      const pattern = `${ref.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      const matches = await this.db
        .select()
        .from(runs)
        .where(or(like(sql`${runs.id}::text`, pattern), like(runs.workflowId, pattern)))
        .orderBy(desc(runs.startedAt))
        .limit(11);
      if (matches.length <= 1) return matches[0];
      const listed = matches
        .slice(0, 10)
        .map((r) => `${r.id.slice(0, 8)} (${r.workflowId})`)
        .join(', ');
      throw new CorellaError(
        'BAD_CONFIG',
        `run ${JSON.stringify(ref)} is ambiguous: it matches ${matches.length > 10 ? 'more than 10 runs, among them' : `${matches.length} runs:`} ${listed}; give more characters`,
        { details: { field: 'run', matches: matches.map((r) => r.id) } },
      );
    });
  }

  async show(idOrWorkflowId: string): Promise<RunDetails | undefined> {
    const found = await this.find(idOrWorkflowId);
    if (!found) return undefined;
    return this.retry(async () => {
      const [run] = await this.db.select().from(runs).where(eq(runs.id, found.id));
      if (!run) return undefined;
      const [params, metrics, arts] = await Promise.all([
        this.db.select().from(runParams).where(eq(runParams.runId, run.id)).orderBy(asc(runParams.key)),
        this.db
          .select()
          .from(runMetrics)
          .where(eq(runMetrics.runId, run.id))
          .orderBy(asc(runMetrics.key), asc(runMetrics.step)),
        this.db
          .select()
          .from(artifacts)
          .where(eq(artifacts.producingRunId, run.id))
          .orderBy(artifacts.createdAt),
      ]);
      return {
        run,
        params: Object.fromEntries(params.map((p) => [p.key, p.value])),
        metrics,
        artifacts: arts,
      };
    });
  }

  /** Latest value per metric key (highest step) of several runs, for listings. */
  async latestMetrics(runIds: string[]): Promise<Map<string, Record<string, number>>> {
    runIds.forEach((id, i) => requireUuid(`runIds[${i}]`, id));
    return this.retry(async () => {
      const out = new Map<string, Record<string, number>>();
      if (runIds.length === 0) return out;
      const rows = await this.db
        .selectDistinctOn([runMetrics.runId, runMetrics.key])
        .from(runMetrics)
        .where(inArray(runMetrics.runId, runIds))
        .orderBy(runMetrics.runId, runMetrics.key, desc(runMetrics.step));
      for (const r of rows) {
        const m = out.get(r.runId) ?? {};
        m[r.key] = r.value;
        out.set(r.runId, m);
      }
      return out;
    });
  }
}

function errorText(error: unknown): string {
  const parts: string[] = [];
  let e: unknown = error;
  for (let depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      parts.push(`${e.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${e.message}`);
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join('\ncaused by ') || 'unknown error';
}
