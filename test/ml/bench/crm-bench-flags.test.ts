import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/**
 * The CRM speed benches check their flags (and bench/crm-vs-torch.ts its CORELLA_STACK_WEIGHTS switch) before
 * they measure anything: a bad value exits 2 with a message naming it, and prints no JSON.
 */
function run(script: string, args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, ['--import', 'tsx', script, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
}

describe('CRM bench flags', () => {
  it.each([
    ['bench/crm-stack-profile.ts', ['--rounds', '0'], {}, '--rounds must be a positive integer'],
    ['bench/crm-stack-profile.ts', ['--steps', 'many'], {}, '--steps must be a positive integer'],
    ['bench/crm-stack-profile.ts', ['--whole-steps'], {}, 'unknown option "--whole-steps"'],
    ['bench/crm-stack-profile.ts', ['--adam-ab'], {}, '--adam-ab needs --whole-step'],
    ['bench/crm-stack-profile.ts', ['--hold-ab'], {}, '--hold-ab needs --whole-step'],
    ['bench/crm-stack-profile.ts', ['--l2-ab'], {}, '--l2-ab needs --whole-step'],
    ['bench/crm-stack-profile.ts', ['--whole-step', '--hold-a'], {}, 'unknown option "--hold-a"'],
    ['bench/crm-vs-torch.ts', ['--steps', '2'], {}, '--steps must be an integer in [5, 100000], got "2"'],
    [
      'bench/crm-vs-torch.ts',
      ['--ours'],
      { CORELLA_POOL_WAIT: 'spin' },
      'CORELLA_POOL_WAIT must be region or chunk, got "spin"',
    ],
    [
      'bench/crm-vs-torch.ts',
      ['--ours'],
      { CORELLA_POOL_HOLD: 'on' },
      'CORELLA_POOL_HOLD must be step or off, got "on"',
    ],
    ['bench/core-scaling.ts', ['--rounds', '0'], {}, '--rounds must be an integer in [1, 50], got "0"'],
    ['bench/core-scaling.ts', ['--ms', '2s'], {}, '--ms must be an integer in [200, 60000], got "2s"'],
    [
      'bench/core-scaling.ts',
      ['--kinds', 'sgemm,avx'],
      {},
      '--kinds must list sgemm or sgemm64 or js, got "avx"',
    ],
    ['bench/core-scaling.ts', ['--cores', '2'], {}, "Unknown option '--cores'"],
    [
      'bench/crm-vs-torch.ts',
      ['--ours'],
      { CORELLA_STACK_WEIGHTS: 'fused' },
      'CORELLA_STACK_WEIGHTS must be blocks or whole, got "fused"',
    ],
  ])(
    '%s %j is refused with its name',
    (script, args, env, message) => {
      const r = run(script, args, env);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stdout).not.toContain('{');
    },
    150_000,
  );
});
