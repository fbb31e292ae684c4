import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, sha256File, sha256Hex } from './store.js';

const SHA256_RE = /^[0-9a-f]{64}$/;

/** 4 GiB: a dataset's splits plus a few GGUF models; CORELLA_ARTIFACT_CACHE_BYTES changes it. */
export const DEFAULT_CACHE_BYTES = 4 * 1024 ** 3;

/**
 * A bounded, least-recently-used local copy of content-addressed blobs fetched from a remote store, so a
 * worker reads each dataset split or model from object storage once, not once per activity.
 *
 * Trust rule: a hit is re-hashed on every read, exactly as the local store verifies every read. The cache
 * is on the worker's own disk, where a truncated copy (a full disk, a killed process) or a flipped byte is
 * as possible as in the store itself, and hashing costs far less than the fetch it saves. A hit that fails
 * its hash is not an error: the entry is dropped and the caller fetches again, because the cache is never
 * the source of truth.
 *
 * Entries are files named by their sha256; recency is the file's mtime, so the order survives restarts.
 * The bound is in bytes and is enforced after each insert by evicting the oldest entries; the entry just
 * inserted is never evicted, so one object larger than the whole bound still gets a local file (it is the
 * next to go). An evicted file that a library still has open (node-llama-cpp maps the model) stays readable
 * until closed: unlinking does not touch open files.
 */
export class BlobReadCache {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly tmpDir: string;
  /** sha256 → bytes, in least-recently-used first order (a Map iterates in insertion order). */
  private entries: Map<string, number> | undefined;
  private total = 0;
  private loading: Promise<void> | undefined;

  constructor(dir: string, maxBytes = DEFAULT_CACHE_BYTES) {
    if (!(Number.isFinite(maxBytes) && maxBytes > 0)) {
      throw new RangeError(`artifact cache size must be a positive number of bytes, got ${String(maxBytes)}`);
    }
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.tmpDir = join(dir, 'tmp');
  }

  /** Bytes held now (after the last eviction). */
  get bytes(): number {
    return this.total;
  }

  private async load(): Promise<Map<string, number>> {
    if (this.entries) return this.entries;
    this.loading ??= (async () => {
      await mkdir(this.tmpDir, { recursive: true, mode: PRIVATE_DIR_MODE });
      // Leftovers of writes a crash interrupted are never entries.
      for (const n of await readdir(this.tmpDir)) await rm(join(this.tmpDir, n), { force: true });
      const found: { sha: string; bytes: number; mtime: number }[] = [];
      for (const name of await readdir(this.dir)) {
        if (!SHA256_RE.test(name)) continue;
        const st = await stat(join(this.dir, name)).catch(() => undefined);
        if (st?.isFile()) found.push({ sha: name, bytes: st.size, mtime: st.mtimeMs });
      }
      found.sort((a, b) => a.mtime - b.mtime);
      const m = new Map<string, number>();
      for (const f of found) {
        m.set(f.sha, f.bytes);
        this.total += f.bytes;
      }
      this.entries = m;
    })();
    await this.loading;
    return this.entries!;
  }

  private pathOf(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new RangeError(`not a sha256: ${JSON.stringify(sha256)}`);
    return join(this.dir, sha256);
  }

  private async touch(sha256: string, bytes: number): Promise<void> {
    const m = await this.load();
    m.delete(sha256);
    m.set(sha256, bytes);
    const now = new Date();
    await utimes(this.pathOf(sha256), now, now).catch(() => undefined);
  }

  private async drop(sha256: string): Promise<void> {
    const m = await this.load();
    const bytes = m.get(sha256);
    if (bytes !== undefined) {
      m.delete(sha256);
      this.total -= bytes;
    }
    await rm(this.pathOf(sha256), { force: true });
  }

  /** The verified bytes of a cached blob, or undefined (not cached, or the copy was bad and is now gone). */
  async read(sha256: string): Promise<Buffer | undefined> {
    const m = await this.load();
    if (!m.has(sha256)) return undefined;
    let buf: Buffer;
    try {
      buf = await readFile(this.pathOf(sha256));
    } catch {
      await this.drop(sha256);
      return undefined;
    }
    if (sha256Hex(buf) !== sha256) {
      await this.drop(sha256);
      return undefined;
    }
    await this.touch(sha256, buf.byteLength);
    return buf;
  }

  /** The path of a verified cached blob, or undefined. */
  async path(sha256: string): Promise<string | undefined> {
    const m = await this.load();
    if (!m.has(sha256)) return undefined;
    const p = this.pathOf(sha256);
    const actual = await sha256File(p).catch(() => undefined);
    if (actual !== sha256) {
      await this.drop(sha256);
      return undefined;
    }
    await this.touch(sha256, m.get(sha256)!);
    return p;
  }

  /** A fresh path inside the cache's folder for a download in flight (same file system, so `adopt` renames). */
  async tmpPath(): Promise<string> {
    await this.load();
    return join(this.tmpDir, `${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  /** Takes a downloaded file whose hash the caller verified; returns its cached path. */
  async adopt(sha256: string, tmp: string, bytes: number): Promise<string> {
    const m = await this.load();
    const p = this.pathOf(sha256);
    await rename(tmp, p);
    const prev = m.get(sha256);
    if (prev !== undefined) this.total -= prev;
    m.delete(sha256);
    m.set(sha256, bytes);
    this.total += bytes;
    await this.evict(sha256);
    return p;
  }

  /** Caches verified bytes (write to a temp file, then rename: a crash never leaves a half entry). */
  async insert(sha256: string, data: Uint8Array): Promise<string> {
    const tmp = await this.tmpPath();
    await writeFile(tmp, data, { mode: PRIVATE_FILE_MODE });
    return this.adopt(sha256, tmp, data.byteLength);
  }

  private async evict(keep: string): Promise<void> {
    const m = await this.load();
    for (const [sha] of m) {
      if (this.total <= this.maxBytes) break;
      if (sha === keep) continue;
      await this.drop(sha);
    }
  }
}
