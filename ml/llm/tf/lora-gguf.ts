import { writeGgufFile, type GgufTensorOut } from './gguf-writer.js';
import { LoraAdapter } from './lora.js';

/**
 * Writes the adapter as the GGUF LoRA that llama.cpp loads with a base model (llama-adapter.cpp):
 * `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the base's architecture, and per
 * adapted matrix W (ggml dims [in, out]) two F32 tensors `<W>.lora_a` with dims [in, r] (A, r rows of `in`)
 * and `<W>.lora_b` with dims [r, out] (B, `out` rows of r). llama.cpp computes B·(A·x)·alpha/r·scale, with r
 * read from lora_a's second dim: at scale 1 exactly our ΔW.
 */
export async function exportLoraGguf(
  adapter: LoraAdapter,
  path: string,
  opts: { name?: string } = {},
): Promise<void> {
  const host = await adapter.toHost();
  const r = adapter.config.rank;
  const tensors: GgufTensorOut[] = [];
  for (const p of adapter.pairs) {
    const key = LoraAdapter.key(p.layer, p.target);
    const [rank, inDim] = p.a.shape;
    const [outDim] = p.b.shape;
    if (rank !== r) throw new Error(`unreachable: rank ${rank} ≠ ${r}`);
    tensors.push(
      { name: `${key}.weight.lora_a`, dims: [inDim, r], data: host[key].a },
      { name: `${key}.weight.lora_b`, dims: [r, outDim], data: host[key].b },
    );
  }
  await writeGgufFile(
    path,
    [
      ['general.architecture', { type: 'str', value: adapter.hp.architecture }],
      ['general.type', { type: 'str', value: 'adapter' }],
      ['general.name', { type: 'str', value: opts.name ?? 'corella-lora' }],
      ['adapter.type', { type: 'str', value: 'lora' }],
      ['adapter.lora.alpha', { type: 'f32', value: adapter.config.alpha }],
    ],
    tensors,
  );
}
