import { CorellaError } from '../errors.js';
import type { EncodedSplit, SplitName } from './types.js';
import { SPLITS } from './types.js';

/**
 * Binary form of one EncodedSplit ("CORSPLT1"), little-endian:
 *
 *   bytes 0..7    magic "CORSPLT1"
 *   bytes 8..11   uint32 header length H
 *   bytes 12..    H bytes of UTF-8 JSON header:
 *                 { format: 1, name, size, historyLen, featureMapId,
 *                   columns: [{ name, dtype, offset, length }] }   (offset in bytes from file start,
 *                                                                    length in elements)
 *   then every column as raw typed-array bytes, each starting at an 8-byte aligned offset (zero padding),
 *   in the order labels, sampleIds, timestamps, userRows, categorical, sequence.0..k, dense,
 *   targetItemRows, historyItemRows, historyRatings.
 *
 * The header is written with a fixed key order and columns in a fixed order, so equal splits give
 * identical bytes. Aligned offsets let a reader view columns in place when the buffer itself is aligned.
 */
const MAGIC = 'CORSPLT1';
const FORMAT = 1;

type DType = 'f32' | 'f64' | 'i32' | 'u32';
type Typed = Float32Array | Float64Array | Int32Array | Uint32Array;

interface ColumnHeader {
  name: string;
  dtype: DType;
  offset: number;
  length: number;
}

interface SplitHeader {
  format: number;
  name: SplitName;
  size: number;
  historyLen: number;
  featureMapId: string;
  columns: ColumnHeader[];
}

const CTOR = { f32: Float32Array, f64: Float64Array, i32: Int32Array, u32: Uint32Array } as const;

function dtypeOf(a: Typed): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  return 'u32';
}

function columnsOf(s: EncodedSplit): [string, Typed][] {
  return [
    ['labels', s.labels],
    ['sampleIds', s.sampleIds],
    ['timestamps', s.timestamps],
    ['userRows', s.userRows],
    ['categorical', s.categorical],
    ...s.sequences.map((a, i): [string, Typed] => [`sequence.${i}`, a]),
    ['dense', s.dense],
    ['targetItemRows', s.targetItemRows],
    ['historyItemRows', s.historyItemRows],
    ['historyRatings', s.historyRatings],
  ];
}

const align8 = (n: number): number => (n + 7) & ~7;

export function encodeSplit(split: EncodedSplit, featureMapId: string): Buffer {
  const cols = columnsOf(split);
  // Offsets depend on the header length, which depends on the offsets: iterate until stable.
  let headerLen = 0;
  let header: SplitHeader;
  let json: Buffer;
  for (;;) {
    let off = align8(12 + headerLen);
    const columns = cols.map(([name, a]) => {
      const c = { name, dtype: dtypeOf(a), offset: off, length: a.length };
      off = align8(off + a.byteLength);
      return c;
    });
    header = {
      format: FORMAT,
      name: split.name,
      size: split.size,
      historyLen: split.historyLen,
      featureMapId,
      columns,
    };
    json = Buffer.from(JSON.stringify(header), 'utf8');
    if (json.length === headerLen) break;
    headerLen = json.length;
  }
  const last = header.columns[header.columns.length - 1];
  const total = align8(last.offset + last.length * CTOR[last.dtype].BYTES_PER_ELEMENT);
  const out = Buffer.alloc(total);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(json.length, 8);
  json.copy(out, 12);
  header.columns.forEach((c, i) => {
    const a = cols[i][1];
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), c.offset);
  });
  return out;
}

function corrupt(msg: string): CorellaError {
  return new CorellaError('ARTIFACT_CORRUPT', `not a valid corella split file: ${msg}`);
}

export function readSplitHeader(buf: Uint8Array): SplitHeader {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 12 || b.toString('latin1', 0, 8) !== MAGIC) throw corrupt('bad magic');
  const len = b.readUInt32LE(8);
  if (12 + len > b.length) throw corrupt('truncated header');
  let header: SplitHeader;
  try {
    header = JSON.parse(b.toString('utf8', 12, 12 + len)) as SplitHeader;
  } catch {
    throw corrupt('header is not JSON');
  }
  if (header.format !== FORMAT) throw corrupt(`unsupported format ${String(header.format)}`);
  if (!SPLITS.includes(header.name)) throw corrupt(`unknown split name ${String(header.name)}`);
  return header;
}

export function decodeSplit(buf: Uint8Array): { split: EncodedSplit; featureMapId: string } {
  const header = readSplitHeader(buf);
  const col = (c: ColumnHeader): Typed => {
    const Ctor = CTOR[c.dtype];
    if (!Ctor) throw corrupt(`column ${c.name} has unknown dtype ${c.dtype}`);
    const bytes = c.length * Ctor.BYTES_PER_ELEMENT;
    if (c.offset < 0 || c.offset + bytes > buf.byteLength)
      throw corrupt(`column ${c.name} runs past the end`);
    const start = buf.byteOffset + c.offset;
    // View in place when aligned; otherwise copy (Node's pooled Buffers are not always 8-aligned).
    if (start % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(buf.buffer as ArrayBuffer, start, c.length);
    return new Ctor((buf.buffer as ArrayBuffer).slice(start, start + bytes));
  };
  const byName = new Map(header.columns.map((c) => [c.name, c]));
  const get = <T extends Typed>(name: string, dtype: DType, length: number): T => {
    const c = byName.get(name);
    if (!c) throw corrupt(`column ${name} is missing`);
    if (c.dtype !== dtype) throw corrupt(`column ${name} has dtype ${c.dtype}, expected ${dtype}`);
    if (length >= 0 && c.length !== length)
      throw corrupt(`column ${name} has ${c.length} values, expected ${length}`);
    return col(c) as T;
  };
  const { size, historyLen } = header;
  const nSeq = header.columns.filter((c) => c.name.startsWith('sequence.')).length;
  const categorical = get<Int32Array>('categorical', 'i32', -1);
  if (size > 0 && categorical.length % size !== 0) throw corrupt('categorical column is not size × fields');
  const split: EncodedSplit = {
    name: header.name,
    size,
    labels: get('labels', 'f32', size),
    sampleIds: get('sampleIds', 'u32', size),
    timestamps: get('timestamps', 'f64', size),
    userRows: get('userRows', 'i32', size),
    categorical,
    sequences: Array.from({ length: nSeq }, (_, i) => get<Int32Array>(`sequence.${i}`, 'i32', -1)),
    dense: get('dense', 'f32', -1),
    targetItemRows: get('targetItemRows', 'i32', size),
    historyItemRows: get('historyItemRows', 'i32', size * historyLen),
    historyRatings: get('historyRatings', 'f32', size * historyLen),
    historyLen,
  };
  return { split, featureMapId: header.featureMapId };
}
