/**
 * A write-ahead spool of JSON lines in numbered segment files (`<seq>.jsonl`), for the prediction log.
 *
 * Why these choices:
 * - `append` writes its line with one synchronous write(2): the line is in the kernel's page cache when the
 *   call returns, so a SIGKILLed process loses nothing it appended. fsync (what survives a power loss) runs
 *   in the background in batches, because an fsync per request would put disk latency on the request path.
 * - Progress is "rotate and delete": the consumer takes closed segments oldest first and deletes each one once
 *   every line of it is stored. A crash between storing and deleting replays the segment, which the
 *   consumer's idempotent keys turn into a no-op. No offset file can disagree with the data.
 * - A process never appends to a segment it did not create, so the only torn line (a kill in the middle of
 *   a write) is the last line of an old segment; reading skips it and counts it instead of failing.
 * - One process per spool directory, held by a pid lock file; a lock left by a dead process is taken over.
 */
import {
  close,
  closeSync,
  fstatSync,
  fsync,
  open,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CorellaError } from '../ml/errors.js';

const SEGMENT_RE = /^(\d{12})\.jsonl$/;
const LOCK_FILE = 'spool.lock';

export interface SpoolOptions {
  /** Background fsync period; default 50 ms. */
  fsyncIntervalMs?: number;
  /** The open segment is closed once it reaches this size, even while older segments wait; default 8 MiB. */
  maxSegmentBytes?: number;
}

export interface SpoolSegment {
  seq: number;
  path: string;
}

export interface SegmentContents {
  lines: string[];
  /** A last line without its newline (a write cut short by a kill): skipped. */
  tornBytes: number;
}

/**
 * Reads closed segments for the drainer into one Buffer kept from segment to segment, and decodes a line to
 * a string only when asked for it. Why: `Spool.read` makes the whole segment one string and splits it, and
 * while a drain round waits on Postgres that string (a large object: a segment holds everything appended
 * during the previous round, megabytes when the flusher is slow) and its lines outlive young-generation
 * collections and are promoted, which is what filled the flusher's old space between mark-compacts
 * (docs/serving.md). The Buffer's memory is outside the V8 heap and is reused; a line's string lives only
 * while its batch is decoded. Lines split at the newline byte, which never occurs inside a UTF-8 sequence,
 * so each line decodes exactly as the whole-file string's piece does.
 *
 * One segment at a time: `load` replaces the previous segment's contents.
 */
export class SegmentReader {
  private buf: Buffer = Buffer.alloc(0);
  private view: Buffer = this.buf;
  /** The byte offset of each line's newline. */
  private ends = new Int32Array(1024);
  private count = 0;
  private torn = 0;

  /** Lines of the loaded segment (the torn last line, if any, not counted). */
  get lineCount(): number {
    return this.count;
  }

  /** Bytes after the last newline: a last line cut short by a kill, skipped. */
  get tornBytes(): number {
    return this.torn;
  }

  load(segment: SpoolSegment): void {
    const fd = openSync(segment.path, 'r');
    let n = 0;
    try {
      const size = fstatSync(fd).size;
      if (this.buf.length < size) this.buf = Buffer.allocUnsafe(Math.max(size, 2 * this.buf.length));
      while (n < size) {
        const r = readSync(fd, this.buf, n, size - n, n);
        if (r === 0) break; // shorter than stat said: read what is there
        n += r;
      }
    } finally {
      closeSync(fd);
    }
    this.view = this.buf.subarray(0, n);
    this.count = 0;
    for (let i = this.view.indexOf(10); i !== -1; i = this.view.indexOf(10, i + 1)) {
      if (this.count === this.ends.length) {
        const grown = new Int32Array(this.ends.length * 2);
        grown.set(this.ends);
        this.ends = grown;
      }
      this.ends[this.count++] = i;
    }
    this.torn = n - (this.count === 0 ? 0 : this.ends[this.count - 1] + 1);
  }

  /** Line `i` (0-based) of the loaded segment, without its newline. */
  line(i: number): string {
    if (!(i >= 0 && i < this.count)) throw new RangeError(`line ${i} of ${this.count}`);
    const start = i === 0 ? 0 : this.ends[i - 1] + 1;
    return this.view.toString('utf8', start, this.ends[i]);
  }
}

function segmentName(seq: number): string {
  return `${String(seq).padStart(12, '0')}.jsonl`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function openForAppend(path: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, 'a', (e, fd) => (e ? reject(e) : resolve(fd))));
}

function countLines(path: string): number {
  const buf = readFileSync(path);
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

export class Spool {
  readonly dir: string;
  private readonly fsyncIntervalMs: number;
  private readonly maxSegmentBytes: number;
  private fd: number;
  private seq: number;
  private bytes = 0;
  private dirty = false;
  private syncing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Lines in segments that existed when the spool was opened (left by an earlier process). */
  readonly inherited: number;

  private constructor(dir: string, seq: number, inherited: number, opts: SpoolOptions) {
    this.dir = dir;
    this.seq = seq;
    this.inherited = inherited;
    this.fsyncIntervalMs = opts.fsyncIntervalMs ?? 50;
    this.maxSegmentBytes = opts.maxSegmentBytes ?? 8 * 1024 * 1024;
    this.fd = openSync(join(dir, segmentName(seq)), 'a');
    this.timer = setInterval(() => void this.sync(), this.fsyncIntervalMs);
    this.timer.unref();
  }

  /** Opens (creating) the directory, takes its lock and starts a new segment after any left behind. */
  static open(dir: string, opts: SpoolOptions = {}): Spool {
    mkdirSync(dir, { recursive: true });
    const lock = join(dir, LOCK_FILE);
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(lock, 'utf8').trim());
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && pidAlive(holder)) {
        throw new CorellaError('BAD_CONFIG', `spoolDir: ${dir} is in use by process ${holder}`, {
          details: { field: 'spoolDir', holder },
        });
      }
      writeFileSync(lock, String(process.pid)); // a dead process's lock: take it over
    }
    const old = Spool.listIn(dir);
    const inherited = old.reduce((n, s) => n + countLines(s.path), 0);
    const next = old.length ? old[old.length - 1].seq + 1 : 1;
    return new Spool(dir, next, inherited, opts);
  }

  static listIn(dir: string): SpoolSegment[] {
    return readdirSync(dir)
      .map((name) => SEGMENT_RE.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ seq: Number(m[1]), path: join(dir, m[0]) }))
      .sort((a, b) => a.seq - b.seq);
  }

  /** Appends one line (no newline inside). Synchronous: when it returns, a process kill cannot lose it. */
  append(line: string): void {
    if (this.closed) throw new Error('spool is closed');
    // The string straight to write(2): no Buffer object per request for the GC to collect. A regular file
    // takes the whole write; a short one (not seen in practice) is finished from a Buffer.
    const text = line + '\n';
    const length = Buffer.byteLength(text, 'utf8');
    let off = writeSync(this.fd, text, null, 'utf8');
    if (off < length) {
      const buf = Buffer.from(text, 'utf8');
      while (off < length) off += writeSync(this.fd, buf, off, length - off);
    }
    this.bytes += length;
    this.dirty = true;
  }

  /** The sequence number of the open segment (the one appends go to; every other segment is closed). */
  get openSeq(): number {
    return this.seq;
  }

  /** Bytes in the open segment. */
  get openBytes(): number {
    return this.bytes;
  }

  /** fsync the open segment if anything was written since the last one (never two at once). */
  sync(): Promise<void> {
    if (this.syncing) return this.syncing;
    if (!this.dirty || this.closed) return Promise.resolve();
    this.dirty = false;
    const fd = this.fd;
    this.syncing = new Promise<void>((resolve) => {
      fsync(fd, () => {
        this.syncing = undefined;
        resolve();
      });
    });
    return this.syncing;
  }

  /**
   * Closes the open segment when it holds anything and starts the next, so the consumer can take it. With
   * `onlyIfFull`, rotates only a segment past maxSegmentBytes (used while older segments still wait, so an
   * outage does not leave thousands of tiny files).
   */
  async rotate(opts: { onlyIfFull?: boolean } = {}): Promise<void> {
    if (this.closed || this.bytes === 0) return;
    if (opts.onlyIfFull && this.bytes < this.maxSegmentBytes) return;
    // Creating the next file and closing the old one run on libuv's pool, not on the calling (request)
    // thread: on ext4 they wait for the journal while fsyncs run (measured here: a synchronous open of a new
    // file, 20 a second beside fsyncs, p50 0.06 ms but p99 4.6 ms and max 15 ms, each a stall of every
    // request in flight). Appends meanwhile still go to the old segment, which stays open until the swap.
    const next = await openForAppend(join(this.dir, segmentName(this.seq + 1)));
    await this.syncing; // no fsync of the old fd may still be in flight when it is closed below
    const oldFd = this.fd;
    this.seq += 1;
    this.fd = next;
    this.bytes = 0;
    this.dirty = false;
    await new Promise<void>((resolve) => fsync(oldFd, () => resolve()));
    await new Promise<void>((resolve) => close(oldFd, () => resolve()));
  }

  /** Segments ready for the consumer (every one but the open segment), oldest first. */
  closedSegments(): SpoolSegment[] {
    return Spool.listIn(this.dir).filter((s) => s.seq !== this.seq);
  }

  /** How many closed segments wait, read without blocking the calling thread on the directory. */
  async closedSegmentCount(): Promise<number> {
    const names = await readdir(this.dir);
    return names.filter((n) => {
      const m = SEGMENT_RE.exec(n);
      return m !== null && Number(m[1]) !== this.seq;
    }).length;
  }

  /** Reads a closed segment; a torn last line is reported, not returned. */
  static read(segment: SpoolSegment): SegmentContents {
    const text = readFileSync(segment.path, 'utf8');
    const parts = text.split('\n');
    const tail = parts.pop() ?? '';
    return { lines: parts, tornBytes: Buffer.byteLength(tail) };
  }

  /** Deletes a segment whose every line is stored. */
  static remove(segment: SpoolSegment): void {
    try {
      unlinkSync(segment.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /** fsyncs and closes the open segment (deleted when empty) and releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    await this.syncing;
    this.closed = true;
    await new Promise<void>((resolve) => fsync(this.fd, () => resolve()));
    closeSync(this.fd);
    const path = join(this.dir, segmentName(this.seq));
    try {
      if (statSync(path).size === 0) unlinkSync(path);
    } catch {
      // already gone
    }
    rmSync(join(this.dir, LOCK_FILE), { force: true });
  }
}
