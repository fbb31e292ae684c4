import { CorellaError } from '../../errors.js';
import type { GgufFile } from './gguf-file.js';

/**
 * llama.cpp's RoPE orderings. "normal" rotates adjacent pairs (x[2i], x[2i+1]); "neox" rotates the two
 * halves (x[i], x[i + n/2]). llama.cpp picks it by architecture, not by metadata: `llama` is normal, because
 * convert_hf_to_gguf.py permutes the rows of Q and K so that Hugging Face's half-split rotation becomes the
 * pairwise one. Using neox on a llama GGUF would therefore scramble every attention score.
 */
export type RopeOrdering = 'normal' | 'neox';

/** Hyperparameters of a Llama-family model, as llama.cpp reads them from the GGUF metadata. */
export interface LlamaHparams {
  architecture: string;
  nLayer: number;
  nEmbd: number;
  nFf: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  /** Leading dims of each head that RoPE rotates (`rope.dimension_count`, default headDim). */
  nRot: number;
  ropeFreqBase: number;
  ropeOrdering: RopeOrdering;
  rmsEps: number;
  nVocab: number;
  /** No `output.weight`: the logits reuse the token embedding. */
  tiedOutput: boolean;
}

const ROPE_BY_ARCH: Record<string, RopeOrdering> = { llama: 'normal' };

function need(file: GgufFile, key: string): number {
  const v = file.meta(key);
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new CorellaError('BAD_MODEL_FILE', `GGUF file ${file.path} has no numeric metadata ${key}`, {
      details: { path: file.path, field: key },
    });
  }
  return v;
}

function optional(file: GgufFile, key: string, fallback: number): number {
  const v = file.meta(key);
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/**
 * Reads the hyperparameters; any architecture other than `llama` is refused by name (its graph differs:
 * biases, norms, rope, activation), and so are settings our forward does not implement (rope scaling).
 */
export function llamaHparams(file: GgufFile): LlamaHparams {
  const arch = file.meta('general.architecture');
  if (typeof arch !== 'string' || !(arch in ROPE_BY_ARCH)) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `GGUF file ${file.path}: architecture ${JSON.stringify(arch)} is not supported by the TensorFlow.js ` +
        `forward pass (supported: ${Object.keys(ROPE_BY_ARCH).join(', ')})`,
      { details: { path: file.path, field: 'general.architecture', architecture: arch } },
    );
  }
  const p = (k: string) => `${arch}.${k}`;
  const scaling = file.meta(p('rope.scaling.type'));
  if (typeof scaling === 'string' && scaling !== 'none') {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `GGUF file ${file.path}: rope scaling ${JSON.stringify(scaling)} is not supported by the TensorFlow.js forward pass`,
      { details: { path: file.path, field: p('rope.scaling.type') } },
    );
  }
  const nEmbd = need(file, p('embedding_length'));
  const nHead = need(file, p('attention.head_count'));
  const headDim = optional(file, p('attention.key_length'), nEmbd / nHead);
  const emb = file.tensor('token_embd.weight');
  const hp: LlamaHparams = {
    architecture: arch,
    nLayer: need(file, p('block_count')),
    nEmbd,
    nFf: need(file, p('feed_forward_length')),
    nHead,
    nHeadKv: optional(file, p('attention.head_count_kv'), nHead),
    headDim,
    nRot: optional(file, p('rope.dimension_count'), headDim),
    ropeFreqBase: optional(file, p('rope.freq_base'), 10000),
    ropeOrdering: ROPE_BY_ARCH[arch],
    rmsEps: optional(file, p('attention.layer_norm_rms_epsilon'), 1e-5),
    nVocab: emb.dims[1],
    tiedOutput: !file.tensors.has('output.weight'),
  };
  if (
    !Number.isInteger(hp.headDim) ||
    hp.nHead % hp.nHeadKv !== 0 ||
    hp.nRot > hp.headDim ||
    hp.nRot % 2 !== 0 ||
    emb.dims[0] !== nEmbd
  ) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `GGUF file ${file.path}: inconsistent attention shape (embedding ${nEmbd}, heads ${hp.nHead}/${hp.nHeadKv}, head dim ${hp.headDim}, rope dims ${hp.nRot})`,
      { details: { path: file.path } },
    );
  }
  return hp;
}
