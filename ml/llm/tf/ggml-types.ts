import { CorellaError } from '../../errors.js';

/**
 * ggml tensor types that we dequantize, with their block layouts (llama.cpp ggml-common.h). A block holds
 * `blockSize` consecutive values of a row (ne0 is always a multiple of it); blocks are stored back to back.
 *
 * - F32 / F16: one value per "block".
 * - Q8_0: f16 scale d, then 32 int8 quants; x = d·q.
 * - Q4_1: f16 scale d, f16 minimum m, then 16 bytes of nibbles; byte j holds value j in its low nibble and
 *   value j + 16 in its high nibble; x = d·q + m.
 * - Q4_0: f16 scale d, 16 bytes of nibbles laid out as Q4_1's; x = d·(q − 8).
 *
 * These are the types our models use (SmolLM2 from PyPI: Q4_1 matrices, a Q8_0 token embedding, F32 norms;
 * the hub fetch: Q8_0; the tiny test model: F32). K-quants (Q4_K, Q6_K, ...) are refused by name until a
 * model needs them.
 */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8 } as const;
export type GgmlTypeId = (typeof GGML_TYPE)[keyof typeof GGML_TYPE];

interface TypeLayout {
  name: string;
  blockSize: number;
  blockBytes: number;
}

const LAYOUTS: Record<number, TypeLayout> = {
  [GGML_TYPE.F32]: { name: 'F32', blockSize: 1, blockBytes: 4 },
  [GGML_TYPE.F16]: { name: 'F16', blockSize: 1, blockBytes: 2 },
  [GGML_TYPE.Q4_0]: { name: 'Q4_0', blockSize: 32, blockBytes: 2 + 16 },
  [GGML_TYPE.Q4_1]: { name: 'Q4_1', blockSize: 32, blockBytes: 2 + 2 + 16 },
  [GGML_TYPE.Q8_0]: { name: 'Q8_0', blockSize: 32, blockBytes: 2 + 32 },
};

/** Names of the ggml types llama.cpp knows, for error messages about the ones we do not read. */
const GGML_TYPE_NAMES: Record<number, string> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  6: 'Q5_0',
  7: 'Q5_1',
  8: 'Q8_0',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  12: 'Q4_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  30: 'BF16',
};

export function ggmlTypeName(type: number): string {
  return GGML_TYPE_NAMES[type] ?? `type ${type}`;
}

export function isSupportedGgmlType(type: number): type is GgmlTypeId {
  return LAYOUTS[type] !== undefined;
}

function layoutOf(type: number, tensor: string): TypeLayout {
  const l = LAYOUTS[type];
  if (!l) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `tensor ${tensor} has ggml type ${ggmlTypeName(type)}, which the TensorFlow.js forward pass cannot ` +
        `dequantize (supported: ${Object.values(LAYOUTS)
          .map((x) => x.name)
          .join(', ')})`,
      { details: { tensor, ggmlType: type } },
    );
  }
  return l;
}

/** Bytes that `count` values of `type` occupy; `count` must fill whole blocks. */
export function ggmlByteSize(type: number, count: number, tensor = 'tensor'): number {
  const l = layoutOf(type, tensor);
  if (count % l.blockSize !== 0) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `tensor ${tensor}: ${count} values do not fill whole ${l.name} blocks of ${l.blockSize}`,
      { details: { tensor, count } },
    );
  }
  return (count / l.blockSize) * l.blockBytes;
}

/** IEEE 754 half → number (subnormals, infinities and NaN included). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** number → IEEE 754 half bits, rounded to nearest even (subnormals included; overflow → ±inf), as ggml's FP32→FP16. */
export function f32ToF16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  // A carry out of the mantissa moves into the exponent, which is the correctly rounded result (up to ±inf).
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/**
 * float32 values → Q8_0 blocks, as llama.cpp's `quantize_row_q8_0_ref`: per block of 32, d = max|x| / 127,
 * q = roundf(x · (1/d)) (halves away from zero), d stored as f16. The quants are computed with the f32 d,
 * not the stored f16 one, exactly as the reference does, so a file we write is the one llama-quantize would.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new Error(`Q8_0 needs whole blocks of 32 values, got ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 34);
  const view = new DataView(out.buffer);
  for (let b = 0, o = 0; o < x.length; b += 34, o += 32) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[o + j] * id);
      view.setInt8(b + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

/** Dequantizes `count` values of `type` from `bytes` (little-endian, as GGUF stores them). */
export function dequantize(type: number, bytes: Uint8Array, count: number, tensor = 'tensor'): Float32Array {
  const need = ggmlByteSize(type, count, tensor);
  if (bytes.byteLength < need) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `tensor ${tensor}: ${bytes.byteLength} bytes are fewer than the ${need} that ${count} ${ggmlTypeName(type)} values need`,
      { details: { tensor, count, bytes: bytes.byteLength } },
    );
  }
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, need);
  switch (type) {
    case GGML_TYPE.F32:
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    case GGML_TYPE.F16:
      for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      return out;
    case GGML_TYPE.Q8_0:
      for (let b = 0, o = 0; o < count; b += 34, o += 32) {
        const d = f16ToF32(view.getUint16(b, true));
        for (let j = 0; j < 32; j++) out[o + j] = d * view.getInt8(b + 2 + j);
      }
      return out;
    case GGML_TYPE.Q4_1:
      for (let b = 0, o = 0; o < count; b += 20, o += 32) {
        const d = f16ToF32(view.getUint16(b, true));
        const m = f16ToF32(view.getUint16(b + 2, true));
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + 4 + j];
          out[o + j] = d * (q & 0x0f) + m;
          out[o + j + 16] = d * (q >> 4) + m;
        }
      }
      return out;
    case GGML_TYPE.Q4_0:
      for (let b = 0, o = 0; o < count; b += 18, o += 32) {
        const d = f16ToF32(view.getUint16(b, true));
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + 2 + j];
          out[o + j] = d * ((q & 0x0f) - 8);
          out[o + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return out;
  }
  throw new Error(`unreachable: ggml type ${type}`);
}
