import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ArtifactRepository,
  CalibrationRepository,
  DatasetRepository,
  EvaluationRepository,
  ModelRepository,
  RunRepository,
  datasetVersionFromManifest,
  type ArtifactInput,
} from '../../../db/repositories/index.js';
import { NotFoundError } from '../../../db/errors.js';
import { openDatabase } from '../../../db/connection.js';
import { MIGRATIONS_FOLDER, migrateDatabase } from '../../../db/migrate.js';
import { CorellaError } from '../../../ml/errors.js';
import type { DatasetManifest } from '../../../ml/data/types.js';
import type { TestDatabase } from '../../../db/testing.js';
import { openTestDatabase } from './support.js';

let t: TestDatabase;
let runs: RunRepository;
let arts: ArtifactRepository;
let datasets: DatasetRepository;
let models: ModelRepository;
let cals: CalibrationRepository;
let evals: EvaluationRepository;
let seq = 0;

function artifact(content: string, extra: Partial<ArtifactInput> = {}): ArtifactInput {
  const sha256 = createHash('sha256').update(content).digest('hex');
  return { sha256, uri: `file:///store/${sha256}`, bytes: Buffer.byteLength(content), ...extra };
}

function unique(prefix: string): string {
  seq += 1;
  return `${prefix}-${process.pid}-${seq}`;
}

async function count(table: string): Promise<number> {
  const r = await t.db.execute<{ n: number }>(sql.raw(`SELECT count(*)::int AS n FROM ${table}`));
  return r.rows[0].n;
}

async function startRun(kind = 'retrain') {
  return runs.start({ workflowId: unique('wf'), kind, config: { lr: 0.01 } });
}

beforeAll(async () => {
  t = await openTestDatabase();
  runs = new RunRepository(t.db);
  arts = new ArtifactRepository(t.db);
  datasets = new DatasetRepository(t.db);
  models = new ModelRepository(t.db);
  cals = new CalibrationRepository(t.db);
  evals = new EvaluationRepository(t.db);
});

afterAll(async () => {
  await t?.close();
});

describe('migrations', () => {
  it('are safe to run from several processes at once on an empty database, and idempotent', async () => {
    const name = `corella_mig_${process.pid}_${Date.now()}`;
    const admin = new pg.Client(t.url);
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(t.url);
    url.pathname = `/${name}`;
    const handles = [
      openDatabase(url.toString()),
      openDatabase(url.toString()),
      openDatabase(url.toString()),
    ];
    try {
      // Without the advisory lock two of these would race on CREATE TABLE and fail.
      await Promise.all(handles.map((h) => migrateDatabase(h.db)));
      await migrateDatabase(handles[0].db);
      const applied = await handles[0].db.execute<{ n: number }>(
        sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`,
      );
      const journal = JSON.parse(
        await readFile(join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8'),
      ) as {
        entries: unknown[];
      };
      expect(applied.rows[0].n).toBe(journal.entries.length);
    } finally {
      await Promise.all(handles.map((h) => h.close()));
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
      await admin.end();
    }
  });
});

describe('runs', () => {
  it('round-trips a run with params, metrics and produced artifacts', async () => {
    const run = await runs.start({
      workflowId: unique('retrain-ml-1m'),
      kind: 'retrain',
      config: { dataset: 'ml-1m', epochs: 2 },
      codeVersion: 'abc123',
      params: { lr: 0.001, optimizer: 'adam' },
    });
    expect(run.status).toBe('running');
    expect(run.attempt).toBe(1);
    await runs.logMetrics(run.id, { auc: 0.71, logloss: 0.55 }, 1);
    await runs.logMetrics(run.id, [{ key: 'auc', value: 0.75, step: 2 }]);
    await arts.record(artifact('crm weights', { producingRunId: run.id, mediaType: 'application/x-tfjs' }));
    const done = await runs.finish(run.id, { summary: { best: 0.75 }, metrics: { test_auc: 0.74 } });
    expect(done.status).toBe('completed');
    expect(done.endedAt).toBeInstanceOf(Date);

    const shown = await runs.show(run.workflowId);
    expect(shown?.run).toMatchObject({
      id: run.id,
      kind: 'retrain',
      codeVersion: 'abc123',
      summary: { best: 0.75 },
    });
    expect(shown?.run.config).toEqual({ dataset: 'ml-1m', epochs: 2 });
    expect(shown?.params).toEqual({ lr: '0.001', optimizer: 'adam' });
    expect(shown?.metrics.map((m) => [m.key, m.step, m.value])).toEqual([
      ['auc', 1, 0.71],
      ['auc', 2, 0.75],
      ['logloss', 1, 0.55],
      ['test_auc', 0, 0.74],
    ]);
    expect(shown?.artifacts.map((a) => a.mediaType)).toEqual(['application/x-tfjs']);
    expect((await runs.show(run.id))?.run.workflowId).toBe(run.workflowId);
    const latest = await runs.latestMetrics([run.id]);
    expect(latest.get(run.id)).toEqual({ auc: 0.75, logloss: 0.55, test_auc: 0.74 });
  });

  it('start is idempotent by workflow id and restarts a failed run as a new attempt', async () => {
    const workflowId = unique('wf-dup');
    const a = await runs.start({ workflowId, kind: 'retrain' });
    const b = await runs.start({ workflowId, kind: 'retrain' });
    expect(b.id).toBe(a.id);
    expect(await runs.list({ kind: 'retrain' })).toSatisfy(
      (l: { workflowId: string }[]) => l.filter((r) => r.workflowId === workflowId).length === 1,
    );
    const failed = await runs.fail(
      a.id,
      new CorellaError('STAGE_NOT_IMPLEMENTED', 'trainCrm is not implemented'),
    );
    expect(failed.status).toBe('failed');
    expect(failed.error).toContain('STAGE_NOT_IMPLEMENTED');
    expect(failed.error).toContain('trainCrm is not implemented');
    const again = await runs.start({ workflowId, kind: 'retrain' });
    expect(again).toMatchObject({ id: a.id, status: 'running', attempt: 2, error: null, endedAt: null });
  });

  it('metrics upsert: re-logging the same (key, step) overwrites instead of duplicating', async () => {
    const run = await startRun();
    await runs.logMetrics(run.id, { loss: 1.0 }, 3);
    await runs.logMetrics(run.id, { loss: 0.5 }, 3);
    await runs.logMetrics(run.id, [
      { key: 'loss', value: 0.4, step: 4 },
      { key: 'loss', value: 0.3, step: 4 },
    ]);
    const shown = await runs.show(run.id);
    expect(shown?.metrics.map((m) => [m.step, m.value])).toEqual([
      [3, 0.5],
      [4, 0.3],
    ]);
  });

  it('lists newest first with filters and cancels with a reason', async () => {
    const kind = unique('kind');
    const r1 = await startRun(kind);
    const r2 = await startRun(kind);
    await runs.cancel(r2.id, 'operator stop');
    expect((await runs.list({ kind })).map((r) => r.id)).toEqual([r2.id, r1.id]);
    const cancelled = await runs.list({ kind, status: 'cancelled' });
    expect(cancelled.map((r) => [r.id, r.error])).toEqual([[r2.id, 'operator stop']]);
  });

  it('rejects bad input with a typed error naming the field, writing nothing', async () => {
    const run = await startRun();
    await expect(
      runs.logMetrics(run.id, [{ key: 'auc', value: 'high' as unknown as number }]),
    ).rejects.toThrow(/metrics\[0\]\.value \(auc\)/);
    await expect(runs.logMetrics(run.id, [{ key: 'auc', value: 1, step: -1 }])).rejects.toBeInstanceOf(
      CorellaError,
    );
    await expect(runs.fail('not-a-uuid', 'x')).rejects.toThrow(/runId/);
    await expect(runs.finish('00000000-0000-4000-8000-000000000000')).rejects.toBeInstanceOf(NotFoundError);
    expect((await runs.show(run.id))?.metrics).toEqual([]);
  });
});

describe('artifacts', () => {
  it('record is idempotent by sha256 and detects a size mismatch', async () => {
    const a = artifact('feature map v1', { mediaType: 'application/json' });
    const first = await arts.record(a);
    const second = await arts.record({ ...a, uri: 'file:///elsewhere' });
    expect(second).toEqual(first);
    expect(await arts.get(a.sha256)).toEqual(first);
    const err = await arts.record({ ...a, bytes: a.bytes + 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('ARTIFACT_CORRUPT');
    await expect(arts.record({ ...a, sha256: '../../etc/passwd' })).rejects.toThrow(/artifact\.sha256/);
  });
});

const manifest = (versionId: string): DatasetManifest => ({
  versionId,
  source: 'synthetic-movielens',
  params: { minRating: 4 },
  inputs: [{ name: 'ratings.dat', sha256: 'a'.repeat(64), bytes: 100 }],
  featureMapArtifact: 'f'.repeat(64),
  itemTableArtifact: 'e'.repeat(64),
  splitArtifacts: { train: '1'.repeat(64), valid: '2'.repeat(64), test: '3'.repeat(64) },
  stats: {
    train: { size: 80, positives: 40, positiveRate: 0.5 },
    valid: { size: 10, positives: 5, positiveRate: 0.5 },
    test: { size: 10, positives: 4, positiveRate: 0.4 },
  },
  dropped: { badRating: 1 },
  userCount: 7,
  itemCount: 11,
});

describe('datasets', () => {
  it('upsertVersion round-trips a manifest and is idempotent by version id', async () => {
    const versionId = unique('dsv');
    const fm = artifact(`feature map ${versionId}`, { mediaType: 'application/json' });
    const input = datasetVersionFromManifest('ml-1m-test', manifest(versionId), fm);
    const first = await datasets.upsertVersion(input);
    expect(first.created).toBe(true);
    const second = await datasets.upsertVersion(input);
    expect(second.created).toBe(false);
    expect(second.version).toEqual(first.version);
    const got = await datasets.getVersion(versionId);
    expect(got).toMatchObject({
      datasetName: 'ml-1m-test',
      source: 'synthetic-movielens',
      params: { minRating: 4 },
      featureMapSha256: fm.sha256,
      counts: { users: 7, items: 11, dropped: { badRating: 1 } },
    });
    expect(got?.inputSha256s).toEqual(manifest(versionId).inputs);
    expect((got?.splitSizes as Record<string, { size: number }>).train.size).toBe(80);
    expect(got?.manifest).toEqual(manifest(versionId));
    expect((await datasets.getDataset('ml-1m-test'))?.source).toBe('synthetic-movielens');
    expect((await datasets.listVersions('ml-1m-test')).filter((v) => v.versionId === versionId)).toHaveLength(
      1,
    );
    expect(await arts.get(fm.sha256)).toBeDefined();
    const run = await runs.start({ workflowId: unique('wf'), kind: 'retrain', datasetVersionId: versionId });
    expect(run.datasetVersionId).toBe(versionId);
  });

  it('a transaction failing midway leaves nothing behind', async () => {
    const before = {
      datasets: await count('datasets'),
      versions: await count('dataset_versions'),
      arts: await count('artifacts'),
    };
    const fm = artifact(`doomed ${unique('x')}`);
    // The dataset row and the feature map artifact are written first, then the version insert fails
    // (its manifest is not valid JSON for Postgres: a lone surrogate).
    const bad = {
      ...datasetVersionFromManifest(unique('doomed-ds'), manifest(unique('doomed')), fm),
      manifest: { note: '\ud800' },
    };
    await expect(datasets.upsertVersion(bad)).rejects.toThrow();
    expect(await count('datasets')).toBe(before.datasets);
    expect(await count('dataset_versions')).toBe(before.versions);
    expect(await count('artifacts')).toBe(before.arts);
    expect(await arts.get(fm.sha256)).toBeUndefined();
  });
});

describe('models', () => {
  async function trainedRun() {
    const run = await startRun();
    const crm = artifact(`crm ${run.id}`);
    const adapter = artifact(`adapter ${run.id}`);
    return { run, crm, adapter };
  }

  it('register is idempotent by source run and links the run calibration', async () => {
    const { run, crm, adapter } = await trainedRun();
    const cal = await cals.record({
      runId: run.id,
      threshold: 0.42,
      metric: 'auc',
      curve: [
        { threshold: 0.3, llmShare: 0.4, auc: 0.77 },
        { threshold: 0.42, llmShare: 0.2, auc: 0.78 },
      ],
    });
    const input = {
      sourceRunId: run.id,
      artifacts: { crmModel: crm.sha256, adapter: adapter.sha256 },
      recordArtifacts: [crm, adapter],
      metrics: { auc: 0.78 },
      modelName: unique('model'),
    };
    const a = await models.register(input);
    const b = await models.register(input);
    expect(a.created).toBe(true);
    expect(b.created).toBe(false);
    expect(b.version.id).toBe(a.version.id);
    expect(a.version.calibratedThreshold).toBe(0.42);
    expect((await models.list({ modelName: input.modelName })).map((v) => v.id)).toEqual([a.version.id]);
    expect((await cals.get(cal.id))?.modelVersionId).toBe(a.version.id);
    const shown = await models.show(a.version.id);
    expect(shown?.version).toMatchObject({ artifacts: input.artifacts, metrics: { auc: 0.78 } });
    expect(shown?.calibrations.map((c) => c.curve)).toEqual([cal.curve]);
    expect((await models.getBySourceRun(run.id))?.id).toBe(a.version.id);
  });

  it('register fails atomically when an artifact is missing', async () => {
    const { run, crm } = await trainedRun();
    const ghost = artifact(`never stored ${run.id}`);
    const err = await models
      .register({
        sourceRunId: run.id,
        artifacts: { crmModel: crm.sha256, adapter: ghost.sha256 },
        recordArtifacts: [crm],
      })
      .catch((e: unknown) => e);
    expect((err as CorellaError).code).toBe('ARTIFACT_NOT_FOUND');
    expect((err as Error).message).toContain(ghost.sha256);
    // crm was recorded earlier in the same transaction: rolled back with it.
    expect(await arts.get(crm.sha256)).toBeUndefined();
    expect(await models.getBySourceRun(run.id)).toBeUndefined();
  });

  it('aliases move in one transaction with an audit trail; champion lookup follows', async () => {
    const modelName = unique('model');
    const v1 = (await models.register({ sourceRunId: (await startRun()).id, artifacts: {}, modelName }))
      .version;
    const v2 = (
      await models.register({
        sourceRunId: (await startRun()).id,
        artifacts: {},
        modelName,
        alias: { name: 'challenger', actor: 'retrain' },
      })
    ).version;
    expect(await models.champion(modelName)).toBeUndefined();
    expect((await models.byAlias('challenger', modelName))?.id).toBe(v2.id);

    expect(await models.promote(v1.id, { actor: 'alice', reason: 'first' })).toMatchObject({
      fromVersionId: null,
      toVersionId: v1.id,
      changed: true,
    });
    expect((await models.promote(v1.id, { actor: 'alice' })).changed).toBe(false);
    expect(await models.promote(v2.id, { actor: 'bob', reason: 'better auc' })).toMatchObject({
      fromVersionId: v1.id,
      toVersionId: v2.id,
    });
    expect((await models.champion(modelName))?.id).toBe(v2.id);
    await models.removeAlias(modelName, 'challenger', { actor: 'bob', reason: 'promoted' });

    const history = await models.aliasHistory({ modelName });
    expect(history.map((e) => [e.alias, e.fromVersionId, e.toVersionId, e.actor, e.reason])).toEqual([
      ['challenger', null, v2.id, 'retrain', ''],
      ['champion', null, v1.id, 'alice', 'first'],
      ['champion', v1.id, v2.id, 'bob', 'better auc'],
      ['challenger', v2.id, null, 'bob', 'promoted'],
    ]);
    const listed = await models.list({ modelName });
    expect(listed.map((v) => [v.id, v.aliases])).toEqual([
      [v2.id, ['champion']],
      [v1.id, []],
    ]);
    expect((await models.show(v1.id))?.aliasEvents).toHaveLength(2);
    await expect(models.promote(999_999, { actor: 'x' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(models.setAlias(v1.id, 'Bad Alias!', { actor: 'x' })).rejects.toThrow(/alias/);
    expect(await models.aliasHistory({ modelName })).toHaveLength(4);
  });

  it('concurrent promotions keep the audit trail consistent', async () => {
    const modelName = unique('model');
    const versions = [];
    for (let i = 0; i < 4; i++) {
      versions.push(
        (await models.register({ sourceRunId: (await startRun()).id, artifacts: {}, modelName })).version,
      );
    }
    await Promise.all(versions.map((v) => models.promote(v.id, { actor: `w${v.id}` })));
    const history = await models.aliasHistory({ modelName, alias: 'champion' });
    expect(history).toHaveLength(4);
    // Each event's `from` is the previous event's `to`: no lost update.
    history.forEach((e, i) => expect(e.fromVersionId).toBe(i === 0 ? null : history[i - 1].toVersionId));
    expect((await models.champion(modelName))?.id).toBe(history[3].toVersionId);
  });

  it('setThreshold and calibration records update the model version', async () => {
    const run = await startRun();
    const { version } = await models.register({
      sourceRunId: run.id,
      artifacts: {},
      calibratedThreshold: null,
    });
    expect(version.calibratedThreshold).toBeNull();
    const recal = await startRun('calibrate');
    const cal = await cals.record({
      runId: recal.id,
      threshold: 0.3,
      metric: 'logloss',
      modelVersionId: version.id,
    });
    expect((await models.get(version.id))?.calibratedThreshold).toBe(0.3);
    const again = await cals.record({ runId: recal.id, threshold: 0.35, metric: 'logloss', curve: [] });
    expect(again.id).toBe(cal.id);
    expect(again.modelVersionId).toBe(version.id);
    expect(await cals.listForRun(recal.id)).toHaveLength(1);
    const updated = await models.setThreshold(version.id, 0.5, { calibrationId: cal.id });
    expect(updated.calibratedThreshold).toBe(0.5);
    expect((await cals.latestForModelVersion(version.id))?.threshold).toBe(0.35);
    await expect(models.setThreshold(version.id, Number.NaN)).rejects.toThrow(/threshold/);
    await expect(models.setThreshold(version.id, 0.1, { calibrationId: 999_999 })).rejects.toBeInstanceOf(
      NotFoundError,
    );
    // The failed transaction did not apply the threshold either.
    expect((await models.get(version.id))?.calibratedThreshold).toBe(0.5);
  });
});

describe('evaluations', () => {
  it('record upserts by (run, kind, model version), including a null model version', async () => {
    const run = await startRun('evaluate');
    const { version } = await models.register({ sourceRunId: run.id, artifacts: {} });
    const a = await evals.record({ runId: run.id, kind: 'alignment', payload: { auc: 0.7 } });
    const b = await evals.record({ runId: run.id, kind: 'alignment', payload: { auc: 0.72 } });
    expect(b.id).toBe(a.id);
    expect(b.payload).toEqual({ auc: 0.72 });
    const c = await evals.record({
      runId: run.id,
      kind: 'alignment',
      payload: { auc: 0.8 },
      modelVersionId: version.id,
    });
    expect(c.id).not.toBe(a.id);
    expect((await evals.listForRun(run.id)).map((e) => e.payload)).toEqual([{ auc: 0.72 }, { auc: 0.8 }]);
    expect((await evals.listForModelVersion(version.id)).map((e) => e.id)).toEqual([c.id]);
    expect((await models.show(version.id))?.evaluations.map((e) => e.kind)).toEqual(['alignment']);
    await expect(
      evals.record({ runId: run.id, kind: 'x', payload: [] as unknown as Record<string, unknown> }),
    ).rejects.toThrow(/payload/);
  });
});
