import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (where package.json lives), independent of the current directory. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Everything the embedded default keeps on disk: Postgres data, Temporal state, artifacts, tools, models. */
export function corellaHome(): string {
  return resolve(process.env.CORELLA_HOME ?? join(repoRoot, '.corella'));
}

export function artifactsDir(home = corellaHome()): string {
  return join(home, 'artifacts');
}
