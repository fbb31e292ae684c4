import { spawn } from 'node:child_process';
import { UsageError } from './args.js';

/**
 * `corella serve` sets V8's young generation (`--max-semi-space-size`) itself. A 50-candidate CRM request
 * allocates a few hundred kilobytes, so with Node's default young generation the scavenges add up: measured
 * in process at 200 requests/s, GC time per 10 s fell from 850–1,170 ms to 220–300 ms with 64 MB
 * (docs/serving.md). The default is 16 MB, not 64: on the quiet machine over HTTP (slates of 50 at 200
 * requests/s, alternating runs) 16 MB kept the p99 at 6.5–7.2 ms in 6 runs of 6, while 64 MB, with fewer but
 * larger collections, had a 21–33 ms pause and a 25–38 ms p99 in 3 runs of 7. V8 reads the size only when the isolate starts, so the only way for the command to set
 * it is to start node again with the flag: the process the user started becomes a thin parent that forwards
 * signals and returns the server's exit code.
 *
 * A flag the operator gave (NODE_OPTIONS or node's own arguments) wins, and `--semi-space-mb 0` keeps Node's
 * default; neither re-executes.
 */
export const DEFAULT_SEMI_SPACE_MB = 16;
const CHILD_ENV = 'CORELLA_SERVE_YOUNG_GENERATION';

export function semiSpaceFlag(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_SEMI_SPACE_MB;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(n) || n < 0 || n > 1024)
    throw new UsageError('--semi-space-mb must be an integer from 0 (Node default) to 1024');
  return n;
}

/** True when this node already runs with an explicit young-generation size (or is our own child). */
export function youngGenerationSet(
  env: NodeJS.ProcessEnv = process.env,
  execArgv: string[] = process.execArgv,
): boolean {
  if (env[CHILD_ENV]) return true;
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  return given.some((a) => /^--max[-_]semi[-_]space[-_]size(=|$)/.test(a));
}

/**
 * In the child: die with the parent. A SIGKILLed parent cannot forward anything, and a server left running
 * would keep serving and hold the spool's lock; the IPC channel closing is the one signal that reaches us.
 * SIGKILL ourselves so the outcome is what the parent got (the spool replays on the next start).
 */
export function followParent(): void {
  if (!process.env[CHILD_ENV] || !process.send) return;
  process.once('disconnect', () => process.kill(process.pid, 'SIGKILL'));
}

/** Runs this same command line again under `--max-semi-space-size=MB`; resolves with its exit code. */
export function reexecWithYoungGeneration(mb: number): Promise<number> {
  const child = spawn(
    process.execPath,
    [...process.execArgv, `--max-semi-space-size=${mb}`, ...process.argv.slice(1)],
    {
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, [CHILD_ENV]: String(mb) },
    },
  );
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(code ?? (signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 1));
    });
  });
}
