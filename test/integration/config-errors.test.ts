/**
 * Broken configs through the real `corella retrain` against the real Temporal dev server and Postgres: each
 * exits 4 naming the file and the field, and nothing is written (no run, no dataset version, no artifact, no
 * data generated in the home). A valid config through the same command gets past validation (the control:
 * without it, an exit 4 for some other reason would pass every row).
 */
import { readdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, RetryState } from '@temporalio/common';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { bookkeepingActivities } from '../../activities/bookkeeping.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { CorellaError } from '../../ml/errors.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { fileActivityContext } from '../helpers/activity-context.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

/** [what is wrong, the config file's text or value, what stderr must contain]. */
const BROKEN: [string, unknown, string][] = [
  ['misspelt key', { crm: { epoch: 5 } }, 'crm.epoch: unknown key; did you mean epochs?'],
  ['number as a string', { crm: { epochs: '5' } }, 'crm.epochs: expected a number, got "5"'],
  ['unknown CRM kind', { crm: { kind: 'xgboost' } }, 'crm.kind'],
  ['CRM threads out of range', { crm: { threads: 65 } }, 'crm.threads'],
  ['zero-width MLP layer', { crm: { mlp: [64, 0] } }, 'crm.mlp[1]'],
  [
    'cross net without layers',
    { crm: { crossStructure: 'crossnet_only', crossLayers: 0 } },
    'crm.crossLayers',
  ],
  [
    'misspelt LLM key',
    { llm: { flashattention: true } },
    'llm.flashattention: unknown key; did you mean flashAttention?',
  ],
  ['unknown GPU backend', { llm: { gpu: 'metal' } }, 'llm.gpu'],
  ['negative pool', { llm: { pools: { valid: -5 } } }, 'llm.pools.valid'],
  [
    'item prompt without {title}',
    { llm: { itemAffinity: { prompt: 'no title' } } },
    'llm.itemAffinity.prompt',
  ],
  ['affinity without hidden states', { llm: { hidden: false, itemAffinity: true } }, 'llm.itemAffinity'],
  ['unknown finetune method', { llm: { finetune: { method: 'qlora' } } }, 'llm.finetune.method'],
  ['fractional stage-2 samples', { joint: { stage2: { samples: 1.5 } } }, 'joint.stage2.samples'],
  [
    'adapter tail without affinity features',
    { joint: { adapter: { inputTail: 4 } } },
    'joint.adapter.inputTail',
  ],
  ['unknown subset rule', { joint: { subset: 'hardest' } }, 'joint.subset'],
  ['routing budget above 1', { calibration: { maxRoutedFraction: 2 } }, 'calibration.maxRoutedFraction'],
  [
    'promotion on a lower-is-better metric',
    { promotion: { metric: 'calibration.hybrid.logloss' } },
    'promotion.metric',
  ],
  [
    'promotion on a metric not produced',
    { crm: { baseline: false }, promotion: { metric: 'lr.test.auc' } },
    'promotion.metric',
  ],
  ['unknown section', { evaluation: { rows: 10 } }, 'evaluation: unknown key'],
  ['not JSON', '{"crm": {"epochs": 3', 'not valid JSON'],
];

describe('corella retrain rejects broken configs before starting anything', () => {
  let testDb: TestDatabase;
  let dir: string;
  let home: string;
  let model: string;

  beforeAll(async () => {
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-config-errors-'));
    home = join(dir, 'home');
    model = join(dir, 'tiny.gguf');
    writeTinyGguf(model);
  });

  afterAll(async () => {
    await testDb?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function retrain(configText: string, name: string, env: Record<string, string>, runHome = home) {
    const file = join(dir, `${name}.json`);
    await writeFile(file, configText);
    const cli = startCli(
      ['retrain', '--config', file, '--model', model, '--no-download'],
      cliEnv(runHome, {
        DATABASE_URL: testDb.url,
        TEMPORAL_NAMESPACE: inject('temporalNamespace'),
        ...env,
      }),
    );
    const { code } = await cli.exited();
    return { code, stderr: cli.stderr(), stdout: cli.stdout(), file };
  }

  async function tableCounts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const table of ['runs', 'datasets', 'dataset_versions', 'artifacts', 'model_versions']) {
      const r = await testDb.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`);
      out[table] = Number(r.rows[0].n);
    }
    return out;
  }

  it(`exits 4 naming the file and the field for each of ${BROKEN.length} broken configs, writing nothing`, async () => {
    const before = await tableCounts();
    expect(Object.values(before).every((n) => n === 0)).toBe(true);
    const env = { TEMPORAL_ADDRESS: inject('temporalAddress') };
    const results: { what: string; code: number | null; stderr: string; file: string; expected: string }[] =
      [];
    // A few at a time: each is a whole CLI process on a shared 2-core machine.
    const queue = BROKEN.map(([what, config, expected], i) => ({ what, config, expected, i }));
    await Promise.all(
      Array.from({ length: 5 }, async () => {
        for (let job = queue.shift(); job; job = queue.shift()) {
          const text = typeof job.config === 'string' ? job.config : JSON.stringify(job.config);
          const r = await retrain(text, `broken-${job.i}`, env);
          results.push({ what: job.what, expected: job.expected, ...r });
        }
      }),
    );
    expect(results).toHaveLength(BROKEN.length);
    for (const r of results) {
      expect({ what: r.what, code: r.code }).toEqual({ what: r.what, code: 4 });
      expect(r.stderr, r.what).toContain('BAD_CONFIG');
      expect(r.stderr, r.what).toContain(r.file);
      expect(r.stderr, r.what).toContain(r.expected);
    }
    expect(await tableCounts()).toEqual(before);
    // Nothing in the home either: no artifact store, no generated or downloaded data, no model cache.
    const written = await readdir(home).catch((e: NodeJS.ErrnoException) =>
      e.code === 'ENOENT' ? [] : Promise.reject(e),
    );
    expect(written).toEqual([]);
  }, 600_000);

  it('a valid config through the same command gets past validation (control)', async () => {
    const controlHome = join(dir, 'control-home');
    // Temporal is unreachable on purpose: validation passed when the CLI gets as far as connecting.
    const r = await retrain(
      JSON.stringify({ crm: { epochs: 1 }, llm: { threads: 1 } }),
      'valid',
      { TEMPORAL_ADDRESS: '127.0.0.1:1' },
      controlHome,
    );
    expect(r.stderr).not.toContain('BAD_CONFIG');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/SERVICE_UNAVAILABLE/);
    // It had resolved the data and the model, then tried to connect.
    expect(r.stderr).toContain('MovieLens-1M: not cached');
    expect(r.stderr).toContain('cannot reach Temporal at 127.0.0.1:1');
  }, 300_000);

  it('startRun validates a retrain config again: a client that skipped the CLI cannot smuggle one in', async () => {
    const ctx = fileActivityContext(testDb.db, join(dir, 'activity-home'));
    const { startRun } = bookkeepingActivities(ctx);
    const err = await startRun({
      workflowId: 'smuggled',
      kind: 'retrain',
      config: { dataset: { source: 'movielens-1m' }, config: { crm: { epoch: 5 } }, configHash: 'x' },
      datasetLabel: 'movielens-1m',
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_CONFIG');
    expect((err as CorellaError).retryable).toBe(false);
    expect((err as Error).message).toContain('crm.epoch: unknown key; did you mean epochs?');
    expect((await tableCounts()).runs).toBe(0);
    // The same call with a valid config opens the run.
    const ok = await startRun({
      workflowId: 'valid',
      kind: 'retrain',
      config: { dataset: { source: 'movielens-1m' }, config: { crm: { epochs: 5 } }, configHash: 'y' },
      datasetLabel: 'movielens-1m',
    });
    expect(ok.runId).toBeTruthy();
    expect((await tableCounts()).runs).toBe(1);
  }, 120_000);

  it('a retrainWorkflow started by another client with a bad config fails with BAD_CONFIG, no retry, no run', async () => {
    installWorkerRuntime();
    const ctx = fileActivityContext(testDb.db, join(dir, 'worker-home'));
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `cfg-cpu-${suffix}`, gpu: `cfg-gpu-${suffix}` };
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const namespace = inject('temporalNamespace');
      const worker = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queues.cpu,
      });
      const client = new Client({ connection, namespace });
      const runsBefore = (await tableCounts()).runs;
      const err = await worker.runUntil(async () => {
        const handle = await client.workflow.start('retrainWorkflow', {
          taskQueue: queues.cpu,
          workflowId: `retrain-smuggled-${suffix}`,
          args: [
            {
              dataset: { source: 'movielens-1m', dir: '/nonexistent' },
              config: { crm: { epochs: '5' } },
              configHash: `smuggled-${suffix}`,
              trigger: 'test',
              queues,
            },
          ],
        });
        return handle.result().then(
          () => undefined,
          (e: unknown) => e,
        );
      });
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const cause = (err as WorkflowFailedError).cause?.cause;
      expect(cause).toBeInstanceOf(ApplicationFailure);
      expect((cause as ApplicationFailure).type).toBe('BAD_CONFIG');
      expect((cause as ApplicationFailure).message).toContain('crm.epochs: expected a number, got "5"');
      expect((err as WorkflowFailedError).cause).toMatchObject({
        retryState: RetryState.NON_RETRYABLE_FAILURE,
      });
      expect((await tableCounts()).runs).toBe(runsBefore);
    } finally {
      await connection.close();
      await nc.close();
    }
  }, 300_000);
});
