import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { BlobReadCache } from '../../ml/artifacts/read-cache.js';
import { PART_BYTES, S3ArtifactStore, s3ClientConfigFromEnv } from '../../ml/artifacts/s3-store.js';
import { sha256Hex } from '../../ml/artifacts/store.js';
import { useSeaweed, type SeaweedServer } from '../helpers/seaweedfs.js';

const BUCKET = 'corella-s3-restart';

describe('S3ArtifactStore when the server dies in the middle of a multipart upload', () => {
  let dir: string;
  let weed: SeaweedServer;

  useSeaweed(BUCKET, 'corella-s3-restart-', (s) => ({ dir, weed } = s));

  it('fails cleanly or completes, and never leaves a partial object under the hash; a retry then stores it intact', async () => {
    const client = (): S3Client =>
      new S3Client({
        ...s3ClientConfigFromEnv(weed.env),
        credentials: {
          accessKeyId: weed.env.AWS_ACCESS_KEY_ID,
          secretAccessKey: weed.env.AWS_SECRET_ACCESS_KEY,
        },
        // One attempt per request: the restart must land inside the upload, not be hidden by SDK retries.
        maxAttempts: 1,
      });
    const store = new S3ArtifactStore({
      url: `s3://${BUCKET}/models`,
      client: client(),
      cache: new BlobReadCache(join(dir, 'cache-a')),
    });
    const data = randomBytes(6 * PART_BYTES + 777);
    const sha = sha256Hex(data);
    const path = join(dir, 'model.gguf');
    await writeFile(path, data);

    let killed: Promise<void> | undefined;
    const outcome = await store
      .putFile(path, {
        onProgress: (sent) => {
          // After the first part is acknowledged: the upload exists on the server and is half done.
          if (!killed && sent >= PART_BYTES && sent < data.byteLength) killed = weed.kill();
        },
      })
      .then(
        () => 'completed',
        (e: unknown) => `failed: ${(e as Error).name}`,
      );
    expect(killed, 'the server was killed mid-upload').toBeDefined();
    console.info(`put during the restart: ${outcome}`);
    await killed;
    await weed.restart();

    // Whatever happened, the key holds either nothing or every byte.
    const head = await weed.client
      .send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.blobKey(sha) }))
      .then((h) => h.ContentLength)
      .catch(() => undefined);
    expect([undefined, data.byteLength], `${outcome}, object size ${String(head)}`).toContain(head);
    if (head !== undefined) {
      const check = new S3ArtifactStore({
        url: `s3://${BUCKET}/models`,
        client: client(),
        cache: new BlobReadCache(join(dir, 'cache-b')),
      });
      expect((await check.get(sha)).equals(data)).toBe(true);
    }

    // The activity's retry: the same put again, on the restarted server (with the SDK's usual retries),
    // stores it intact.
    const retried = new S3ArtifactStore({
      url: `s3://${BUCKET}/models`,
      client: new S3Client({
        ...s3ClientConfigFromEnv(weed.env),
        credentials: {
          accessKeyId: weed.env.AWS_ACCESS_KEY_ID,
          secretAccessKey: weed.env.AWS_SECRET_ACCESS_KEY,
        },
      }),
      cache: new BlobReadCache(join(dir, 'cache-c')),
    });
    expect((await retried.putFile(path)).sha256).toBe(sha);
    const reader = new S3ArtifactStore({
      url: `s3://${BUCKET}/models`,
      client: client(),
      cache: new BlobReadCache(join(dir, 'cache-d')),
    });
    expect((await reader.get(sha, 'model file')).equals(data)).toBe(true);
  }, 240_000);
});
