import { execFile } from 'node:child_process';
import { access, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { sha256File } from '../ml/artifacts/store.js';
import { CorellaError } from '../ml/errors.js';
import { repoRoot } from './services/paths.js';

const run = promisify(execFile);

export interface ResolvedModel {
  /** Local .gguf path, or an hf: URI the LLM activity resolves into its cache. */
  path: string;
  sha256: string | undefined;
  origin: 'flag' | 'env' | 'cache' | 'fetched';
}

async function local(path: string, origin: ResolvedModel['origin']): Promise<ResolvedModel> {
  const abs = resolve(path);
  try {
    await access(abs);
  } catch {
    throw new CorellaError('BAD_MODEL_FILE', `model file ${abs} does not exist`);
  }
  return { path: abs, sha256: await sha256File(abs), origin };
}

/** `--model`, then CORELLA_LLM_MODEL, then a cached model under .corella/models, then scripts/fetch-model. */
export async function resolveModel(opts: {
  model?: string;
  home: string;
  log: (l: string) => void;
}): Promise<ResolvedModel> {
  const given = opts.model ?? process.env.CORELLA_LLM_MODEL;
  if (given) {
    if (given.startsWith('hf:'))
      return { path: given, sha256: undefined, origin: opts.model ? 'flag' : 'env' };
    return local(given, opts.model ? 'flag' : 'env');
  }
  const modelsDir = join(opts.home, 'models');
  const cached = (await readdir(modelsDir).catch(() => [] as string[]))
    .filter((n) => n.endsWith('.gguf'))
    .sort();
  if (cached.length > 0) return local(join(modelsDir, cached[0]), 'cache');
  opts.log(
    'LLM: no model configured or cached; fetching the default (SmolLM2-135M-Instruct) with scripts/fetch-model',
  );
  try {
    const { stdout } = await run(join(repoRoot, 'scripts', 'fetch-model'), ['--dest', modelsDir], {
      env: { ...process.env, CORELLA_HOME: opts.home },
      maxBuffer: 1 << 20,
    });
    const path = stdout.trim().split('\n').pop() ?? '';
    return { ...(await local(path, 'fetched')), origin: 'fetched' };
  } catch (e) {
    throw new CorellaError(
      'DATA_NOT_AVAILABLE',
      `could not fetch the default LLM: ${(e as Error).message}. Pass --model PATH.gguf or set CORELLA_LLM_MODEL`,
      { cause: e },
    );
  }
}
