import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../cli/services/paths.js';

export interface CliProcess {
  child: ChildProcess;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  stdout(): string;
  /** Resolves with the JSON of the `corella-ready {...}` line. */
  ready(timeoutMs?: number): Promise<Record<string, string>>;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Environment for a CLI child: its own CORELLA_HOME, and the repository's Temporal CLI (no install). */
export function cliEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CORELLA_HOME: home };
  delete env.DATABASE_URL;
  delete env.TEMPORAL_ADDRESS;
  Object.assign(env, extra);
  const temporal = join(repoRoot, '.corella', 'bin', 'temporal');
  if (!env.TEMPORAL_CLI_PATH && existsSync(temporal)) env.TEMPORAL_CLI_PATH = temporal;
  return env;
}

export function startCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  bin = join(repoRoot, 'bin', 'corella.mjs'),
  /** Its own process group, so a test can signal the group as a terminal's Ctrl-C does (kill(-pid)). */
  opts: { processGroup?: boolean } = {},
): CliProcess {
  const child = spawn(process.execPath, [bin, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.processGroup ?? false,
  });
  let err = '';
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    stderr: () => err,
    stdout: () => out,
    exited: () => exited,
    async ready(timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const m = /corella-ready (\{.*\})/.exec(err);
        if (m) return JSON.parse(m[1]) as Record<string, string>;
        if (child.exitCode !== null)
          throw new Error(`corella exited ${child.exitCode} before ready:\n${err}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`corella not ready after ${timeoutMs} ms:\n${err}`);
    },
  };
}
