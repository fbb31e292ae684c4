import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CorellaError } from '../../ml/errors.js';
import { Spool } from '../../serve/spool.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'corella-spool-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('Spool', () => {
  it('hands out closed segments in order and keeps the open one for appends', async () => {
    const dir = tempDir();
    const s = Spool.open(dir);
    expect(s.closedSegments()).toEqual([]);
    s.append('{"a":1}');
    s.append('{"a":2}');
    await s.rotate();
    s.append('{"a":3}');
    const closed = s.closedSegments();
    expect(closed).toHaveLength(1);
    expect(Spool.read(closed[0])).toEqual({ lines: ['{"a":1}', '{"a":2}'], tornBytes: 0 });
    // Nothing new since the rotation but a line: a second rotation closes it; an empty one does nothing.
    await s.rotate();
    await s.rotate();
    expect(s.closedSegments().map((c) => Spool.read(c).lines)).toEqual([['{"a":1}', '{"a":2}'], ['{"a":3}']]);
    Spool.remove(closed[0]);
    expect(s.closedSegments()).toHaveLength(1);
    await s.close();
  });

  it('rotates a segment only when full while older ones wait', async () => {
    const s = Spool.open(tempDir(), { maxSegmentBytes: 20 });
    s.append('0123456789');
    await s.rotate({ onlyIfFull: true });
    expect(s.closedSegments()).toHaveLength(0);
    s.append('0123456789');
    await s.rotate({ onlyIfFull: true });
    expect(s.closedSegments()).toHaveLength(1);
    await s.close();
  });

  it('a reopened spool counts what an earlier process left, never appends to it, and skips a torn last line', async () => {
    const dir = tempDir();
    const first = Spool.open(dir);
    first.append('one');
    first.append('two');
    await first.close();
    // A kill in the middle of a write: the last line has no newline.
    const [left] = Spool.listIn(dir);
    appendFileSync(left.path, '{"half');
    const second = Spool.open(dir);
    expect(second.inherited).toBe(2);
    second.append('three');
    const closed = second.closedSegments();
    expect(closed.map((c) => c.seq)).toEqual([left.seq]);
    expect(Spool.read(closed[0])).toEqual({ lines: ['one', 'two'], tornBytes: 6 });
    await second.close();
  });

  it('an empty open segment is removed at close', async () => {
    const dir = tempDir();
    const s = Spool.open(dir);
    await s.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('one process per directory: a live holder is refused, a dead one taken over', async () => {
    const dir = tempDir();
    const s = Spool.open(dir);
    // Our own pid is the holder here, so fake another live process: pid 1 always exists.
    await s.close();
    writeFileSync(join(dir, 'spool.lock'), '1');
    let error: unknown;
    try {
      Spool.open(dir);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CorellaError);
    expect((error as CorellaError).message).toContain('spoolDir');
    // A process that has exited: its lock is stale.
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    writeFileSync(join(dir, 'spool.lock'), dead.stdout.trim());
    const taken = Spool.open(dir);
    taken.append('x');
    await taken.close();
  });
});
