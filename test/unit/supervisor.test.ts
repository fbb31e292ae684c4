import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { Supervisor, type SupervisedService } from '../../cli/services/supervisor.js';
import { isRunning } from '../../cli/services/health.js';

/** A real child process: `node -e <code>`. */
function node(code: string): ChildProcess {
  return spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
}

const fast = { baseDelayMs: 50, maxDelayMs: 200, intervalMs: 50 };

describe('Supervisor', () => {
  const supervisors: Supervisor[] = [];
  afterEach(async () => {
    for (const s of supervisors.splice(0)) await s.stop();
  });
  const make = (opts: ConstructorParameters<typeof Supervisor>[0]): Supervisor => {
    const s = new Supervisor(opts);
    supervisors.push(s);
    return s;
  };

  it('restarts a killed worker with a log line, and a restarted worker gets a new pid', async () => {
    const lines: string[] = [];
    const s = make({ ...fast, log: (l) => lines.push(l) });
    const w = s.watchWorker('gpu', () => node('setInterval(() => {}, 1000)'));
    const first = w.pid()!;
    process.kill(first, 'SIGKILL');
    await expect
      .poll(() => w.pid() !== first && lines.some((l) => l.includes('restarted')), { timeout: 10_000 })
      .toBe(true);
    expect(lines[0]).toMatch(/^worker gpu exited \(SIGKILL\); restarting it in 0\.05 s \(restart 1\)$/);
    expect(await isRunning(w.pid()!)).toBe(true);
  });

  it('gives up on a worker that keeps exiting: `failed` settles with a SERVICE_UNAVAILABLE error', async () => {
    const lines: string[] = [];
    const s = make({ ...fast, workerRestarts: 3, log: (l) => lines.push(l) });
    s.watchWorker('cpu', () => node('process.exit(7)'));
    const e = await s.failed;
    expect(e.code).toBe('SERVICE_UNAVAILABLE');
    expect(e.message).toBe('worker cpu keeps exiting (last: exit 7); its output is above');
    expect(lines.filter((l) => l.includes('restarting it'))).toHaveLength(3);
  });

  it('a stop() is not a crash: the worker is not restarted', async () => {
    const lines: string[] = [];
    const s = make({ ...fast, log: (l) => lines.push(l) });
    const w = s.watchWorker('cpu', () => node('setInterval(() => {}, 1000)'));
    const pid = w.pid()!;
    await s.stop();
    expect(await isRunning(pid)).toBe(false);
    expect(lines).toEqual([]);
  });

  it('restarts a dead service, and reports one that cannot come back', async () => {
    const lines: string[] = [];
    let alive = true;
    let restarts = 0;
    const flaky: SupervisedService = {
      name: 'Postgres',
      check: async () => (alive ? 'ok' : 'dead'),
      restart: async () => {
        restarts++;
        if (restarts < 2) throw new Error('shared memory still in use');
        alive = true;
      },
    };
    const s = make({ ...fast, serviceRestarts: 3, log: (l) => lines.push(l) });
    s.watchService(flaky);
    alive = false;
    await expect.poll(() => lines.includes('Postgres is back'), { timeout: 10_000 }).toBe(true);
    expect(lines).toContain('Postgres did not start: shared memory still in use; retrying in 0.05 s');

    const gone: SupervisedService = {
      name: 'Temporal dev server',
      check: async () => 'dead',
      restart: async () => {
        throw new Error('port taken');
      },
    };
    s.watchService(gone);
    const e = await s.failed;
    expect(e.message).toBe('Temporal dev server died and could not be restarted (3 attempts): port taken');
  });

  it('an unresponsive service is restarted only after unresponsiveMs', async () => {
    const lines: string[] = [];
    let restarted = false;
    const slow: SupervisedService = {
      name: 'Temporal dev server',
      check: async () => (restarted ? 'ok' : 'unresponsive'),
      restart: async () => {
        restarted = true;
      },
    };
    const t0 = Date.now();
    const s = make({ ...fast, unresponsiveMs: 600, log: (l) => lines.push(l) });
    s.watchService(slow);
    await expect.poll(() => restarted, { timeout: 10_000 }).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(lines[0]).toMatch(/^Temporal dev server has not answered for \d+ s$/);
  });
});
