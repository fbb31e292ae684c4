import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveServingBundle } from '../../activities/serving-bundle.js';
import type { RetrainInput, RetrainResult } from '../../activities/types.js';
import { artifacts } from '../../db/schema/index.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { S3ArtifactStore } from '../../ml/artifacts/s3-store.js';
import { sha256File } from '../../ml/artifacts/store.js';
import { ServingEngine } from '../../ml/serving/engine.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { startSeaweed, type SeaweedServer } from '../helpers/seaweedfs.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

const BUCKET = 'corella-nsd';

async function waitFor(p: CliProcess, re: RegExp, ms = 240_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.stderr())) {
    if (p.child.exitCode !== null) throw new Error(`worker exited ${p.child.exitCode}:\n${p.stderr()}`);
    if (Date.now() > deadline) throw new Error(`worker not ready after ${ms} ms:\n${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The deployment the README promises: a cpu worker and a gpu worker as separate processes, each with its
 * own CORELLA_HOME, sharing nothing but Temporal, Postgres and S3 (a real SeaweedFS). A third home, which
 * never saw the run, reads the registered model back from the database and the object store.
 */
describe('workers with nothing shared but the services', () => {
  let dir: string;
  let weed: SeaweedServer;
  let testDb: TestDatabase;
  const workers: CliProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-nsd-'));
    weed = await startSeaweed({ dir: join(dir, 'weed'), bucket: BUCKET });
    testDb = await createTestDatabase(inject('databaseUrl'));
  }, 180_000);
  afterAll(async () => {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited()));
    await testDb?.close();
    await weed?.stop();
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('runs a retrain across two homes and a third home reads the model version back', async () => {
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `nsd-cpu-${suffix}`, gpu: `nsd-gpu-${suffix}` };
    const homes = {
      starter: join(dir, 'starter'),
      cpu: join(dir, 'cpu'),
      gpu: join(dir, 'gpu'),
      reader: join(dir, 'reader'),
    };
    for (const h of Object.values(homes)) await mkdir(h, { recursive: true });
    const services = {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      CORELLA_ARTIFACTS: `s3://${BUCKET}/corella`,
      ...weed.env,
    };

    // What `corella retrain` does where the run starts: the model goes to the store, the config names it
    // by its starter-side path and sha256. Then the file is deleted: no worker can read it from disk.
    const modelPath = join(homes.starter, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    const modelSha = await sha256File(modelPath);
    const starterStore = openArtifactStore(homes.starter, services);
    expect(starterStore).toBeInstanceOf(S3ArtifactStore);
    await starterStore.putFile(modelPath);
    await rm(modelPath);
    const config = { ...tinyPipelineConfig(modelPath) };
    config.llm = { ...config.llm, modelSha256: modelSha };

    for (const [queue, home] of [
      ['cpu', homes.cpu],
      ['gpu', homes.gpu],
    ] as const) {
      const w = startCli(['worker', '--queue', queue, '--task-queue', queues[queue]], cliEnv(home, services));
      workers.push(w);
    }
    await Promise.all(workers.map((w) => waitFor(w, /worker (cpu|gpu) running against/)));

    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        // The ingest activity (cpu queue) generates the synthetic data into its own home.
        dir: join(homes.cpu, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 9, users: 80, items: 120, ratingsPerUser: 30 } },
      },
      config,
      configHash: `nsd-${suffix}`,
      trigger: 'test',
      queues,
    };
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    let result: RetrainResult;
    try {
      const client = new Client({ connection: conn, namespace: inject('temporalNamespace') });
      const h = await client.workflow.start('retrainWorkflow', {
        taskQueue: queues.cpu,
        workflowId: `retrain-nsd-${suffix}`,
        args: [input],
      });
      result = (await h.result()) as RetrainResult;
    } finally {
      await conn.close();
    }
    expect(result.modelVersionId).toMatch(/^\d+$/);

    // Every blob the registry recorded is in S3, none on a worker's disk.
    const env = cliEnv(homes.reader, services);
    const show = startCli(['models', 'show', result.modelVersionId, '--json'], env);
    expect((await show.exited()).code, show.stderr()).toBe(0);
    const details = JSON.parse(show.stdout()) as {
      version: { id: number; artifacts: Record<string, string> };
    };
    expect(String(details.version.id)).toBe(result.modelVersionId);
    expect(details.version.artifacts.llmModel).toBe(modelSha);
    const shas = Object.values(details.version.artifacts);
    const rows = await testDb.db.select().from(artifacts).where(inArray(artifacts.sha256, shas));
    expect(rows.map((r) => r.sha256).sort()).toEqual([...new Set(shas)].sort());
    for (const r of rows) expect(r.uri, r.sha256).toBe(`s3://${BUCKET}/corella/blobs/${r.sha256}`);
    for (const home of [homes.cpu, homes.gpu]) expect(existsSync(join(home, 'artifacts')), home).toBe(false);
    // The gpu worker ran the LLM from its own read-through cache, filled from S3.
    expect(await readdir(join(homes.gpu, 'cache', 'artifacts'))).toContain(modelSha);

    // The third home loads the serving bundle, LLM branch included, from the object store alone: the
    // model file it names is gone, so it must come from S3 by the version's llmModel sha256.
    const readerStore = openArtifactStore(homes.reader, services);
    const { bundle } = await resolveServingBundle(
      testDb.db,
      homes.reader,
      result.modelVersionId,
      readerStore,
    );
    expect(bundle.llm?.model).toBe(join(homes.reader, 'cache', 'artifacts', modelSha));
    const engine = await ServingEngine.load(readerStore, bundle, { log: () => undefined });
    try {
      expect(engine.llmUnavailable).toBeUndefined();
    } finally {
      await engine.dispose();
    }
    expect(existsSync(join(homes.reader, 'artifacts'))).toBe(false);
  }, 900_000);
});
