import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * bench/lora.ts checks its experiment flags before it reads data or loads a model: a bad value is a clear
 * error naming the flag, and nothing is written (no --out file, nothing in the --cache store).
 */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corella-lora-flags-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'bench/lora.ts', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
}

describe('bench/lora.ts flags', () => {
  it.each([
    [['--branch', 'frozen'], '--branch frozen: expected lora or adapter'],
    [['--train-select', '1.5'], '--train-select 1.5: expected a share in (0, 1]'],
    [['--train-select', 'half'], '--train-select half: expected a share in (0, 1]'],
    [['--train-weight', 'loss'], '--train-weight loss: expected none or entropy'],
    [['--align-gamma', '-0.1'], '--align-gamma -0.1: expected a number ≥ 0'],
    [['--align-dim', '0'], '--align-dim 0: expected a positive integer'],
    [['--train-threads', '0'], '--train-threads 0: expected an integer in 1..16'],
    [['--train-threads', 'two'], '--train-threads two: expected an integer in 1..16'],
    [['--frozen-memory-mb', '0'], '--frozen-memory-mb 0: expected a positive number of megabytes'],
    [['--frozen-memory-mb', 'lots'], '--frozen-memory-mb lots: expected a positive number of megabytes'],
  ])(
    '%j is refused with its name, and nothing is written',
    async (args, message) => {
      const out = join(dir, 'out.json');
      const cache = join(dir, 'cache');
      const r = run([...args, '--out', out, '--cache', cache]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(message);
      expect(existsSync(out)).toBe(false);
      expect(existsSync(cache) ? await readdir(cache) : []).toEqual([]);
    },
    150_000,
  );
});
