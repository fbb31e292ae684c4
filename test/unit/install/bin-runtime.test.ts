import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../../cli/services/paths.js';

/**
 * bin/corella.mjs in a miniature project: a TypeScript `cli/main.ts` and a compiled `dist/cli/main.js` that
 * say which one ran, so the choice between dist/ and tsx is observed from outside, as a user sees it.
 */
let root: string;
const past = (seconds: number): Date => new Date(Date.now() - seconds * 1000);

async function setTimes(paths: string[], at: Date): Promise<void> {
  for (const p of paths) await utimes(join(root, p), at, at);
}

function run(env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'corella.mjs')], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim();
}

const SOURCES = ['cli/main.ts', 'cli/util.ts', 'cli', 'tsconfig.json', 'tsconfig.build.json'];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'corella-bin-'));
  await mkdir(join(root, 'bin'));
  for (const f of ['corella.mjs', 'dist-state.mjs'])
    await copyFile(join(repoRoot, 'bin', f), join(root, 'bin', f));
  await symlink(join(repoRoot, 'node_modules'), join(root, 'node_modules'));
  await writeFile(join(root, 'package.json'), JSON.stringify({ type: 'module' }));
  await writeFile(join(root, 'tsconfig.json'), '{}\n');
  await writeFile(join(root, 'tsconfig.build.json'), JSON.stringify({ include: ['cli'] }));
  await mkdir(join(root, 'cli'));
  // Type annotations: only tsx can run this file.
  await writeFile(
    join(root, 'cli', 'main.ts'),
    "export async function main(argv: string[]): Promise<number> {\n  const tsx: string = process.env.CORELLA_TSX ?? '';\n  process.stdout.write(`from-ts CORELLA_TSX=${tsx}\\n`);\n  return argv.length;\n}\n",
  );
  await writeFile(join(root, 'cli', 'util.ts'), 'export const x: number = 1;\n');
  await mkdir(join(root, 'dist', 'cli'), { recursive: true });
  await writeFile(
    join(root, 'dist', 'cli', 'main.js'),
    "export async function main(argv) {\n  process.stdout.write('from-dist\\n');\n  return argv.length;\n}\n",
  );
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('bin/corella.mjs chooses dist/ only when it is fresh', () => {
  it('runs the sources through tsx when dist/ was never stamped as built', () => {
    expect(run()).toBe('from-ts CORELLA_TSX=1');
  });

  it('runs dist/ when the build stamp is newer than every source', async () => {
    await setTimes(SOURCES, past(100));
    await writeFile(join(root, 'dist', '.build-stamp'), '{}\n');
    await setTimes(['dist/.build-stamp'], past(50));
    expect(run()).toBe('from-dist');
  });

  it('CORELLA_TSX=1 (what a tsx parent passes to its workers) forces the sources', () => {
    expect(run({ CORELLA_TSX: '1' })).toBe('from-ts CORELLA_TSX=1');
  });

  it('an edited source file makes dist/ stale', async () => {
    await setTimes(['cli/util.ts'], past(10));
    expect(run()).toBe('from-ts CORELLA_TSX=1');
    await setTimes(['cli/util.ts'], past(100));
    expect(run()).toBe('from-dist');
  });

  it('a deleted source file makes dist/ stale (its folder changed)', async () => {
    await unlink(join(root, 'cli', 'util.ts'));
    expect(run()).toBe('from-ts CORELLA_TSX=1');
  });

  it('an edited compiler setting makes dist/ stale', async () => {
    await setTimes(['cli'], past(100));
    expect(run()).toBe('from-dist');
    await setTimes(['tsconfig.json'], past(1));
    expect(run()).toBe('from-ts CORELLA_TSX=1');
  });

  it('runs the sources when freshness cannot be determined (no tsconfig.build.json)', async () => {
    await setTimes(['tsconfig.json'], past(100));
    expect(run()).toBe('from-dist');
    await unlink(join(root, 'tsconfig.build.json'));
    expect(run()).toBe('from-ts CORELLA_TSX=1');
  });
});
