import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import { registryActivities } from '../../activities/registry.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { fileActivityContext } from '../helpers/activity-context.js';

describe('model registry: registration, promotion gate, audited manual promotion', () => {
  let testDb: TestDatabase;
  let ctx: ActivityContext;
  let dir: string;

  beforeAll(async () => {
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-reg-'));
    ctx = fileActivityContext(testDb.db, dir);
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function candidate(tag: string, auc: number) {
    const run = await new RunRepository(testDb.db).start({ workflowId: `reg-${tag}`, kind: 'retrain' });
    const crm = await ctx.store.put(`crm weights ${tag}`);
    const adapter = await ctx.store.put(`adapter weights ${tag}`);
    return {
      runId: run.id,
      datasetVersionId: undefined as unknown as string,
      artifacts: { crm: crm.sha256, adapter: adapter.sha256, featuresIndex: 'features/not-a-blob' },
      threshold: 0.5,
      metrics: { 'hybrid.auc': auc },
      promotion: { metric: 'hybrid.auc', margin: 0.001 },
    };
  }

  it('registers once per run and gates promotion on the validation metric', async () => {
    const { registerModelVersion } = registryActivities(ctx);
    const a = await candidate('a', 0.7);
    const first = await registerModelVersion({ ...a, datasetVersionId: null as unknown as string });
    expect(first.alias).toBe('champion');
    const again = await registerModelVersion({ ...a, datasetVersionId: null as unknown as string });
    expect(again.modelVersionId).toBe(first.modelVersionId);

    const worse = await registerModelVersion({
      ...(await candidate('b', 0.7005)),
      datasetVersionId: null as unknown as string,
    });
    expect(worse.alias).toBe('challenger');
    const better = await registerModelVersion({
      ...(await candidate('c', 0.72)),
      datasetVersionId: null as unknown as string,
    });
    expect(better.alias).toBe('champion');

    const models = new ModelRepository(testDb.db);
    expect((await models.list()).length).toBe(3);
    expect(String((await models.champion())?.id)).toBe(better.modelVersionId);
    const events = await models.aliasHistory({ alias: 'champion' });
    expect(events.map((e) => [e.fromVersionId, e.toVersionId])).toEqual([
      [null, Number(first.modelVersionId)],
      [Number(first.modelVersionId), Number(better.modelVersionId)],
    ]);
    const v = await models.get(Number(first.modelVersionId));
    expect(v?.artifacts.crmModel).toMatch(/^[0-9a-f]{64}$/);
    expect(v?.calibratedThreshold).toBe(0.5);

    // `corella models promote` overrides the gate by hand, and the audit trail records who and why.
    const cli = startCli(
      ['models', 'promote', worse.modelVersionId, '--reason', 'looks better online', '--json'],
      cliEnv(dir, { DATABASE_URL: testDb.url }),
    );
    const exit = await cli.exited();
    expect(exit.code, cli.stderr()).toBe(0);
    expect(JSON.parse(cli.stdout())).toMatchObject({
      alias: 'champion',
      toVersionId: Number(worse.modelVersionId),
      changed: true,
    });
    const last = (await models.aliasHistory({ alias: 'champion' })).at(-1);
    expect(last?.reason).toBe('looks better online');
    expect(last?.actor).toMatch(/^cli:/);

    const list = startCli(['models', 'list', '--json'], cliEnv(dir, { DATABASE_URL: testDb.url }));
    expect((await list.exited()).code).toBe(0);
    const rows = JSON.parse(list.stdout()) as { id: number; aliases: string[] }[];
    expect(rows.find((r) => r.aliases.includes('champion'))?.id).toBe(Number(worse.modelVersionId));
  });

  it('exits 2 with a usage message for a bad version id', async () => {
    const cli = startCli(['models', 'promote', 'abc'], cliEnv(dir, { DATABASE_URL: testDb.url }));
    expect((await cli.exited()).code).toBe(2);
    expect(cli.stderr()).toContain('model version id');
  });
});
