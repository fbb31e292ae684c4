import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../cli/args.js';
import { semiSpaceFlag, youngGenerationSet } from '../../cli/serve-young-generation.js';

const CHILD = fileURLToPath(new URL('../helpers/young-generation-child.ts', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts the stand-in; resolves with the parent process and what its re-executed child reported. */
async function start(
  mb: number,
): Promise<{ parent: ChildProcess; child: { pid: number; execArgv: string[] } }> {
  const env = { ...process.env, NODE_OPTIONS: '' };
  const parent = spawn(process.execPath, ['--import', 'tsx', CHILD, String(mb)], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(parent);
  let out = '';
  let err = '';
  parent.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    parent.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    parent.once('exit', (code) => reject(new Error(`stand-in exited ${code}: ${err}`)));
  });
  return { parent, child: JSON.parse(line) as { pid: number; execArgv: string[] } };
}

const started: ChildProcess[] = [];
const childPids: number[] = [];
afterEach(() => {
  for (const p of started.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
  for (const pid of childPids.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

describe('corella serve sets the young generation by re-executing node', () => {
  it('reads --semi-space-mb and knows a size the operator already set', () => {
    expect(semiSpaceFlag(undefined)).toBe(16);
    expect(semiSpaceFlag('0')).toBe(0);
    expect(semiSpaceFlag('32')).toBe(32);
    for (const bad of ['', '-1', '1.5', 'big', '4096'])
      expect(() => semiSpaceFlag(bad), bad).toThrow(UsageError);
    expect(youngGenerationSet({}, [])).toBe(false);
    expect(youngGenerationSet({ NODE_OPTIONS: '--max-semi-space-size=16' }, [])).toBe(true);
    expect(youngGenerationSet({}, ['--max_semi_space_size=8'])).toBe(true);
    expect(youngGenerationSet({ NODE_OPTIONS: '--max-old-space-size=4096' }, ['--inspect'])).toBe(false);
  });

  it('the child runs under the flag, SIGTERM to the parent stops it with code 0', async () => {
    const { parent, child } = await start(48);
    childPids.push(child.pid);
    expect(child.pid).not.toBe(parent.pid);
    expect(child.execArgv).toContain('--max-semi-space-size=48');
    const exited = new Promise<number | null>((r) => parent.once('exit', (code) => r(code)));
    parent.kill('SIGTERM');
    expect(await exited).toBe(0);
    await expect.poll(() => alive(child.pid), { timeout: 20_000 }).toBe(false);
  }, 60_000);

  it('a SIGKILLed parent takes the child with it (no orphan holding the spool lock)', async () => {
    const { parent, child } = await start(32);
    childPids.push(child.pid);
    expect(alive(child.pid)).toBe(true);
    parent.kill('SIGKILL');
    await expect.poll(() => alive(child.pid), { timeout: 20_000 }).toBe(false);
  }, 60_000);
});
