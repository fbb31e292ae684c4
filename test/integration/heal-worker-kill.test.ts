import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { isRunning } from '../../cli/services/health.js';
import { openDatabase } from '../../db/connection.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { DEFAULT_HEARTBEAT_TIMEOUT } from '../../workflows/retrain.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { pendingActivity, smallRun, startedWorkflowId, waitFor, workerPid } from '../helpers/heal-up.js';

const HEARTBEAT_TIMEOUT_MS = Number.parseInt(DEFAULT_HEARTBEAT_TIMEOUT, 10) * 1000;

describe('corella up restarts a killed gpu worker and the run completes without help', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  let connection: Connection | undefined;
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await connection?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('SIGKILL during LLM features and again during joint training', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-worker-'));
    const home = join(dir, 'home');
    const args = await smallRun(dir, {
      // Joint training long enough (a few seconds) that the kill lands inside it.
      tweak: (c) => {
        c.joint = { ...c.joint, stage2: { samples: 150, epochs: 40, batchSize: 16 } };
      },
    });
    const up = startCli(['up', ...args], cliEnv(home));
    procs.push(up);
    const ready = await up.ready(180_000);
    connection = await Connection.connect({ address: ready.temporalAddress });
    const client = new Client({ connection, namespace: ready.namespace });
    const workflowId = await waitFor(() => startedWorkflowId(up), 'a started run', up, 120_000);

    const stalls: Record<string, number> = {};
    for (const activity of ['extractLlmFeatures', 'trainJoint']) {
      // Running and heartbeating: the worker is inside the computation.
      const running = await waitFor(
        async () => {
          const a = await pendingActivity(client, workflowId, activity);
          return a && a.state === 2 && a.heartbeats ? a : undefined;
        },
        `${activity} running`,
        up,
        300_000,
        200,
      );
      const pid = workerPid(up, ready, 'gpu');
      if (!(await isRunning(pid)))
        throw new Error(`the gpu worker (pid ${pid}) is not running:\n${up.stderr().slice(-8000)}`);
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      // The retry runs on the worker `up` restarted, once Temporal saw the heartbeat missing.
      const retried = await waitFor(
        async () => {
          const a = await pendingActivity(client, workflowId, activity);
          return a && a.attempt > running.attempt && a.state === 2 ? a : undefined;
        },
        `${activity} retried`,
        up,
        HEARTBEAT_TIMEOUT_MS + 120_000,
        500,
      );
      stalls[activity] = (retried.lastStartedMs || Date.now()) - killedAt;
      expect(up.stderr()).toMatch(new RegExp(`worker gpu exited \\(SIGKILL\\); restarting it`));
    }
    console.log(
      `heal-worker-kill: stalled ${JSON.stringify(stalls)} ms (heartbeat timeout ${HEARTBEAT_TIMEOUT_MS} ms)`,
    );
    const exit = await up.exited();
    expect(exit.code, up.stderr().slice(-4000)).toBe(0);
    // stderr is a pipe here, not a terminal: the running activities' progress still shows, as log lines.
    expect(up.stderr()).toMatch(/^ {4}\S[^\n]*: \d+\/\d+ \(\d+%\)$/m);
    for (const stall of Object.values(stalls))
      expect(stall).toBeLessThanOrEqual(HEARTBEAT_TIMEOUT_MS + 30_000);

    // One completed run, one model version: the kills cost time, not work or duplicates.
    const url = (await readFile(ready.databaseUrlFile, 'utf8')).trim();
    const up2 = startCli(['up', '--no-run'], cliEnv(home));
    procs.push(up2);
    await up2.ready(180_000);
    const h = openDatabase(url);
    try {
      const run = await new RunRepository(h.db).getByWorkflowId(workflowId);
      expect(run?.status).toBe('completed');
      expect(await new ModelRepository(h.db).list()).toHaveLength(1);
    } finally {
      await h.close();
      up2.child.kill('SIGTERM');
      await up2.exited();
    }
  }, 420_000);
});
