import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../cli/services/process-file.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';

/** The postmaster of the embedded Postgres in `home`, if its pid file is there. */
async function postmasterPid(home: string): Promise<number | undefined> {
  const file = join(home, 'pg', 'postmaster.pid');
  if (!existsSync(file)) return undefined;
  return Number((await readFile(file, 'utf8')).split('\n')[0]);
}

/**
 * `corella serve` on the embedded Postgres stops cleanly whenever SIGTERM comes: while it is still starting
 * (before its handler existed, SIGTERM's default action killed it with 143 and orphaned the postmaster it had
 * started), and the moment it prints its ready line (a script answering that line used to race the handler).
 */
describe('corella serve: SIGTERM during startup or at the ready line stops it with 0 and Postgres with it', () => {
  const procs: CliProcess[] = [];
  let home = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    const pid = home ? await postmasterPid(home) : undefined;
    if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('SIGTERM while the embedded Postgres is being created: exit 0, no postmaster left', async () => {
    home = await mkdtemp(join(tmpdir(), 'corella-serve-stop-'));
    const env = cliEnv(home);
    const c = startCli(['serve', '--port', '0', '--semi-space-mb', '0'], env);
    procs.push(c);
    // The data folder appears once the command runs (initdb makes it), after its handler is installed.
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
    expect(c.stderr()).not.toMatch(/\n\s+at /); // no stack trace
    const pid = await postmasterPid(home);
    expect(pid === undefined || !isAlive(pid), `postmaster ${pid} still running`).toBe(true);
  }, 200_000);

  it('SIGTERM the moment the ready line appears: exit 0, Postgres stopped; the next start serves again', async () => {
    const env = cliEnv(home);
    // Round 0 runs the server in this process; round 1 through the young-generation re-exec (the default).
    for (let round = 0; round < 2; round++) {
      const c = startCli(['serve', '--port', '0', ...(round === 0 ? ['--semi-space-mb', '0'] : [])], env);
      procs.push(c);
      const { url } = await c.ready(120_000);
      if (round === 1) expect((await fetch(`${url}/healthz`)).status).toBe(200);
      c.child.kill('SIGTERM');
      const { code, signal } = await c.exited();
      expect({ round, code, signal }, c.stderr()).toEqual({ round, code: 0, signal: null });
      const pid = await postmasterPid(home);
      expect(pid === undefined || !isAlive(pid), `postmaster ${pid} still running`).toBe(true);
    }
  }, 300_000);
});
