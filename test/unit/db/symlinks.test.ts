import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hydrateSymlinks } from '../../../cli/services/embedded-postgres.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('hydrateSymlinks', () => {
  it('recreates missing relative library links and leaves existing files alone', async () => {
    const pkg = await mkdtemp(join(tmpdir(), 'corella-pgpkg-'));
    dirs.push(pkg);
    await mkdir(join(pkg, 'native', 'lib'), { recursive: true });
    await writeFile(join(pkg, 'native', 'lib', 'libfoo.so.1.2'), 'real');
    await writeFile(join(pkg, 'native', 'lib', 'libbar.so'), 'keep me');
    await writeFile(
      join(pkg, 'native', 'pg-symlinks.json'),
      JSON.stringify([
        { source: 'native/lib/libfoo.so.1.2', target: 'native/lib/libfoo.so.1' },
        { source: 'native/lib/libfoo.so.1.2', target: 'native/lib/libfoo.so' },
        { source: 'native/lib/libfoo.so.1.2', target: 'native/lib/libbar.so' },
      ]),
    );
    await hydrateSymlinks(pkg);
    await hydrateSymlinks(pkg); // idempotent
    expect(await readlink(join(pkg, 'native', 'lib', 'libfoo.so.1'))).toBe('libfoo.so.1.2');
    expect(await readFile(join(pkg, 'native', 'lib', 'libfoo.so'), 'utf8')).toBe('real');
    expect(await readFile(join(pkg, 'native', 'lib', 'libbar.so'), 'utf8')).toBe('keep me');
  });

  it('does nothing without a symlink list', async () => {
    const pkg = await mkdtemp(join(tmpdir(), 'corella-pgpkg-'));
    dirs.push(pkg);
    await expect(hydrateSymlinks(pkg)).resolves.toBeUndefined();
  });
});
