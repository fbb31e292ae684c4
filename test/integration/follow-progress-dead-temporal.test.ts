import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectClient, type TemporalClientHandle } from '../../cli/client.js';
import { followProgress } from '../../cli/follow-progress.js';
import { startTemporalDevServer, type TemporalServer } from '../../cli/services/temporal-dev-server.js';

// Its own dev server, because this test kills it (the project's shared one serves every other file).
describe('the progress follower over a Temporal that died', () => {
  let dir = '';
  let server: TemporalServer | undefined;
  let tc: TemporalClientHandle | undefined;
  afterAll(async () => {
    await tc?.close();
    await server?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("stops within its poll deadline, not after the client's 18 s of retries", async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-follow-dead-'));
    server = await startTemporalDevServer({ dir, persistent: false, port: 0, uiPort: 0, headless: true });
    tc = await connectClient({ address: server.address, namespace: server.namespace });
    const connection = tc.client.connection;
    // No worker polls this queue: the workflow stays open, and each progress query waits on it.
    const handle = await tc.client.workflow.start('retrainWorkflow', {
      taskQueue: `nobody-${Date.now()}`,
      workflowId: `follow-dead-${Date.now()}`,
      args: [],
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    try {
      const stop = followProgress(handle, () => {}, {
        intervalMs: 200,
        pollDeadlineMs: 3_000,
        withDeadline: (deadline, fn) => connection.withDeadline(deadline, fn),
      });
      await new Promise((r) => setTimeout(r, 1_500));
      process.kill(server.pid!, 'SIGKILL');
      // Let a poll start against the dead server, so stop has a call in flight to wait for.
      await new Promise((r) => setTimeout(r, 1_000));
      const t0 = Date.now();
      await stop();
      const waited = Date.now() - t0;
      console.log(`follow-progress: stop returned ${waited} ms after a Temporal SIGKILL`);
      // The deadline (3 s) plus at most one of the interceptor's backoffs (≤ 5 s). Without the deadline the
      // poll in flight lasts the interceptor's ten attempts: 18.5 s measured.
      expect(waited).toBeLessThan(8_000);
      // Nothing of the poll outlives stop: closing the connection now throws nowhere.
      await tc.close();
      tc = undefined;
      await new Promise((r) => setTimeout(r, 6_000));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      process.off('uncaughtException', onUnhandled);
    }
  }, 120_000);
});
