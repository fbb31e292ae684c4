/**
 * Records the event histories of real workflow runs as replay fixtures (test/fixtures/histories/*.json).
 *
 *   npx tsx scripts/record-histories.ts [--out DIR] [--only NAME,NAME]
 *
 * NAME: retrain-completed, recalibrate-dataset, recalibrate-served (writes recalibrate-served and
 * recalibrate-served-no-feedback), score (score-continued-as-new, score-completed), retrain-failed-bad-dataset,
 * retrain-cancelled.
 *
 * Starts its own Temporal dev server (in memory) and embedded Postgres (or uses DATABASE_URL), runs every
 * workflow of workflows/ for real with every real activity, a tiny GGUF (test/helpers/tiny-gguf.ts) and
 * synthetic data only, and writes each history in the JSON form of `temporal workflow show --output json`.
 * test/unit/replay.test.ts replays them against the current workflow code. Re-run this after a change that
 * alters command order on purpose (behind `patched()`: docs/workflow-versioning.md), and commit the result.
 * Nothing here reads ../shared/datasets: fixtures may be committed.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { format, resolveConfig } from 'prettier';
import type { ActivityContext } from '../activities/context.js';
import { datasetForVersion } from '../activities/datasets.js';
import { createActivities } from '../activities/index.js';
import type { BatchScoreInput, RecalibrateInput, RetrainInput, TaskQueues } from '../activities/types.js';
import { startTemporalDevServer } from '../cli/services/temporal-dev-server.js';
import { resolveDatabase } from '../cli/services/embedded-postgres.js';
import { ModelRepository, ServingRepository } from '../db/repositories/index.js';
import { createTestDatabase } from '../db/testing.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { mulberry32 } from '../ml/random.js';
import { entropy } from '../ml/corella/routing.js';
import { PredictionLog, type PredictionLogEntry } from '../serve/prediction-log.js';
import { movielensLines, writeMovielens } from '../test/helpers/datasets.js';
import { historyToJson } from '../test/helpers/history-json.js';
import { tinyPipelineConfig } from '../test/helpers/pipeline-config.js';
import { writeTinyGguf } from '../test/helpers/tiny-gguf.js';
import { syntheticDataset } from '../test/helpers/trained-versions.js';
import { createCpuWorker } from '../workers/cpu.js';
import { createGpuWorker } from '../workers/gpu.js';
import { installWorkerRuntime } from '../workers/runtime.js';

const FIXTURES_DIR = fileURLToPath(new URL('../test/fixtures/histories/', import.meta.url));

interface Recorder {
  client: Client;
  ctx: ActivityContext;
  dir: string;
  queues: Required<Pick<TaskQueues, 'cpu' | 'gpu'>>;
  save(name: string, handle: WorkflowHandle): Promise<void>;
}

/** Settles a run either way: failed and cancelled runs are fixtures too. */
async function settle(handle: WorkflowHandle): Promise<string> {
  return handle.result().then(
    () => 'completed',
    (e: unknown) => `ended with ${(e as Error).name}: ${(e as Error).message}`,
  );
}

/**
 * The runs, in order. `needsChampion`: it uses the version retrain-completed registers, so `--only` runs
 * (and writes) retrain-completed first when it was not selected.
 */
const RECORDINGS: { name: string; needsChampion?: boolean; run: (r: Recorder) => Promise<void> }[] = [
  {
    name: 'retrain-completed',
    run: async (r) => {
      const h = await r.client.workflow.start('retrainWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-retrain-completed',
        args: [retrainInput(r, 'completed')],
      });
      console.error(`retrain-completed: ${await settle(h)}`);
      await r.save('retrain-completed', h);
    },
  },
  {
    name: 'recalibrate-dataset',
    needsChampion: true,
    run: async (r) => {
      const input: RecalibrateInput = { maxRoutedFraction: 0.25, queues: { cpu: r.queues.cpu } };
      const h = await r.client.workflow.start('recalibrateWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-recalibrate-dataset',
        args: [input],
      });
      console.error(`recalibrate-dataset: ${await settle(h)}`);
      await r.save('recalibrate-dataset', h);
    },
  },
  {
    name: 'recalibrate-served',
    needsChampion: true,
    run: async (r) => {
      const model = await new ModelRepository(r.ctx.db).champion();
      if (!model) throw new Error('recalibrate-served needs the champion of retrain-completed');
      const input: RecalibrateInput = {
        source: 'served',
        modelVersionId: String(model.id),
        windowDays: 1,
        maxRoutedFraction: 0.3,
        shadowRows: 20,
        queues: { cpu: r.queues.cpu },
      };
      // Logged predictions without feedback: the run fails with DATA_NOT_AVAILABLE (a failed served run).
      const entries = await servedTraffic(r, model.id, model.calibratedThreshold ?? 0.5);
      const none = await r.client.workflow.start('recalibrateWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-recalibrate-served-no-feedback',
        args: [input],
      });
      console.error(`recalibrate-served-no-feedback: ${await settle(none)}`);
      await r.save('recalibrate-served-no-feedback', none);

      const serving = new ServingRepository(r.ctx.db);
      const rng = mulberry32(7);
      for (const e of entries)
        for (const c of e.candidates)
          await serving.recordFeedback({
            requestId: e.requestId,
            user: e.user,
            item: c.item,
            label: rng() < c.p ? 1 : 0,
            ts: new Date(Number(e.at) + 60_000),
          });
      const h = await r.client.workflow.start('recalibrateWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-recalibrate-served',
        args: [input],
      });
      console.error(`recalibrate-served: ${await settle(h)}`);
      await r.save('recalibrate-served', h);
    },
  },
  {
    name: 'score',
    needsChampion: true,
    run: async (r) => {
      const champion = await new ModelRepository(r.ctx.db).champion();
      const ds = await datasetForVersion(r.ctx.store, champion!.datasetVersionId!);
      const users = ds.featureMap.vocabularies.user_id.slice(1);
      const items = ds.items.ids;
      const lines: string[] = [];
      for (let u = 0; u < 12; u++)
        for (let k = 0; k < 10; k++)
          lines.push(
            JSON.stringify({ user: users[u % users.length], item: items[(u * 7 + k) % items.length] }),
          );
      const stored = await r.ctx.store.put(Buffer.from(`${lines.join('\n')}\n`));
      // 4 chunks, 2 at once, 2 per workflow run: the first run continues as new, the second completes.
      const input: BatchScoreInput = {
        inputSha256: stored.sha256,
        inputName: 'candidates.jsonl',
        model: 'champion',
        chunkRows: 30,
        parallelChunks: 2,
        chunksPerRun: 2,
        queues: r.queues,
      };
      const h = await r.client.workflow.start('scoreWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-score',
        args: [input],
      });
      console.error(`score: ${await settle(h)}`);
      await r.save(
        'score-continued-as-new',
        r.client.workflow.getHandle(h.workflowId, h.firstExecutionRunId),
      );
      await r.save('score-completed', r.client.workflow.getHandle(h.workflowId));
    },
  },
  {
    name: 'retrain-failed-bad-dataset',
    run: async (r) => {
      const dataDir = join(r.dir, 'bad-movielens');
      const lines = movielensLines({ users: 6, movies: 10, ratingsPerUser: 8 });
      lines.ratings[4] = '1::3::9::978300999'; // rating 9 is out of range: BAD_DATASET in ingest
      await writeMovielens(dataDir, lines);
      const h = await r.client.workflow.start('retrainWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-retrain-failed-bad-dataset',
        args: [{ ...retrainInput(r, 'bad-dataset'), dataset: { source: 'movielens-1m', dir: dataDir } }],
      });
      console.error(`retrain-failed-bad-dataset: ${await settle(h)}`);
      await r.save('retrain-failed-bad-dataset', h);
    },
  },
  {
    name: 'retrain-cancelled',
    run: async (r) => {
      const input = retrainInput(r, 'cancelled');
      // Far more epochs than it will run, and a short heartbeat timeout so the cancellation reaches the
      // training activity (on its next heartbeat) within seconds.
      input.config = { ...input.config, crm: { ...input.config.crm, epochs: 400, patience: 400 } };
      input.heartbeatTimeout = '4s';
      const h = await r.client.workflow.start('retrainWorkflow', {
        taskQueue: r.queues.cpu,
        workflowId: 'record-retrain-cancelled',
        args: [input],
      });
      const deadline = Date.now() + 240_000;
      for (;;) {
        const d = await h.describe();
        // PendingActivityState 2 = STARTED: a worker is training.
        const training = (d.raw.pendingActivities ?? []).some(
          (p) => p.activityType?.name === 'trainCrm' && Number(p.state) === 2,
        );
        if (training) break;
        if (d.status.name !== 'RUNNING' || Date.now() > deadline)
          throw new Error(`retrain-cancelled: training never started (${d.status.name})`);
        await new Promise((res) => setTimeout(res, 250));
      }
      await h.cancel();
      console.error(`retrain-cancelled: ${await settle(h)}`);
      await r.save('retrain-cancelled', h);
    },
  },
];

function retrainInput(r: Recorder, tag: string): RetrainInput {
  return {
    dataset: syntheticDataset(r.dir),
    config: tinyPipelineConfig(join(r.dir, 'tiny.gguf')),
    configHash: `record-${tag}`,
    trigger: 'test',
    queues: r.queues,
  };
}

/**
 * Served traffic on the champion through the real prediction log: 60 requests of 4 candidates, each routed
 * to the LLM when its CRM entropy is above the version's threshold, as the server does.
 */
async function servedTraffic(
  r: Recorder,
  versionId: number,
  threshold: number,
): Promise<PredictionLogEntry[]> {
  const champion = await new ModelRepository(r.ctx.db).get(versionId);
  const ds = await datasetForVersion(r.ctx.store, champion!.datasetVersionId!);
  const users = ds.featureMap.vocabularies.user_id.slice(1);
  const items = ds.items.ids;
  const rng = mulberry32(21);
  const at0 = Date.now() - 2 * 3_600_000;
  const entries: PredictionLogEntry[] = [];
  for (let i = 0; i < 60; i++) {
    const candidates: PredictionLogEntry['candidates'] = [];
    for (let k = 0; k < 4; k++) {
      const pCrm = 0.05 + 0.9 * rng();
      const h = entropy(pCrm);
      const llm = h > threshold;
      const pLlm = 0.05 + 0.9 * rng();
      candidates.push({
        item: items[(i * 4 + k * 7) % items.length],
        p: llm ? pLlm : pCrm,
        pCrm,
        ...(llm ? { pLlm } : {}),
        route: llm ? 'llm' : 'crm',
        entropy: h,
        cold: false,
        latencyMs: llm ? 30 : 2,
      });
    }
    entries.push({
      requestId: randomUUID(),
      at: at0 + i * 1_000,
      modelVersionId: versionId,
      user: users[i % users.length],
      history: null,
      budgetMs: 200,
      threshold,
      candidates,
    });
  }
  const log = await PredictionLog.open({ db: r.ctx.db, spoolDir: join(r.dir, 'spool') });
  for (const e of entries) log.append(e);
  await log.close();
  return entries;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { out: { type: 'string' }, only: { type: 'string' } } });
  const out = resolve(values.out ?? FIXTURES_DIR);
  const only = values.only?.split(',');
  const unknown = only?.filter((n) => !RECORDINGS.some((rec) => rec.name === n));
  if (unknown?.length)
    throw new Error(
      `--only: unknown recording ${unknown.join(', ')} (${RECORDINGS.map((r) => r.name).join(', ')})`,
    );
  installWorkerRuntime();
  const dir = await mkdtemp(join(tmpdir(), 'corella-record-'));
  const stops: (() => Promise<void>)[] = [];
  try {
    const temporal = await startTemporalDevServer({
      dir: join(dir, 'temporal'),
      persistent: false,
      port: 0,
      uiPort: 0,
      headless: true,
    });
    stops.push(() => temporal.stop());
    const pg = await resolveDatabase({ dataDir: join(dir, 'pg') });
    stops.push(() => pg.stop());
    const testDb = await createTestDatabase(pg.url, 'corella_record');
    stops.push(() => testDb.close());

    const ctx: ActivityContext = {
      db: testDb.db,
      store: new FileArtifactStore(join(dir, 'artifacts')),
      home: dir,
      close: async () => undefined,
    };
    writeTinyGguf(join(dir, 'tiny.gguf'), { seed: 5 });
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `record-cpu-${suffix}`, gpu: `record-gpu-${suffix}` };
    const nc = await NativeConnection.connect({ address: temporal.address });
    stops.push(() => nc.close());
    const conn = await Connection.connect({ address: temporal.address });
    stops.push(() => conn.close());
    const client = new Client({ connection: conn, namespace: temporal.namespace });
    const activities = createActivities(ctx);
    const worker = { connection: nc, namespace: temporal.namespace, activities };
    const cpu = await createCpuWorker({ ...worker, taskQueue: queues.cpu });
    const gpu = await createGpuWorker({ ...worker, taskQueue: queues.gpu });

    await mkdir(out, { recursive: true });
    const recorder: Recorder = {
      client,
      ctx,
      dir,
      queues,
      async save(name, handle) {
        const json = historyToJson(await handle.fetchHistory());
        const path = join(out, `${name}.json`);
        // Formatted as `npm run lint` (prettier --check) expects of a committed file.
        await writeFile(
          path,
          await format(json, { ...(await resolveConfig(path)), parser: 'json', filepath: path }),
        );
        console.error(`wrote ${path}`);
      },
    };
    await cpu.runUntil(
      gpu.runUntil(async () => {
        const selected = RECORDINGS.filter((rec) => !only || only.includes(rec.name));
        if (selected.some((rec) => rec.needsChampion) && !selected.includes(RECORDINGS[0]))
          selected.unshift(RECORDINGS[0]);
        for (const rec of selected) await rec.run(recorder);
      }),
    );
  } finally {
    for (const stop of stops.reverse()) await stop().catch((e: unknown) => console.error('teardown:', e));
    await rm(dir, { recursive: true, force: true });
  }
}

if (resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) {
  await main();
}
