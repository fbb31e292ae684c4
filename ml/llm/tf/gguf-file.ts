import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { CorellaError } from '../../errors.js';
import { dequantize, ggmlByteSize, ggmlTypeName, isSupportedGgmlType } from './ggml-types.js';

/** One tensor of a GGUF file: ggml dims (ne0, the contiguous one, first) and where its bytes are. */
export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the row length. A [out, in] weight matrix is stored as dims [in, out]. */
  dims: number[];
  ggmlType: number;
  /** Absolute byte position in the file. */
  fileOffset: number;
  byteLength: number;
}

/**
 * A GGUF file opened for reading weights. The header (metadata and tensor infos) comes from node-llama-cpp's
 * `readGgufFileInfo`, the parser that the inference engine itself trusts; the tensor bytes are read here at
 * the data section's start (the header end rounded up to `general.alignment`, default 32) plus each tensor's
 * offset, so weights are never held twice (the parser reads no tensor data).
 */
export class GgufFile {
  readonly tensors: ReadonlyMap<string, GgufTensor>;

  private constructor(
    readonly path: string,
    /** Nested metadata as node-llama-cpp parses it (`general.architecture` is `metadata.general.architecture`). */
    readonly metadata: Record<string, unknown>,
    tensors: GgufTensor[],
    /** Where the tensor data section starts: the header (metadata, tensor infos, padding) ends here. */
    readonly dataOffset: number,
    /** `general.alignment`: tensor offsets are multiples of it. */
    readonly alignment: number,
  ) {
    this.tensors = new Map(tensors.map((t) => [t.name, t]));
  }

  static async open(path: string): Promise<GgufFile> {
    const abs = resolve(path);
    let size: number;
    try {
      size = (await stat(abs)).size;
    } catch {
      throw new CorellaError('BAD_MODEL_FILE', `GGUF file ${abs} does not exist`, { details: { path: abs } });
    }
    let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
    try {
      info = await readGgufFileInfo(abs, { readTensorInfo: true, logWarnings: false });
    } catch (e) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `GGUF file ${abs} could not be parsed: ${e instanceof Error ? e.message : String(e)}`,
        { details: { path: abs }, cause: e },
      );
    }
    if (info.splicedParts > 1) {
      throw new CorellaError('BAD_MODEL_FILE', `GGUF file ${abs} is split into ${info.splicedParts} parts`, {
        details: { path: abs },
      });
    }
    const metadata = info.metadata as unknown as Record<string, unknown>;
    const general = (metadata.general ?? {}) as Record<string, unknown>;
    const alignment = typeof general.alignment === 'number' ? general.alignment : 32;
    const dataOffset = Number(info.infoEndOffset);
    if (!Number.isSafeInteger(dataOffset) || dataOffset % alignment !== 0) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `GGUF file ${abs}: tensor data offset ${dataOffset} is not aligned to ${alignment}`,
        { details: { path: abs } },
      );
    }
    const tensors: GgufTensor[] = [];
    for (const t of info.fullTensorInfo ?? info.tensorInfo ?? []) {
      const dims = t.dimensions.map(Number);
      const offset = Number(t.offset);
      const count = dims.reduce((a, b) => a * b, 1);
      // Unsupported types are refused only when read, so the header of any model can be inspected.
      const byteLength = isSupportedGgmlType(t.ggmlType) ? ggmlByteSize(t.ggmlType, count, t.name) : -1;
      const fileOffset = dataOffset + offset;
      if (offset % alignment !== 0 || (byteLength >= 0 && fileOffset + byteLength > size)) {
        throw new CorellaError(
          'BAD_MODEL_FILE',
          `GGUF file ${abs}: tensor ${t.name} (offset ${offset}, ${byteLength} bytes) is misaligned or past the end of the file (${size} bytes)`,
          { details: { path: abs, tensor: t.name } },
        );
      }
      tensors.push({ name: t.name, dims, ggmlType: t.ggmlType, fileOffset, byteLength });
    }
    return new GgufFile(abs, metadata, tensors, dataOffset, alignment);
  }

  /** A metadata value by its dotted key (`llama.attention.head_count`), or undefined. */
  meta(key: string): unknown {
    let v: unknown = this.metadata;
    for (const part of key.split('.')) {
      if (v === null || typeof v !== 'object') return undefined;
      v = (v as Record<string, unknown>)[part];
    }
    return v;
  }

  tensor(name: string): GgufTensor {
    const t = this.tensors.get(name);
    if (!t) {
      throw new CorellaError('BAD_MODEL_FILE', `GGUF file ${this.path} has no tensor ${name}`, {
        details: { path: this.path, tensor: name },
      });
    }
    return t;
  }

  /** The tensor's values as float32, row-major over ggml order (ne0 fastest). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.tensor(name);
    if (t.byteLength < 0) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `tensor ${name} of ${this.path} has ggml type ${ggmlTypeName(t.ggmlType)}, which the TensorFlow.js forward pass cannot dequantize`,
        { details: { path: this.path, tensor: name, ggmlType: t.ggmlType } },
      );
    }
    const fh = await open(this.path, 'r');
    try {
      const buf = Buffer.alloc(t.byteLength);
      const { bytesRead } = await fh.read(buf, 0, t.byteLength, t.fileOffset);
      if (bytesRead !== t.byteLength) {
        throw new CorellaError('BAD_MODEL_FILE', `GGUF file ${this.path}: tensor ${name} is truncated`, {
          details: { path: this.path, tensor: name },
        });
      }
      return dequantize(
        t.ggmlType,
        buf,
        t.dims.reduce((a, b) => a * b, 1),
        name,
      );
    } finally {
      await fh.close();
    }
  }
}
