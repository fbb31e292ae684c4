import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maskUrl } from './secrets.js';

const twoUp = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The repository root (where package.json lives), independent of the current directory. The compiled copy
 * of this file sits one level deeper, in dist/ (scripts/build-dist.mjs), and must find the same root.
 */
export const repoRoot = basename(twoUp) === 'dist' ? dirname(twoUp) : twoUp;

/**
 * The home holds the Postgres superuser password, Temporal's record of every workflow input, model weights
 * and served traffic: nobody but its user may read it. Every command resolves the home before it writes
 * there, so the process umask is tightened here once; it is inherited by everything started from this
 * process (Postgres, the Temporal dev server, workers), whose files are then 0600 and folders 0700 too,
 * without each writer having to pass a mode.
 */
function privateUmask(): void {
  try {
    process.umask(0o077);
  } catch {
    // worker threads may not change the umask; their parent process already has
  }
}

/** Everything the embedded default keeps on disk: Postgres data, Temporal state, artifacts, tools, models. */
export function corellaHome(): string {
  privateUmask();
  return resolve(process.env.CORELLA_HOME ?? join(repoRoot, '.corella'));
}

/** Creates the home 0700, and tightens one made by an older version (0755). */
export async function ensurePrivateHome(home: string): Promise<void> {
  privateUmask();
  await mkdir(home, { recursive: true, mode: 0o700 });
  await chmod(home, 0o700);
}

/** Where the full database URL (with its password) is kept for scripts and tests: never printed. */
export function databaseUrlFile(home = corellaHome()): string {
  return join(home, 'database-url');
}

/** Writes the URL to its 0600 file (atomically: a reader never sees half a URL) and returns the path. */
export async function writeDatabaseUrlFile(home: string, url: string): Promise<string> {
  const path = databaseUrlFile(home);
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${url}\n`);
  } finally {
    await fh.close();
  }
  await rename(tmp, path).catch(async (e: unknown) => {
    await rm(tmp, { force: true });
    throw e;
  });
  return path;
}

/** What the `corella-ready` line says about the database: the masked URL and the file holding the full one. */
export async function readyDatabase(
  home: string,
  url: string,
): Promise<{ databaseUrl: string; databaseUrlFile: string }> {
  return { databaseUrl: maskUrl(url), databaseUrlFile: await writeDatabaseUrlFile(home, url) };
}

export function artifactsDir(home = corellaHome()): string {
  return join(home, 'artifacts');
}
