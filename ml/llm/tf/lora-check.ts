import { CorellaError } from '../../errors.js';
import { GgufFile } from './gguf-file.js';

// No tfjs here: ml/llm/model.ts runs this check before every llama.cpp load of an adapter.

function loraError(
  loraPath: string,
  basePath: string,
  why: string,
  details: Record<string, unknown> = {},
): CorellaError {
  return new CorellaError(
    'BAD_MODEL_FILE',
    `LoRA adapter ${loraPath} does not fit base model ${basePath}: ${why}`,
    {
      details: { path: loraPath, base: basePath, ...details },
    },
  );
}

export interface LoraFileInfo {
  alpha: number | undefined;
  rank: number;
  /** Adapted base tensors, e.g. blk.28.attn_q.weight. */
  targets: string[];
}

/**
 * Checks a GGUF LoRA against the base model's tensor infos before llama.cpp sees it, the same checks as
 * llama.cpp's adapter loader: an adapter of type lora for the same architecture, every lora_a / lora_b
 * paired, naming a base tensor, a of dims [in, r] and b of dims [r, out] for the base's [in, out]. llama.cpp
 * reports a mismatch only as a log line and a generic failure; this names the tensor and both shapes.
 */
export async function checkLoraForBase(basePath: string, loraPath: string): Promise<LoraFileInfo> {
  const [base, lora] = await Promise.all([GgufFile.open(basePath), GgufFile.open(loraPath)]);
  if (lora.meta('general.type') !== 'adapter' || lora.meta('adapter.type') !== 'lora') {
    throw loraError(
      loraPath,
      basePath,
      `it is not a LoRA adapter (general.type ${JSON.stringify(lora.meta('general.type'))}, adapter.type ${JSON.stringify(lora.meta('adapter.type'))})`,
      { field: 'adapter.type' },
    );
  }
  const arch = lora.meta('general.architecture');
  const baseArch = base.meta('general.architecture');
  if (arch !== baseArch) {
    throw loraError(
      loraPath,
      basePath,
      `architecture ${JSON.stringify(arch)} ≠ the base's ${JSON.stringify(baseArch)}`,
      {
        field: 'general.architecture',
      },
    );
  }
  const pairs = new Map<string, { a?: number[]; b?: number[] }>();
  for (const t of lora.tensors.values()) {
    const m = /^(.*)\.lora_(a|b)$/.exec(t.name);
    // llama.cpp discards (with a warning) tensors that are neither; so do we, to refuse nothing it accepts.
    if (!m) continue;
    const p = pairs.get(m[1]) ?? {};
    p[m[2] as 'a' | 'b'] = t.dims;
    pairs.set(m[1], p);
  }
  if (pairs.size === 0) throw loraError(loraPath, basePath, 'it holds no lora_a / lora_b tensors');
  let rank = -1;
  for (const [name, { a, b }] of pairs) {
    if (!a || !b)
      throw loraError(loraPath, basePath, `${name} has lora_${a ? 'a' : 'b'} without lora_${a ? 'b' : 'a'}`, {
        tensor: name,
      });
    const w = base.tensors.get(name);
    if (!w) throw loraError(loraPath, basePath, `the base has no tensor ${name}`, { tensor: name });
    if (
      w.dims.length !== 2 ||
      a.length !== 2 ||
      b.length !== 2 ||
      a[0] !== w.dims[0] ||
      b[1] !== w.dims[1] ||
      a[1] !== b[0]
    ) {
      throw loraError(
        loraPath,
        basePath,
        `${name}: lora_a [${a.join(', ')}] and lora_b [${b.join(', ')}] do not factor the base's [${w.dims.join(', ')}] (expected [${w.dims[0]}, r] and [r, ${w.dims[1]}])`,
        { tensor: name },
      );
    }
    rank = a[1];
  }
  const alpha = lora.meta('adapter.lora.alpha');
  return { alpha: typeof alpha === 'number' ? alpha : undefined, rank, targets: [...pairs.keys()].sort() };
}
