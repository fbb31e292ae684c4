import { writeFile, rename } from 'node:fs/promises';

/** GGUF metadata value types (gguf.h). */
const GGUF_TYPE = { UINT32: 4, FLOAT32: 6, STRING: 8 } as const;

export type GgufMetaValue = { type: 'u32' | 'f32'; value: number } | { type: 'str'; value: string };

export interface GgufTensorOut {
  name: string;
  /** ggml order: dims[0] is the contiguous (row) length. */
  dims: number[];
  data: Float32Array;
}

const ALIGNMENT = 32;

/**
 * Serialises a GGUF v3 file with F32 tensors: the header (magic, version, counts), the metadata key/values,
 * the tensor infos (name, dims, type, offset into the data section), then each tensor's bytes at an offset
 * aligned to `general.alignment` (32). No library writes GGUF from Node, and an adapter needs only this subset.
 */
export function encodeGguf(meta: [string, GgufMetaValue][], tensors: GgufTensorOut[]): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    length += b.length;
  };
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    push(b);
  };
  const u64 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    push(b);
  };
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    u64(b.length);
    push(b);
  };
  const pad = () => {
    const rem = length % ALIGNMENT;
    if (rem) push(Buffer.alloc(ALIGNMENT - rem));
  };

  push(Buffer.from('GGUF', 'latin1'));
  u32(3);
  u64(tensors.length);
  u64(meta.length + 1);
  str('general.alignment');
  u32(GGUF_TYPE.UINT32);
  u32(ALIGNMENT);
  for (const [key, v] of meta) {
    str(key);
    if (v.type === 'u32') {
      u32(GGUF_TYPE.UINT32);
      u32(v.value);
    } else if (v.type === 'f32') {
      u32(GGUF_TYPE.FLOAT32);
      const b = Buffer.alloc(4);
      b.writeFloatLE(v.value);
      push(b);
    } else {
      u32(GGUF_TYPE.STRING);
      str(v.value as string);
    }
  }
  let offset = 0;
  for (const t of tensors) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (n !== t.data.length)
      throw new Error(
        `tensor ${t.name}: dims [${t.dims.join(', ')}] hold ${n} values, data has ${t.data.length}`,
      );
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(0); // GGML_TYPE_F32
    u64(offset);
    offset += Math.ceil((n * 4) / ALIGNMENT) * ALIGNMENT;
  }
  pad();
  for (const t of tensors) {
    push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    pad();
  }
  return Buffer.concat(parts);
}

/** Writes atomically (temp file + rename), so a reader never sees half an adapter. */
export async function writeGgufFile(
  path: string,
  meta: [string, GgufMetaValue][],
  tensors: GgufTensorOut[],
): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, encodeGguf(meta, tensors));
  await rename(tmp, path);
}
