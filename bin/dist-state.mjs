// Is dist/ (the tsc build) safe to run? Shared by bin/corella.mjs, which asks on every start, and
// scripts/build-dist.mjs, which writes the stamp. Plain JavaScript with no imports beyond node:, because it
// runs before anything is compiled or registered.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = dirname(dirname(fileURLToPath(import.meta.url)));
export const distDir = join(root, 'dist');
/**
 * Written after a successful build with its mtime set to the moment the build STARTED: a source saved while
 * tsc was running is then newer than the stamp, so its change is never mistaken for built.
 */
export const stampPath = join(distDir, '.build-stamp');

/** The folders tsconfig.build.json compiles, plus the compiler settings themselves. */
export function sourceRoots(base = root) {
  const config = JSON.parse(readFileSync(join(base, 'tsconfig.build.json'), 'utf8'));
  return [...config.include, 'tsconfig.json', 'tsconfig.build.json'];
}

/**
 * The newest mtime under the roots, files and folders alike: deleting or renaming a source file changes no
 * file's mtime, only its folder's. Every file counts, not only .ts: worker-boot.mjs is copied into dist/.
 */
export function newestSource(base = root, roots = sourceRoots(base)) {
  let newest = { path: '', mtimeMs: 0 };
  const visit = (path) => {
    const s = statSync(path);
    if (s.mtimeMs > newest.mtimeMs) newest = { path, mtimeMs: s.mtimeMs };
    if (s.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  for (const r of roots) {
    try {
      visit(join(base, r));
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
  }
  return newest;
}

/**
 * Why dist/ must not run (not built, or a source changed after the build), or undefined when it is fresh.
 * mtimes, not content hashes: a stat of ~250 paths costs a few ms, hashing them would cost more than the
 * tsx start-up we are avoiding. A clock moved backwards can only make dist/ look stale (tsx then runs).
 */
export function distStaleness(base = root) {
  let built;
  try {
    built = statSync(join(base, 'dist', '.build-stamp')).mtimeMs;
  } catch {
    return 'dist/ is not built (npm run build)';
  }
  const newest = newestSource(base);
  if (newest.mtimeMs > built) return `${newest.path} changed after the last build (npm run build)`;
  return undefined;
}
