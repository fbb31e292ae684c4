import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const twoUp = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The repository root (where package.json lives), independent of the current directory. The compiled copy
 * of this file sits one level deeper, in dist/ (scripts/build-dist.mjs), and must find the same root.
 */
export const repoRoot = basename(twoUp) === 'dist' ? dirname(twoUp) : twoUp;

/** Everything the embedded default keeps on disk: Postgres data, Temporal state, artifacts, tools, models. */
export function corellaHome(): string {
  return resolve(process.env.CORELLA_HOME ?? join(repoRoot, '.corella'));
}

export function artifactsDir(home = corellaHome()): string {
  return join(home, 'artifacts');
}
