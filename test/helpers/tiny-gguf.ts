/**
 * Writes a tiny random-weight llama GGUF (v3, F32 tensors, SentencePiece-style vocabulary) so tests can load a
 * real model file through node-llama-cpp in well under a second. The vocabulary holds every substring of each
 * word form ("Yes", "▁Yes", ...) so llama.cpp's SPM bigram merging always reaches the whole word, plus the 256
 * byte-fallback tokens and printable ASCII characters so any text tokenizes.
 */
import { writeFileSync } from 'node:fs';
import { f16ToF32, f32ToF16 } from '../../ml/llm/tf/ggml-types.js';
import { Prng } from '../../ml/random.js';

export interface TinyGgufOptions {
  /** Seed of the weight generator: the same seed gives byte-identical files. */
  seed?: number;
  /** Extra words to give their own tokens (the default prompt words are always included). */
  words?: string[];
  /** Leave "Yes"/"No" out of the vocabulary (to test the answer-token check). */
  withoutAnswerWords?: boolean;
  nEmbd?: number;
  nHead?: number;
  nFf?: number;
  nLayer?: number;
  contextLength?: number;
  /** Key/value heads (grouped-query attention when fewer than nHead); default nHead. */
  nHeadKv?: number;
  /** `llama.rope.freq_base`; omitted from the metadata (llama.cpp's default 10000) when unset. */
  ropeFreqBase?: number;
  /** `general.architecture` (and the metadata key prefix); default llama. */
  architecture?: string;
  /** ggml type of the 2-D weight matrices (norms stay F32, as in real models); default F32. */
  matrixType?: TinyTensorType;
  /** ggml type of token_embd.weight; default F32. */
  embeddingType?: TinyTensorType;
  /** No output.weight: the logits reuse the token embedding (as SmolLM2 does). */
  tiedOutput?: boolean;
}

/** Tensor types the helper can write (quantized with the reference rounding of ggml-quants.c). */
export type TinyTensorType = 'F32' | 'F16' | 'Q8_0' | 'Q4_1';
const TYPE_ID: Record<TinyTensorType, number> = { F32: 0, F16: 1, Q8_0: 8, Q4_1: 3 };

const DEFAULT_WORDS = [
  'Below',
  'is',
  'the',
  'rating',
  'history',
  'of',
  'a',
  'user',
  'Please',
  'predict',
  'whether',
  'will',
  'like',
  'based',
  'on',
  'his',
  'her',
  'his/her',
  'and',
  'quality',
  'target',
  'item',
  'You',
  'should',
  'ONLY',
  'answer',
  'no',
  'or',
  'yes',
  'Answer',
  'stars',
  'star',
  'Movie',
  'Story',
  'Toy',
  'The',
  'Matrix',
  'Alien',
  'Heat',
  'Fargo',
  'Casino',
  'none',
];

const ANSWER_WORDS = ['Yes', 'No'];

/** GGUF metadata value types. */
const T = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;

type MetaValue =
  | { type: 'u32' | 'i32' | 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'str'; value: string }
  | { type: 'str[]'; value: string[] }
  | { type: 'f32[]'; value: number[] }
  | { type: 'i32[]'; value: number[] };

class ByteWriter {
  private chunks: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  pad(alignment: number): void {
    const rem = this.length % alignment;
    if (rem !== 0) this.push(Buffer.alloc(alignment - rem));
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeMeta(w: ByteWriter, key: string, v: MetaValue): void {
  w.str(key);
  switch (v.type) {
    case 'u32':
      w.u32(T.UINT32);
      w.u32(v.value);
      break;
    case 'i32':
      w.u32(T.INT32);
      w.i32(v.value);
      break;
    case 'f32':
      w.u32(T.FLOAT32);
      w.f32(v.value);
      break;
    case 'bool':
      w.u32(T.BOOL);
      w.push(Buffer.from([v.value ? 1 : 0]));
      break;
    case 'str':
      w.u32(T.STRING);
      w.str(v.value);
      break;
    case 'str[]':
      w.u32(T.ARRAY);
      w.u32(T.STRING);
      w.u64(v.value.length);
      for (const s of v.value) w.str(s);
      break;
    case 'f32[]':
      w.u32(T.ARRAY);
      w.u32(T.FLOAT32);
      w.u64(v.value.length);
      for (const x of v.value) w.f32(x);
      break;
    case 'i32[]':
      w.u32(T.ARRAY);
      w.u32(T.INT32);
      w.u64(v.value.length);
      for (const x of v.value) w.i32(x);
      break;
  }
}

/** Deterministic normal samples: ml/random's mulberry32 stream through Box–Muller. */
function normalGenerator(seed: number): () => number {
  const p = new Prng(seed);
  return () => p.normal();
}

function buildVocab(words: string[]): { tokens: string[]; types: number[]; scores: number[] } {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const pieces = new Set<string>(['▁']);
  for (let c = 33; c < 127; c++) pieces.add(String.fromCharCode(c));
  for (const word of words) {
    for (const form of [word, `▁${word}`]) {
      for (let i = 0; i < form.length; i++) {
        for (let j = i + 1; j <= form.length; j++) pieces.add(form.slice(i, j));
      }
    }
  }
  const sorted = [...pieces].sort((x, y) => x.length - y.length || (x < y ? -1 : x > y ? 1 : 0));
  const scores = tokens.map(() => 0);
  for (const p of sorted) {
    tokens.push(p);
    types.push(1);
    // Longer pieces score higher so merges prefer growing whole words.
    scores.push(p.length);
  }
  return { tokens, types, scores };
}

/** Writes the model to `path` and returns the vocabulary size. */
export function writeTinyGguf(
  path: string,
  opts: TinyGgufOptions = {},
): { vocabSize: number; nEmbd: number } {
  const nEmbd = opts.nEmbd ?? 32;
  const nHead = opts.nHead ?? 4;
  const nFf = opts.nFf ?? 64;
  const nLayer = opts.nLayer ?? 2;
  const ctx = opts.contextLength ?? 2048;
  const nHeadKv = opts.nHeadKv ?? nHead;
  const arch = opts.architecture ?? 'llama';
  const mt = opts.matrixType ?? 'F32';
  const words = [
    ...DEFAULT_WORDS,
    ...(opts.words ?? []),
    ...(opts.withoutAnswerWords ? [] : ANSWER_WORDS),
  ].filter((w) => !(opts.withoutAnswerWords && /^(yes|no)$/i.test(w)));
  const { tokens, types, scores } = buildVocab(words);
  const nVocab = tokens.length;
  const headDim = nEmbd / nHead;

  const modelMeta: [string, MetaValue][] = [
    ['general.architecture', { type: 'str', value: arch }],
    ['general.name', { type: 'str', value: 'corella-tiny-test' }],
    ['general.alignment', { type: 'u32', value: 32 }],
    ['llama.context_length', { type: 'u32', value: ctx }],
    ['llama.embedding_length', { type: 'u32', value: nEmbd }],
    ['llama.block_count', { type: 'u32', value: nLayer }],
    ['llama.feed_forward_length', { type: 'u32', value: nFf }],
    ['llama.attention.head_count', { type: 'u32', value: nHead }],
    ['llama.attention.head_count_kv', { type: 'u32', value: nHeadKv }],
    ['llama.rope.dimension_count', { type: 'u32', value: headDim }],
    ...(opts.ropeFreqBase !== undefined
      ? [['llama.rope.freq_base', { type: 'f32', value: opts.ropeFreqBase }] as [string, MetaValue]]
      : []),
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
    ['llama.vocab_size', { type: 'u32', value: nVocab }],
  ];
  const meta = modelMeta.map(([k, v]): [string, MetaValue] => [
    k.startsWith('llama.') ? `${arch}.${k.slice(6)}` : k,
    v,
  ]);
  meta.push(
    ['tokenizer.ggml.model', { type: 'str', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'str[]', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32[]', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.unknown_token_id', { type: 'u32', value: 0 }],
    ['tokenizer.ggml.bos_token_id', { type: 'u32', value: 1 }],
    ['tokenizer.ggml.eos_token_id', { type: 'u32', value: 2 }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  );

  // [name, ggml dims (ne0 first), init std]; norms are ones. Stds keep activations O(1) so outputs depend on input.
  const kvDim = nHeadKv * headDim;
  const et = opts.embeddingType ?? 'F32';
  const tensors: TensorSpec[] = [
    ['token_embd.weight', [nEmbd, nVocab], 1, et],
    ['output_norm.weight', [nEmbd], 'ones'],
    ...(opts.tiedOutput ? [] : [['output.weight', [nEmbd, nVocab], 2 / Math.sqrt(nEmbd), mt] as TensorSpec]),
  ];
  for (let l = 0; l < nLayer; l++) {
    const s = 1 / Math.sqrt(nEmbd);
    tensors.push(
      [`blk.${l}.attn_norm.weight`, [nEmbd], 'ones'],
      [`blk.${l}.attn_q.weight`, [nEmbd, nEmbd], 2 * s, mt],
      [`blk.${l}.attn_k.weight`, [nEmbd, kvDim], 2 * s, mt],
      [`blk.${l}.attn_v.weight`, [nEmbd, kvDim], s, mt],
      [`blk.${l}.attn_output.weight`, [nEmbd, nEmbd], s, mt],
      [`blk.${l}.ffn_norm.weight`, [nEmbd], 'ones'],
      [`blk.${l}.ffn_gate.weight`, [nEmbd, nFf], s, mt],
      [`blk.${l}.ffn_up.weight`, [nEmbd, nFf], s, mt],
      [`blk.${l}.ffn_down.weight`, [nFf, nEmbd], 1 / Math.sqrt(nFf), mt],
    );
  }

  writeGguf(path, meta, tensors, opts.seed ?? 1);
  return { vocabSize: nVocab, nEmbd };
}

export interface TinyLoraOptions {
  seed?: number;
  rank?: number;
  alpha?: number;
  /** Must match the base model's. */
  nEmbd?: number;
  nLayer?: number;
}

/** Writes a LoRA adapter GGUF for a tiny model: random A/B on each layer's attn_q and attn_v. */
export function writeTinyLoraGguf(path: string, opts: TinyLoraOptions = {}): void {
  const nEmbd = opts.nEmbd ?? 32;
  const nLayer = opts.nLayer ?? 2;
  const rank = opts.rank ?? 4;
  const meta: [string, MetaValue][] = [
    ['general.architecture', { type: 'str', value: 'llama' }],
    ['general.type', { type: 'str', value: 'adapter' }],
    ['general.alignment', { type: 'u32', value: 32 }],
    ['adapter.type', { type: 'str', value: 'lora' }],
    ['adapter.lora.alpha', { type: 'f32', value: opts.alpha ?? rank }],
  ];
  const tensors: TensorSpec[] = [];
  for (let l = 0; l < nLayer; l++) {
    for (const t of ['attn_q', 'attn_v']) {
      tensors.push(
        [`blk.${l}.${t}.weight.lora_a`, [nEmbd, rank], 1 / Math.sqrt(nEmbd)],
        [`blk.${l}.${t}.weight.lora_b`, [rank, nEmbd], 1],
      );
    }
  }
  writeGguf(path, meta, tensors, opts.seed ?? 2);
}

/** [name, ggml dims (ne0 first), init std or 'ones', ggml type (default F32)]. */
type TensorSpec = [string, number[], number | 'ones', TinyTensorType?];

/** number → IEEE half bits (round to nearest even): the encoder the requantizer uses. */
export const f32ToF16Bits = f32ToF16;

/** IEEE half bits → number: the decoder the model reader uses (ml/llm/tf/ggml-types.ts). */
export const f16BitsToF32 = f16ToF32;

/**
 * Encodes values as ggml stores them: F16 halves; Q8_0 blocks of 32 (f16 d = max|x|/127, int8 round(x/d));
 * Q4_1 blocks of 32 (f16 d = (max − min)/15, f16 m = min, nibble round((x − min)/d) clamped to 0..15, value j
 * low and j + 16 high in byte j). `decoded` receives what a correct reader must return.
 */
export function encodeTensor(type: TinyTensorType, data: Float32Array, decoded?: Float32Array): Buffer {
  const n = data.length;
  const out = (i: number, v: number) => {
    if (decoded) decoded[i] = v;
  };
  if (type === 'F32') {
    data.forEach((v, i) => out(i, v));
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
  if (type === 'F16') {
    const b = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) {
      const h = f32ToF16Bits(data[i]);
      b.writeUInt16LE(h, i * 2);
      out(i, f16BitsToF32(h));
    }
    return b;
  }
  if (n % 32 !== 0) throw new Error(`${type} needs a multiple of 32 values, got ${n}`);
  if (type === 'Q8_0') {
    const b = Buffer.alloc((n / 32) * 34);
    for (let blk = 0; blk < n / 32; blk++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(data[blk * 32 + j]));
      const d = amax / 127;
      const dh = f32ToF16Bits(d);
      b.writeUInt16LE(dh, blk * 34);
      const dd = f16BitsToF32(dh);
      for (let j = 0; j < 32; j++) {
        // `| 0`: an int8 has no −0, so neither may the expected value.
        const q = d === 0 ? 0 : Math.max(-128, Math.min(127, Math.round(data[blk * 32 + j] / d))) | 0;
        b.writeInt8(q, blk * 34 + 2 + j);
        out(blk * 32 + j, Math.fround(dd * q));
      }
    }
    return b;
  }
  const b = Buffer.alloc((n / 32) * 20);
  for (let blk = 0; blk < n / 32; blk++) {
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < 32; j++) {
      min = Math.min(min, data[blk * 32 + j]);
      max = Math.max(max, data[blk * 32 + j]);
    }
    const d = (max - min) / 15;
    const dh = f32ToF16Bits(d);
    const mh = f32ToF16Bits(min);
    b.writeUInt16LE(dh, blk * 20);
    b.writeUInt16LE(mh, blk * 20 + 2);
    const dd = f16BitsToF32(dh);
    const mm = f16BitsToF32(mh);
    const q = (j: number) =>
      d === 0 ? 0 : Math.max(0, Math.min(15, Math.round((data[blk * 32 + j] - min) / d)));
    for (let j = 0; j < 16; j++) {
      const lo = q(j);
      const hi = q(j + 16);
      b.writeUInt8(lo | (hi << 4), blk * 20 + 4 + j);
      out(blk * 32 + j, Math.fround(Math.fround(dd * lo) + mm));
      out(blk * 32 + j + 16, Math.fround(Math.fround(dd * hi) + mm));
    }
  }
  return b;
}

function writeGguf(path: string, meta: [string, MetaValue][], tensors: TensorSpec[], seed: number): void {
  const w = new ByteWriter();
  w.push(Buffer.from('GGUF', 'ascii'));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(meta.length);
  for (const [k, v] of meta) writeMeta(w, k, v);

  const alignment = 32;
  let offset = 0;
  // Values are drawn first (in tensor order, whatever the types) so a seed gives the same weights in every type.
  const rand = normalGenerator(seed);
  const blobs = tensors.map(([, dims, init, type]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = init === 'ones' ? 1 : rand() * init;
    return encodeTensor(type ?? 'F32', data);
  });
  tensors.forEach(([name, dims, , type], i) => {
    w.str(name);
    w.u32(dims.length);
    for (const d of dims) w.u64(d);
    w.u32(TYPE_ID[type ?? 'F32']);
    w.u64(offset);
    offset += Math.ceil(blobs[i].length / alignment) * alignment;
  });
  w.pad(alignment);
  for (const blob of blobs) {
    w.push(blob);
    w.pad(alignment);
  }
  writeFileSync(path, w.toBuffer());
}
