import { open, rename, rm } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { sha256File } from '../../artifacts/store.js';
import { CorellaError } from '../../errors.js';
import { GGML_TYPE, dequantize, ggmlTypeName, quantizeQ8_0 } from './ggml-types.js';
import { GgufFile } from './gguf-file.js';

/** What `requantizeGgufToQ8_0` wrote. */
export interface RequantizeResult {
  path: string;
  sha256: string;
  sourceSha256: string;
  /** Tensors rewritten as Q8_0, by their source type. */
  converted: Record<string, number>;
  /** Tensors copied as they were. */
  kept: number;
  bytes: number;
}

/** gguf_type values (gguf.h) and the byte size of the fixed-size ones. */
const GGUF_FIXED: Record<number, number> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};
const GGUF_STRING = 8;
const GGUF_ARRAY = 9;
const GGUF_UINT32 = 4;
/** llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0. */
const FTYPE_MOSTLY_Q8_0 = 7;
const CONVERTIBLE = new Set<number>([GGML_TYPE.Q4_0, GGML_TYPE.Q4_1]);

/** Reads the fixed header and walks the metadata section without decoding it: where it ends, and where `general.file_type` is. */
function metadataLayout(
  header: Buffer,
  path: string,
): { version: number; kvCount: number; kvEnd: number; fileTypeAt?: number } {
  const bad = (why: string) =>
    new CorellaError('BAD_MODEL_FILE', `GGUF file ${path}: ${why}`, { details: { path } });
  if (header.toString('latin1', 0, 4) !== 'GGUF') throw bad('no GGUF magic');
  const version = header.readUInt32LE(4);
  if (version < 2) throw bad(`GGUF version ${version} is not supported (2 or 3)`);
  const kvCount = Number(header.readBigUInt64LE(16));
  let at = 24;
  const need = (n: number) => {
    if (at + n > header.length) throw bad('the metadata section runs past the header');
  };
  const u64 = () => {
    need(8);
    const v = Number(header.readBigUInt64LE(at));
    at += 8;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = header.readUInt32LE(at);
    at += 4;
    return v;
  };
  const skipString = () => {
    const n = u64();
    need(n);
    at += n;
  };
  const skipValue = (type: number): void => {
    if (type === GGUF_STRING) return skipString();
    if (type === GGUF_ARRAY) {
      const elem = u32();
      const n = u64();
      if (elem === GGUF_STRING) for (let i = 0; i < n; i++) skipString();
      else if (GGUF_FIXED[elem] !== undefined) {
        need(n * GGUF_FIXED[elem]);
        at += n * GGUF_FIXED[elem];
      } else throw bad(`metadata array of type ${elem}`);
      return;
    }
    const size = GGUF_FIXED[type];
    if (size === undefined) throw bad(`metadata value of type ${type}`);
    need(size);
    at += size;
  };
  let fileTypeAt: number | undefined;
  for (let i = 0; i < kvCount; i++) {
    const n = u64();
    need(n);
    const key = header.toString('utf8', at, at + n);
    at += n;
    const type = u32();
    if (key === 'general.file_type' && type === GGUF_UINT32) fileTypeAt = at;
    skipValue(type);
  }
  return { version, kvCount, kvEnd: at, fileTypeAt };
}

function ggufString(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([len, bytes]);
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * Rewrites a GGUF model with its 4-bit matrices (Q4_0, Q4_1) as Q8_0, everything else byte for byte.
 *
 * Why: on these machines llama.cpp evaluates SmolLM2-135M Q8_0 1.6× faster than the PyPI wheel's Q4_1 (its
 * batched CPU matmul has a fast path for Q8_0 and none for Q4_1; docs/llm-branch.md has the figures), and
 * the model hub's default for SmolLM2 is Q8_0 anyway. Every 4-bit value d·q + m is within half a Q8_0 step
 * (max|x| / 254) of what the new file holds, so the model is the same model to within rounding far below
 * the 4-bit step it was quantized with. F16 and F32 tensors stay as they are: Q8_0 would lose precision
 * there, and they are small (norms) or already fast.
 *
 * The metadata section is copied verbatim (only `general.file_type` is set to MOSTLY_Q8_0), so the
 * tokenizer and every hyperparameter are untouched, and `corella.requantized_from` records the source file
 * and its sha256. The output is written to a temporary name and renamed, so a crash leaves no half file.
 */
export async function requantizeGgufToQ8_0(source: string, target: string): Promise<RequantizeResult> {
  const src = await GgufFile.open(source);
  const out = resolve(target);
  if (out === src.path) {
    throw new CorellaError('BAD_CONFIG', `the requantized model would overwrite its source ${src.path}`, {
      details: { field: 'out' },
    });
  }
  const tensors = [...src.tensors.values()];
  for (const t of tensors) {
    if (t.byteLength < 0)
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `tensor ${t.name} of ${src.path} has ggml type ${ggmlTypeName(t.ggmlType)}, which the requantizer cannot read`,
        { details: { path: src.path, tensor: t.name, ggmlType: t.ggmlType } },
      );
  }
  const fh = await open(src.path, 'r');
  const tmp = `${out}.tmp-${process.pid}`;
  let wh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    const header = Buffer.alloc(src.dataOffset);
    await fh.read(header, 0, header.length, 0);
    const layout = metadataLayout(header, src.path);
    const sourceSha256 = await sha256File(src.path);

    const kv = Buffer.from(header.subarray(24, layout.kvEnd));
    if (layout.fileTypeAt !== undefined) kv.writeUInt32LE(FTYPE_MOSTLY_Q8_0, layout.fileTypeAt - 24);
    const provenance = Buffer.concat([
      ggufString('corella.requantized_from'),
      Buffer.from(Uint32Array.of(GGUF_STRING).buffer),
      ggufString(`${basename(src.path)} sha256:${sourceSha256}`),
    ]);

    // The new tensor infos: same names, dims and order; Q8_0 where converted; offsets re-laid.
    const plan = tensors.map((t) => {
      const count = t.dims.reduce((a, b) => a * b, 1);
      const convert = CONVERTIBLE.has(t.ggmlType);
      return {
        t,
        count,
        convert,
        type: convert ? GGML_TYPE.Q8_0 : t.ggmlType,
        bytes: convert ? (count / 32) * 34 : t.byteLength,
      };
    });
    let offset = 0;
    const infos: Buffer[] = [];
    const offsets: number[] = [];
    for (const p of plan) {
      offsets.push(offset);
      const fixed = Buffer.alloc(4 + 8 * p.t.dims.length + 4 + 8);
      fixed.writeUInt32LE(p.t.dims.length, 0);
      p.t.dims.forEach((d, i) => fixed.writeBigUInt64LE(BigInt(d), 4 + 8 * i));
      fixed.writeUInt32LE(p.type, 4 + 8 * p.t.dims.length);
      fixed.writeBigUInt64LE(BigInt(offset), 8 + 8 * p.t.dims.length);
      infos.push(ggufString(p.t.name), fixed);
      offset = alignUp(offset + p.bytes, src.alignment);
    }
    const head = Buffer.alloc(24);
    head.write('GGUF', 0, 'latin1');
    head.writeUInt32LE(layout.version, 4);
    head.writeBigUInt64LE(BigInt(tensors.length), 8);
    head.writeBigUInt64LE(BigInt(layout.kvCount + 1), 16);
    const preamble = Buffer.concat([head, kv, provenance, ...infos]);
    const dataStart = alignUp(preamble.length, src.alignment);

    wh = await open(tmp, 'w', 0o600);
    await wh.write(Buffer.concat([preamble, Buffer.alloc(dataStart - preamble.length)]), 0, dataStart, 0);
    const converted: Record<string, number> = {};
    for (const [i, p] of plan.entries()) {
      const raw = Buffer.alloc(p.t.byteLength);
      await fh.read(raw, 0, raw.length, p.t.fileOffset);
      let bytes: Uint8Array = raw;
      if (p.convert) {
        bytes = quantizeQ8_0(dequantize(p.t.ggmlType, raw, p.count, p.t.name));
        const name = ggmlTypeName(p.t.ggmlType);
        converted[name] = (converted[name] ?? 0) + 1;
      }
      await wh.write(bytes, 0, bytes.length, dataStart + offsets[i]);
    }
    const total = dataStart + offset;
    await wh.truncate(total);
    await wh.sync();
    await wh.close();
    wh = undefined;
    // The engine's own parser must accept what we wrote before it takes the real name.
    await GgufFile.open(tmp);
    await rename(tmp, out);
    return {
      path: out,
      sha256: await sha256File(out),
      sourceSha256,
      converted,
      kept: plan.filter((p) => !p.convert).length,
      bytes: total,
    };
  } catch (e) {
    await wh?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await fh.close();
  }
}
