import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS_FOLDER } from '../../../db/migrate.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const dirs: string[] = [];

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('committed migrations', () => {
  it('match the drizzle schema (a schema change without `npm run db:generate` fails here)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'corella-migrations-'));
    dirs.push(dir);
    const copy = join(dir, 'migrations');
    await cp(MIGRATIONS_FOLDER, copy, { recursive: true });
    const before = (await readdir(copy)).sort();
    // drizzle-kit wants paths relative to its working directory.
    const config = join(dir, 'drizzle.config.mjs');
    await writeFile(
      config,
      `export default ${JSON.stringify({ dialect: 'postgresql', schema: './db/schema/*.ts', out: relative(ROOT, copy) })};\n`,
    );
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(ROOT, 'node_modules/drizzle-kit/bin.cjs'), 'generate', '--config', config],
      { cwd: ROOT, timeout: 60_000 },
    );
    expect(stdout).toContain('No schema changes');
    expect((await readdir(copy)).sort()).toEqual(before);
  });
});
