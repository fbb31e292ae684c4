import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { access } from 'node:fs/promises';
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

/**
 * The cached model `corella up` takes: the first `.gguf` by name in `<home>/models`. fetch-model writes
 * one file there (Q8_0 from either source); a machine that fetched before it re-quantized holds the Q4_1
 * one, and keeps it until it is removed or `--model` names another, so its runs stay comparable.
 */
export function cachedModelFile(home: string): string | undefined {
  const modelsDir = join(home, 'models');
  let names: string[];
  try {
    names = readdirSync(modelsDir);
  } catch {
    return undefined;
  }
  const first = names.filter((n) => n.endsWith('.gguf')).sort()[0];
  return first === undefined ? undefined : join(modelsDir, first);
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
  const cached = cachedModelFile(opts.home);
  if (cached !== undefined) return local(cached, 'cache');
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

/** Tensor types that llama.cpp's CPU matmul has no fast path for on these machines (docs/llm-branch.md). */
const SLOW_CPU_TYPES = new Set(['Q4_0', 'Q4_1']);

export interface ModelWeightTypes {
  /** ggml type name → number of tensors of that type, most frequent first. */
  types: Record<string, number>;
  /** The 4-bit types among them that llama.cpp runs without its fast CPU path here. */
  slowOnCpu: string[];
}

/** What to do about a model with slow 4-bit matrices: one sentence, shared by doctor and `corella up`. */
export function slowModelAdvice(path: string, slowOnCpu: string[]): string {
  return (
    `${path} holds ${slowOnCpu.join('/')} matrices, which llama.cpp has no fast CPU path for: ` +
    `\`corella llm requantize ${path}\` writes a Q8_0 copy that runs about 1.6× faster ` +
    `(pass it with --model, or remove this file so that the cache holds the copy)`
  );
}

/** The tensor types of a GGUF file, from its header alone (no weights are read). */
export async function modelWeightTypes(path: string): Promise<ModelWeightTypes> {
  // Loaded here, not at the top: the GGUF reader pulls in node-llama-cpp, which every command that imports
  // this module would otherwise pay for at start-up; only doctor and `corella up`'s hint read a header.
  const [{ GgufFile }, { ggmlTypeName }] = await Promise.all([
    import('../ml/llm/tf/gguf-file.js'),
    import('../ml/llm/tf/ggml-types.js'),
  ]);
  const file = await GgufFile.open(path);
  const counts = new Map<string, number>();
  for (const t of file.tensors.values()) {
    const name = ggmlTypeName(t.ggmlType);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const sorted = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return {
    types: Object.fromEntries(sorted),
    slowOnCpu: sorted.map(([name]) => name).filter((n) => SLOW_CPU_TYPES.has(n)),
  };
}

/**
 * One line for `corella up` when the model it runs is 4-bit Q4_0/Q4_1 on the CPU: it works, but every LLM
 * pass takes about 1.6× longer than on Q8_0 (the LoRA config's 33 minutes become about 44). Nothing for a
 * GPU run, an hf: URI, or a file whose header cannot be read here (the LLM activity reports that one).
 */
export async function slowModelHint(model: ResolvedModel, gpu: boolean): Promise<string | undefined> {
  if (gpu || model.path.startsWith('hf:')) return undefined;
  const weights = await modelWeightTypes(model.path).catch(() => undefined);
  if (!weights || weights.slowOnCpu.length === 0) return undefined;
  return `LLM: ${slowModelAdvice(model.path, weights.slowOnCpu)}`;
}
