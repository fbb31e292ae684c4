import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Database } from '../db/connection.js';
import { RunRepository, type RunReconciliation } from '../db/repositories/runs.js';
import type { RunRow, RunStatus } from '../db/schema/index.js';

/** Temporal's closed statuses and the run status each one settles a stale `running` row to. */
const CLOSED: Record<string, Exclude<RunStatus, 'running'>> = {
  TERMINATED: 'terminated',
  TIMED_OUT: 'timed_out',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  COMPLETED: 'completed',
};

export interface ReconciledRun {
  runId: string;
  workflowId: string;
  status: RunStatus;
  temporalStatus: string;
  note: string;
}

type HistoryRequest = Parameters<Client['workflowService']['getWorkflowExecutionHistory']>[0];
// temporal.api.enums.v1.HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT: only the last event is
// fetched, not a whole history (@temporalio/proto is not a direct dependency, so the number is spelled out).
const CLOSE_EVENT_ONLY = 2 as NonNullable<HistoryRequest['historyEventFilterType']>;

/** The reason Temporal recorded in the close event (terminate reason, failure message); best effort. */
async function closeReason(client: Client, workflowId: string, runId: string): Promise<string | undefined> {
  try {
    const res = await client.workflowService.getWorkflowExecutionHistory({
      namespace: client.options.namespace,
      execution: { workflowId, runId },
      historyEventFilterType: CLOSE_EVENT_ONLY,
    });
    const ev = res.history?.events?.at(-1);
    if (!ev) return undefined;
    const terminated = ev.workflowExecutionTerminatedEventAttributes;
    if (terminated) return terminated.reason || undefined;
    const failure = ev.workflowExecutionFailedEventAttributes?.failure;
    if (failure) return failure.cause?.message ?? failure.message ?? undefined;
    return undefined;
  } catch {
    return undefined;
  }
}

/** What Temporal says about the row's workflow: undefined while it runs (or is unknown to this server). */
async function decideFromTemporal(client: Client, row: RunRow): Promise<RunReconciliation | undefined> {
  let desc;
  try {
    // Without a run id Temporal describes the newest execution of the id, the one the row belongs to.
    desc = await client.workflow.getHandle(row.workflowId).describe();
  } catch (e) {
    // Another namespace or a wiped dev server: not evidence that the run ended, so the row is left alone.
    if (e instanceof WorkflowNotFoundError) return undefined;
    throw e;
  }
  const status = CLOSED[desc.status.name];
  if (!status) return undefined;
  const endedAt = desc.closeTime ?? new Date();
  const reason = status === 'completed' ? undefined : await closeReason(client, row.workflowId, desc.runId);
  const what =
    status === 'completed'
      ? 'completed in Temporal without recording its end'
      : `${desc.status.name.toLowerCase().replace('_', ' ')} in Temporal${reason ? ` (${reason})` : ''}`;
  return {
    status,
    endedAt,
    note: `reconciled: the workflow ${what}; its own bookkeeping never ran`,
    details: {
      temporalStatus: desc.status.name,
      temporalRunId: desc.runId,
      ...(reason ? { reason } : {}),
    },
  };
}

/**
 * Settles run rows still marked `running` whose Temporal workflow has closed (terminated or timed out from
 * outside, or ended without its final bookkeeping activity). Idempotent: a row already settled, or whose
 * workflow still runs, is left as it is. `runIds` limits it to those rows; by default every running row.
 */
export async function reconcileRuns(
  db: Database,
  client: Client,
  opts: { runIds?: string[] } = {},
): Promise<ReconciledRun[]> {
  const repo = new RunRepository(db);
  const ids = opts.runIds ?? (await repo.list({ status: 'running', limit: 10_000 })).map((r: RunRow) => r.id);
  const done: ReconciledRun[] = [];
  for (const id of ids) {
    let temporalStatus = '';
    const row = await repo.reconcile(id, async (r) => {
      const outcome = await decideFromTemporal(client, r);
      temporalStatus = String(outcome?.details?.temporalStatus ?? '');
      return outcome;
    });
    if (row) {
      done.push({
        runId: row.id,
        workflowId: row.workflowId,
        status: row.status,
        temporalStatus,
        note: String((row.summary?.reconciliation as { note?: string } | undefined)?.note ?? ''),
      });
    }
  }
  return done;
}
