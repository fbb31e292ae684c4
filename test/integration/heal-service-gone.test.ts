import { mkdtemp, realpath, rm, symlink, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isRunning } from '../../cli/services/health.js';
import { cliEnv, startCli, type CliProcess } from '../helpers/cli-process.js';
import { postmasterPid, temporalPid } from '../helpers/heal-up.js';

describe('corella up never keeps saying "up" over a dead stack', () => {
  const procs: CliProcess[] = [];
  let dir = '';
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a dev server that cannot be restarted ends up with exit 3 and a message saying so', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-heal-gone-'));
    const home = join(dir, 'home');
    const base = cliEnv(home);
    // The Temporal CLI through a link this test can take away, so the restart fails as on a broken install.
    const cli = join(dir, 'temporal');
    await symlink(await realpath(base.TEMPORAL_CLI_PATH!), cli);
    const up = startCli(['up', '--no-run'], { ...base, TEMPORAL_CLI_PATH: cli });
    procs.push(up);
    await up.ready(180_000);
    const pg = await postmasterPid(home);
    await unlink(cli);
    const t0 = Date.now();
    process.kill(await temporalPid(home), 'SIGKILL');

    const exit = await up.exited();
    console.log(
      `heal-service-gone: up exited ${exit.code} ${Math.round((Date.now() - t0) / 1000)} s after the kill`,
    );
    expect(exit.code, up.stderr().slice(-4000)).toBe(3);
    expect(up.stderr()).toContain('Temporal dev server died');
    expect(up.stderr()).toContain('restarting Temporal dev server (attempt 6 of 6)');
    expect(up.stderr()).toMatch(
      /corella up: Temporal dev server died and could not be restarted \(6 attempts\): TEMPORAL_CLI_PATH=.* is not an executable file/,
    );
    // It stopped what was left of the stack on its way out.
    expect(await isRunning(pg)).toBe(false);
  }, 300_000);
});
