import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** What we remember about a service process we started, so a later start can find an orphan. */
export interface ProcessRecord {
  pid: number;
  port: number;
  uiPort?: number;
  startedAt: string;
}

export async function readProcessRecord(path: string): Promise<ProcessRecord | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ProcessRecord;
  } catch {
    return undefined;
  }
}

export async function writeProcessRecord(path: string, rec: ProcessRecord): Promise<void> {
  await writeFile(path, JSON.stringify(rec));
}

export async function removeProcessRecord(path: string): Promise<void> {
  await rm(path, { force: true });
}

/** Whether a process exists (EPERM: it does, owned by another user). The one liveness check of the launchers. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kernel start time of a process (clock ticks since boot): tells a live owner from a recycled pid. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Who owns something (a lock, a running server): a pid plus its start time, where the OS tells it. */
export interface ProcessMark {
  pid: number;
  startTime: string | undefined;
}

export async function selfMark(): Promise<ProcessMark> {
  return { pid: process.pid, startTime: await processStartTime(process.pid) };
}

/** Alive and the same process that wrote the mark (not a recycled pid). */
export async function markAlive(mark: ProcessMark): Promise<boolean> {
  if (!Number.isInteger(mark.pid) || mark.pid <= 0 || !isAlive(mark.pid)) return false;
  const now = await processStartTime(mark.pid);
  return mark.startTime === undefined || now === undefined || now === mark.startTime;
}

export interface CommandLine {
  /** The program (argv[0]). */
  program: string;
  /** Exact argv from /proc; from `ps`, the command split on spaces (so a path with spaces is split too). */
  argv: string[];
  /** The whole command line joined with spaces. */
  joined: string;
}

const HAS_PROC = process.platform === 'linux';

/**
 * A process's command line: /proc on Linux, `ps` elsewhere. macOS has no /proc, and without this a live
 * server would look dead there, lose its postmaster.pid to our stale-file cleanup, and postgres shuts down
 * when its lock file disappears.
 */
export async function processCommandLine(
  pid: number,
  source: 'proc' | 'ps' = HAS_PROC ? 'proc' : 'ps',
): Promise<CommandLine | undefined> {
  if (source === 'proc') {
    try {
      const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '');
      if (argv.length === 0) return undefined;
      return { program: argv[0], argv, joined: argv.join(' ') };
    } catch {
      return undefined;
    }
  }
  const joined = await execFileAsync('ps', ['-p', String(pid), '-o', 'command='], { timeout: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  if (joined === '') return undefined;
  const argv = joined.split(' ');
  return { program: argv[0], argv, joined };
}

export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !isAlive(pid);
}

/** SIGTERM, then SIGKILL after a grace period. */
export async function terminate(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitForExit(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitForExit(pid, 5_000);
}
