import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireFileLock } from '../../../cli/services/file-lock.js';
import { processStartTime } from '../../../cli/services/process-file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corella-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const busy = (holder: { pid: number }) => new Error(`held by ${holder.pid}`);

/** A pid that was alive a moment ago and is not any more. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  const pid = child.pid!;
  await new Promise((r) => child.once('exit', r));
  return pid;
}

describe('acquireFileLock (the one lock of up.lock and the Postgres start lock)', () => {
  it('is exclusive while its holder lives, and free again once released', async () => {
    const path = join(dir, 'a.lock');
    const parent = process.ppid; // alive for the whole test, and not us
    await writeFile(path, JSON.stringify({ pid: parent, startTime: await processStartTime(parent) }));
    await expect(acquireFileLock(path, { waitMs: 0, busy })).rejects.toThrow(`held by ${parent}`);
    await rm(path);
    const release = await acquireFileLock(path, { waitMs: 0, busy });
    expect(JSON.parse(await readFile(path, 'utf8'))).toMatchObject({ pid: process.pid });
    await release();
    await (
      await acquireFileLock(path, { waitMs: 0, busy })
    )();
  });

  it('takes over a lock whose holder is dead, a recycled pid, and the bare-pid format of old up.lock files', async () => {
    const path = join(dir, 'b.lock');
    for (const stale of [
      JSON.stringify({ pid: await deadPid(), startTime: undefined }),
      // The parent's pid with another start time: the pid was reused by an unrelated process.
      JSON.stringify({ pid: process.ppid, startTime: '1' }),
      String(await deadPid()),
    ]) {
      await writeFile(path, stale);
      const release = await acquireFileLock(path, { waitMs: 0, busy });
      expect(JSON.parse(await readFile(path, 'utf8')).pid).toBe(process.pid);
      await release();
    }
  });

  it('a bare pid of a live process still holds the lock', async () => {
    const path = join(dir, 'c.lock');
    await writeFile(path, String(process.ppid));
    await expect(acquireFileLock(path, { waitMs: 0, busy })).rejects.toThrow(`held by ${process.ppid}`);
  });

  it('waits up to waitMs for a live holder to let go', async () => {
    const path = join(dir, 'd.lock');
    await writeFile(
      path,
      JSON.stringify({ pid: process.ppid, startTime: await processStartTime(process.ppid) }),
    );
    setTimeout(() => void rm(path), 300);
    const release = await acquireFileLock(path, { waitMs: 10_000, busy });
    await release();
  });
});
