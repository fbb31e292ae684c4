import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../cli/services/process-file.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { smallRun } from '../helpers/heal-up.js';

async function pidIn(file: string, read: (text: string) => number): Promise<number | undefined> {
  return existsSync(file) ? read(await readFile(file, 'utf8')) : undefined;
}
const postmasterPid = (home: string) =>
  pidIn(join(home, 'pg', 'postmaster.pid'), (t) => Number(t.split('\n')[0]));
const temporalPid = (home: string) =>
  pidIn(join(home, 'temporal', 'server.json'), (t) => (JSON.parse(t) as { pid: number }).pid);

/** Neither the embedded Postgres nor the dev server of `home` is running. */
async function expectServicesStopped(home: string): Promise<void> {
  const pg = await postmasterPid(home);
  expect(pg === undefined || !isAlive(pg), `postmaster ${pg} still running`).toBe(true);
  const temporal = await temporalPid(home);
  expect(temporal === undefined || !isAlive(temporal), `dev server ${temporal} still running`).toBe(true);
}

/** SIGTERM to `c` once its data folder appears (initdb makes it, after the handler is installed). */
async function termWhilePostgresIsCreated(c: CliProcess, home: string) {
  await expect
    .poll(() => existsSync(join(home, 'pg')) || c.child.exitCode !== null, {
      timeout: 120_000,
      interval: 20,
    })
    .toBe(true);
  expect(c.child.exitCode, c.stderr()).toBeNull();
  c.child.kill('SIGTERM');
  return c.exited();
}

/**
 * `corella serve` and `corella up` hear SIGTERM from before they start anything. Before, a SIGTERM while the
 * embedded Postgres (and for `up` the Temporal dev server) was starting killed them with 143 and left those
 * running with nobody to stop them, and a SIGTERM that answered serve's ready line raced its handler.
 */
describe('SIGTERM during startup or at the ready line stops the command (0; 1 when a run was asked for) and its services', () => {
  const procs: CliProcess[] = [];
  const homes: string[] = [];
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const home of homes) {
      for (const pid of [await postmasterPid(home), await temporalPid(home)])
        if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
      await rm(home, { recursive: true, force: true });
    }
  });

  for (const args of [
    ['serve', '--port', '0', '--semi-space-mb', '0'],
    ['up', '--no-run'],
  ]) {
    it(`corella ${args.join(' ')}: SIGTERM while Postgres is being created`, async () => {
      const home = await mkdtemp(join(tmpdir(), `corella-stop-${args[0]}-`));
      homes.push(home);
      const c = startCli(args, cliEnv(home));
      procs.push(c);
      const { code, signal } = await termWhilePostgresIsCreated(c, home);
      expect({ code, signal }, c.stderr()).toEqual({ code: 0, signal: null });
      expect(c.stderr()).not.toContain('corella-ready');
      expect(c.stderr()).not.toMatch(/\n\s+at /); // no stack trace
      await expectServicesStopped(home);
    }, 200_000);
  }

  it('corella up with a run to do: SIGTERM while Postgres is being created exits 1, and no run starts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'corella-stop-up-run-'));
    const home = join(dir, 'home');
    homes.push(home, dir);
    const args = await smallRun(dir);
    const c = startCli(['up', ...args], cliEnv(home));
    procs.push(c);
    const { code, signal } = await termWhilePostgresIsCreated(c, home);
    // A run was asked for and did not happen: that is a failure to a script, not a clean 0.
    expect({ code, signal }, c.stderr()).toEqual({ code: 1, signal: null });
    expect(c.stderr()).toContain('the run was not started');
    expect(c.stderr()).not.toContain('corella-ready');
    expect(c.stderr()).not.toMatch(/started retrain-/);
    expect(c.stderr()).not.toMatch(/\n\s+at /);
    await expectServicesStopped(home);
  }, 200_000);

  it("corella serve: SIGINT to its whole process group (a terminal's Ctrl-C) is one clean stop", async () => {
    const home = await mkdtemp(join(tmpdir(), 'corella-stop-group-'));
    homes.push(home);
    // With the young-generation re-exec (the default) the server gets the group's SIGINT and, a moment
    // later, its parent's forwarded copy; that copy used to count as a second Ctrl-C and force exit 130
    // with the embedded Postgres left running.
    const c = startCli(['serve', '--port', '0'], cliEnv(home), undefined, { processGroup: true });
    procs.push(c);
    await c.ready(120_000);
    process.kill(-c.child.pid!, 'SIGINT');
    const { code, signal } = await c.exited();
    expect({ code, signal }, c.stderr()).toEqual({ code: 0, signal: null });
    expect(c.stderr()).not.toMatch(/\n\s+at /);
    await expectServicesStopped(home);
  }, 200_000);

  it('corella serve: SIGTERM the moment the ready line appears; the next start serves again', async () => {
    const home = homes[0];
    // Round 0 runs the server in this process; round 1 through the young-generation re-exec (the default).
    for (let round = 0; round < 2; round++) {
      const c = startCli(
        ['serve', '--port', '0', ...(round === 0 ? ['--semi-space-mb', '0'] : [])],
        cliEnv(home),
      );
      procs.push(c);
      const { url } = await c.ready(120_000);
      if (round === 1) expect((await fetch(`${url}/healthz`)).status).toBe(200);
      c.child.kill('SIGTERM');
      const { code, signal } = await c.exited();
      expect({ round, code, signal }, c.stderr()).toEqual({ round, code: 0, signal: null });
      await expectServicesStopped(home);
    }
  }, 300_000);
});
