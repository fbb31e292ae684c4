import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { fetchWithTimeouts, resolveDataSource } from '../../cli/data-source.js';
import { generateSyntheticMovielens } from '../../ml/data/synthetic.js';
import { makeZip, tempDir } from '../helpers/datasets.js';

const FILES = ['ratings.dat', 'movies.dat', 'users.dat'] as const;

/** A small ml-1m.zip laid out like GroupLens's (an `ml-1m/` folder), made from the synthetic generator. */
async function syntheticArchive(dir: string): Promise<{ zip: Buffer; files: Record<string, Buffer> }> {
  const gen = await generateSyntheticMovielens(join(dir, 'gen'), {
    seed: 7,
    users: 30,
    items: 40,
    ratingsPerUser: 12,
  });
  const files: Record<string, Buffer> = {};
  for (const f of FILES) files[f] = await readFile(join(gen.dir, f));
  const zip = makeZip({
    'ml-1m/': Buffer.alloc(0),
    ...Object.fromEntries(FILES.map((f) => [`ml-1m/${f}`, files[f]])),
  });
  return { zip, files };
}

const servers: (Server | TcpServer)[] = [];
const sockets: Socket[] = [];

async function listen(server: Server | TcpServer): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Serves `body` at /ml-1m.zip and counts requests. */
async function serveZip(body: Buffer): Promise<{ url: string; requests: () => number }> {
  let n = 0;
  const server = createHttpServer((_req, res) => {
    n++;
    res.writeHead(200, { 'content-length': String(body.length) });
    res.end(body);
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}/ml-1m.zip`, requests: () => n };
}

/** Accepts connections and never answers: a black-holed route, as far as the client can tell. */
async function silentServer(): Promise<string> {
  const server = createTcpServer((s) => sockets.push(s));
  const port = await listen(server);
  return `http://127.0.0.1:${port}/ml-1m.zip`;
}

/** A port that was free a moment ago: connecting to it is refused. */
async function refusedUrl(): Promise<string> {
  const server = createTcpServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise((r) => server.close(r));
  return `http://127.0.0.1:${port}/ml-1m.zip`;
}

describe('corella up data resolution: --data-dir → env → cached MovieLens-1M → download → synthetic', () => {
  let dir: string;
  let archive: { zip: Buffer; files: Record<string, Buffer> };
  let sha256: string;
  let home: string;
  let lines: string[];
  const log = (l: string): void => void lines.push(l);

  beforeAll(async () => {
    dir = await tempDir('corella-data-source-');
    archive = await syntheticArchive(dir);
    sha256 = createHash('sha256').update(archive.zip).digest('hex');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    home = await tempDir('corella-home-');
    lines = [];
    // The developer's own settings must not short-circuit the order under test.
    vi.stubEnv('CORELLA_DATA_DIR', '');
    vi.stubEnv('CORELLA_NO_DOWNLOAD', '');
    vi.stubEnv('CORELLA_DOWNLOAD_TIMEOUT', '');
    vi.stubEnv('CORELLA_ML1M_SHA256', sha256);
  });
  afterEach(async () => {
    vi.unstubAllEnvs();
    for (const s of sockets.splice(0)) s.destroy();
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
    await rm(home, { recursive: true, force: true });
  });

  it('downloads the archive, records it as real movielens-1m, and then reuses the cache', async () => {
    const server = await serveZip(archive.zip);
    vi.stubEnv('CORELLA_ML1M_URL', server.url);
    const first = await resolveDataSource({ home, allowSynthetic: true, log });
    expect(first.origin).toBe('download');
    expect(first.spec.source).toBe('movielens-1m');
    expect(first.downloadFailure).toBeUndefined();
    for (const f of FILES) expect(await readFile(join(first.spec.dir!, f))).toEqual(archive.files[f]);
    expect(server.requests()).toBe(1);
    expect(lines.join('\n')).toMatch(/downloading .*ml-1m\.zip/);
    expect(lines.join('\n')).toMatch(/downloaded and verified/);

    // Cached: no request, even with downloading switched off.
    lines = [];
    const again = await resolveDataSource({ home, allowSynthetic: true, download: false, log });
    expect(again).toEqual({ spec: { source: 'movielens-1m', dir: first.spec.dir }, origin: 'cache' });
    expect(server.requests()).toBe(1);
    expect(lines.join('\n')).toMatch(/using the cached download/);
  });

  it('an unanswering server falls through to synthetic after the connect timeout, with one line saying why', async () => {
    vi.stubEnv('CORELLA_ML1M_URL', await silentServer());
    vi.stubEnv('CORELLA_DOWNLOAD_TIMEOUT', '1');
    const t0 = Date.now();
    const r = await resolveDataSource({ home, allowSynthetic: true, log });
    const seconds = (Date.now() - t0) / 1000;
    expect(r.origin).toBe('synthetic');
    expect(r.spec.source).toBe('synthetic-movielens');
    expect(r.downloadFailure).toMatch(/no answer within 1 s/);
    const failed = lines.filter((l) => l.includes('download failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/no answer within 1 s/);
    // Without the timeout undici waits up to 300 s for response headers; this bound only shows ours works.
    expect(seconds).toBeLessThan(15);
  });

  it('a refused connection falls through to synthetic and names the error', async () => {
    vi.stubEnv('CORELLA_ML1M_URL', await refusedUrl());
    const r = await resolveDataSource({ home, allowSynthetic: true, log });
    expect(r.origin).toBe('synthetic');
    expect(lines.filter((l) => l.includes('download failed'))).toEqual([
      expect.stringMatching(/ECONNREFUSED/),
    ]);
  });

  it('an archive with the wrong sha256 is not used: synthetic, and the reason is the checksum', async () => {
    const server = await serveZip(archive.zip);
    vi.stubEnv('CORELLA_ML1M_URL', server.url);
    vi.stubEnv('CORELLA_ML1M_SHA256', 'f'.repeat(64));
    const r = await resolveDataSource({ home, allowSynthetic: true, log });
    expect(r.origin).toBe('synthetic');
    expect(r.downloadFailure).toMatch(/sha256/);
  });

  it('--no-download and CORELLA_NO_DOWNLOAD=1 skip the download without a request', async () => {
    const server = await serveZip(archive.zip);
    vi.stubEnv('CORELLA_ML1M_URL', server.url);
    const flag = await resolveDataSource({ home, allowSynthetic: true, download: false, log });
    expect(flag.origin).toBe('synthetic');
    vi.stubEnv('CORELLA_NO_DOWNLOAD', '1');
    const env = await resolveDataSource({ home, allowSynthetic: true, log });
    expect(env.origin).toBe('synthetic');
    expect(server.requests()).toBe(0);
    expect(lines.filter((l) => l.includes('skips the download'))).toHaveLength(2);
    expect(lines.some((l) => l.includes('download failed'))).toBe(false);
  });

  it('--data-dir and CORELLA_DATA_DIR come first: no request', async () => {
    const server = await serveZip(archive.zip);
    vi.stubEnv('CORELLA_ML1M_URL', server.url);
    const local = join(dir, 'gen');
    const flag = await resolveDataSource({ home, allowSynthetic: true, dataDir: local, log });
    expect(flag).toMatchObject({ spec: { source: 'movielens-1m', dir: local }, origin: 'flag' });
    vi.stubEnv('CORELLA_DATA_DIR', local);
    const env = await resolveDataSource({ home, allowSynthetic: true, log });
    expect(env.origin).toBe('env');
    expect(server.requests()).toBe(0);
  });

  it('an explicit --source synthetic-movielens does not download', async () => {
    const server = await serveZip(archive.zip);
    vi.stubEnv('CORELLA_ML1M_URL', server.url);
    const r = await resolveDataSource({ home, allowSynthetic: true, source: 'synthetic-movielens', log });
    expect(r.origin).toBe('synthetic');
    expect(server.requests()).toBe(0);
  });

  it('a bad CORELLA_DOWNLOAD_TIMEOUT is a config error naming the variable', async () => {
    vi.stubEnv('CORELLA_DOWNLOAD_TIMEOUT', 'soon');
    await expect(resolveDataSource({ home, allowSynthetic: true, log })).rejects.toMatchObject({
      code: 'BAD_CONFIG',
      message: expect.stringMatching(/CORELLA_DOWNLOAD_TIMEOUT/),
    });
  });

  it('a body that stops flowing is abandoned after the stall timeout', async () => {
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write(Buffer.alloc(100));
      // …and nothing more: the socket stays open.
    });
    server.on('connection', (s) => sockets.push(s));
    const port = await listen(server);
    const res = await fetchWithTimeouts(2_000, 300)(`http://127.0.0.1:${port}/x`);
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
  });
});
