import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { CorellaError } from '../errors.js';

/** What a stored artifact is: its content hash is its identity. */
export interface ArtifactRef {
  sha256: string;
  bytes: number;
  uri: string;
}

/**
 * Content-addressed blob store. Small on purpose so an S3-compatible store can implement it later.
 * Named entries (`putNamed`/`getNamed`) are small mutable pointers, e.g. "latest checkpoint of run X".
 */
export interface ArtifactStore {
  put(data: Uint8Array | string): Promise<ArtifactRef>;
  putFile(path: string): Promise<ArtifactRef>;
  get(sha256: string): Promise<Buffer>;
  /** Local path of a verified artifact (for libraries that want a file). */
  localPath(sha256: string): Promise<string>;
  has(sha256: string): Promise<boolean>;
  putNamed(name: string, data: Uint8Array | string): Promise<void>;
  getNamed(name: string): Promise<Buffer | undefined>;
  deleteNamed(name: string): Promise<void>;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** Files under `<root>/<sha256>`; writes go to a temp file then rename, so a crash never leaves a half blob. */
export class FileArtifactStore implements ArtifactStore {
  readonly root: string;
  private readonly namedRoot: string;
  private readonly tmpRoot: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.namedRoot = join(this.root, 'named');
    this.tmpRoot = join(this.root, 'tmp');
  }

  uriFor(sha256: string): string {
    return `file://${this.blobPath(sha256)}`;
  }

  private blobPath(sha256: string): string {
    if (!SHA256_RE.test(sha256)) {
      throw new CorellaError('BAD_ARTIFACT_NAME', `not a sha256 artifact id: ${JSON.stringify(sha256)}`);
    }
    return join(this.root, sha256);
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

  private async tmpFile(): Promise<string> {
    await mkdir(this.tmpRoot, { recursive: true });
    return join(this.tmpRoot, `${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  private async writeAtomic(target: string, data: Uint8Array | string): Promise<void> {
    const tmp = await this.tmpFile();
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  }

  async put(data: Uint8Array | string): Promise<ArtifactRef> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const sha256 = sha256Hex(buf);
    const target = this.blobPath(sha256);
    if (!(await this.has(sha256))) {
      await mkdir(this.root, { recursive: true });
      await this.writeAtomic(target, buf);
    }
    return { sha256, bytes: buf.byteLength, uri: this.uriFor(sha256) };
  }

  async putFile(path: string): Promise<ArtifactRef> {
    const tmp = await this.tmpFile();
    const h = createHash('sha256');
    let bytes = 0;
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    await pipeline(createReadStream(path), hasher, createWriteStream(tmp));
    const sha256 = h.digest('hex');
    const target = this.blobPath(sha256);
    if (await this.has(sha256)) await rm(tmp, { force: true });
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

  async get(sha256: string): Promise<Buffer> {
    let buf: Buffer;
    try {
      buf = await readFile(this.blobPath(sha256));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new CorellaError(
          'ARTIFACT_NOT_FOUND',
          `artifact ${sha256} is not in the store at ${this.root}`,
        );
      }
      throw e;
    }
    const actual = sha256Hex(buf);
    if (actual !== sha256) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `artifact ${sha256} is corrupt: its content hashes to ${actual}`,
        {
          details: { expected: sha256, actual, bytes: buf.byteLength },
        },
      );
    }
    return buf;
  }

  async localPath(sha256: string): Promise<string> {
    const p = this.blobPath(sha256);
    let actual: string;
    try {
      actual = await sha256File(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new CorellaError(
          'ARTIFACT_NOT_FOUND',
          `artifact ${sha256} is not in the store at ${this.root}`,
        );
      }
      throw e;
    }
    if (actual !== sha256) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `artifact ${sha256} is corrupt: its content hashes to ${actual}`,
      );
    }
    return p;
  }

  async putNamed(name: string, data: Uint8Array | string): Promise<void> {
    const target = this.namedPath(name);
    await mkdir(resolve(target, '..'), { recursive: true });
    await this.writeAtomic(target, data);
  }

  async getNamed(name: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.namedPath(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async deleteNamed(name: string): Promise<void> {
    await rm(this.namedPath(name), { force: true });
  }
}
