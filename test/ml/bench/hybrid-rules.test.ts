import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../../ml/random.js';

/**
 * bench/hybrid-rules.ts scores routing rules on saved predictions. Bad files are refused with the file and
 * field named; on planted pools, a branch that knows the labels of the CRM's uncertain rows is routed to and
 * gains, and a constant branch is not routed to.
 */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corella-hybrid-rules-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'bench/hybrid-rules.ts', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
}

/** A pool where the CRM is sure and right on 70% of rows and a coin flip on the rest. */
function pool(n: number, seed: number, llm: 'oracle' | 'constant') {
  const rng = mulberry32(seed);
  const y: number[] = [];
  const crm: number[] = [];
  const user: number[] = [];
  const z: number[] = [];
  for (let i = 0; i < n; i++) {
    const label = rng() < 0.5 ? 1 : 0;
    const unsure = rng() < 0.3;
    y.push(label);
    crm.push(unsure ? 0.45 + 0.1 * rng() : label ? 0.8 + 0.15 * rng() : 0.05 + 0.15 * rng());
    user.push(i % 50);
    z.push(llm === 'constant' ? 0.3 : (label ? 1 : -1) + 0.5 * (rng() - 0.5));
  }
  return { y, crm, user, z };
}

describe('bench/hybrid-rules.ts', () => {
  it('refuses no arguments, unreadable JSON and ragged pools, naming the file and field', async () => {
    expect(run([]).stderr).toContain('usage: bench/hybrid-rules.ts');
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"seed": 1,');
    const r1 = run([bad]);
    expect(r1.status).not.toBe(0);
    expect(r1.stderr).toContain(`${bad}: not a readable JSON file`);
    const ragged = join(dir, 'ragged.json');
    const v = pool(40, 1, 'oracle');
    await writeFile(ragged, JSON.stringify({ seed: 1, valid: v, test: { ...v, z: v.z.slice(1) } }));
    const r2 = run([ragged]);
    expect(r2.status).not.toBe(0);
    expect(r2.stderr).toContain(`${ragged}: test.y, .crm, .user and .z must be arrays of one length`);
  }, 240_000);

  it('routes to a branch that is right where the CRM is unsure, and not to a constant one', async () => {
    const good = join(dir, 'good.json');
    const flat = join(dir, 'flat.json');
    await writeFile(
      good,
      JSON.stringify({ seed: 1, valid: pool(600, 2, 'oracle'), test: pool(600, 3, 'oracle') }),
    );
    await writeFile(
      flat,
      JSON.stringify({ seed: 2, valid: pool(600, 2, 'constant'), test: pool(600, 3, 'constant') }),
    );
    const r = run([good, flat]);
    expect(r.status, r.stderr).toBe(0);
    const [g, f] = JSON.parse(r.stdout).seeds;
    for (const rule of ['replace', 'stack']) {
      expect(g[rule].gated.routes).toBe(true);
      expect(g[rule].gain.lo95).toBeGreaterThan(0);
      expect(f[rule].gated.routes).toBe(false);
      expect(f[rule].gated.gain).toBe(0);
    }
  }, 240_000);
});
