import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import { openPage, renderedPage, screenshotDir } from '../helpers/chromium.js';
import { activityRunOptions, withPulse } from '../../activities/heartbeat.js';
import { workflowMetadata } from '../../cli/prepare-run.js';

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

describe('the Temporal UI shows what a running retrain is doing', () => {
  let testDb: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-ui-live-'));
  });
  afterAll(async () => {
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('renders its summary, details and current details: stage, live progress and metrics so far', async () => {
    const ui = inject('temporalUiUrl')
      .replace(/\/namespaces\/.*$/, '')
      .replace(/\/$/, '');
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `ui-live-cpu-${suffix}`, gpu: `ui-live-gpu-${suffix}` };
    const ctx = {
      db: testDb.db,
      store: new FileArtifactStore(join(dir, 'a')),
      home: dir,
      close: async () => undefined,
    };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let reportedProgress!: () => void;
    const progressSent = new Promise<void>((r) => (reportedProgress = r));
    const stubs = stubStages([]);
    // Joint training reports progress the way ml/ does, then waits (heartbeating) until the test has looked.
    const activities = withTypedFailures<CorellaActivities>({
      ...bookkeepingActivities(ctx),
      ...(stubs as CorellaActivities),
      async trainJoint(input: Parameters<CorellaActivities['trainJoint']>[0]) {
        const run = activityRunOptions('joint');
        await run.onProgress?.({ stage: 'stage2', epoch: 0, done: 3, total: 10, samplesPerSec: 12.5 });
        reportedProgress();
        await withPulse(() => gate);
        return stubs.trainJoint!(input);
      },
    }) as CorellaActivities;
    const namespace = inject('temporalNamespace');
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection: conn, namespace });
    const workflowId = `retrain-ui-live-${suffix}`;
    const dataset = { source: 'movielens-1m' as const, name: `ui-live-${suffix}`, dir: '/x' };
    const meta = workflowMetadata({ spec: dataset, origin: 'flag' }, { crm: { epochs: 3 } }, 'ui test');
    const shots = screenshotDir();
    let page = '';
    let historyText = '';
    let finalDetails = '';
    try {
      const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
      const gpu = await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu });
      await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await client.workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId,
            args: [{ dataset, config: { crm: { epochs: 3 } }, configHash: 'ui-live', queues }],
            ...meta,
          });
          try {
            await progressSent;
            const details = async () =>
              (await h.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ??
              '';
            await expect.poll(details, { timeout: 30_000, interval: 500 }).toContain('trainJoint');
            const base = `${ui}/namespaces/${namespace}/workflows/${workflowId}/${h.firstExecutionRunId}`;
            // UI 2.54 shows summary, details and current details on the User Metadata tab, each rendered
            // from markdown into a same-origin iframe.
            const meta = await openPage(`${base}/user-metadata`, join(dir, 'profile-meta'));
            try {
              page = await meta.waitFor<string>(
                `(() => { const t = [...document.querySelectorAll('iframe')].map((f) => f.contentDocument?.body?.innerText ?? '').join('\\n'); return t.includes('joint-training') && t.includes('trainJoint') && t; })()`,
                60_000,
              );
              await meta.screenshot(join(shots, 'temporal-ui-running-details.png'));
            } finally {
              await meta.close();
            }
            // A tall window: the activity summaries are on events further down the history.
            const history = await openPage(`${base}/history`, join(dir, 'profile-history'), {
              width: 1900,
              height: 2600,
            });
            try {
              historyText = await history.waitFor<string>(
                `document.body.innerText.includes('train CRM:') && document.body.innerText`,
                60_000,
              );
              await history.screenshot(join(shots, 'temporal-ui-running-history.png'));
            } finally {
              await history.close();
            }
          } finally {
            release();
          }
          await h.result();
          finalDetails =
            (await h.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }
    console.log(`Temporal UI screenshots: ${shots}/temporal-ui-running-{details,history}.png`);
    // Static summary and details, fixed at start.
    expect(page).toContain(`retrain ui-live-${suffix} · config`);
    expect(page).toContain('Config hash:');
    // Current details: the stage, the live progress of the running activity, the metrics so far.
    expect(page).toContain('Stage: joint-training (3 of 7)');
    // (the markdown renderer typesets 3/10 with a fraction slash)
    expect(page).toMatch(/Running: trainJoint · stage2 · epoch 1 · 3.10 \(30%\) · 12\.5 samples\/s/);
    expect(page).toContain('crm.valid.auc: 0.7000');
    // Activity summaries appear in the event history.
    expect(historyText).toContain('train CRM: DCNv2 3 epochs + LR baseline');
    // At the end the details name the report.
    expect(finalDetails).toContain('**Stage:** done');
    expect(finalDetails).toContain('/tmp/stub-report.html');
    expect(finalDetails).not.toContain('**Running:**');
  }, 300_000);
});
