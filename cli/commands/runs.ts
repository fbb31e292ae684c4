import type { openDatabase } from '../../db/connection.js';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RunRepository, type RunDetails } from '../../db/repositories/runs.js';
import { compareRuns } from '../../ml/report/compare.js';
import { reportPath } from '../../ml/report/location.js';
import { CorellaError } from '../../ml/errors.js';
import type { RetrainProgress } from '../../activities/types.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { withDatabase } from '../database.js';
import { WorkflowNotFoundError } from '@temporalio/client';
import { connectClient, workflowUiUrl } from '../client.js';
import { makeOutput, table, type Output } from '../output.js';
import { reconcileRuns } from '../reconcile.js';
import { pendingFrom, type PendingActivity } from '../run-progress.js';
import { corellaHome } from '../services/paths.js';
import type { runsSpec } from '../specs/runs.js';

/** Live status from Temporal when it is reachable; the stored row is the fallback. */
async function liveProgress(
  workflowId: string,
): Promise<{ progress?: RetrainProgress; ui?: string; pending?: PendingActivity[] }> {
  try {
    const tc = await connectClient();
    try {
      const handle = tc.client.workflow.getHandle(workflowId);
      const desc = await handle.describe();
      // A closed workflow's query needs a worker to replay it (and hangs ~30 s without one); its row says
      // how it ended.
      const progress =
        desc.status.name === 'RUNNING'
          ? await handle.query<RetrainProgress>('progress').catch(() => undefined)
          : undefined;
      const pending = pendingFrom(desc);
      return { progress, ui: workflowUiUrl(tc.uiBase, tc.namespace, workflowId), pending };
    } finally {
      await tc.close();
    }
  } catch {
    return {};
  }
}

/**
 * Settles stale `running` rows (workflow terminated or timed out from outside) when Temporal is reachable;
 * without Temporal the rows are shown as stored, with a note. Never fails the listing itself.
 */
export async function reconcileIfReachable(
  db: ReturnType<typeof openDatabase>['db'],
  out: Output,
  runIds?: string[],
): Promise<void> {
  let tc;
  try {
    tc = await connectClient();
  } catch (e) {
    out.info(`note: running runs not checked against Temporal (${(e as Error).message})`);
    return;
  }
  try {
    for (const r of await reconcileRuns(db, tc.client, { runIds })) {
      out.info(`run ${r.runId.slice(0, 8)} (${r.workflowId}): running → ${r.status}: ${r.note}`);
    }
  } catch (e) {
    out.info(`note: could not reconcile running runs with Temporal (${(e as Error).message})`);
  } finally {
    await tc.close();
  }
}

/**
 * Where a run's report can be opened: the .html copy when this machine has it, else the artifact's blob
 * (content-addressed, no extension). Undefined when the run has no report yet.
 */
export function reportLocation(details: RunDetails): { path: string; artifact: string } | undefined {
  const sha = details.run.summary?.reportArtifact;
  if (typeof sha !== 'string') return undefined;
  const copy = reportPath(corellaHome(), details.run.id);
  if (existsSync(copy)) return { path: copy, artifact: sha };
  const uri = details.artifacts.find((a) => a.sha256 === sha)?.uri;
  return { path: uri?.startsWith('file://') ? fileURLToPath(uri) : (uri ?? sha), artifact: sha };
}

/** Summary metrics (step 0) of a run. */
function summaryMetrics(details: RunDetails): Record<string, number> {
  return Object.fromEntries(details.metrics.filter((m) => m.step === 0).map((m) => [m.key, m.value]));
}

/** `corella runs list|show|compare`. */
export async function runs({ values, positionals }: ArgsOf<typeof runsSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const [action, id] = positionals;
  if (action === 'list') {
    const limit = Number(values.limit);
    if (!Number.isInteger(limit) || limit <= 0) throw new UsageError('--limit must be a positive integer');
    const rows = await withDatabase(async (db) => {
      const repo = new RunRepository(db);
      if ((await repo.list({ status: 'running', limit: 1 })).length > 0) await reconcileIfReachable(db, out);
      return repo.list({
        limit,
        kind: values.kind,
        status: values.status as 'running' | undefined,
      });
    });
    out.result(rows, () =>
      rows.length === 0
        ? 'no runs yet'
        : table(
            rows.map((r) => [
              r.id.slice(0, 8),
              r.workflowId,
              r.kind,
              r.status,
              r.startedAt.toISOString(),
              r.endedAt?.toISOString(),
            ]),
            ['run', 'workflow id', 'kind', 'status', 'started', 'ended'],
          ),
    );
    return EXIT.ok;
  }
  if (action === 'show') {
    if (!id) throw new UsageError('runs show RUN_ID|WORKFLOW_ID');
    const details = await withDatabase(async (db) => {
      const repo = new RunRepository(db);
      const found = await repo.show(id);
      if (found?.run.status !== 'running') return found;
      await reconcileIfReachable(db, out, [found.run.id]);
      return repo.show(id);
    });
    if (!details) throw new CorellaError('BAD_CONFIG', `no run ${id}`);
    const live = await liveProgress(details.run.workflowId);
    const report = reportLocation(details);
    out.result({ ...details, live, report }, () => {
      const r = details.run;
      const latest = new Map<string, number>();
      for (const m of details.metrics) latest.set(m.key, m.value);
      return [
        `run ${r.id}  (${r.workflowId})`,
        `kind ${r.kind}  status ${r.status}${r.error ? `  error: ${r.error}` : ''}`,
        `started ${r.startedAt.toISOString()}  ended ${r.endedAt?.toISOString() ?? '-'}  dataset ${r.datasetVersionId ?? '-'}`,
        live.progress
          ? `stage ${live.progress.stage}  done: ${live.progress.completed.join(' → ') || '-'}`
          : '',
        ...(live.pending ?? []).map(describePending),
        live.ui ? `Temporal UI: ${live.ui}` : '',
        report ? `report: ${report.path}` : '',
        '',
        latest.size
          ? table(
              [...latest.entries()].sort().map(([k, v]) => [k, v]),
              ['metric', 'value'],
            )
          : 'no metrics',
      ]
        .filter((l) => l !== '')
        .join('\n');
    });
    return EXIT.ok;
  }
  if (action === 'compare') {
    const [a, b] = positionals.slice(1);
    if (!a || !b || positionals.length > 3) throw new UsageError('runs compare RUN_A RUN_B');
    const [da, db] = await withDatabase(async (conn) => {
      const repo = new RunRepository(conn);
      return Promise.all([repo.show(a), repo.show(b)]);
    });
    if (!da) throw new CorellaError('BAD_CONFIG', `runs compare: no run ${a}`, { details: { field: 'A' } });
    if (!db) throw new CorellaError('BAD_CONFIG', `runs compare: no run ${b}`, { details: { field: 'B' } });
    const c = compareRuns(
      { metrics: summaryMetrics(da), config: da.run.config },
      { metrics: summaryMetrics(db), config: db.run.config },
    );
    const label = (d: RunDetails) => d.run.id.slice(0, 8);
    const show = (v: unknown) =>
      v === null || v === undefined ? '-' : typeof v === 'string' ? v : JSON.stringify(v);
    out.result(
      {
        a: { id: da.run.id, workflowId: da.run.workflowId },
        b: { id: db.run.id, workflowId: db.run.workflowId },
        ...c,
      },
      () =>
        [
          `A = run ${da.run.id} (${da.run.workflowId}, ${da.run.status})`,
          `B = run ${db.run.id} (${db.run.workflowId}, ${db.run.status})`,
          '',
          c.metrics.length
            ? table(
                c.metrics.map((m) => [
                  m.key,
                  m.a,
                  m.b,
                  m.diff === null ? '' : `${m.diff >= 0 ? '+' : ''}${m.diff.toFixed(4)}`,
                ]),
                ['metric', `A ${label(da)}`, `B ${label(db)}`, 'B − A'],
              )
            : 'no metrics in either run',
          '',
          c.config.length
            ? table(
                c.config.map((k) => [k.key, show(k.a), show(k.b)]),
                ['config key that differs', `A ${label(da)}`, `B ${label(db)}`],
              )
            : 'configs are identical',
        ].join('\n'),
    );
    return EXIT.ok;
  }
  if (action === 'cancel') {
    if (!id || positionals.length > 2) throw new UsageError('runs cancel RUN_ID|WORKFLOW_ID');
    const row = await withDatabase((db) => new RunRepository(db).show(id));
    const result = await cancelRun(row?.run.workflowId ?? id);
    out.result(result, () => `${result.workflowId}: ${result.status.toLowerCase()}`);
    return EXIT.ok;
  }
  throw new UsageError('runs list|show|compare|cancel');
}

/**
 * Requests cancellation and waits for the workflow to close: its activities cancel with
 * WAIT_CANCELLATION_COMPLETED, so a closed workflow means training has really stopped and the run row says
 * how it ended. A workflow that is not running is refused, naming its status.
 */
async function cancelRun(
  workflowId: string,
  waitMs = 120_000,
): Promise<{ workflowId: string; status: string }> {
  const tc = await connectClient();
  try {
    const handle = tc.client.workflow.getHandle(workflowId);
    const before = await handle.describe().catch((e: unknown) => {
      // An unreachable Temporal is an outage (its own exit code), not a missing run.
      if (!(e instanceof WorkflowNotFoundError)) throw e;
      throw new CorellaError(
        'BAD_CONFIG',
        `runs cancel: no run or workflow ${workflowId} (${(e as Error).message})`,
        {
          details: { field: 'RUN_ID' },
        },
      );
    });
    if (before.status.name !== 'RUNNING') {
      throw new CorellaError(
        'BAD_CONFIG',
        `runs cancel: ${workflowId} is ${before.status.name.toLowerCase()}, not running: nothing to cancel`,
        { details: { field: 'RUN_ID' } },
      );
    }
    await handle.cancel();
    // Without a worker nothing processes the request; it then takes effect when the workers come back.
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      handle.result().then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), waitMs))),
    ]);
    clearTimeout(timer);
    if (!closed)
      return { workflowId, status: 'CANCEL_REQUESTED (still open: no worker has processed it yet)' };
    return { workflowId, status: (await handle.describe()).status.name };
  } finally {
    await tc.close();
  }
}

/**
 * One line per pending activity. A scheduled attempt that no worker has taken is waiting (its queue's workers
 * are busy or absent), one scheduled in the future is a retry backing off; only a started one is running.
 */
export function describePending(a: PendingActivity): string {
  const head = `${a.activity} (attempt ${a.attempt})`;
  if (a.scheduledAt) {
    const s = Math.round((Date.now() - a.scheduledAt.getTime()) / 1000);
    return s >= 0
      ? `waiting for a worker: ${head}, scheduled ${s} s ago (its queue's workers are busy or absent)`
      : `retrying: ${head} in ${-s} s`;
  }
  return `running: ${head} ${describeProgress(a.progress)}`;
}

/** One line from the heartbeat details of a running activity. */
function describeProgress(p: unknown): string {
  if (!p || typeof p !== 'object') return '';
  const q = p as Record<string, unknown>;
  const parts: string[] = [];
  if (typeof q.stage === 'string') parts.push(q.stage);
  if (typeof q.epoch === 'number') parts.push(`epoch ${q.epoch}`);
  if (typeof q.done === 'number')
    parts.push(typeof q.total === 'number' ? `${q.done}/${q.total}` : `${q.done}`);
  if (typeof q.samplesPerSec === 'number') parts.push(`${q.samplesPerSec.toFixed(1)} samples/s`);
  if (typeof q.tokensPerSec === 'number') parts.push(`${q.tokensPerSec.toFixed(0)} tokens/s`);
  if (typeof q.etaSec === 'number') parts.push(`ETA ${Math.round(q.etaSec)} s`);
  if (typeof q.checkpoint === 'string') parts.push(`checkpoint ${q.checkpoint.slice(0, 12)}`);
  return parts.join(', ');
}
