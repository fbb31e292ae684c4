/**
 * How long `corella --help` takes from dist/ (the tsc build) and through tsx (the sources), the start-up
 * cost every CLI command and worker pays. tsx is timed twice: with its compile cache warm, and cold (a
 * fresh TMPDIR each start, as after a reboot or on a new machine). Prints one JSON object: per path the
 * times of `--runs` starts (default 5), their minimum and median, and the load average at the start (the machine is shared; the
 * minimum is the number to compare). dist/ must be fresh (`npm run build`), or its runs are reported as
 * skipped with the reason.
 *
 *   npx tsx bench/cli-start.ts [--runs 5]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { distStaleness } from '../bin/dist-state.mjs';
import { repoRoot } from '../cli/services/paths.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');

function time(env: NodeJS.ProcessEnv, coldCache = false): number[] {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    // tsx keeps its compile cache under the OS temp dir: a fresh one per start is a cold cache.
    const tmp = coldCache ? mkdtempSync(join(tmpdir(), 'corella-bench-tsx-')) : undefined;
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'corella.mjs'), '--help'], {
      env: { ...process.env, ...env, ...(tmp ? { TMPDIR: tmp } : {}) },
      stdio: 'ignore',
    });
    out.push(Math.round(performance.now() - t0));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (r.status !== 0) throw new Error(`corella --help exited ${r.status}`);
  }
  return out;
}

function summary(ms: number[]): { ms: number[]; minMs: number; medianMs: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  return { ms, minMs: sorted[0], medianMs: sorted[Math.floor(sorted.length / 2)] };
}

const load = loadavg()[0];
const stale = distStaleness();
const result = {
  node: process.version,
  loadAvg1m: Number(load.toFixed(2)),
  dist: stale === undefined ? summary(time({ CORELLA_TSX: '' })) : { skipped: stale },
  tsxWarmCache: summary(time({ CORELLA_TSX: '1' })),
  tsxColdCache: summary(time({ CORELLA_TSX: '1' }, true)),
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
