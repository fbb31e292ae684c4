import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let cached: string | undefined;

function git(args: string[]): string {
  return execFileSync('git', args, {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    timeout: 5_000,
  }).trim();
}

/**
 * The code a run was made with: CORELLA_CODE_VERSION when the deployment sets it, else the git commit of this
 * checkout (with "-dirty" when tracked files differ from it, since then the commit alone does not name the
 * code), else the package version (an installed copy without .git).
 */
export function codeVersion(): string {
  const fromEnv = process.env.CORELLA_CODE_VERSION;
  if (fromEnv) return fromEnv;
  if (cached) return cached;
  try {
    const commit = git(['rev-parse', 'HEAD']);
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    cached = `git:${commit}${dirty ? '-dirty' : ''}`;
  } catch {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      name?: string;
      version?: string;
    };
    cached = `${pkg.name ?? 'corella'}@${pkg.version ?? '0.0.0'}`;
  }
  return cached;
}
