import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { CorellaError } from '../errors.js';
import { openNamed, sealNamed } from './named-envelope.js';

/** What a stored artifact is: its content hash is its identity. */
export interface ArtifactRef {
  sha256: string;
  bytes: number;
  uri: string;
}

/**
 * What `updateNamed` does with the entry's current bytes (undefined when absent): the new bytes, or
 * undefined to leave the entry as it is.
 */
export type NamedUpdate = (current: Buffer | undefined) => Uint8Array | string | undefined;

/**
 * Content-addressed blob store: FileArtifactStore (a local folder) or S3ArtifactStore (s3-store.ts).
 * Named entries (`putNamed`/`getNamed`) are small mutable pointers, e.g. "latest checkpoint of run X".
 * `what` (optional) says what kind of object the caller expects, so a corrupt read can name it.
 */
export interface ArtifactStore {
  /** Where blob `sha256` lives, as recorded in the registry (file://… or s3://…). */
  uriFor(sha256: string): string;
  put(data: Uint8Array | string): Promise<ArtifactRef>;
  putFile(path: string): Promise<ArtifactRef>;
  get(sha256: string, what?: string): Promise<Buffer>;
  /** Local path of a verified artifact (for libraries that want a file). */
  localPath(sha256: string, what?: string): Promise<string>;
  has(sha256: string): Promise<boolean>;
  /** The stored size of blob `sha256` (undefined when absent), without reading or verifying it. */
  sizeOf(sha256: string): Promise<number | undefined>;
  putNamed(name: string, data: Uint8Array | string): Promise<void>;
  getNamed(name: string): Promise<Buffer | undefined>;
  deleteNamed(name: string): Promise<void>;
  /**
   * Read-modify-write of a named entry that loses no concurrent update: when another writer changed the
   * entry in between, `update` runs again on the newer bytes. Returns the bytes now stored (undefined when
   * absent and left so). Throws ARTIFACT_CONFLICT when it keeps losing the race.
   */
  updateNamed(name: string, update: NamedUpdate): Promise<Buffer | undefined>;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/**
 * The store holds workflow inputs, model weights and served data: private to the user running corella,
 * whatever the umask of the process that happens to write first.
 */
export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** What a corrupt file's message tells the user to do; writing the same content again rewrites it. */
export const REPAIR_HINT =
  're-run the retrain (`corella retrain --wait` or `corella up` with the same data and config) or the ingestion that produced it: writing the same content again verifies and rewrites the file';

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** A named entry's kind, from the naming conventions of its writers (ml/data, ml/crm, ml/corella, ml/llm). */
export function namedKind(name: string): string {
  if (name.startsWith('datasets/')) return 'dataset manifest';
  if (name.startsWith('llm-features/')) return 'LLM feature cache index';
  if (/checkpoint|\/crm$|\/latest$/.test(name)) return 'training checkpoint pointer';
  return 'named pointer';
}

/** A pass-through stream that hashes and counts what flows through it: both stores stream files this way. */
export function hashingStream(): { stream: Transform; result(): { sha256: string; bytes: number } } {
  const h = createHash('sha256');
  let bytes = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  return { stream, result: () => ({ sha256: h.digest('hex'), bytes }) };
}

function corrupt(path: string, sha256: string, actual: string, what: string | undefined, bytes?: number) {
  return new CorellaError(
    'ARTIFACT_CORRUPT',
    `${what ?? 'artifact'} ${sha256} is corrupt: the file ${path} hashes to ${actual}. To repair it, ${REPAIR_HINT}`,
    { details: { path, expected: sha256, actual, bytes, kind: what ?? null, repair: REPAIR_HINT } },
  );
}

/** Files under `<root>/<sha256>`; writes go to a temp file then rename, so a crash never leaves a half blob. */
export class FileArtifactStore implements ArtifactStore {
  readonly root: string;
  private readonly namedRoot: string;
  private readonly tmpRoot: string;
  private rootPrivate = false;

  constructor(root: string) {
    this.root = resolve(root);
    this.namedRoot = join(this.root, 'named');
    this.tmpRoot = join(this.root, 'tmp');
  }

  uriFor(sha256: string): string {
    return `file://${this.blobPath(sha256)}`;
  }

  /** Where the blob lives (whether or not it exists). */
  blobPath(sha256: string): string {
    if (!SHA256_RE.test(sha256)) {
      throw new CorellaError('BAD_ARTIFACT_NAME', `not a sha256 artifact id: ${JSON.stringify(sha256)}`);
    }
    return join(this.root, sha256);
  }

  /** The folder of named entries (pointers and manifests), for tools that walk it (gc). */
  get namedDir(): string {
    return this.namedRoot;
  }

  /** The folder of in-flight writes. */
  get tmpDir(): string {
    return this.tmpRoot;
  }

  private namedPath(name: string): string {
    if (!NAME_RE.test(name) || name.split('/').some((p) => p === '..' || p === '.')) {
      throw new CorellaError(
        'BAD_ARTIFACT_NAME',
        `artifact name may not escape the store: ${JSON.stringify(name)}`,
      );
    }
    const p = resolve(this.namedRoot, name);
    if (!p.startsWith(this.namedRoot + sep)) {
      throw new CorellaError(
        'BAD_ARTIFACT_NAME',
        `artifact name may not escape the store: ${JSON.stringify(name)}`,
      );
    }
    return p;
  }

  private async privateDir(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
    // mkdir's mode applies only to the folders it creates: a store made by older code keeps its modes, so
    // its root is tightened once per process (the root alone gates access to everything below it).
    if (dir === this.root && !this.rootPrivate) {
      await chmod(dir, PRIVATE_DIR_MODE).catch(() => undefined);
      this.rootPrivate = true;
    }
  }

  private async tmpFile(): Promise<string> {
    await this.privateDir(this.root);
    await this.privateDir(this.tmpRoot);
    return join(this.tmpRoot, `${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  private async writeAtomic(target: string, data: Uint8Array | string): Promise<void> {
    const tmp = await this.tmpFile();
    const fh = await open(tmp, 'w', PRIVATE_FILE_MODE);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  }

  /**
   * Whether `target` already holds content hashing to `sha256`. A file that does not is corrupt (a flipped
   * byte, a truncated copy): the caller rewrites it, which is how re-ingesting or retraining heals the store.
   * A good file's mtime is refreshed, because gc keeps young blobs and a writer that found its blob already
   * there is about to reference it.
   */
  private async holdsIntact(target: string, sha256: string): Promise<boolean> {
    let actual: string;
    try {
      actual = await sha256File(target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    if (actual !== sha256) return false;
    const now = new Date();
    await utimes(target, now, now).catch(() => undefined);
    return true;
  }

  async put(data: Uint8Array | string): Promise<ArtifactRef> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const sha256 = sha256Hex(buf);
    const target = this.blobPath(sha256);
    if (!(await this.holdsIntact(target, sha256))) await this.writeAtomic(target, buf);
    return { sha256, bytes: buf.byteLength, uri: this.uriFor(sha256) };
  }

  async putFile(path: string): Promise<ArtifactRef> {
    const tmp = await this.tmpFile();
    const hasher = hashingStream();
    await pipeline(
      createReadStream(path),
      hasher.stream,
      createWriteStream(tmp, { mode: PRIVATE_FILE_MODE }),
    );
    const { sha256, bytes } = hasher.result();
    const target = this.blobPath(sha256);
    if (await this.holdsIntact(target, sha256)) await rm(tmp, { force: true });
    else await rename(tmp, target);
    return { sha256, bytes, uri: this.uriFor(sha256) };
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await stat(this.blobPath(sha256));
      return true;
    } catch {
      return false;
    }
  }

  async sizeOf(sha256: string): Promise<number | undefined> {
    try {
      return (await stat(this.blobPath(sha256))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private notFound(sha256: string, what: string | undefined): CorellaError {
    return new CorellaError(
      'ARTIFACT_NOT_FOUND',
      `${what ?? 'artifact'} ${sha256} is not in the store at ${this.root}`,
      { details: { path: this.blobPath(sha256), kind: what ?? null, repair: REPAIR_HINT } },
    );
  }

  async get(sha256: string, what?: string): Promise<Buffer> {
    const path = this.blobPath(sha256);
    let buf: Buffer;
    try {
      buf = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw this.notFound(sha256, what);
      throw e;
    }
    const actual = sha256Hex(buf);
    if (actual !== sha256) throw corrupt(path, sha256, actual, what, buf.byteLength);
    return buf;
  }

  async localPath(sha256: string, what?: string): Promise<string> {
    const p = this.blobPath(sha256);
    let actual: string;
    try {
      actual = await sha256File(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw this.notFound(sha256, what);
      throw e;
    }
    if (actual !== sha256) throw corrupt(p, sha256, actual, what);
    return p;
  }

  async putNamed(name: string, data: Uint8Array | string): Promise<void> {
    const target = this.namedPath(name);
    await this.privateDir(this.root);
    await this.privateDir(resolve(target, '..'));
    await this.writeAtomic(target, sealNamed(data));
  }

  /** The entry's bytes as written, verified against the checksum it carries (entries by older code have none). */
  async getNamed(name: string): Promise<Buffer | undefined> {
    const path = this.namedPath(name);
    return this.openNamedFile(name, path, await readAbsent(() => readFile(path)));
  }

  /**
   * `getNamed` without an await, for callers inside synchronous tfjs code (a bounded frozen-output cache
   * reading an evicted entry back): the same name check, envelope check and errors.
   */
  getNamedSync(name: string): Buffer | undefined {
    const path = this.namedPath(name);
    let raw: Buffer | undefined;
    try {
      raw = readFileSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return this.openNamedFile(name, path, raw);
  }

  private openNamedFile(name: string, path: string, raw: Buffer | undefined): Buffer | undefined {
    if (raw === undefined) return undefined;
    const opened = openNamed(raw);
    if (opened.ok) return opened.body;
    const kind = namedKind(name);
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${kind} ${name} is corrupt: the file ${path} ${opened.reason}. To repair it, ${REPAIR_HINT}`,
      { details: { path, name, kind, reason: opened.reason, repair: REPAIR_HINT } },
    );
  }

  async deleteNamed(name: string): Promise<void> {
    await rm(this.namedPath(name), { force: true });
  }

  /**
   * A local folder has no compare-and-swap, so writers of one entry take turns through a lock file created
   * with O_EXCL (atomic on local file systems). A lock older than LOCK_STALE_MS belongs to a writer that
   * died between creating and removing it: it is broken rather than waited on forever.
   */
  async updateNamed(name: string, update: NamedUpdate): Promise<Buffer | undefined> {
    const target = this.namedPath(name);
    await this.privateDir(this.root);
    await this.privateDir(resolve(target, '..'));
    const lock = `${target}.lock`;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        await (await open(lock, 'wx', PRIVATE_FILE_MODE)).close();
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const st = await stat(lock).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > LOCK_STALE_MS) await rm(lock, { force: true });
        else if (Date.now() > deadline)
          throw new CorellaError('ARTIFACT_CONFLICT', `${namedKind(name)} ${name} stayed locked by ${lock}`, {
            retryable: true,
            details: { name, lock },
          });
        else await new Promise((r) => setTimeout(r, 10 + Math.random() * 40));
      }
    }
    try {
      const current = await this.getNamed(name);
      const next = update(current);
      if (next === undefined) return current;
      await this.writeAtomic(target, sealNamed(next));
      return Buffer.from(typeof next === 'string' ? Buffer.from(next, 'utf8') : next);
    } finally {
      await rm(lock, { force: true });
    }
  }
}

const LOCK_WAIT_MS = 30_000;
const LOCK_STALE_MS = 60_000;

/** The file's bytes, or undefined when it does not exist. */
async function readAbsent(read: () => Promise<Buffer>): Promise<Buffer | undefined> {
  try {
    return await read();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
