import { resolve } from 'node:path';
import { requantizeGgufToQ8_0 } from '../../ml/llm/tf/gguf-requantize.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { makeOutput } from '../output.js';
import type { llmSpec } from '../specs/llm.js';

/** `Model.Q4_1.gguf` → `Model.Q8_0.gguf`; a name without a 4-bit type gets `.Q8_0` before `.gguf`. */
export function q8OutputPath(model: string): string {
  const abs = resolve(model);
  const swapped = abs.replace(/([._-])q4_[01](?=[._-][^/]*$|\.gguf$)/i, '$1Q8_0');
  if (swapped !== abs) return swapped;
  return abs.replace(/(\.gguf)?$/i, '.Q8_0.gguf');
}

/** `corella llm requantize MODEL.gguf [--out PATH]`. */
export async function llm({ values, positionals }: ArgsOf<typeof llmSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const [action, model, ...rest] = positionals;
  if (action !== 'requantize' || !model || rest.length > 0)
    throw new UsageError('llm requantize MODEL.gguf [--out PATH]');
  const target = values.out ?? q8OutputPath(model);
  const t0 = performance.now();
  const r = await requantizeGgufToQ8_0(model, target);
  const seconds = (performance.now() - t0) / 1000;
  out.result({ ...r, seconds }, () =>
    [
      `wrote ${r.path} (${(r.bytes / 2 ** 20).toFixed(1)} MiB, sha256 ${r.sha256}) in ${seconds.toFixed(1)} s`,
      `  as Q8_0: ${
        Object.entries(r.converted)
          .map(([type, n]) => `${n} ${type}`)
          .join(', ') || 'nothing (no 4-bit tensors)'
      }; copied: ${r.kept}`,
      `  use it: --model ${r.path}`,
    ].join('\n'),
  );
  return EXIT.ok;
}
