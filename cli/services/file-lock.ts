import { open, readFile, rm } from 'node:fs/promises';
import { markAlive, selfMark, type ProcessMark } from './process-file.js';

/** The holder of a lock file; a bare pid is what `up.lock` held before it recorded start times. */
async function readHolder(path: string): Promise<ProcessMark | undefined> {
  try {
    const v: unknown = JSON.parse(await readFile(path, 'utf8'));
    if (typeof v === 'number') return { pid: v, startTime: undefined };
    return v as ProcessMark;
  } catch {
    return undefined;
  }
}

export interface FileLockOptions {
  /** How long to wait for a live holder to let go; 0 gives up at once. */
  waitMs: number;
  /** The error to throw when a live holder keeps the lock past `waitMs`. */
  busy: (holder: ProcessMark) => Error;
}

/**
 * An exclusive lock between processes: a file created with O_EXCL holding the owner's pid and kernel start
 * time. A lock whose owner is gone (SIGKILLed, or its pid recycled by another process) is taken over, so a
 * crash never leaves corella locked out. Resolves with the release function.
 */
export async function acquireFileLock(path: string, opts: FileLockOptions): Promise<() => Promise<void>> {
  const me = await selfMark();
  const deadline = Date.now() + opts.waitMs;
  for (;;) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(JSON.stringify(me));
      await fh.close();
      return async () => {
        await rm(path, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = await readHolder(path);
    // Our own pid can only be a leftover: callers in one process serialise themselves before taking it.
    if (holder === undefined || holder.pid === process.pid || !(await markAlive(holder))) {
      // Stale or half-written: remove only if still the same content (another process may have just
      // taken it over), then retry.
      const again = await readHolder(path);
      if (JSON.stringify(again) === JSON.stringify(holder)) await rm(path, { force: true });
      if (holder === undefined) await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    if (Date.now() >= deadline) throw opts.busy(holder);
    await new Promise((r) => setTimeout(r, 100));
  }
}
