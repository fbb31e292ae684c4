import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../cli/services/paths.js';
import { startCli, type CliProcess } from '../helpers/cli-process.js';

// Slow (npm ci in a new clone, then the whole pipeline on the CPU-sized default): CORELLA_SLOW_TESTS=1.
const slow = process.env.CORELLA_SLOW_TESTS === '1';

describe.runIf(slow)('corella up from a fresh clone, with no dataset and no model configured', () => {
  let dir = '';
  const procs: CliProcess[] = [];
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs the whole pipeline on the synthetic dataset and says so', async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-fresh-'));
    const clone = join(dir, 'corella');
    execFileSync('git', ['clone', '--quiet', repoRoot, clone], { stdio: 'inherit' });
    execFileSync('npm', ['ci', '--no-audit', '--no-fund'], {
      cwd: clone,
      stdio: 'inherit',
      env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
    });
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of [
      'DATABASE_URL',
      'TEMPORAL_ADDRESS',
      'CORELLA_HOME',
      'CORELLA_DATA_DIR',
      'CORELLA_LLM_MODEL',
    ])
      delete env[k];
    const t0 = Date.now();
    const up = startCli(['up', '--json'], env, join(clone, 'bin', 'corella.mjs'));
    procs.push(up);
    const exit = await up.exited();
    const seconds = (Date.now() - t0) / 1000;
    expect(exit.code, up.stderr()).toBe(0);
    expect(up.stderr()).toContain('SYNTHETIC');
    const summary = JSON.parse(up.stdout()) as Record<string, unknown>;
    expect(summary.datasetSource).toBe('synthetic-movielens');
    expect(summary.datasetOrigin).toBe('synthetic');
    expect(typeof summary.modelVersionId).toBe('string');
    const models = startCli(
      ['models', 'show', String(summary.modelVersionId), '--json'],
      env,
      join(clone, 'bin', 'corella.mjs'),
    );
    expect((await models.exited()).code, models.stderr()).toBe(0);
    const details = JSON.parse(models.stdout()) as {
      calibrations: unknown[];
      version: { calibratedThreshold: number };
    };
    expect(details.calibrations.length).toBeGreaterThanOrEqual(1);
    expect(Number.isFinite(details.version.calibratedThreshold)).toBe(true);
    console.log(JSON.stringify({ upSeconds: seconds, metrics: summary.metrics }));
  }, 3_600_000);
});
