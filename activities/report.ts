import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatabaseHandle } from '../db/connection.js';
import { ArtifactRepository } from '../db/repositories/artifacts.js';
import { CalibrationRepository } from '../db/repositories/calibrations.js';
import { EvaluationRepository } from '../db/repositories/evaluations.js';
import { ModelRepository } from '../db/repositories/models.js';
import { RunRepository } from '../db/repositories/runs.js';
import { ServingRepository } from '../db/repositories/serving.js';
import type { ModelVersionRow, RunRow } from '../db/schema/index.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { DEFAULT_CALIBRATION_CONFIG } from '../ml/corella/calibration.js';
import { routingEntropies } from '../ml/corella/routing.js';
import { CorellaError } from '../ml/errors.js';
import {
  renderRunReport,
  type ReportSource,
  type StoredAlignment,
  type StoredModel,
} from '../ml/report/index.js';
import { reportPath } from '../ml/report/location.js';
import type { ActivityContext } from './context.js';
import { calibrationConfigOf } from './corella-config.js';
import { datasetForVersion } from './datasets.js';
import { withPulse } from './heartbeat.js';
import type { CorellaActivities, PipelineConfig, ReportInput, ReportResult } from './types.js';

interface ReportDeps {
  db: DatabaseHandle['db'];
  store: ArtifactStore;
  home: string;
}

interface StoredPredictionsJson {
  rows: number[];
  labels: number[];
  pCrm: number[];
  pLlm: number[];
  pHybrid: number[];
}

function storedModel(v: ModelVersionRow, aliases: string[]): StoredModel {
  return {
    id: v.id,
    aliases,
    calibratedThreshold: v.calibratedThreshold,
    artifacts: v.artifacts,
    metrics: v.metrics,
    sourceRunId: v.sourceRunId,
  };
}

/** The champion at `at`, replayed from the alias audit trail (the alias may have moved since). */
async function championAt(
  models: ModelRepository,
  at: Date,
): Promise<(StoredModel & { since: string }) | undefined> {
  const events = (await models.aliasHistory({ alias: 'champion' })).filter((e) => e.at <= at);
  const last = events.at(-1);
  if (!last?.toVersionId) return undefined;
  const v = await models.get(last.toVersionId);
  return v ? { ...storedModel(v, []), since: last.at.toISOString() } : undefined;
}

/** Users and routing entropies of the evaluated rows: they need the dataset version, which may be gone. */
async function rowContext(
  store: ArtifactStore,
  run: RunRow,
  config: PipelineConfig,
  preds: StoredPredictionsJson,
): Promise<{ users?: Int32Array; entropy?: Float32Array }> {
  if (!run.datasetVersionId) return {};
  try {
    const ds = await datasetForVersion(store, run.datasetVersionId);
    const test = ds.splits.test;
    const rows = Int32Array.from(preds.rows);
    return {
      users: Int32Array.from(rows, (r) => test.userRows[r]),
      entropy: routingEntropies(
        Float32Array.from(preds.pCrm),
        test,
        rows,
        calibrationConfigOf(config).coldItems,
      ),
    };
  } catch (e) {
    if (e instanceof CorellaError && e.code === 'ARTIFACT_NOT_FOUND') return {};
    throw e;
  }
}

/** Everything one run's report shows, read from Postgres and the artifact store. */
export async function gatherReportSource(deps: ReportDeps, runIdOrWorkflowId: string): Promise<ReportSource> {
  const runs = new RunRepository(deps.db);
  const details = await runs.show(runIdOrWorkflowId);
  if (!details) {
    throw new CorellaError('BAD_CONFIG', `report: no run ${runIdOrWorkflowId}`, {
      details: { field: 'runId' },
    });
  }
  const { run } = details;
  const rowConfig = run.config as { config?: PipelineConfig };
  const config = rowConfig.config ?? {};
  const evals = await new EvaluationRepository(deps.db).listForRun(run.id);
  const alignment = evals.find((e) => e.kind === 'alignment')?.payload as
    (StoredAlignment & { predictionsArtifact?: string }) | undefined;
  const shift = evals.find((e) => e.kind === 'boundary-shift')?.payload as ReportSource['boundaryShift'];
  const [cal] = await new CalibrationRepository(deps.db).listForRun(run.id);
  const models = new ModelRepository(deps.db);
  const version = await models.getBySourceRun(run.id);
  const versionDetails = version ? await models.show(version.id) : undefined;

  const src: ReportSource = {
    run: {
      id: run.id,
      workflowId: run.workflowId,
      kind: run.kind,
      status: run.status,
      attempt: run.attempt,
      startedAt: run.startedAt.toISOString(),
      endedAt: run.endedAt?.toISOString() ?? null,
      codeVersion: run.codeVersion,
      datasetVersionId: run.datasetVersionId,
      config: run.config,
    },
    metrics: details.metrics.map((m) => ({ key: m.key, step: m.step, value: m.value })),
    boundaryShift: shift?.before && shift.after ? { before: shift.before, after: shift.after } : undefined,
    model: version ? storedModel(version, versionDetails?.aliases ?? []) : undefined,
    champion: await championAt(models, run.startedAt),
    dataset: run.datasetVersionId
      ? { versionId: run.datasetVersionId, label: details.params.dataset }
      : undefined,
    llmModelSha256:
      typeof config.llm?.modelSha256 === 'string' ? config.llm.modelSha256 : version?.artifacts.llmModel,
  };
  if (cal) {
    src.calibration = {
      metric: cal.metric,
      threshold: cal.threshold,
      maxRoutedFraction:
        calibrationConfigOf(config).maxRoutedFraction ?? DEFAULT_CALIBRATION_CONFIG.maxRoutedFraction,
      curve: cal.curve.map((p) => ({
        threshold: p.threshold,
        routedFraction: p.llmShare,
        // A stored point may carry a string (the chosen point's reason): metrics are numbers or NaN.
        auc: Number(p.auc),
        logLoss: Number(p.logLoss),
      })),
      reason: cal.curve.find((p) => typeof p.reason === 'string')?.reason,
    };
  }
  // A recalibration is about a served version: how its traffic was routed and how its threshold moved
  // (every calibration linked to the version, and this run's even when it was not applied).
  const servedVersion = Number((run.summary as { modelVersionId?: unknown } | null)?.modelVersionId);
  if (run.kind === 'recalibrate' && Number.isInteger(servedVersion) && servedVersion > 0) {
    const cals = new CalibrationRepository(deps.db);
    const history = new Map((await cals.listForModelVersion(servedVersion)).map((c) => [c.id, c]));
    for (const c of await cals.listForRun(run.id)) if (!history.has(c.id)) history.set(c.id, c);
    const routed = await new ServingRepository(deps.db).routedOverTime(servedVersion);
    src.serving = {
      modelVersionId: servedVersion,
      routed: routed.map((r) => ({ ...r, at: r.at.toISOString() })),
      thresholds: [...history.values()]
        .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
        .map((c) => ({ at: c.createdAt.toISOString(), threshold: c.threshold, runId: c.runId })),
    };
    const served = await models.show(servedVersion);
    if (served) src.model = storedModel(served.version, served.aliases);
    // The budget the recalibration used: its own input, else the trained version's config.
    const own = (run.config as { maxRoutedFraction?: unknown }).maxRoutedFraction;
    const sourceConfig = served
      ? ((await runs.get(served.version.sourceRunId))?.config as { config?: PipelineConfig } | undefined)
          ?.config
      : undefined;
    if (src.calibration) {
      src.calibration.maxRoutedFraction =
        typeof own === 'number'
          ? own
          : (calibrationConfigOf(sourceConfig ?? {}).maxRoutedFraction ??
            DEFAULT_CALIBRATION_CONFIG.maxRoutedFraction);
    }
  }
  if (alignment) {
    src.alignment = alignment;
    if (alignment.predictionsArtifact && (await deps.store.has(alignment.predictionsArtifact))) {
      const preds = JSON.parse(
        (await deps.store.get(alignment.predictionsArtifact)).toString('utf8'),
      ) as StoredPredictionsJson;
      src.predictions = { ...preds, ...(await rowContext(deps.store, run, config, preds)) };
    }
  }
  return src;
}

/**
 * Renders the report, keeps it as an artifact of the run (content-addressed, so a re-render of unchanged
 * rows is the same blob), notes its sha256 in the run's summary and writes an .html copy to open.
 */
export async function writeRunReport(
  deps: ReportDeps,
  runIdOrWorkflowId: string,
  opts: { bootstrapRounds?: number; out?: string; completing?: boolean } = {},
): Promise<ReportResult> {
  const src = await gatherReportSource(deps, runIdOrWorkflowId);
  if (opts.completing && src.run.status === 'running') src.run.status = 'completed';
  const { html, charts } = await renderRunReport({ ...src, bootstrapRounds: opts.bootstrapRounds });
  const ref = await deps.store.put(html);
  await new ArtifactRepository(deps.db).record({
    sha256: ref.sha256,
    uri: ref.uri,
    bytes: ref.bytes,
    mediaType: 'text/html',
    producingRunId: src.run.id,
  });
  await new RunRepository(deps.db).mergeSummary(src.run.id, { reportArtifact: ref.sha256 });
  const path = opts.out ?? reportPath(deps.home, src.run.id);
  await mkdir(join(path, '..'), { recursive: true });
  // Write-then-rename: a reader never opens half a page.
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, html);
  await rename(tmp, path);
  return { reportArtifact: ref.sha256, path, bytes: ref.bytes, charts };
}

export function reportActivities(ctx: ActivityContext): Pick<CorellaActivities, 'renderReport'> {
  return {
    async renderReport(input: ReportInput) {
      // Bootstrap intervals over a large pool take a few seconds: keep heartbeating meanwhile.
      return withPulse(() =>
        writeRunReport(ctx, input.runId, {
          bootstrapRounds: input.bootstrapRounds,
          completing: input.completing,
        }),
      );
    },
  };
}
