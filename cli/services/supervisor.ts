import type { ChildProcess } from 'node:child_process';
import { CorellaError } from '../../ml/errors.js';

/**
 * What `corella up` keeps alive. A worker is a child process restarted when it exits; a service (the embedded
 * Postgres, the Temporal dev server) is probed and restarted when it dies. Their data dirs are crash-safe
 * (Postgres replays its WAL, the dev server's SQLite is journaled), so a restart loses nothing committed.
 */
export interface SupervisedService {
  name: string;
  /**
   * 'dead': its process is gone, restart now. 'unresponsive': alive but not answering (a loaded machine can
   * stall a probe, so only a long run of these restarts it). 'ok'.
   */
  check(): Promise<'ok' | 'dead' | 'unresponsive'>;
  /** Starts it again on the same data dir; throws when it cannot. */
  restart(): Promise<void>;
}

export interface SupervisorOptions {
  log: (line: string) => void;
  /** How often services are probed; default 2 s. */
  intervalMs?: number;
  /** An alive service that has not answered for this long is restarted; default 90 s. */
  unresponsiveMs?: number;
  /** Restarts tried for a service before `up` gives up on it; default 6 (about 2 minutes of back-off). */
  serviceRestarts?: number;
  /** Quick successive exits of a worker before `up` gives up on it; default 8. */
  workerRestarts?: number;
  /** A worker that ran this long before exiting starts its back-off afresh; default 60 s. */
  stableMs?: number;
  /** First back-off delay, doubled up to maxDelayMs; defaults 1 s and 30 s. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called after a service came back, e.g. to restart workers when its address changed. */
  onServiceRestarted?: (name: string) => Promise<void> | void;
}

export interface SupervisedWorker {
  readonly name: string;
  /** The current child's pid. */
  pid(): number | undefined;
  /** Stops the current child and starts a new one (e.g. with a new environment). */
  restart(): Promise<void>;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL after `graceMs`: a worker drains its running activities before it exits. */
export async function stopChild(child: ChildProcess, graceMs = 40_000): Promise<void> {
  if (exited(child)) return;
  const done = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

export class Supervisor {
  private readonly opts: Required<Omit<SupervisorOptions, 'onServiceRestarted'>> &
    Pick<SupervisorOptions, 'onServiceRestarted'>;
  private stopped = false;
  /** Pending back-off waits: stop() ends them at once. */
  private readonly waits = new Map<NodeJS.Timeout, () => void>();
  private readonly children = new Set<ChildProcess>();
  private readonly loops: Promise<void>[] = [];
  private fail!: (e: CorellaError) => void;
  /** Settles when something could not be brought back; `up` then says so and exits 3. */
  readonly failed: Promise<CorellaError>;

  constructor(options: SupervisorOptions) {
    this.opts = {
      intervalMs: 2_000,
      unresponsiveMs: 90_000,
      serviceRestarts: 6,
      workerRestarts: 8,
      stableMs: 60_000,
      baseDelayMs: 1_000,
      maxDelayMs: 30_000,
      ...options,
    };
    this.failed = new Promise((resolve) => (this.fail = resolve));
  }

  private delay(attempt: number): number {
    return Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  }

  private async pause(ms: number): Promise<void> {
    if (this.stopped) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.waits.delete(t);
        resolve();
      }, ms);
      this.waits.set(t, resolve);
    });
  }

  /**
   * Keeps one child process per `spawn` running: an exit that `stop()` did not ask for is logged and the
   * worker started again after a back-off, so an activity that lost its worker is picked up once Temporal
   * notices the missed heartbeat.
   */
  watchWorker(name: string, spawn: () => ChildProcess): SupervisedWorker {
    let child = spawn();
    let startedAt = Date.now();
    let quickExits = 0;
    let replacing = false;
    const onExit = (c: ChildProcess) => (code: number | null, signal: NodeJS.Signals | null) => {
      this.children.delete(c);
      if (this.stopped || replacing) return;
      const ranMs = Date.now() - startedAt;
      quickExits = ranMs >= this.opts.stableMs ? 1 : quickExits + 1;
      const how = signal ?? `exit ${code}`;
      if (quickExits > this.opts.workerRestarts) {
        this.opts.log(`worker ${name} exited (${how}) ${quickExits} times in a row: giving up`);
        this.fail(
          new CorellaError(
            'SERVICE_UNAVAILABLE',
            `worker ${name} keeps exiting (last: ${how}); its output is above`,
          ),
        );
        return;
      }
      const wait = this.delay(quickExits);
      this.opts.log(
        `worker ${name} exited (${how}); restarting it in ${wait / 1000} s (restart ${quickExits})`,
      );
      void this.pause(wait).then(() => {
        if (this.stopped || replacing) return;
        start();
        this.opts.log(`worker ${name} restarted (pid ${child.pid})`);
      });
    };
    const start = (): void => {
      child = spawn();
      startedAt = Date.now();
      this.children.add(child);
      child.once('exit', onExit(child));
    };
    this.children.add(child);
    child.once('exit', onExit(child));
    return {
      name,
      pid: () => child.pid,
      restart: async () => {
        replacing = true;
        try {
          await stopChild(child);
        } finally {
          replacing = false;
        }
        if (!this.stopped) start();
      },
    };
  }

  /** Probes `service` every interval and restarts it when it died (or stopped answering for long). */
  watchService(service: SupervisedService): void {
    this.loops.push(this.serviceLoop(service));
  }

  private async serviceLoop(service: SupervisedService): Promise<void> {
    let silentSince: number | undefined;
    while (!this.stopped) {
      await this.pause(this.opts.intervalMs);
      if (this.stopped) return;
      const state = await service.check().catch(() => 'unresponsive' as const);
      if (state === 'ok') {
        silentSince = undefined;
        continue;
      }
      if (state === 'unresponsive') {
        silentSince ??= Date.now();
        if (Date.now() - silentSince < this.opts.unresponsiveMs) continue;
        this.opts.log(
          `${service.name} has not answered for ${Math.round((Date.now() - silentSince) / 1000)} s`,
        );
      } else {
        this.opts.log(`${service.name} died`);
      }
      silentSince = undefined;
      if (!(await this.bringBack(service))) return;
    }
  }

  private async bringBack(service: SupervisedService): Promise<boolean> {
    let last: unknown;
    for (let attempt = 1; attempt <= this.opts.serviceRestarts && !this.stopped; attempt++) {
      this.opts.log(`restarting ${service.name} (attempt ${attempt} of ${this.opts.serviceRestarts})`);
      try {
        await service.restart();
        this.opts.log(`${service.name} is back`);
        await this.opts.onServiceRestarted?.(service.name);
        return true;
      } catch (e) {
        last = e;
        const wait = this.delay(attempt);
        this.opts.log(`${service.name} did not start: ${(e as Error).message}; retrying in ${wait / 1000} s`);
        await this.pause(wait);
      }
    }
    if (this.stopped) return false;
    this.opts.log(`${service.name} could not be restarted: the stack is down`);
    this.fail(
      new CorellaError(
        'SERVICE_UNAVAILABLE',
        `${service.name} died and could not be restarted (${this.opts.serviceRestarts} attempts): ${(last as Error | undefined)?.message ?? 'unknown'}`,
        { cause: last },
      ),
    );
    return false;
  }

  /**
   * Stops restarting anything, at once: on Ctrl-C the workers (same process group) exit by themselves, and
   * that is a shutdown, not a crash to recover from.
   */
  halt(): void {
    this.stopped = true;
    for (const [t, resolve] of this.waits) {
      clearTimeout(t);
      resolve();
    }
    this.waits.clear();
  }

  /** Stops watching; running workers are stopped gracefully. Services are stopped by the stack itself. */
  async stop(): Promise<void> {
    this.halt();
    await Promise.all([...this.children].map((c) => stopChild(c)));
    await Promise.allSettled(this.loops);
  }
}
