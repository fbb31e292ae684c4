import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobReadCache } from '../../../ml/artifacts/read-cache.js';
import { FileArtifactStore, sha256Hex } from '../../../ml/artifacts/store.js';
import { openArtifactStore } from '../../../ml/artifacts/open-store.js';

describe('BlobReadCache', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-cache-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const blob = (c: string, n: number) => Buffer.alloc(n, c);

  it('evicts the least recently used entries past its byte bound, counting reads as use', async () => {
    const cache = new BlobReadCache(dir, 250);
    const [a, b, c] = [blob('a', 100), blob('b', 100), blob('c', 100)];
    await cache.insert(sha256Hex(a), a);
    await cache.insert(sha256Hex(b), b);
    expect(await cache.read(sha256Hex(a))).toEqual(a); // a is now the most recent
    await cache.insert(sha256Hex(c), c);
    expect(cache.bytes).toBe(200);
    expect(await cache.read(sha256Hex(b))).toBeUndefined();
    expect(await cache.read(sha256Hex(a))).toEqual(a);
    expect(await cache.read(sha256Hex(c))).toEqual(c);
  });

  it('keeps one entry larger than the bound (the caller needs its file), until the next insert', async () => {
    const cache = new BlobReadCache(dir, 50);
    const big = blob('x', 80);
    const p = await cache.insert(sha256Hex(big), big);
    expect(await cache.path(sha256Hex(big))).toBe(p);
    const small = blob('y', 10);
    await cache.insert(sha256Hex(small), small);
    expect(await cache.path(sha256Hex(big))).toBeUndefined();
    expect(cache.bytes).toBe(10);
  });

  it('drops a hit that no longer hashes right instead of returning it', async () => {
    const cache = new BlobReadCache(dir, 1000);
    const a = blob('a', 100);
    const p = await cache.insert(sha256Hex(a), a);
    await writeFile(p, blob('a', 99));
    expect(await cache.read(sha256Hex(a))).toBeUndefined();
    expect(await cache.path(sha256Hex(a))).toBeUndefined();
    expect(cache.bytes).toBe(0);
    expect((await readdir(dir)).filter((n) => n !== 'tmp')).toEqual([]);
  });

  it('recovers its recency order from mtimes after a restart', async () => {
    const first = new BlobReadCache(dir, 250);
    const [a, b] = [blob('a', 100), blob('b', 100)];
    await first.insert(sha256Hex(a), a);
    await first.insert(sha256Hex(b), b);
    // b older than a on disk: after a restart b is the first to go.
    await utimes(join(dir, sha256Hex(b)), new Date(1000), new Date(1000));
    const second = new BlobReadCache(dir, 250);
    const c = blob('c', 100);
    await second.insert(sha256Hex(c), c);
    expect(await second.read(sha256Hex(b))).toBeUndefined();
    expect(await second.read(sha256Hex(a))).toEqual(a);
  });
});

describe('openArtifactStore', () => {
  it('is the home folder when CORELLA_ARTIFACTS is unset, a folder for a path, and refuses other schemes', () => {
    const home = join(tmpdir(), 'corella-home-x');
    expect((openArtifactStore(home, {}) as FileArtifactStore).root).toBe(join(home, 'artifacts'));
    expect((openArtifactStore(home, { CORELLA_ARTIFACTS: '/srv/blobs' }) as FileArtifactStore).root).toBe(
      '/srv/blobs',
    );
    expect((openArtifactStore(home, { CORELLA_ARTIFACTS: 'file:///srv/b2' }) as FileArtifactStore).root).toBe(
      '/srv/b2',
    );
    expect(() => openArtifactStore(home, { CORELLA_ARTIFACTS: 'gs://bucket' })).toThrow(/CORELLA_ARTIFACTS/);
    expect(() => openArtifactStore(home, { CORELLA_ARTIFACTS: 's3://B_ad' })).toThrow(/CORELLA_ARTIFACTS/);
    expect(() =>
      openArtifactStore(home, { CORELLA_ARTIFACTS: 's3://bucket/p', CORELLA_ARTIFACT_CACHE_BYTES: 'lots' }),
    ).toThrow(/CORELLA_ARTIFACT_CACHE_BYTES/);
  });
});

describe('FileArtifactStore.updateNamed', () => {
  it('serialises concurrent read-modify-writes of one entry so none is lost', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'corella-upd-'));
    try {
      const a = new FileArtifactStore(dir);
      const b = new FileArtifactStore(dir);
      const add = (who: string) => (cur: Buffer | undefined) =>
        JSON.stringify([...((cur ? JSON.parse(cur.toString()) : []) as string[]), who]);
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).updateNamed('idx/list.json', add(String(i)))),
      );
      const list = JSON.parse((await a.getNamed('idx/list.json'))!.toString()) as string[];
      expect(list.sort()).toEqual(Array.from({ length: 20 }, (_, i) => String(i)).sort());
      expect(await a.updateNamed('idx/none', () => undefined)).toBeUndefined();
      expect(await a.getNamed('idx/none')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
