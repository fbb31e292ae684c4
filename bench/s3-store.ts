/**
 * S3 artifact store against a real SeaweedFS (scripts/install-seaweedfs builds it): multipart put of a
 * model-sized file, the first read (download into the cache, hashed on the way) against a cache hit (which
 * is re-hashed too), and small-blob gets from the server against the cache.
 * Usage: npx tsx bench/s3-store.ts [--mb 64] [--small 200]   — prints one JSON line.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { BlobReadCache } from '../ml/artifacts/read-cache.js';
import { S3ArtifactStore, s3ClientConfigFromEnv } from '../ml/artifacts/s3-store.js';
import { startSeaweed } from '../test/helpers/seaweedfs.js';

const { values } = parseArgs({ options: { mb: { type: 'string' }, small: { type: 'string' } } });
const mb = Number(values.mb ?? 64);
const small = Number(values.small ?? 200);
const dir = await mkdtemp(join(tmpdir(), 'corella-bench-s3-'));
const weed = await startSeaweed({ dir: join(dir, 'weed'), bucket: 'bench' });
try {
  const store = (cache: string): S3ArtifactStore =>
    new S3ArtifactStore({
      url: 's3://bench/b',
      client: new S3Client(s3ClientConfigFromEnv(weed.env)),
      cache: new BlobReadCache(join(dir, cache)),
    });
  const secs = async (fn: () => Promise<unknown>): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return (performance.now() - t0) / 1000;
  };
  const path = join(dir, 'model.bin');
  await writeFile(path, randomBytes(mb * 1024 * 1024));
  const writer = store('w');
  let sha = '';
  const putS = await secs(async () => (sha = (await writer.putFile(path)).sha256));
  const putAgainS = await secs(() => writer.putFile(path)); // already there: HEAD + download-and-hash
  const reader = store('r');
  const missS = await secs(() => reader.localPath(sha));
  const hitS = await secs(() => reader.localPath(sha));
  const blobs: string[] = [];
  for (let i = 0; i < small; i++) blobs.push((await writer.put(randomBytes(10_000))).sha256);
  const smallReader = store('s');
  const smallMissS = await secs(async () => {
    for (const b of blobs) await smallReader.get(b);
  });
  const smallHitS = await secs(async () => {
    for (const b of blobs) await smallReader.get(b);
  });
  console.log(
    JSON.stringify({
      bench: 's3-store',
      server: 'seaweedfs 4.53, one process on 127.0.0.1',
      fileMB: mb,
      putMBps: +(mb / putS).toFixed(1),
      putExistingMBps: +(mb / putAgainS).toFixed(1),
      firstReadMBps: +(mb / missS).toFixed(1),
      cachedReadMBps: +(mb / hitS).toFixed(1),
      smallBlobs: small,
      smallGetMsFromServer: +((smallMissS * 1000) / small).toFixed(2),
      smallGetMsFromCache: +((smallHitS * 1000) / small).toFixed(2),
    }),
  );
} finally {
  await weed.stop();
  await rm(dir, { recursive: true, force: true });
}
