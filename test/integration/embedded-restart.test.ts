import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../cli/services/process-file.js';
import { openDatabase } from '../../db/connection.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';

/** The ready line shows the URL masked; the full one is in the 0600 file it names. */
async function fullDatabaseUrl(ready: Record<string, string>): Promise<string> {
  return (await readFile(ready.databaseUrlFile, 'utf8')).trim();
}

async function postmasterPid(home: string): Promise<number> {
  const text = await readFile(join(home, 'pg', 'postmaster.pid'), 'utf8');
  return Number(text.split('\n')[0]);
}

async function temporalPid(home: string): Promise<number> {
  return (JSON.parse(await readFile(join(home, 'temporal', 'server.json'), 'utf8')) as { pid: number }).pid;
}

describe('the embedded default survives a SIGKILL of the process that started it', () => {
  const procs: CliProcess[] = [];
  let home = '';

  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    // Whatever the test left behind is stopped through the same recovery path a user would hit.
    if (home) {
      const last = startCli(['up', '--no-run'], cliEnv(home));
      await last.ready().catch(() => undefined);
      last.child.kill('SIGTERM');
      await last.exited();
      await rm(home, { recursive: true, force: true });
    }
  });

  it('keeps the data, recovers the stale processes, and shuts down cleanly on SIGTERM', async () => {
    home = await mkdtemp(join(tmpdir(), 'corella-up-'));
    const first = startCli(['up', '--no-run'], cliEnv(home));
    procs.push(first);
    const r1 = await first.ready();
    // While it runs, a second `up` on the same home is refused instead of fighting over its services.
    const rival = startCli(['up', '--no-run'], cliEnv(home));
    expect((await rival.exited()).code).toBe(3);
    expect(rival.stderr()).toContain('another corella up');

    // Leave a trace in both stores: a run row in Postgres, a workflow in Temporal's SQLite file.
    const h1 = openDatabase(await fullDatabaseUrl(r1));
    const run = await new RunRepository(h1.db).start({ workflowId: 'restart-probe', kind: 'probe' });
    await h1.close();
    const c1 = await Connection.connect({ address: r1.temporalAddress });
    await new Client({ connection: c1, namespace: r1.namespace }).workflow.start('retrainWorkflow', {
      taskQueue: 'nobody-polls-this',
      workflowId: 'restart-probe-wf',
      args: [{}],
    });
    await c1.close();

    const pgPid = await postmasterPid(home);
    const tPid = await temporalPid(home);
    first.child.kill('SIGKILL');
    await first.exited();
    // Its worker processes notice that their parent is gone and stop by themselves.
    const orphans = r1.workerPids as unknown as number[];
    expect(orphans).toHaveLength(2);
    await expect.poll(() => orphans.filter(isAlive).length, { timeout: 70_000, interval: 500 }).toBe(0);
    // The children outlive a SIGKILLed parent: this is the stale state the next start must cope with.
    expect(isAlive(pgPid)).toBe(true);

    const second = startCli(['up', '--no-run'], cliEnv(home));
    procs.push(second);
    const r2 = await second.ready();
    const h2 = openDatabase(await fullDatabaseUrl(r2));
    const again = await new RunRepository(h2.db).getByWorkflowId('restart-probe');
    await h2.close();
    expect(again?.id).toBe(run.id);
    const c2 = await Connection.connect({ address: r2.temporalAddress });
    const desc = await new Client({ connection: c2, namespace: r2.namespace }).workflow
      .getHandle('restart-probe-wf')
      .describe();
    await c2.close();
    expect(desc.type).toBe('retrainWorkflow');

    second.child.kill('SIGTERM');
    const exit = await second.exited();
    expect(exit.code).toBe(0);
    for (const pid of r2.workerPids as unknown as number[]) expect(isAlive(pid)).toBe(false);
    // A clean shutdown stops everything it runs, adopted orphans included.
    const pg2 = await postmasterPid(home).catch(() => undefined);
    expect(pg2 === undefined || !isAlive(pg2)).toBe(true);
    expect(isAlive(tPid)).toBe(false);
  }, 240_000);
});
