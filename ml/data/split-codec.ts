import { endianness } from 'node:os';
import { CorellaError } from '../errors.js';
import type { EncodedSplit, SplitName } from './types.js';
import { SPLITS } from './types.js';

/**
 * Binary form of one EncodedSplit ("CORSPLT1"), little-endian:
 *
 *   bytes 0..7    magic "CORSPLT1"
 *   bytes 8..11   uint32 header length H
 *   bytes 12..    H bytes of UTF-8 JSON header:
 *                 { format: 2, name, size, historyLen, featureMapId,
 *                   columns: [{ name, type, stored, offset, length }] }
 *                 type   = the in-memory type of the EncodedSplit column (f32, f64, i32, u32);
 *                 stored = how it is stored (one of those, or i8 / i16 for small integers, or i8nan:
 *                          int8 where -128 stands for NaN, for float columns holding only small
 *                          integers and NaN such as labels and ratings);
 *                 offset in bytes from the start of the file, length in elements.
 *   then every column's raw bytes, each starting at an 8-byte aligned offset (zero padding), in the
 *   order labels, sampleIds, timestamps, userRows, categorical, sequence.0..k, dense, targetItemRows,
 *   historyItemRows, historyRatings.
 *
 * The narrowest exact storage type is picked per column from its values (ids and ratings usually fit
 * 8 or 16 bits), which roughly halves the files; decoding widens back exactly. The header has a fixed
 * key order and columns a fixed order, so equal splits give identical bytes. Columns stored in their
 * own type are viewed in place when the buffer is aligned.
 */
const MAGIC = 'CORSPLT1';
const FORMAT = 2;

type MemType = 'f32' | 'f64' | 'i32' | 'u32';
type StoredType = MemType | 'i16' | 'i8' | 'i8nan';
type Typed = Float32Array | Float64Array | Int32Array | Uint32Array;

interface ColumnHeader {
  name: string;
  type: MemType;
  stored: StoredType;
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
const BYTES: Record<StoredType, number> = { f32: 4, f64: 8, i32: 4, u32: 4, i16: 2, i8: 1, i8nan: 1 };
const NAN_I8 = -128;

function assertLittleEndian(): void {
  if (endianness() !== 'LE') {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      'split files are little-endian; big-endian hosts are not supported',
    );
  }
}

function typeOf(a: Typed): MemType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  return 'u32';
}

function storedTypeOf(a: Typed): StoredType {
  if (a instanceof Int32Array) {
    let min = 0;
    let max = 0;
    for (let i = 0; i < a.length; i++) {
      const v = a[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    if (min >= -128 && max <= 127) return 'i8';
    if (min >= -32768 && max <= 32767) return 'i16';
    return 'i32';
  }
  if (a instanceof Float32Array) {
    for (let i = 0; i < a.length; i++) {
      const v = a[i];
      if (v !== v) continue; // NaN
      if (!Number.isInteger(v) || v < -127 || v > 127 || Object.is(v, -0)) return 'f32';
    }
    return 'i8nan';
  }
  return typeOf(a);
}

function narrowBytes(a: Typed, stored: StoredType): Uint8Array {
  if (stored === typeOf(a)) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (stored === 'i16') return new Uint8Array(new Int16Array(a as Int32Array).buffer);
  if (stored === 'i8') return new Uint8Array(new Int8Array(a as Int32Array).buffer);
  const out = new Int8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] !== a[i] ? NAN_I8 : a[i];
  return new Uint8Array(out.buffer);
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
  assertLittleEndian();
  const cols = columnsOf(split).map(([name, a]) => {
    const stored = storedTypeOf(a);
    return { name, type: typeOf(a), stored, bytes: narrowBytes(a, stored), length: a.length };
  });
  // Offsets depend on the header length, which depends on the offsets: iterate until stable.
  let headerLen = 0;
  let header: SplitHeader;
  let json: Buffer;
  for (;;) {
    let off = align8(12 + headerLen);
    const columns = cols.map((c): ColumnHeader => {
      const h = { name: c.name, type: c.type, stored: c.stored, offset: off, length: c.length };
      off = align8(off + c.bytes.byteLength);
      return h;
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
  const out = Buffer.alloc(align8(last.offset + last.length * BYTES[last.stored]));
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(json.length, 8);
  json.copy(out, 12);
  header.columns.forEach((c, i) => out.set(cols[i].bytes, c.offset));
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
  if (!Array.isArray(header.columns)) throw corrupt('no column list');
  return header;
}

function readColumn(buf: Uint8Array, c: ColumnHeader): Typed {
  const Ctor = CTOR[c.type];
  const width = BYTES[c.stored];
  if (!Ctor || !width) throw corrupt(`column ${c.name} has unknown type ${c.type}/${c.stored}`);
  const bytes = c.length * width;
  if (!(c.offset >= 0) || c.offset + bytes > buf.byteLength)
    throw corrupt(`column ${c.name} runs past the end`);
  const start = buf.byteOffset + c.offset;
  const ab = buf.buffer as ArrayBuffer;
  if (c.stored === c.type) {
    // View in place when aligned; otherwise copy (Node's pooled Buffers are not always 8-aligned).
    if (start % width === 0) return new Ctor(ab, start, c.length);
    return new Ctor(ab.slice(start, start + bytes));
  }
  const src =
    c.stored === 'i16'
      ? new Int16Array(
          start % 2 === 0 ? ab : ab.slice(start, start + bytes),
          start % 2 === 0 ? start : 0,
          c.length,
        )
      : new Int8Array(ab, start, c.length);
  if (c.stored === 'i8nan') {
    if (c.type !== 'f32') throw corrupt(`column ${c.name}: i8nan storage needs type f32`);
    const out = new Float32Array(c.length);
    for (let i = 0; i < c.length; i++) out[i] = src[i] === NAN_I8 ? NaN : src[i];
    return out;
  }
  if (c.type !== 'i32') throw corrupt(`column ${c.name}: ${c.stored} storage needs type i32`);
  return new Int32Array(src);
}

export function decodeSplit(buf: Uint8Array): { split: EncodedSplit; featureMapId: string } {
  assertLittleEndian();
  const header = readSplitHeader(buf);
  const byName = new Map(header.columns.map((c) => [c.name, c]));
  const get = <T extends Typed>(name: string, type: MemType, length: number): T => {
    const c = byName.get(name);
    if (!c) throw corrupt(`column ${name} is missing`);
    if (c.type !== type) throw corrupt(`column ${name} has type ${c.type}, expected ${type}`);
    if (length >= 0 && c.length !== length)
      throw corrupt(`column ${name} has ${c.length} values, expected ${length}`);
    return readColumn(buf, c) as T;
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
