import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import type { RetrainResult } from '../../activities/types.js';
import { isRunning } from '../../cli/services/health.js';
import { openDatabase } from '../../db/connection.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import {
  pendingActivity,
  postmasterPid,
  smallRun,
  startedWorkflowId,
  temporalPid,
  waitFor,
} from '../helpers/heal-up.js';

describe('corella up restarts a killed Temporal dev server and a killed Postgres, and the run completes', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the dev server, then of the postmaster, mid-run: no lost and no duplicated rows', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-svc-'));
    const home = join(dir, 'home');
    const args = await smallRun(dir, {
      seed: 11,
      tweak: (c) => {
        c.joint = { ...c.joint, stage2: { samples: 150, epochs: 40, batchSize: 16 } };
      },
    });
    const up = startCli(['up', '--json', ...args], cliEnv(home));
    procs.push(up);
    const ready = await up.ready(180_000);
    const workflowId = await waitFor(() => startedWorkflowId(up), 'a started run', up, 120_000);
    const connect = async (): Promise<{ client: Client; close: () => Promise<void> }> => {
      const connection = await Connection.connect({ address: ready.temporalAddress });
      return {
        client: new Client({ connection, namespace: ready.namespace }),
        close: () => connection.close(),
      };
    };

    // The dev server dies while the LLM features are computed.
    let tc = await connect();
    await waitFor(
      async () => {
        const a = await pendingActivity(tc.client, workflowId, 'extractLlmFeatures');
        return a && a.state === 2 && a.heartbeats;
      },
      'LLM features running',
      up,
      300_000,
      200,
    );
    await tc.close();
    const tPid = await temporalPid(home);
    const tKill = Date.now();
    process.kill(tPid, 'SIGKILL');
    await waitFor(() => /Temporal dev server is back/.test(up.stderr()), 'Temporal restarted', up, 120_000);
    const temporalBackMs = Date.now() - tKill;
    // A new server process (the killed one may take a moment to be reaped on a loaded machine).
    expect(await temporalPid(home)).not.toBe(tPid);
    await expect.poll(() => isRunning(tPid), { timeout: 30_000 }).toBe(false);

    // The postmaster dies during joint training (whose activity and the run's bookkeeping need the database).
    tc = await connect();
    await waitFor(
      async () => {
        const a = await pendingActivity(tc.client, workflowId, 'trainJoint');
        return a && a.state === 2 && a.heartbeats;
      },
      'joint training running',
      up,
      300_000,
      200,
    );
    await tc.close();
    const pgPid = await postmasterPid(home);
    const pgKill = Date.now();
    process.kill(pgPid, 'SIGKILL');
    await waitFor(() => /Postgres is back/.test(up.stderr()), 'Postgres restarted', up, 180_000);
    const postgresBackMs = Date.now() - pgKill;
    console.log(
      `heal-service-kill: Temporal back ${temporalBackMs} ms, Postgres back ${postgresBackMs} ms after SIGKILL`,
    );

    const exit = await up.exited();
    // What the supervisor and the waiting activities said, for the record.
    console.log(
      up
        .stderr()
        .split('\n')
        .filter((l) => /died|restart|is back|waiting|DB_UNAVAILABLE|unreachable/.test(l))
        .join('\n'),
    );
    expect(exit.code, up.stderr().slice(-6000)).toBe(0);
    expect(up.stderr()).toContain('Temporal dev server died');
    expect(up.stderr()).toContain('Postgres died');
    // The workers share up's stdout (their SDK log lines): the result is the pretty-printed object in it.
    const result = JSON.parse(/^\{\n[\s\S]*?^\}$/m.exec(up.stdout())![0]) as RetrainResult;

    // Every row the run wrote is there exactly once: the metrics it reported, one dataset version, one model
    // version, and artifact rows without duplicates.
    const again = startCli(['up', '--no-run'], cliEnv(home));
    procs.push(again);
    await again.ready(180_000);
    const h = openDatabase((await readFile(ready.databaseUrlFile, 'utf8')).trim());
    try {
      const count = async (query: ReturnType<typeof sql>): Promise<number> =>
        Number(((await h.db.execute(query)).rows[0] as { n: string }).n);
      expect(await count(sql`select count(*) as n from runs where status = 'completed'`)).toBe(1);
      const all = (await h.db.execute(sql`select workflow_id, kind, status, error from runs`)).rows;
      expect(all, JSON.stringify(all)).toHaveLength(1);
      expect(await count(sql`select count(*) as n from model_versions`)).toBe(1);
      expect(await count(sql`select count(*) as n from dataset_versions`)).toBe(1);
      // No artifact row lost: every blob the model version names is registered.
      const [mv] = (await h.db.execute(sql`select artifacts from model_versions`)).rows as {
        artifacts: Record<string, unknown>;
      }[];
      const shas = JSON.stringify(mv.artifacts).match(/[0-9a-f]{64}/g) ?? [];
      expect(shas.length).toBeGreaterThan(0);
      for (const sha of new Set(shas))
        expect(await count(sql`select count(*) as n from artifacts where sha256 = ${sha}`), sha).toBe(1);
      const stored = new Map(
        (
          (
            await h.db.execute(
              sql`select key, value from run_metrics where run_id = ${result.runId} and step = 0`,
            )
          ).rows as { key: string; value: number }[]
        ).map((r) => [r.key, Number(r.value)]),
      );
      for (const [key, value] of Object.entries(result.metrics)) {
        expect(stored.has(key), `metric ${key} stored`).toBe(true);
        if (Number.isFinite(value)) expect(stored.get(key)).toBeCloseTo(value, 6);
      }
    } finally {
      await h.close();
      again.child.kill('SIGTERM');
      await again.exited();
    }
  }, 480_000);
});
