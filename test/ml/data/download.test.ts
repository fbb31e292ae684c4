import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { CorellaError, DatasetError } from '../../../ml/errors.js';
import { fetchMovielens1m, ingestDataset, resolveMovielens1m } from '../../../ml/data/index.js';
import { makeZip, movielensLines, tempDir } from '../../helpers/datasets.js';

function archive(): Buffer {
  const l = movielensLines();
  const text = (xs: string[]) => Buffer.from(xs.join('\n') + '\n', 'latin1');
  return makeZip({
    'ml-1m/': Buffer.alloc(0),
    'ml-1m/movies.dat': text(l.movies),
    'ml-1m/ratings.dat': text(l.ratings),
    'ml-1m/users.dat': text(l.users),
    'ml-1m/README': Buffer.from('test archive\n'),
  });
}

const servers: Server[] = [];
// The developer's own CORELLA_DATA_DIR must not short-circuit the resolution order under test.
beforeEach(() => {
  vi.stubEnv('CORELLA_DATA_DIR', '');
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** Serves `body` with Range support; the first `breakFirst` responses are cut off halfway. */
async function serve(body: Buffer, breakFirst = 0) {
  const seen: (string | undefined)[] = [];
  let broken = 0;
  const server = createServer((req, res) => {
    const range = req.headers.range;
    seen.push(range);
    const from = range ? Number(/bytes=(\d+)-/.exec(range)![1]) : 0;
    const chunk = body.subarray(from);
    res.writeHead(range ? 206 : 200, { 'content-length': String(chunk.length) });
    if (broken < breakFirst) {
      broken++;
      // Let the first half reach the client before the connection drops.
      res.write(chunk.subarray(0, Math.floor(chunk.length / 2)), () => setTimeout(() => res.destroy(), 100));
      return;
    }
    res.end(chunk);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/ml-1m.zip`, seen };
}

describe('MovieLens-1M download', () => {
  it('resumes an interrupted download, verifies sha256, extracts, and then reuses the cache', async () => {
    const zip = archive();
    const sha256 = createHash('sha256').update(zip).digest('hex');
    const { url, seen } = await serve(zip, 1);
    const cacheDir = await tempDir();
    const first = await fetchMovielens1m({ cacheDir, url, sha256 }).catch((e: unknown) => e);
    expect(first).toMatchObject({ code: 'DATA_NOT_AVAILABLE' });
    const dir = await fetchMovielens1m({ cacheDir, url, sha256 });
    expect(seen[0]).toBeUndefined();
    expect(seen[1]).toMatch(/^bytes=[1-9]\d*-$/);
    expect((await readdir(dir)).sort()).toEqual([
      '.complete',
      'README',
      'movies.dat',
      'ratings.dat',
      'users.dat',
    ]);
    const m = await ingestDataset(
      { source: 'movielens-1m', dir },
      new FileArtifactStore(join(cacheDir, 'store')),
    );
    expect(m.stats.train.size).toBeGreaterThan(0);
    // Cached: no further request.
    const again = await resolveMovielens1m({ cacheDir, url, sha256 });
    expect(again).toEqual({ dir, origin: 'cache' });
    expect(seen.length).toBe(2);
  });

  it('rejects an archive whose sha256 does not match and removes it', async () => {
    const { url } = await serve(archive());
    const cacheDir = await tempDir();
    const err = await fetchMovielens1m({ cacheDir, url, sha256: '0'.repeat(64) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetError);
    expect(err).toMatchObject({ details: { reason: 'checksum_mismatch' } });
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('offline: a typed error that says what to pass', async () => {
    const cacheDir = await tempDir();
    const err = await fetchMovielens1m({ cacheDir, url: 'http://127.0.0.1:1/ml-1m.zip' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CorellaError);
    expect(err).toMatchObject({ code: 'DATA_NOT_AVAILABLE', retryable: false });
    expect((err as Error).message).toMatch(/--data-dir or CORELLA_DATA_DIR/);
    const noDownload = resolveMovielens1m({ cacheDir, download: false });
    await expect(noDownload).rejects.toMatchObject({ code: 'DATA_NOT_AVAILABLE' });
  });
});
