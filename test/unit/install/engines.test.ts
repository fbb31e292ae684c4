import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';

// semver is npm's own range logic (no type declarations ship with it; the few calls used are typed here).
const semver = createRequire(import.meta.url)('semver') as {
  satisfies(version: string, range: string): boolean;
  minVersion(range: string): { version: string } | null;
};

/**
 * Packages whose `engines` ask for more than our lowest supported Node, checked by hand on Node 20.20 and
 * kept, with the reason. A new entry here is a decision, not a way to silence the test.
 */
const VERIFIED_ON_20: Record<string, string> = {
  // light-my-request (fastify's inject) → cookie 2: plain string parsing, no Node 22 API; parse,
  // stringify and Set-Cookie round-trips run on 20.20, and the serve tests run fastify 5 on it.
  'node_modules/cookie': '>=22',
  // The run report's charts: compile + render to SVG through vega runs on 20.20; nothing 22-only is used.
  'node_modules/vega-lite': '>=22',
};

interface LockEntry {
  engines?: { node?: string } | string[];
}

async function json<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(new URL(`../../../${path}`, import.meta.url), 'utf8')) as T;
}

/** The lowest version of each `||` alternative of a range: `^20.19.0 || >=22.12.0` → 20.19.0, 22.12.0. */
function lowerBounds(range: string): string[] {
  return range.split('||').map((part) => {
    const min = semver.minVersion(part.trim());
    if (!min) throw new Error(`engines range ${part} has no lower bound`);
    return min.version;
  });
}

describe('engines.node', () => {
  it('is met by the Node running the tests', async () => {
    const pkg = await json<{ engines: { node: string } }>('package.json');
    expect(semver.satisfies(process.version, pkg.engines.node)).toBe(true);
  });

  it('is no lower than what the code calls: zlib.crc32 (20.15) and AbortSignal.any (20.3)', async () => {
    const pkg = await json<{ engines: { node: string } }>('package.json');
    for (const low of lowerBounds(pkg.engines.node)) {
      expect(semver.satisfies(low, '>=20.15.0'), low).toBe(true);
    }
    expect(typeof zlib.crc32).toBe('function');
    expect(typeof AbortSignal.any).toBe('function');
  });

  it("satisfies every installed package's engines at each lower bound, or the package was verified", async () => {
    const pkg = await json<{ engines: { node: string } }>('package.json');
    const lock = await json<{ packages: Record<string, LockEntry> }>('package-lock.json');
    const unmet: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || !entry.engines || Array.isArray(entry.engines) || !entry.engines.node) continue;
      const wanted = entry.engines.node;
      for (const low of lowerBounds(pkg.engines.node)) {
        if (semver.satisfies(low, wanted)) continue;
        if (VERIFIED_ON_20[path] === wanted) continue;
        unmet.push(`${path} wants node ${wanted}, we allow ${low}`);
      }
    }
    expect(unmet).toEqual([]);
  });
});
