import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { movielensLines, writeMovielens } from '../helpers/datasets.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

describe('corella retrain: the workflow id is a business key', () => {
  let dir: string;
  let testDb: TestDatabase;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-cli-'));
    testDb = await createTestDatabase(inject('databaseUrl'));
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('two identical retrains started at once make one run; a third beside it is told which open run shares its workers', async () => {
    const data = await writeMovielens(join(dir, 'ml'), movielensLines({ users: 8, movies: 12 }));
    const model = join(dir, 'tiny.gguf');
    writeTinyGguf(model, { seed: 1 });
    const env = cliEnv(dir, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    });
    // No worker polls this queue in the test: the run stays open while both commands race to start it.
    const args = ['retrain', '--data-dir', data, '--model', model, '--json'];
    const [a, b] = [startCli(args, env), startCli(args, env)];
    const [ea, eb] = await Promise.all([a.exited(), b.exited()]);
    expect(ea.code, a.stderr()).toBe(0);
    expect(eb.code, b.stderr()).toBe(0);
    const outs = [JSON.parse(a.stdout()), JSON.parse(b.stdout())] as {
      workflowId: string;
      started: boolean;
    }[];
    expect(outs[0].workflowId).toBe(outs[1].workflowId);
    expect(outs[0].workflowId).toMatch(/^retrain-movielens-1m-[0-9a-f]{12}$/);
    expect(outs.filter((o) => o.started)).toHaveLength(1);

    // A second run beside the open one is told that it shares the workers with it, and which run that is.
    const c = startCli([...args, '--name', 'other-ml'], env);
    const ec = await c.exited();
    expect(ec.code, c.stderr()).toBe(0);
    const other = (JSON.parse(c.stdout()) as { workflowId: string }).workflowId;
    expect(other).not.toBe(outs[0].workflowId);
    expect(c.stderr()).toMatch(
      /^note: (another run is|\d+ other runs are|at least \d+ other runs are) open/m,
    );
    expect(c.stderr()).toContain(`  ${outs[0].workflowId} (retrainWorkflow, started `);

    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const client = new Client({ connection, namespace: inject('temporalNamespace') });
      const handle = client.workflow.getHandle(outs[0].workflowId);
      const d = await handle.describe();
      expect(d.status.name).toBe('RUNNING');
      expect(d.memo?.dataset).toMatchObject({ source: 'movielens-1m' });
      await handle.terminate('test over');
      await client.workflow.getHandle(other).terminate('test over');
    } finally {
      await connection.close();
    }
  }, 120_000);
});
