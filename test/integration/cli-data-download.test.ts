import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { generateSyntheticMovielens } from '../../ml/data/synthetic.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';
import { makeZip } from '../helpers/datasets.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

/**
 * The data chain `corella up` and `corella retrain` share (cli/prepare-run.ts), through the real command: what
 * the started workflow is given and records in its memo. No worker polls the queue; each run is terminated.
 */
describe('corella retrain/up without a data dir: MovieLens-1M download, else synthetic', () => {
  let dir: string;
  let testDb: TestDatabase;
  let connection: Connection;
  let client: Client;
  let server: Server;
  let url: string;
  let sha256: string;
  let model: string;
  let requests = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-cli-data-'));
    testDb = await createTestDatabase(inject('databaseUrl'));
    const gen = await generateSyntheticMovielens(join(dir, 'gen'), { seed: 3, users: 25, items: 30 });
    const files: Record<string, Buffer> = {};
    for (const f of ['ratings.dat', 'movies.dat', 'users.dat'])
      files[`ml-1m/${f}`] = await readFile(join(gen.dir, f));
    const zip = makeZip(files);
    sha256 = createHash('sha256').update(zip).digest('hex');
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-length': String(zip.length) });
      res.end(zip);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ml-1m.zip`;
    model = join(dir, 'tiny.gguf');
    writeTinyGguf(model, { seed: 1 });
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace: inject('temporalNamespace') });
  });
  afterAll(async () => {
    await connection?.close();
    await new Promise((r) => server?.close(r));
    await testDb?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function retrain(home: string, extra: Record<string, string>, args: string[] = []) {
    const env = cliEnv(home, {
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      CORELLA_DATA_DIR: '',
      CORELLA_NO_DOWNLOAD: '',
      ...extra,
    });
    const cli = startCli(['retrain', '--model', model, '--json', ...args], env);
    const exit = await cli.exited();
    expect(exit.code, cli.stderr()).toBe(0);
    const out = JSON.parse(cli.stdout()) as { workflowId: string; started: boolean };
    const handle = client.workflow.getHandle(out.workflowId);
    const memo = (await handle.describe()).memo as {
      dataset: { source: string; dir: string };
      origin: string;
    };
    await handle.terminate('test over').catch(() => undefined);
    return { stderr: cli.stderr(), memo };
  }

  it('a reachable archive is downloaded and the run records real movielens-1m data, origin download', async () => {
    const home = join(dir, 'home-download');
    const r = await retrain(home, { CORELLA_ML1M_URL: url, CORELLA_ML1M_SHA256: sha256 });
    expect(r.memo.origin).toBe('download');
    expect(r.memo.dataset.source).toBe('movielens-1m');
    expect(r.memo.dataset.dir.startsWith(join(home, 'datasets'))).toBe(true);
    expect(r.stderr).toMatch(/downloaded and verified/);
    expect(requests).toBe(1);
  }, 120_000);

  it('an unreachable archive falls through to synthetic-movielens with one line saying why', async () => {
    // A loopback port that was free a moment ago: the connection is refused at once.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const r = await retrain(join(dir, 'home-offline'), {
      CORELLA_ML1M_URL: `http://127.0.0.1:${port}/ml-1m.zip`,
      CORELLA_DOWNLOAD_TIMEOUT: '2',
    });
    expect(r.memo.origin).toBe('synthetic');
    expect(r.memo.dataset.source).toBe('synthetic-movielens');
    expect(r.stderr.split('\n').filter((l) => l.includes('MovieLens-1M download failed'))).toHaveLength(1);
  }, 120_000);

  it('--no-download makes no request even with a reachable archive', async () => {
    const before = requests;
    const r = await retrain(join(dir, 'home-nodl'), { CORELLA_ML1M_URL: url, CORELLA_ML1M_SHA256: sha256 }, [
      '--no-download',
    ]);
    expect(r.memo.origin).toBe('synthetic');
    expect(requests).toBe(before);
  }, 120_000);
});
