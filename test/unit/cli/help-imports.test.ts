import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../../cli/services/paths.js';

/**
 * The modules `corella --help` loads: every static, non-type import reachable from cli/main.ts. Commands are
 * imported dynamically when they run, so they are not part of it. Returns the repository files and the
 * packages (bare specifiers) reached.
 */
function staticImportGraph(entry: string): { files: string[]; packages: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    files.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/^(?:import|export)\s+(?!type\b)(?:[^;'"]*?\sfrom\s+)?'([^']+)'/gm)) {
      const spec = m[1];
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
      else packages.add(spec);
    }
  };
  visit(entry);
  return { files: [...files].map((f) => relative(repoRoot, f)).sort(), packages: [...packages].sort() };
}

describe('corella --help stays cheap', () => {
  it('cli/main.ts statically imports no package but Node built-ins, and no command module', () => {
    const { files, packages } = staticImportGraph(join(repoRoot, 'cli', 'main.ts'));
    expect(packages.filter((p) => !p.startsWith('node:'))).toEqual([]);
    expect(files.filter((f) => f.startsWith('cli/commands/'))).toEqual([]);
    // The walk does see the definitions, so it follows imports at all.
    expect(files).toContain('cli/specs/up.ts');
    expect(files).toContain('cli/specs/run-options.ts');
  });
});
