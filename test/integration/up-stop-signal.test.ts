import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../cli/services/process-file.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';

async function pidIn(file: string, read: (text: string) => number): Promise<number | undefined> {
  return existsSync(file) ? read(await readFile(file, 'utf8')) : undefined;
}
const postmasterPid = (home: string) =>
  pidIn(join(home, 'pg', 'postmaster.pid'), (t) => Number(t.split('\n')[0]));
const temporalPid = (home: string) =>
  pidIn(join(home, 'temporal', 'server.json'), (t) => (JSON.parse(t) as { pid: number }).pid);

/**
 * `corella up` hears SIGTERM from before it starts its services. Before, a SIGTERM while Postgres and the
 * Temporal dev server were starting killed it with 143 and left both running with nobody to stop them.
 */
describe('corella up: SIGTERM while the stack is starting stops what it started', () => {
  const procs: CliProcess[] = [];
  let home = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const pid of [await postmasterPid(home), await temporalPid(home)])
      if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('exit 0 with --no-run, no postmaster and no dev server left, never a ready line', async () => {
    home = await mkdtemp(join(tmpdir(), 'corella-up-stop-'));
    const c = startCli(['up', '--no-run'], cliEnv(home));
    procs.push(c);
    // The Postgres data folder appears once startup is under way (initdb makes it).
    await expect
      .poll(() => existsSync(join(home, 'pg')) || c.child.exitCode !== null, {
        timeout: 120_000,
        interval: 20,
      })
      .toBe(true);
    expect(c.child.exitCode, c.stderr()).toBeNull();
    c.child.kill('SIGTERM');
    const { code, signal } = await c.exited();
    expect({ code, signal }, c.stderr()).toEqual({ code: 0, signal: null });
    expect(c.stderr()).not.toContain('corella-ready');
    const pg = await postmasterPid(home);
    expect(pg === undefined || !isAlive(pg), `postmaster ${pg} still running`).toBe(true);
    const temporal = await temporalPid(home);
    expect(temporal === undefined || !isAlive(temporal), `dev server ${temporal} still running`).toBe(true);
  }, 200_000);
});
