import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bookkeepingActivities } from '../../activities/bookkeeping.js';
import { withTypedFailures } from '../../activities/failures.js';
import type { CorellaActivities } from '../../activities/types.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { stubStages } from '../helpers/stub-stages.js';

const run = promisify(execFile);
const chromium = process.env.CORELLA_CHROMIUM ?? '/usr/bin/chromium';

/** The Temporal UI page after its scripts ran, as headless Chromium sees it. */
async function renderedPage(url: string, profile: string): Promise<string> {
  const { stdout } = await run(
    chromium,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${profile}`,
      '--virtual-time-budget=15000',
      '--dump-dom',
      url,
    ],
    { maxBuffer: 64 << 20, timeout: 90_000 },
  );
  return stdout;
}

describe('the Temporal UI finds a finished run by its search attribute', () => {
  let testDb: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-ui-'));
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the run under CorellaDataset=<its dataset> and not under another', async () => {
    const ui = inject('temporalUiUrl');
    expect(ui).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `ui-cpu-${suffix}`, gpu: `ui-gpu-${suffix}` };
    const ctx = {
      db: testDb.db,
      store: new FileArtifactStore(join(dir, 'a')),
      home: dir,
      close: async () => undefined,
    };
    const activities = withTypedFailures({
      ...bookkeepingActivities(ctx),
      ...stubStages([]),
    }) as CorellaActivities;
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const workflowId = `retrain-ui-${suffix}`;
    const dataset = `ui-dataset-${suffix}`;
    try {
      const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
      const gpu = await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu });
      await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await new Client({ connection: conn, namespace }).workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId,
            args: [
              {
                dataset: { source: 'movielens-1m', name: dataset, dir: '/x' },
                config: {},
                configHash: 'ui',
                queues,
              },
            ],
          });
          await h.result();
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }
    const list = (value: string) =>
      `${ui.replace(/\/namespaces\/.*$/, '')}/namespaces/${namespace}/workflows?query=${encodeURIComponent(`CorellaDataset="${value}"`)}`;
    // Visibility is eventually consistent: give the list a few tries.
    let page = '';
    for (let attempt = 0; attempt < 5 && !page.includes(workflowId); attempt++) {
      page = await renderedPage(list(dataset), join(dir, `profile-${attempt}`));
    }
    expect(page).toContain(workflowId);
    expect(page).toMatch(/Completed/i);
    const other = await renderedPage(list(`not-${dataset}`), join(dir, 'profile-other'));
    expect(other).not.toContain(workflowId);
  }, 300_000);
});
