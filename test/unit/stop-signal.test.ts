import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { REPEAT_WINDOW_MS } from '../../cli/stop-signal.js';

const CHILD = fileURLToPath(new URL('../helpers/stop-signal-child.ts', import.meta.url));
const started: ChildProcess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});

function start(): { child: ChildProcess; waitFor(text: string): Promise<void>; out(): string } {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const waitFor = (text: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (out.includes(text)) return resolve();
        if (child.exitCode !== null) return reject(new Error(`exited ${child.exitCode}: ${out} ${err}`));
        setTimeout(check, 10);
      };
      check();
    });
  return { child, waitFor, out: () => out };
}

const exitOf = (c: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    c.exitCode !== null
      ? resolve({ code: c.exitCode, signal: null })
      : c.once('exit', (code, signal) => resolve({ code, signal })),
  );

describe('listenForStop: the first signal asks for a clean stop, a second one forces the exit', () => {
  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    it(`${signal}: the first resolves 'stopped' and does not kill; the second exits with ${code}`, async () => {
      const p = start();
      await p.waitFor('ready');
      p.child.kill(signal);
      await p.waitFor(`requested true`);
      expect(p.out()).toContain(`stopping ${signal}`);
      // Still alive: its (hanging) clean stop is under way, not the signal's default action. A copy of the
      // same signal right behind it (a forwarding parent's) is the same stop, not a second press.
      p.child.kill(signal);
      await new Promise((r) => setTimeout(r, 200));
      expect(p.child.exitCode).toBeNull();
      await new Promise((r) => setTimeout(r, REPEAT_WINDOW_MS));
      p.child.kill(signal);
      expect(await exitOf(p.child)).toEqual({ code, signal: null });
    }, 60_000);
  }
});
