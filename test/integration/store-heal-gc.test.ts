import { readFile, readdir, rm, utimes, writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import type { PipelineConfig, RetrainResult } from '../../activities/types.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { FileArtifactStore, sha256File } from '../../ml/artifacts/store.js';
import { LlmAdapter } from '../../ml/corella/adapter.js';
import { loadCrm } from '../../ml/crm/index.js';
import { loadDataset, loadManifest } from '../../ml/data/index.js';
import { CorellaError } from '../../ml/errors.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { trainVersions } from '../helpers/trained-versions.js';

const SHA_ANYWHERE = /[0-9a-f]{64}/g;

async function rejection(p: Promise<unknown>): Promise<CorellaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof CorellaError) return e;
    throw e;
  }
  throw new Error('expected a CorellaError');
}

async function flipByteIn(path: string, at?: number): Promise<void> {
  const buf = await readFile(path);
  const i = at ?? Math.floor(buf.length / 2);
  buf[i] ^= 0x01;
  await writeFile(path, buf);
}

interface GcJson {
  dryRun: boolean;
  wouldRemove?: { sha256: string }[];
  removed?: { sha256: string }[];
  kept: { referenced: number; young: number };
}

describe('the artifact store heals on retrain, and gc removes only what nothing references', () => {
  let testDb: TestDatabase;
  let dir: string;
  let ctx: ActivityContext;
  let store: FileArtifactStore;
  let config: PipelineConfig;
  const trained: RetrainResult[] = [];
  const temporal = () => ({ address: inject('temporalAddress'), namespace: inject('temporalNamespace') });

  beforeAll(async () => {
    testDb = await createTestDatabase(inject('databaseUrl'));
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-'));
    store = new FileArtifactStore(join(dir, 'artifacts'));
    ctx = { db: testDb.db, store, home: dir, close: async () => undefined };
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5 });
    config = tinyPipelineConfig(modelPath);
    const second: PipelineConfig = { ...config, crm: { ...config.crm, seed: 17 } };
    trained.push(...(await trainVersions(ctx, temporal(), dir, [config, second])));
  }, 400_000);

  afterAll(async () => {
    await testDb?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function gc(args: string[]): Promise<GcJson> {
    const p = startCli(['gc', '--json', ...args], cliEnv(dir, { DATABASE_URL: testDb.url }));
    const { code } = await p.exited();
    expect(code, p.stderr()).toBe(0);
    return JSON.parse(p.stdout()) as GcJson;
  }

  it('a flipped byte in a dataset blob and in its manifest is repaired by re-running the retrain', async () => {
    const versionId = trained[0].datasetVersionId;
    const manifest = (await loadManifest(store, versionId))!;
    const trainSha = manifest.splitArtifacts.train;
    const blob = store.blobPath(trainSha);
    await flipByteIn(blob);
    const e = await rejection(loadDataset(store, manifest));
    expect(e.code).toBe('ARTIFACT_CORRUPT');
    expect(e.message).toContain(blob);
    expect(e.message).toContain('dataset split train');
    expect(e.message).toContain('corella retrain');

    const manifestFile = join(store.namedDir, 'datasets', `${versionId}.json`);
    const raw = await readFile(manifestFile, 'utf8');
    await flipByteIn(manifestFile, raw.indexOf('splitArtifacts') + 2);
    const m = await rejection(loadManifest(store, versionId));
    expect(m.code).toBe('ARTIFACT_CORRUPT');
    expect(m.message).toContain(manifestFile);
    expect(m.message).toContain('dataset manifest');

    // The same retrain again (same data, same config): its ingestion writes the same content, which heals.
    const [again] = await trainVersions(ctx, temporal(), dir, [config]);
    trained.push(again);
    expect(again.datasetVersionId).toBe(versionId);
    expect(await sha256File(blob)).toBe(trainSha);
    const healed = (await loadManifest(store, versionId))!;
    expect(healed.splitArtifacts.train).toBe(trainSha);
    expect((await loadDataset(store, healed)).splits.train.size).toBe(manifest.stats.train.size);
  }, 300_000);

  /** Every sha256 the registry and the named pointers mention, gathered here independently of gc. */
  async function referencedByRegistry(): Promise<Set<string>> {
    const refs = new Set<string>();
    const add = (v: unknown) => {
      for (const m of JSON.stringify(v ?? null).matchAll(SHA_ANYWHERE)) refs.add(m[0]);
    };
    for (const q of [
      sql`select artifacts, metrics from model_versions`,
      sql`select feature_map_sha256, input_sha256s, manifest, counts, params from dataset_versions`,
      sql`select summary, config from runs`,
      sql`select * from calibrations`,
      sql`select * from evaluations`,
      sql`select sha256 from artifacts`,
    ])
      add((await testDb.db.execute(q)).rows);
    const walk = async (d: string): Promise<void> => {
      for (const ent of await readdir(d, { withFileTypes: true })) {
        const p = join(d, ent.name);
        if (ent.isDirectory()) await walk(p);
        else add((await store.getNamed(p.slice(store.namedDir.length + 1)))?.toString());
      }
    };
    await walk(store.namedDir);
    return refs;
  }

  async function blobsOnDisk(): Promise<string[]> {
    return (await readdir(store.root)).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();
  }

  it('gc --dry-run lists only unreferenced old blobs, spares young ones and running runs, and gc keeps every model version loadable', async () => {
    const old = await store.put('garbage nobody references, a month old');
    const month = new Date(Date.now() - 30 * 86_400_000);
    await utimes(store.blobPath(old.sha256), month, month);
    const young = await store.put('garbage nobody references, written just now');

    // Default --older-than 7d: the month-old blob goes, the young garbage and every run's fresh blob stay.
    const first = await gc(['--dry-run']);
    expect(first.wouldRemove?.map((b) => b.sha256)).toEqual([old.sha256]);

    // A run that has been `running` for two months may still write blobs nothing names yet: keep them all.
    const runs = new RunRepository(testDb.db);
    const running = await runs.start({ workflowId: 'gc-probe-running', kind: 'probe' });
    await testDb.db.execute(
      sql`update runs set started_at = now() - interval '60 days' where id = ${running.id}`,
    );
    expect((await gc(['--dry-run'])).wouldRemove).toEqual([]);
    await testDb.db.execute(
      sql`update runs set status = 'failed', ended_at = now() where id = ${running.id}`,
    );

    // With no age protection, the plan is exactly the blobs on disk that nothing references.
    const all = await gc(['--dry-run', '--older-than', '0s']);
    const planned = all.wouldRemove!.map((b) => b.sha256).sort();
    const refs = await referencedByRegistry();
    const unreferenced = (await blobsOnDisk()).filter((s) => !refs.has(s));
    expect(planned).toEqual(unreferenced);
    expect(planned).toContain(old.sha256);
    expect(planned).toContain(young.sha256);
    // The dry run removed nothing.
    for (const s of planned) expect(await store.has(s)).toBe(true);
    console.log(
      `gc: ${(await blobsOnDisk()).length} blobs after ${trained.length} runs, ${planned.length - 2} of them unreferenced run leftovers`,
    );

    const swept = await gc(['--older-than', '0s']);
    expect(swept.removed!.map((b) => b.sha256).sort()).toEqual(planned);
    for (const s of planned) expect(await store.has(s)).toBe(false);
    expect(await gc(['--dry-run', '--older-than', '0s'])).toMatchObject({ wouldRemove: [] });

    // Every model version still loads from the store: its dataset, CRM and adapter.
    const versions = (
      await testDb.db.execute<{ id: number; artifacts: Record<string, string>; dataset_version_id: string }>(
        sql`select id, artifacts, dataset_version_id from model_versions order by id`,
      )
    ).rows;
    expect(versions.length).toBe(trained.length);
    for (const v of versions) {
      const manifest = (await loadManifest(store, v.dataset_version_id))!;
      const ds = await loadDataset(store, manifest);
      const crm = await loadCrm(store, v.artifacts.crmModel, ds.featureMap);
      expect(crm).toBeDefined();
      const adapter = LlmAdapter.deserialize(await store.get(v.artifacts.adapter));
      expect(adapter).toBeDefined();
    }
  }, 200_000);
});
