import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Client,
  Connection,
  WorkflowFailedError,
  WorkflowNotFoundError,
  type WorkflowHandle,
} from '@temporalio/client';
import { defineSearchAttributeKey } from '@temporalio/common';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BATCH_BUDGET } from '../../activities/batch-score.js';
import { datasetForVersion } from '../../activities/datasets.js';
import { createActivities } from '../../activities/index.js';
import { resolveServingBundle } from '../../activities/serving-bundle.js';
import type {
  BatchScoreInput,
  BatchScoreResult,
  RetrainInput,
  RetrainResult,
} from '../../activities/types.js';
import { scoreWorkflowId } from '../../cli/commands/score.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { namedReferences } from '../../ml/artifacts/gc.js';
import { sha256Hex } from '../../ml/artifacts/store.js';
import { ServingEngine } from '../../ml/serving/engine.js';
import {
  groupRequests,
  parseBatch,
  toScoreRequest,
  type BatchResultLine,
} from '../../ml/serving/jsonl-batch.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { fileActivityContext } from '../helpers/activity-context.js';

/** Every file under `dir` (recursively); [] when it does not exist yet. */
async function filesUnder(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

/** Start time (ms since epoch) of the scoreChunk attempt a worker is running, if one is. */
async function startedChunk(handle: WorkflowHandle): Promise<number | undefined> {
  const d = await handle.describe();
  // PendingActivityState 2 = STARTED (picked up by a worker).
  const a = (d.raw.pendingActivities ?? []).find(
    (p) => p.activityType?.name === 'scoreChunk' && Number(p.state) === 2,
  );
  const t = a?.lastStartedTime;
  return t ? Number(t.seconds) * 1000 + (t.nanos ?? 0) / 1e6 : undefined;
}

/** Inode and mtime of each file: a pointer written again (an atomic rename) gets a new inode. */
async function identities(paths: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of paths) {
    const s = await stat(p);
    out.set(p, `${s.ino}:${s.mtimeMs}`);
  }
  return out;
}

describe('batch scoring: corella score through a worker that is SIGKILLed mid-run', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ReturnType<typeof fileActivityContext>;
  let connection: Connection;
  let client: Client;
  const children: CliProcess[] = [];
  const namespace = inject('temporalNamespace');
  const suffix = randomUUID().slice(0, 8);
  const queues = { cpu: `score-cpu-${suffix}`, gpu: `score-gpu-${suffix}` };

  beforeAll(async () => {
    installWorkerRuntime();
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-score-'));
    // The worker and CLI children use CORELLA_HOME=dir: the same artifact store as this test's context.
    ctx = fileActivityContext(testDb.db, dir);
    writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 3 });
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace });
  });
  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    await connection?.close();
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const env = () =>
    cliEnv(dir, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: namespace,
    });
  const cli = (args: string[]): CliProcess => {
    const c = startCli(args, env());
    children.push(c);
    return c;
  };
  /** The candidate lines of the first test, reused by the cancellation test. */
  const lines: string[] = [];
  const gpuWorker = () => cli(['worker', '--queue', 'gpu', '--task-queue', queues.gpu]);
  const scoreArgs = (input: string, output: string) => [
    'score',
    '--input',
    input,
    '--output',
    output,
    '--model',
    'champion',
    '--chunk-rows',
    '240',
    '--wait',
    '--json',
    '--cpu-queue',
    queues.cpu,
    '--gpu-queue',
    queues.gpu,
    '--heartbeat-timeout',
    '4s',
  ];

  /** A CPU worker in this process and a GPU worker child on this file's score queues, for `fn`. */
  async function withScoreWorkers<T>(fn: () => Promise<T>): Promise<T> {
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    try {
      const cpu = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queues.cpu,
      });
      return await cpu.runUntil(async () => {
        const worker = gpuWorker();
        try {
          return await fn();
        } finally {
          worker.child.kill('SIGTERM');
          await worker.exited();
        }
      });
    } finally {
      await nc.close();
    }
  }

  /** The real retrainWorkflow on tiny synthetic data, with this process's workers: one champion version. */
  async function trainChampion(nc: NativeConnection): Promise<RetrainResult> {
    const trainQueues = { cpu: `train-cpu-${suffix}`, gpu: `train-gpu-${suffix}` };
    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 9, users: 80, items: 120, ratingsPerUser: 30 } },
      },
      config: tinyPipelineConfig(join(dir, 'tiny.gguf')),
      configHash: `score-${suffix}`,
      trigger: 'test',
      queues: trainQueues,
    };
    const activities = createActivities(ctx);
    const cpu = await createCpuWorker({
      connection: nc,
      namespace,
      activities,
      taskQueue: trainQueues.cpu,
    });
    const gpu = await createGpuWorker({
      connection: nc,
      namespace,
      activities,
      taskQueue: trainQueues.gpu,
    });
    return cpu.runUntil(
      gpu.runUntil(async () => {
        const h = await client.workflow.start('retrainWorkflow', {
          taskQueue: trainQueues.cpu,
          workflowId: `retrain-score-${suffix}`,
          args: [input],
        });
        return (await h.result()) as RetrainResult;
      }),
    );
  }

  it('writes every input line exactly once, in order, with the engine’s scores, after a worker SIGKILL', async () => {
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    try {
      const trained = await trainChampion(nc);
      expect(trained.alias).toBe('champion');

      // ~2,400 candidates: runs of 30 items for known users, one user with an explicit history and
      // attributes, and cold rows (a user and items the model never saw).
      const ds = await datasetForVersion(ctx.store, trained.datasetVersionId);
      const users = ds.featureMap.vocabularies.user_id.slice(1);
      const items = ds.items.ids;
      lines.length = 0;
      for (let u = 0; u < 78; u++) {
        for (let k = 0; k < 30; k++) {
          const row: Record<string, unknown> = {
            user: users[u % users.length],
            item: items[(u * 7 + k) % items.length],
          };
          if (k % 10 === 0) row.id = `c${u}-${k}`;
          if (u === 5) {
            row.history = [
              { item: items[1], rating: 5 },
              { item: items[2], rating: 2, ts: 978300000 },
            ];
            row.features = { gender: 'F' };
          }
          lines.push(JSON.stringify(row));
        }
      }
      for (let k = 0; k < 20; k++)
        lines.push(JSON.stringify({ user: 'nobody', item: k % 2 ? 'no-such-item' : items[k] }));
      const inputText = `${lines.join('\n')}\n`;
      const inputPath = join(dir, 'candidates.jsonl');
      const outputPath = join(dir, 'scores.jsonl');
      await writeFile(inputPath, inputText);
      const workflowId = scoreWorkflowId(sha256Hex(inputText), 'champion');
      const pointers = join(dir, 'artifacts', 'named', 'score', workflowId);

      // Calibration on a random-weight LLM routes nothing; a threshold at the 70th percentile of the CRM's
      // entropies on these rows (as a recalibration would set it) sends about 30% of them to the LLM.
      const input = parseBatch(Buffer.from(inputText), 'candidates.jsonl').candidates;
      const { bundle: crmOnly } = await resolveServingBundle(ctx.db, ctx.home, 'champion');
      const probe = await ServingEngine.load(ctx.store, { ...crmOnly, llm: null }, { log: () => undefined });
      const entropies: number[] = [];
      try {
        for (const r of groupRequests(input)) {
          const res = await probe.score(toScoreRequest(input.slice(r.start, r.end)));
          entropies.push(...res.candidates.map((c) => c.entropy));
        }
      } finally {
        await probe.dispose();
      }
      const threshold = [...entropies].sort((a, b) => a - b)[Math.floor(entropies.length * 0.7)];
      await new ModelRepository(ctx.db).setThreshold(Number(trained.modelVersionId), threshold);

      const cpu = await createCpuWorker({
        connection: nc,
        namespace,
        activities: createActivities(ctx),
        taskQueue: queues.cpu,
      });
      const { result, doneAtKill, chunks, again, chained } = await cpu.runUntil(async () => {
        let worker = gpuWorker();
        const run = cli(scoreArgs(inputPath, outputPath));
        const handle = client.workflow.getHandle(workflowId);
        // Kill the worker in the middle of a chunk, after at least two chunks have finished. A chunk may
        // finish between the look and the kill; then the worker is restarted and killed again.
        let killedMidChunk = false;
        let finishedAtKill = new Map<string, string>();
        for (let tries = 0; tries < 5 && !killedMidChunk; tries++) {
          await expect
            .poll(
              async () =>
                (await filesUnder(pointers)).length >= 2 && (await startedChunk(handle)) !== undefined,
              { timeout: 120_000, interval: 50 },
            )
            .toBe(true);
          worker.child.kill('SIGKILL');
          await worker.exited();
          finishedAtKill = await identities(await filesUnder(pointers));
          // Still STARTED with its worker dead: that attempt is lost and must be retried.
          killedMidChunk = (await startedChunk(handle)) !== undefined;
          expect((await handle.describe()).status.name).toBe('RUNNING');
          worker = gpuWorker();
        }
        expect(killedMidChunk).toBe(true);
        // A second trigger of the same file and model while it runs joins the running workflow.
        const dup = cli(scoreArgs(inputPath, join(dir, 'dup.jsonl')).filter((a) => a !== '--wait'));
        expect((await dup.exited()).code, dup.stderr()).toBe(0);
        expect(JSON.parse(dup.stdout())).toMatchObject({ workflowId, started: false });
        const exit = await run.exited();
        expect(exit.code, run.stderr()).toBe(0);
        const result = JSON.parse(run.stdout()) as BatchScoreResult & { workflowId: string };
        const chunks = (await filesUnder(pointers)).length;
        // The chunks finished before the kill were never scored again (their pointers were not rewritten).
        const unchanged = await identities([...finishedAtKill.keys()]);
        expect(unchanged).toEqual(finishedAtKill);
        const doneAtKill = finishedAtKill.size;

        // Triggered again once finished: a new run of the same id reuses every chunk and writes the same file.
        const rerunOut = join(dir, 'scores-again.jsonl');
        const rerun = cli(scoreArgs(inputPath, rerunOut));
        const rerunExit = await rerun.exited();
        expect(rerunExit.code, rerun.stderr()).toBe(0);
        const again = {
          result: JSON.parse(rerun.stdout()) as BatchScoreResult,
          text: await readFile(rerunOut, 'utf8'),
        };
        // A trigger while a run is going joins it; here, a workflow that continues as new every 3 chunks
        // (what a long file does every 500) reuses every chunk across its runs and joins the same output.
        const chained = await client.workflow.execute('scoreWorkflow', {
          taskQueue: queues.cpu,
          workflowId,
          args: [
            {
              inputSha256: sha256Hex(inputText),
              inputName: inputPath,
              model: 'champion',
              chunkRows: 240,
              chunksPerRun: 3,
              queues,
              heartbeatTimeout: '4s',
            } satisfies BatchScoreInput,
          ],
        });
        return { result, doneAtKill, chunks, again, chained: chained as BatchScoreResult };
      });

      expect(result.workflowId).toBe(workflowId);
      expect(result.rows).toBe(lines.length);
      expect(chunks).toBe(result.chunks);
      expect(doneAtKill).toBeLessThan(result.chunks);
      // The chunk in flight at the kill was retried; the finished ones were never scored again.
      expect(result.retriedChunks).toBeGreaterThanOrEqual(1);
      expect(result.scoredChunks + result.reusedChunks).toBe(result.chunks);
      expect(result.modelVersion).toBe(trained.modelVersionId);

      expect(result.threshold).toBeCloseTo(threshold, 9);
      // Every input line exactly once, in input order, carrying its own id, user and item.
      const output = (await readFile(outputPath, 'utf8'))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as BatchResultLine);
      expect(output.map((o) => o.line)).toEqual(input.map((c) => c.line));
      expect(new Set(output.map((o) => o.line)).size).toBe(input.length);
      output.forEach((o, i) => {
        expect([o.id, o.user, o.item]).toEqual([input[i].id, input[i].user, input[i].item]);
      });
      const routes = { crm: 0, llm: 0, 'crm-fallback': 0 };
      for (const o of output) routes[o.route]++;
      expect(routes).toEqual(result.routes);
      expect(routes.llm).toBeGreaterThan(0);
      expect(routes.crm).toBeGreaterThan(0);

      // The same rows through a ServingEngine loaded here from the same bundle score the same.
      const { bundle } = await resolveServingBundle(ctx.db, ctx.home, 'champion');
      const engine = await ServingEngine.load(ctx.store, bundle, {
        budget: BATCH_BUDGET,
        log: () => undefined,
      });
      try {
        for (const r of groupRequests(input)) {
          const group = input.slice(r.start, r.end);
          const res = await engine.score(toScoreRequest(group, BATCH_BUDGET.defaultBudgetMs));
          res.candidates.forEach((c, k) => {
            const o = output[r.start + k];
            expect(o.route, `line ${o.line}`).toBe(c.route);
            expect(Math.abs(o.p - c.p), `line ${o.line}`).toBeLessThan(1e-5);
            expect(Math.abs(o.pCrm - c.pCrm), `line ${o.line}`).toBeLessThan(1e-5);
            expect(Math.abs(o.entropy - c.entropy), `line ${o.line}`).toBeLessThan(1e-5);
            expect(o.pLlm === undefined, `line ${o.line}`).toBe(c.pLlm === undefined);
          });
        }
      } finally {
        await engine.dispose();
      }

      expect(again.result.reusedChunks).toBe(result.chunks);
      expect(again.result.scoredChunks).toBe(0);
      expect(again.text).toBe(await readFile(outputPath, 'utf8'));
      expect(again.result.outputSha256).toBe(result.outputSha256);
      expect(chained.outputSha256).toBe(result.outputSha256);
      // `corella gc` must not take a finished batch's output: a named entry references it.
      const { refs } = await namedReferences(ctx.store);
      expect(refs.has(result.outputSha256)).toBe(true);
      expect([chained.reusedChunks, chained.scoredChunks, chained.rows]).toEqual([
        result.chunks,
        0,
        result.rows,
      ]);
      // Filterable in the Temporal UI like a retrain: by stage and model version.
      const latest = await client.workflow.getHandle(workflowId).describe();
      expect(latest.typedSearchAttributes.get(defineSearchAttributeKey('CorellaStage', 'KEYWORD'))).toBe(
        'done',
      );
      expect(
        latest.typedSearchAttributes.get(defineSearchAttributeKey('CorellaModelVersion', 'KEYWORD')),
      ).toBe(trained.modelVersionId);
      // Runs of this id: the kill-resumed one, the CLI re-run, and the chained one with its continuations.
      await expect
        .poll(
          async () => {
            let n = 0;
            for await (const _ of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) n++;
            return n;
          },
          { timeout: 20_000, interval: 500 },
        )
        .toBe(2 + Math.ceil(result.chunks / 3));
    } finally {
      await nc.close();
    }
  }, 300_000);

  it('cancelling a batch stops its chunk activity within the heartbeat timeout; nothing is scored after it', async () => {
    // Another file (the same rows, reversed): another workflow id, so no chunk of the first test is reused.
    expect(lines.length).toBeGreaterThan(1000);
    const text = `${[...lines].reverse().join('\n')}\n`;
    const inputSha256 = (await ctx.store.put(text)).sha256;
    const workflowId = scoreWorkflowId(inputSha256, 'champion');
    const pointers = join(dir, 'artifacts', 'named', 'score', workflowId);
    await withScoreWorkers(async () => {
      const handle = await client.workflow.start('scoreWorkflow', {
        taskQueue: queues.cpu,
        workflowId,
        args: [
          {
            inputSha256,
            model: 'champion',
            chunkRows: 60,
            queues,
            heartbeatTimeout: '4s',
          } satisfies BatchScoreInput,
        ],
      });
      await expect
        .poll(async () => (await filesUnder(pointers)).length, { timeout: 120_000, interval: 50 })
        .toBeGreaterThanOrEqual(1);
      const t0 = Date.now();
      await handle.cancel();
      // The workflow waits for its chunk activity to acknowledge the cancellation, so its end means the
      // scoring has stopped.
      await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect((await handle.describe()).status.name).toBe('CANCELLED');
      const done = (await filesUnder(pointers)).length;
      await new Promise((r) => setTimeout(r, 1_500));
      // Nothing more is scored after the end, and no chunk set was joined into an output.
      expect((await filesUnder(pointers)).length).toBe(done);
      expect(done).toBeLessThan(20);
    });
  }, 120_000);

  it('a user attribute the model lacks is bad input (exit 4) naming file, line and field; a missing version exits 3', async () => {
    expect(lines.length).toBeGreaterThan(1000);
    const good = lines.slice(0, 3).map((l) => JSON.parse(l) as Record<string, unknown>);
    const rows = [...good, { ...good[0], features: { shoe_size: '44' } }].map((r) => JSON.stringify(r));
    const path = join(dir, 'unknown-attribute.jsonl');
    await writeFile(path, `${rows.join('\n')}\n`);
    const [run, missing] = await withScoreWorkers(async () => {
      const c = cli(scoreArgs(path, join(dir, 'unknown-attribute-out.jsonl')).filter((a) => a !== '--json'));
      await c.exited();
      // A version that does not exist: the plan fails, and the exit code says the data is unavailable.
      const args = scoreArgs(path, join(dir, 'missing-out.jsonl')).filter((a) => a !== '--json');
      args[args.indexOf('champion')] = '999';
      const m = cli(args);
      await m.exited();
      return [c, m];
    });
    expect(run.child.exitCode, run.stderr()).toBe(4);
    expect(run.stdout()).toContain(`${path}:4 (field features.shoe_size)`);
    expect(run.stdout()).toMatch(/not a user attribute of this model/);
    expect(missing.child.exitCode, missing.stderr()).toBe(3);
    expect(missing.stdout()).toMatch(/no model version 999/);
  }, 120_000);

  it('a bad line exits 4 naming the file, the line and the field, and starts no workflow', async () => {
    const text = `${JSON.stringify({ user: 'u', item: 'i' })}\n${JSON.stringify({ user: 'u', item: 3 })}\n`;
    const path = join(dir, 'bad.jsonl');
    await writeFile(path, text);
    const run = cli(scoreArgs(path, join(dir, 'bad-out.jsonl')).filter((a) => a !== '--json'));
    expect((await run.exited()).code).toBe(4);
    expect(run.stderr()).toContain(`${path}:2 (field item): must be a string, got a number`);
    await expect(
      client.workflow.getHandle(scoreWorkflowId(sha256Hex(text), 'champion')).describe(),
    ).rejects.toBeInstanceOf(WorkflowNotFoundError);
  }, 60_000);
});
