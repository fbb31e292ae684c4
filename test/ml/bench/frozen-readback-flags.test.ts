import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/** bench/frozen-readback.ts checks its flags before it writes anything: a bad value is refused by name. */
function run(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'bench/frozen-readback.ts', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
}

describe('bench/frozen-readback.ts flags', () => {
  it.each([
    [['--rounds', '0'], 'BAD_CONFIG: --rounds 0: expected an integer ≥ 1'],
    [['--rounds', 'many'], 'BAD_CONFIG: --rounds many: expected an integer ≥ 1'],
    [['--tokens', '1.5'], 'BAD_CONFIG: --tokens 1.5: expected an integer ≥ 1'],
    [['--embd=-4'], 'BAD_CONFIG: --embd -4: expected an integer ≥ 1'],
    [['--keep=-1'], 'BAD_CONFIG: --keep -1: expected an integer ≥ 0'],
    [['--round', '3'], "Unknown option '--round'"],
  ])(
    '%j is refused with its name and prints no result',
    (args, message) => {
      const r = run(args);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(message);
      expect(r.stdout).toBe('');
    },
    150_000,
  );

  it('a tiny valid run prints one JSON line whose reads return the bits written', () => {
    const r = run(['--rounds', '3', '--tokens', '4', '--embd', '8']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { identical: Record<string, boolean>; rounds: number };
    expect(out.rounds).toBe(3);
    expect(out.identical).toEqual({ json: true, binary: true, plain: true });
  }, 150_000);
});
