import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { pendingActivity, smallRun, temporalPid, waitFor } from '../helpers/heal-up.js';

describe('retrain --wait waits through a dev server that up restarts', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the dev server is SIGKILLed while retrain --wait follows the run: it reports the result, exit 0', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-wait-'));
    const home = join(dir, 'home');
    const env = cliEnv(home);
    const args = await smallRun(dir, { seed: 13 });
    const stack = startCli(['up', '--no-run'], env);
    procs.push(stack);
    const ready = await stack.ready(180_000);
    const retrain = startCli(['retrain', '--wait', '--json', ...args], env);
    procs.push(retrain);
    // The run is on the workers (an activity heartbeating) while retrain --wait follows it.
    const connection = await Connection.connect({ address: ready.temporalAddress });
    try {
      const client = new Client({ connection, namespace: ready.namespace });
      const workflowId = await waitFor(
        async () => {
          for await (const w of client.workflow.list({ query: `WorkflowType = 'retrainWorkflow'` }))
            return w.workflowId;
          return undefined;
        },
        'a started run',
        retrain,
        120_000,
        500,
      );
      await waitFor(
        async () => {
          const a = await pendingActivity(client, workflowId, 'extractLlmFeatures');
          return a && a.state === 2 && a.heartbeats;
        },
        'LLM features running',
        retrain,
        300_000,
        250,
      );
    } finally {
      await connection.close();
    }
    process.kill(await temporalPid(home), 'SIGKILL');
    await waitFor(
      () => /Temporal dev server is back/.test(stack.stderr()) || undefined,
      'Temporal restarted',
      stack,
      120_000,
    );
    const exit = await retrain.exited();
    expect(exit.code, retrain.stderr().slice(-3000)).toBe(0);
    // (The SDK's own retries of UNAVAILABLE usually cover a restart of a few seconds; a longer one is waited
    // out by cli/await-result.ts. Either way the command follows the run to its end.)
    const result = JSON.parse(retrain.stdout()) as { modelVersionId: string };
    expect(result.modelVersionId).toBeDefined();
    stack.child.kill('SIGTERM');
    expect((await stack.exited()).code).toBe(0);
  }, 400_000);
});
