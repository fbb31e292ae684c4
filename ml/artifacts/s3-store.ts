import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { CorellaError } from '../errors.js';
import { openNamed, sealedContentType, sealNamed } from './named-envelope.js';
import { BlobReadCache } from './read-cache.js';
import {
  hashingStream,
  namedKind,
  REPAIR_HINT,
  sha256File,
  sha256Hex,
  type ArtifactRef,
  type ArtifactStore,
  type NamedUpdate,
} from './store.js';

// Why this lives in ml/artifacts beside the local store rather than in a storage/ folder of its own: ml/
// code sees only the ArtifactStore interface, the ESLint wall of ml/ forbids exactly Temporal and the
// database (the SDK is neither), and the two stores share the envelope, hashing and naming rules, which
// must not drift apart. The factory that picks one (open-store.ts) is here for the same reason.

const SHA256_RE = /^[0-9a-f]{64}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/**
 * Parts of a multipart upload. 8 MiB is above S3's 5 MiB floor, and two in flight bound the memory an
 * upload holds (lib-storage buffers queueSize × partSize) on a worker that is also running a model.
 */
export const PART_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;
/** How often updateNamed re-reads and re-applies before it reports a conflict. */
const UPDATE_ATTEMPTS = 12;

export interface S3Location {
  bucket: string;
  /** '' or ending in '/'. */
  prefix: string;
}

/** `s3://bucket/prefix` → its parts; a clear error naming CORELLA_ARTIFACTS otherwise. */
export function parseS3Url(url: string, field = 'CORELLA_ARTIFACTS'): S3Location {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  // Bucket names per S3's rules: 3-63 of lower-case letters, digits, dots and hyphens.
  if (!m || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(m[1])) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${field} must be s3://bucket[/prefix], got ${JSON.stringify(url)}`,
      {
        details: { field, value: url },
      },
    );
  }
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix !== '' && (!NAME_RE.test(prefix) || prefix.split('/').some((p) => p === '..' || p === '.'))) {
    throw new CorellaError('BAD_CONFIG', `${field} has a bad prefix ${JSON.stringify(prefix)}`, {
      details: { field, value: url },
    });
  }
  return { bucket: m[1], prefix: prefix === '' ? '' : `${prefix}/` };
}

/**
 * Client settings from the standard AWS variables. AWS_ENDPOINT_URL(_S3) names a non-AWS server (SeaweedFS,
 * MinIO, Ceph); those serve buckets under the path (`host/bucket/key`), not as `bucket.host`, so a custom
 * endpoint implies path-style unless AWS_S3_FORCE_PATH_STYLE=false. Credentials and region come from the
 * SDK's usual chain (env, profile, instance role); a region is still required by the signer, hence the
 * us-east-1 default. Checksums are computed only when an operation requires them: several S3-compatible
 * servers reject the SDK's newer default trailing checksums, and every read here verifies the sha256 anyway.
 */
export function s3ClientConfigFromEnv(env: NodeJS.ProcessEnv = process.env): S3ClientConfig {
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  const pathStyle = env.AWS_S3_FORCE_PATH_STYLE;
  // Keys in the given environment are used as the SDK's env provider would use them from process.env (the
  // environment may be another process's, e.g. the one a worker is started with); otherwise the SDK's chain.
  const key = env.AWS_ACCESS_KEY_ID;
  const secret = env.AWS_SECRET_ACCESS_KEY;
  return {
    ...(key && secret
      ? {
          credentials: {
            accessKeyId: key,
            secretAccessKey: secret,
            ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
          },
        }
      : {}),
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint ? { endpoint } : {}),
    forcePathStyle: pathStyle !== undefined ? pathStyle === 'true' || pathStyle === '1' : Boolean(endpoint),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}

function statusOf(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function isMissing(e: unknown): boolean {
  const name = (e as { name?: string }).name;
  return statusOf(e) === 404 || name === 'NoSuchKey' || name === 'NotFound';
}

/**
 * 412: the If-Match/If-None-Match precondition failed (another writer got there first). 409: AWS's
 * ConditionalRequestConflict, two conditional writes of one key in flight at once. Both mean "re-read".
 */
function isConflict(e: unknown): boolean {
  const s = statusOf(e);
  return s === 412 || s === 409;
}

export interface S3PutOptions {
  /** Bytes sent so far, per part (lib-storage's progress events). */
  onProgress?: (sentBytes: number) => void;
  signal?: AbortSignal;
}

/**
 * The artifact store on S3-compatible object storage, with the local store's semantics: blobs under
 * `<prefix>blobs/<sha256>`, every read verified against the hash, and a put of an existing hash verifying
 * the stored object and rewriting it when it is corrupt. Named entries live under `<prefix>named/<name>`, in
 * the same checksummed envelope as on disk. Reads of blobs go through a local LRU cache (read-cache.ts);
 * named entries are mutable and always read from the server.
 */
export class S3ArtifactStore implements ArtifactStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  readonly cache: BlobReadCache;
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(opts: { url: string; cache: BlobReadCache; client?: S3Client; clientConfig?: S3ClientConfig }) {
    const loc = parseS3Url(opts.url);
    this.bucket = loc.bucket;
    this.prefix = loc.prefix;
    this.client = opts.client ?? new S3Client(opts.clientConfig ?? s3ClientConfigFromEnv());
    this.cache = opts.cache;
  }

  blobKey(sha256: string): string {
    if (!SHA256_RE.test(sha256)) {
      throw new CorellaError('BAD_ARTIFACT_NAME', `not a sha256 artifact id: ${JSON.stringify(sha256)}`);
    }
    return `${this.prefix}blobs/${sha256}`;
  }

  namedKey(name: string): string {
    if (!NAME_RE.test(name) || name.split('/').some((p) => p === '..' || p === '.')) {
      throw new CorellaError(
        'BAD_ARTIFACT_NAME',
        `artifact name may not escape the store: ${JSON.stringify(name)}`,
        { details: { field: 'name', name } },
      );
    }
    return `${this.prefix}named/${name}`;
  }

  uriFor(sha256: string): string {
    return `s3://${this.bucket}/${this.blobKey(sha256)}`;
  }

  private corrupt(sha256: string, actual: string, what: string | undefined, bytes?: number): CorellaError {
    const key = this.uriFor(sha256);
    return new CorellaError(
      'ARTIFACT_CORRUPT',
      `${what ?? 'artifact'} ${sha256} is corrupt: the object ${key} hashes to ${actual}. To repair it, ${REPAIR_HINT}`,
      { details: { key, expected: sha256, actual, bytes, kind: what ?? null, repair: REPAIR_HINT } },
    );
  }

  private notFound(sha256: string, what: string | undefined): CorellaError {
    const key = this.uriFor(sha256);
    return new CorellaError(
      'ARTIFACT_NOT_FOUND',
      `${what ?? 'artifact'} ${sha256} is not in the store: no ${key}`,
      {
        details: { key, kind: what ?? null, repair: REPAIR_HINT },
      },
    );
  }

  private async head(key: string): Promise<{ bytes: number; etag?: string } | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { bytes: r.ContentLength ?? 0, etag: r.ETag };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** The object's bytes streamed through sha256; undefined when absent. */
  private async remoteHash(key: string): Promise<string | undefined> {
    let body: Readable;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      body = r.Body as Readable;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    const h = createHash('sha256');
    await pipeline(body, h);
    return h.digest('hex');
  }

  /**
   * Whether the server already holds an intact copy. Like the local store's holdsIntact: a size mismatch or
   * a wrong hash means corrupt, and the caller rewrites it. The size check first spares a download.
   */
  private async holdsIntact(sha256: string, bytes: number): Promise<boolean> {
    const key = this.blobKey(sha256);
    const h = await this.head(key);
    if (!h || h.bytes !== bytes) return false;
    return (await this.remoteHash(key)) === sha256;
  }

  /**
   * After an upload, the object must have the size we sent: a server that acknowledged a truncated write
   * would otherwise leave a partial object under a valid hash until the next read noticed.
   */
  private async checkUploaded(sha256: string, bytes: number): Promise<void> {
    const h = await this.head(this.blobKey(sha256));
    if (h?.bytes !== bytes) {
      throw new CorellaError(
        'SERVICE_UNAVAILABLE',
        `upload of ${this.uriFor(sha256)} ended with ${h ? `${h.bytes} bytes` : 'no object'}, ${bytes} were sent`,
        { retryable: true, details: { key: this.uriFor(sha256), bytes, stored: h?.bytes ?? null } },
      );
    }
  }

  private async upload(key: string, body: Buffer | Readable, opts: S3PutOptions = {}): Promise<void> {
    // lib-storage sends one PutObject below a part's size and a multipart upload above it; a multipart
    // upload that fails is aborted (leavePartsOnError: false), and S3 makes the object visible only on
    // CompleteMultipartUpload, so a failure never leaves a partial object under the key.
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body, ContentType: 'application/octet-stream' },
      partSize: PART_BYTES,
      queueSize: PARTS_IN_FLIGHT,
      leavePartsOnError: false,
    });
    if (opts.onProgress) upload.on('httpUploadProgress', (p) => opts.onProgress?.(p.loaded ?? 0));
    const onAbort = (): void => void upload.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  async put(data: Uint8Array | string, opts: S3PutOptions = {}): Promise<ArtifactRef> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    const sha256 = sha256Hex(buf);
    if (!(await this.holdsIntact(sha256, buf.byteLength))) {
      await this.upload(this.blobKey(sha256), buf, opts);
      await this.checkUploaded(sha256, buf.byteLength);
    }
    return { sha256, bytes: buf.byteLength, uri: this.uriFor(sha256) };
  }

  /** The file is read twice (hash, then upload): the key is the hash, so it must be known before sending. */
  async putFile(path: string, opts: S3PutOptions = {}): Promise<ArtifactRef> {
    const [sha256, st] = await Promise.all([sha256File(path), stat(path)]);
    if (!(await this.holdsIntact(sha256, st.size))) {
      await this.upload(this.blobKey(sha256), createReadStream(path), opts);
      await this.checkUploaded(sha256, st.size);
    }
    return { sha256, bytes: st.size, uri: this.uriFor(sha256) };
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.head(this.blobKey(sha256))) !== undefined;
  }

  async sizeOf(sha256: string): Promise<number | undefined> {
    return (await this.head(this.blobKey(sha256)))?.bytes;
  }

  async get(sha256: string, what?: string): Promise<Buffer> {
    const key = this.blobKey(sha256);
    const cached = await this.cache.read(sha256);
    if (cached) return cached;
    let buf: Buffer;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      buf = Buffer.from(await r.Body!.transformToByteArray());
    } catch (e) {
      if (isMissing(e)) throw this.notFound(sha256, what);
      throw e;
    }
    const actual = sha256Hex(buf);
    if (actual !== sha256) throw this.corrupt(sha256, actual, what, buf.byteLength);
    await this.cache.insert(sha256, buf);
    return buf;
  }

  /** Downloads into the cache (streamed and hashed on the way), once per sha256 even when asked concurrently. */
  async localPath(sha256: string, what?: string): Promise<string> {
    const key = this.blobKey(sha256);
    const hit = await this.cache.path(sha256);
    if (hit) return hit;
    const running = this.inflight.get(sha256);
    if (running) return running;
    const p = this.download(key, sha256, what).finally(() => this.inflight.delete(sha256));
    this.inflight.set(sha256, p);
    return p;
  }

  private async download(key: string, sha256: string, what: string | undefined): Promise<string> {
    let body: Readable;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      body = r.Body as Readable;
    } catch (e) {
      if (isMissing(e)) throw this.notFound(sha256, what);
      throw e;
    }
    const tmp = await this.cache.tmpPath();
    const hasher = hashingStream();
    try {
      await pipeline(body, hasher.stream, createWriteStream(tmp, { mode: 0o600 }));
      const { sha256: actual, bytes } = hasher.result();
      if (actual !== sha256) throw this.corrupt(sha256, actual, what, bytes);
      return await this.cache.adopt(sha256, tmp, bytes);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Bytes and ETag of a named entry, verified against its envelope; undefined when absent. */
  async getNamedVersion(name: string): Promise<{ body: Buffer; etag: string | undefined } | undefined> {
    const key = this.namedKey(name);
    let raw: Buffer;
    let etag: string | undefined;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      raw = Buffer.from(await r.Body!.transformToByteArray());
      etag = r.ETag;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    const opened = openNamed(raw);
    if (opened.ok) return { body: opened.body, etag };
    const kind = namedKind(name);
    const uri = `s3://${this.bucket}/${key}`;
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${kind} ${name} is corrupt: the object ${uri} ${opened.reason}. To repair it, ${REPAIR_HINT}`,
      { details: { key: uri, name, kind, reason: opened.reason, repair: REPAIR_HINT } },
    );
  }

  async getNamed(name: string): Promise<Buffer | undefined> {
    return (await this.getNamedVersion(name))?.body;
  }

  /** Unconditional replace, as the local store's putNamed (last writer wins); see updateNamed for races. */
  async putNamed(name: string, data: Uint8Array | string): Promise<void> {
    const sealed = sealNamed(data);
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.namedKey(name),
        Body: sealed,
        ContentType: sealedContentType(sealed),
      }),
    );
  }

  /**
   * One conditional write: `expect` 'absent' sends If-None-Match: * (create only), an ETag sends If-Match
   * (replace only what was read). Throws ARTIFACT_CONFLICT (retryable) when the server refuses it because
   * another writer came first.
   */
  async putNamedIf(
    name: string,
    data: Uint8Array | string,
    expect: 'absent' | { etag: string },
  ): Promise<void> {
    const sealed = sealNamed(data);
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.namedKey(name),
          Body: sealed,
          ContentType: sealedContentType(sealed),
          ...(expect === 'absent' ? { IfNoneMatch: '*' } : { IfMatch: expect.etag }),
        }),
      );
    } catch (e) {
      if (isConflict(e)) {
        throw new CorellaError(
          'ARTIFACT_CONFLICT',
          `${namedKind(name)} ${name} was changed by another writer (${expect === 'absent' ? 'it exists already' : `its ETag is no longer ${expect.etag}`})`,
          { retryable: true, details: { name, key: this.namedKey(name), status: statusOf(e) }, cause: e },
        );
      }
      throw e;
    }
  }

  async deleteNamed(name: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.namedKey(name) }));
  }

  /**
   * Optimistic concurrency: read the entry and its ETag, apply `update`, write conditionally; on a conflict
   * re-read and re-apply, with a jittered backoff so racing writers spread out. A server that ignores the
   * conditional headers (see docs/distributed.md) makes this last-writer-wins, like putNamed.
   */
  async updateNamed(name: string, update: NamedUpdate): Promise<Buffer | undefined> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.getNamedVersion(name);
      const next = update(current?.body);
      if (next === undefined) return current?.body;
      try {
        await this.putNamedIf(name, next, current?.etag ? { etag: current.etag } : 'absent');
        return Buffer.from(typeof next === 'string' ? Buffer.from(next, 'utf8') : next);
      } catch (e) {
        if (!(e instanceof CorellaError && e.code === 'ARTIFACT_CONFLICT') || attempt >= UPDATE_ATTEMPTS)
          throw e;
        await new Promise((r) => setTimeout(r, Math.min(1000, 10 * 2 ** attempt) * Math.random()));
      }
    }
  }
}
