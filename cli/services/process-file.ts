import { readFile, rm, writeFile } from 'node:fs/promises';

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

/** The command line of a live process (Linux), to check that a recorded pid is still ours. */
export async function commandLine(pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return undefined;
  }
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
