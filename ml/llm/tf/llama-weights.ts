import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { GgufFile } from './gguf-file.js';
import { llamaHparams, type LlamaHparams } from './llama-config.js';

/** The projections of a block, named as in LoRA configs; values are their GGUF tensor stems. */
export const PROJECTIONS = {
  q: 'attn_q',
  k: 'attn_k',
  v: 'attn_v',
  o: 'attn_output',
  gate: 'ffn_gate',
  up: 'ffn_up',
  down: 'ffn_down',
} as const;
export type Projection = keyof typeof PROJECTIONS;

/** One transformer block. Matrices keep the GGUF layout, [out, in] row-major, and are applied as x·Wᵀ. */
export interface LayerWeights {
  attnNorm: tf.Tensor1D;
  ffnNorm: tf.Tensor1D;
  proj: Record<Projection, tf.Tensor2D>;
}

export interface LlamaWeights {
  hp: LlamaHparams;
  file: GgufFile;
  /** [nVocab, nEmbd] on the host: a prompt needs only its own rows, looked up without a 100 MB tensor. */
  tokenEmbd: Float32Array;
  /** [nVocab, nEmbd] on the host: `output.weight`, or `tokenEmbd` itself when the output is tied. */
  output: Float32Array;
  outputNorm: tf.Tensor1D;
  layers: LayerWeights[];
  dispose(): void;
}

/**
 * Expected ggml dims (ne0 first) of each block tensor: an [out, in] matrix is stored with dims [in, out].
 * Checked up front so a model with unexpected shapes fails with the tensor's name, not deep in a matmul.
 */
export function blockTensorDims(hp: LlamaHparams): Record<string, number[]> {
  const kv = hp.nHeadKv * hp.headDim;
  const q = hp.nHead * hp.headDim;
  return {
    attn_norm: [hp.nEmbd],
    ffn_norm: [hp.nEmbd],
    attn_q: [hp.nEmbd, q],
    attn_k: [hp.nEmbd, kv],
    attn_v: [hp.nEmbd, kv],
    attn_output: [q, hp.nEmbd],
    ffn_gate: [hp.nEmbd, hp.nFf],
    ffn_up: [hp.nEmbd, hp.nFf],
    ffn_down: [hp.nFf, hp.nEmbd],
  };
}

async function readChecked(file: GgufFile, name: string, dims: number[]): Promise<Float32Array> {
  const t = file.tensor(name);
  if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `GGUF file ${file.path}: tensor ${name} has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}]`,
      { details: { path: file.path, tensor: name } },
    );
  }
  return file.readF32(name);
}

/** Reads and dequantizes every weight of a llama GGUF into float32 (tensors on the current tfjs backend). */
export async function loadLlamaWeights(path: string): Promise<LlamaWeights> {
  const file = await GgufFile.open(path);
  const hp = llamaHparams(file);
  const tokenEmbd = await readChecked(file, 'token_embd.weight', [hp.nEmbd, hp.nVocab]);
  const output = hp.tiedOutput ? tokenEmbd : await readChecked(file, 'output.weight', [hp.nEmbd, hp.nVocab]);
  const created: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => {
    created.push(t);
    return t;
  };
  try {
    const outputNorm = keep(tf.tensor1d(await readChecked(file, 'output_norm.weight', [hp.nEmbd])));
    const dims = blockTensorDims(hp);
    const layers: LayerWeights[] = [];
    for (let l = 0; l < hp.nLayer; l++) {
      const read = (stem: string) => readChecked(file, `blk.${l}.${stem}.weight`, dims[stem]);
      const proj = {} as Record<Projection, tf.Tensor2D>;
      for (const [p, stem] of Object.entries(PROJECTIONS) as [Projection, string][]) {
        const [inDim, outDim] = dims[stem];
        proj[p] = keep(tf.tensor2d(await read(stem), [outDim, inDim]));
      }
      layers.push({
        attnNorm: keep(tf.tensor1d(await read('attn_norm'))),
        ffnNorm: keep(tf.tensor1d(await read('ffn_norm'))),
        proj,
      });
    }
    return { hp, file, tokenEmbd, output, outputNorm, layers, dispose: () => tf.dispose(created) };
  } catch (e) {
    tf.dispose(created);
    throw e;
  }
}
