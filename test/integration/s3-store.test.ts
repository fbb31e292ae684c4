import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { BlobReadCache } from '../../ml/artifacts/read-cache.js';
import { PART_BYTES, S3ArtifactStore, s3ClientConfigFromEnv } from '../../ml/artifacts/s3-store.js';
import { sha256Hex } from '../../ml/artifacts/store.js';
import { CorellaError } from '../../ml/errors.js';
import { useSeaweed, type SeaweedServer } from '../helpers/seaweedfs.js';

const BUCKET = 'corella-s3-store';

async function errorOf(p: Promise<unknown>): Promise<CorellaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof CorellaError) return e;
    throw e;
  }
  throw new Error('expected a CorellaError, the call succeeded');
}

describe('S3ArtifactStore against a real SeaweedFS', () => {
  let dir: string;
  let weed: SeaweedServer;
  let n = 0;

  /** A store with its own client and its own empty cache, as a separate worker would have. */
  function freshStore(prefix = 'it', cacheBytes?: number): S3ArtifactStore {
    n += 1;
    const client = new S3Client({
      ...s3ClientConfigFromEnv(weed.env),
      credentials: {
        accessKeyId: weed.env.AWS_ACCESS_KEY_ID,
        secretAccessKey: weed.env.AWS_SECRET_ACCESS_KEY,
      },
    });
    return new S3ArtifactStore({
      url: `s3://${BUCKET}/${prefix}`,
      client,
      cache: new BlobReadCache(join(dir, `cache-${n}`), cacheBytes),
    });
  }

  async function keys(prefix: string): Promise<string[]> {
    const r = await weed.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
    return (r.Contents ?? []).map((o) => o.Key!).sort();
  }

  useSeaweed(BUCKET, 'corella-s3-', (s) => ({ dir, weed } = s));

  it('round-trips blobs, files (multipart) and named entries, and the factory picks S3 from CORELLA_ARTIFACTS', async () => {
    const store = freshStore('roundtrip');
    const ref = await store.put('hello s3');
    expect(ref.sha256).toBe(sha256Hex('hello s3'));
    expect(ref.uri).toBe(`s3://${BUCKET}/roundtrip/blobs/${ref.sha256}`);
    expect((await store.get(ref.sha256)).toString()).toBe('hello s3');
    expect(await store.has(ref.sha256)).toBe(true);
    expect(await store.has(sha256Hex('never stored'))).toBe(false);
    expect((await errorOf(store.get(sha256Hex('never stored'), 'dataset split'))).code).toBe(
      'ARTIFACT_NOT_FOUND',
    );

    // Three parts and a bit: lib-storage sends it as a multipart upload.
    const big = randomBytes(3 * PART_BYTES + 12345);
    const bigPath = join(dir, 'big.bin');
    await writeFile(bigPath, big);
    const parts: number[] = [];
    const bigRef = await store.putFile(bigPath, { onProgress: (b) => parts.push(b) });
    expect(bigRef).toMatchObject({ sha256: sha256Hex(big), bytes: big.byteLength });
    expect(parts.length).toBeGreaterThanOrEqual(4);
    expect(await store.sizeOf(bigRef.sha256)).toBe(big.byteLength);
    expect(await store.sizeOf(sha256Hex('never stored'))).toBeUndefined();
    const other = freshStore('roundtrip');
    const local = await other.localPath(bigRef.sha256, 'model file');
    expect((await readFile(local)).equals(big)).toBe(true);
    expect(local.startsWith(other.cache.dir)).toBe(true);

    await store.putNamed('runs/r1/joint/latest', JSON.stringify({ step: 3 }));
    expect(JSON.parse((await other.getNamed('runs/r1/joint/latest'))!.toString())).toEqual({ step: 3 });
    expect(await other.getNamed('runs/r1/absent')).toBeUndefined();
    await other.deleteNamed('runs/r1/joint/latest');
    expect(await store.getNamed('runs/r1/joint/latest')).toBeUndefined();

    const viaEnv = openArtifactStore(join(dir, 'home-env'), {
      ...weed.env,
      CORELLA_ARTIFACTS: `s3://${BUCKET}/roundtrip`,
    });
    expect(viaEnv).toBeInstanceOf(S3ArtifactStore);
    expect((await viaEnv.get(ref.sha256)).toString()).toBe('hello s3');
    expect(
      (await errorOf(Promise.resolve().then(() => openArtifactStore(dir, { CORELLA_ARTIFACTS: 's3://' }))))
        .code,
    ).toBe('BAD_CONFIG');
  });

  it('reads through a bounded LRU cache: a second read needs no server, and old entries are evicted', async () => {
    const store = freshStore('cache', 3000);
    const blobs = [0, 1, 2].map((i) => Buffer.alloc(1200, 65 + i));
    const refs = [];
    for (const b of blobs) refs.push(await store.put(b));
    const reader = freshStore('cache', 3000);
    expect((await reader.get(refs[0].sha256)).equals(blobs[0])).toBe(true);
    // Gone from the server, still served (verified) from this worker's cache.
    await weed.client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: reader.blobKey(refs[0].sha256) }));
    expect((await reader.get(refs[0].sha256)).equals(blobs[0])).toBe(true);
    // Two more entries exceed 3000 bytes: the least recently used (blob 0) goes, the others stay.
    await reader.get(refs[1].sha256);
    await reader.get(refs[2].sha256);
    expect(reader.cache.bytes).toBeLessThanOrEqual(3000);
    expect((await errorOf(reader.get(refs[0].sha256))).code).toBe('ARTIFACT_NOT_FOUND');
    expect((await reader.get(refs[2].sha256)).equals(blobs[2])).toBe(true);

    // A cached copy that no longer hashes right is dropped and fetched again, never returned.
    await writeFile(join(reader.cache.dir, refs[2].sha256), 'bit rot');
    expect((await reader.get(refs[2].sha256)).equals(blobs[2])).toBe(true);
  });

  it('detects an object corrupted behind its back, names the key and the repair, and a put of the same content repairs it', async () => {
    const writer = freshStore('corrupt');
    const content = Buffer.from('the dataset split, as ingested');
    const ref = await writer.put(content);
    await weed.client.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: writer.blobKey(ref.sha256),
        Body: 'the dataset split, as ingesteD',
      }),
    );
    const reader = freshStore('corrupt');
    const err = await errorOf(reader.get(ref.sha256, 'dataset split'));
    expect(err.code).toBe('ARTIFACT_CORRUPT');
    expect(err.message).toContain(`s3://${BUCKET}/corrupt/blobs/${ref.sha256}`);
    expect(err.message).toContain('corella retrain');
    expect(err.details).toMatchObject({ expected: ref.sha256, kind: 'dataset split' });
    expect((await errorOf(reader.localPath(ref.sha256, 'model file'))).code).toBe('ARTIFACT_CORRUPT');
    // Nothing corrupt reached the cache.
    expect(await reader.cache.read(ref.sha256)).toBeUndefined();

    // Same size, wrong bytes: the put must hash the object, not trust its size.
    await writer.put(content);
    expect((await freshStore('corrupt').get(ref.sha256)).equals(content)).toBe(true);

    // A named entry edited behind its back fails its envelope checksum.
    await writer.putNamed('datasets/v1/manifest.json', '{"rows":10}');
    const key = writer.namedKey('datasets/v1/manifest.json');
    const raw = await (
      await weed.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))
    ).Body!.transformToString();
    await weed.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: raw.replace('10', '99') }));
    const named = await errorOf(reader.getNamed('datasets/v1/manifest.json'));
    expect(named.code).toBe('ARTIFACT_CORRUPT');
    expect(named.message).toContain('dataset manifest');
    expect(named.message).toContain(key);
  });

  it('rejects names that would escape the prefix and writes nothing', async () => {
    const store = freshStore('traversal');
    await store.putNamed('ok/entry', 'x');
    const before = await keys('');
    for (const bad of ['../escape', 'a/../../b', '/abs', 'a//b', '.hidden', 'a/./b']) {
      expect((await errorOf(store.putNamed(bad, 'y'))).code, bad).toBe('BAD_ARTIFACT_NAME');
      expect((await errorOf(store.getNamed(bad))).code, bad).toBe('BAD_ARTIFACT_NAME');
      expect((await errorOf(store.updateNamed(bad, () => 'z'))).code, bad).toBe('BAD_ARTIFACT_NAME');
    }
    expect((await errorOf(store.get('../../etc/passwd'))).code).toBe('BAD_ARTIFACT_NAME');
    expect((await errorOf(store.localPath('0'.repeat(63) + '/'))).code).toBe('BAD_ARTIFACT_NAME');
    expect(await keys('')).toEqual(before);
  });

  it('loses no update when two writers race on one pointer, and a stale conditional write is a typed conflict', async () => {
    const a = freshStore('race');
    const b = freshStore('race');
    const name = 'llm-features/m/k/index.json';
    const append = (who: string) => (cur: Buffer | undefined) =>
      JSON.stringify([...((cur ? JSON.parse(cur.toString()) : []) as string[]), who]);
    const per = 12;
    await Promise.all([
      (async () => {
        for (let i = 0; i < per; i++) await a.updateNamed(name, append(`a${i}`));
      })(),
      (async () => {
        for (let i = 0; i < per; i++) await b.updateNamed(name, append(`b${i}`));
      })(),
    ]);
    const final = JSON.parse((await a.getNamed(name))!.toString()) as string[];
    expect(final).toHaveLength(2 * per);
    expect(final.filter((x) => x.startsWith('a'))).toEqual(Array.from({ length: per }, (_, i) => `a${i}`));
    expect(final.filter((x) => x.startsWith('b'))).toEqual(Array.from({ length: per }, (_, i) => `b${i}`));

    // The primitive underneath: If-Match with an ETag another writer has since replaced, and
    // If-None-Match: * on an entry that exists, are both refused by the server.
    const seen = await a.getNamedVersion(name);
    await b.putNamed(name, '["b wrote over"]');
    const stale = await errorOf(a.putNamedIf(name, '["a"]', { etag: seen!.etag! }));
    expect(stale.code).toBe('ARTIFACT_CONFLICT');
    expect(stale.retryable).toBe(true);
    expect((await errorOf(a.putNamedIf(name, '["a"]', 'absent'))).code).toBe('ARTIFACT_CONFLICT');
    expect((await b.getNamed(name))!.toString()).toBe('["b wrote over"]');
    await a.putNamedIf('race/new-entry', '1', 'absent');
    expect((await errorOf(b.putNamedIf('race/new-entry', '2', 'absent'))).code).toBe('ARTIFACT_CONFLICT');
    expect((await a.getNamed('race/new-entry'))!.toString()).toBe('1');
  });
  it('keeps a non-UTF-8 named entry in the binary envelope: same bytes back, a flipped byte is ARTIFACT_CORRUPT', async () => {
    const writer = freshStore('binary-named');
    const body = Buffer.concat([Buffer.from([0xff, 0xfe]), randomBytes(450_000)]);
    const name = 'lora-frozen/m/k/e.bin';
    await writer.putNamed(name, body);
    const key = writer.namedKey(name);
    const got = await weed.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(got.ContentType).toBe('application/octet-stream');
    const raw = Buffer.from(await got.Body!.transformToByteArray());
    expect(raw.byteLength).toBe(48 + body.byteLength); // header + raw bytes, no base64
    const reader = freshStore('binary-named');
    expect((await reader.getNamed(name))!.equals(body)).toBe(true);
    raw[raw.length - 1] ^= 0x01;
    await weed.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: raw }));
    const e = await errorOf(reader.getNamed(name));
    expect(e.code).toBe('ARTIFACT_CORRUPT');
    expect(e.message).toContain(key);
  });
});
