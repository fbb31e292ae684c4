import { CorellaError } from '../errors.js';

/**
 * A small self-describing binary container for named float32 tensors plus a JSON header:
 * "CRM1" | u32 header bytes | header JSON | zero padding to 4 bytes | float32 payload.
 * Used for both model artifacts and training checkpoints.
 */
const MAGIC = 'CRM1';

export interface TensorEntry {
  name: string;
  shape: number[];
  data: Float32Array;
}

interface StoredEntry {
  name: string;
  shape: number[];
  offset: number;
  length: number;
}

export function encodeTensorFile(header: Record<string, unknown>, tensors: TensorEntry[]): Uint8Array {
  let offset = 0;
  const entries: StoredEntry[] = tensors.map((t) => {
    const e = { name: t.name, shape: t.shape, offset, length: t.data.length };
    offset += t.data.length;
    return e;
  });
  const json = Buffer.from(JSON.stringify({ ...header, tensors: entries }), 'utf8');
  const headerEnd = 8 + json.length;
  const dataStart = Math.ceil(headerEnd / 4) * 4;
  const out = new Uint8Array(dataStart + offset * 4);
  out.set(Buffer.from(MAGIC, 'latin1'), 0);
  new DataView(out.buffer).setUint32(4, json.length, true);
  out.set(json, 8);
  const floats = new Float32Array(out.buffer, dataStart, offset);
  tensors.forEach((t, i) => floats.set(t.data, entries[i].offset));
  return out;
}

export function decodeTensorFile(
  buf: Uint8Array,
  what: string,
): { header: Record<string, unknown>; tensors: Map<string, TensorEntry> } {
  const fail = (msg: string): never => {
    throw new CorellaError('BAD_MODEL_FILE', `${what}: ${msg}`);
  };
  if (buf.length < 8 || Buffer.from(buf.subarray(0, 4)).toString('latin1') !== MAGIC)
    fail('not a corella CRM file (bad magic)');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const jsonLen = view.getUint32(4, true);
  if (8 + jsonLen > buf.length) fail('truncated header');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(buf.subarray(8, 8 + jsonLen)).toString('utf8')) as Record<
      string,
      unknown
    >;
  } catch (e) {
    return fail(`unreadable header (${(e as Error).message})`);
  }
  const dataStart = Math.ceil((8 + jsonLen) / 4) * 4;
  const count = (buf.length - dataStart) / 4;
  if (!Number.isInteger(count) || count < 0) fail('payload is not a whole number of float32 values');
  // Copy into a fresh buffer: the input may be a view into a larger (pooled) ArrayBuffer at any offset.
  const bytes = new Uint8Array(count * 4);
  bytes.set(buf.subarray(dataStart));
  const floats = new Float32Array(bytes.buffer);
  const entries = header.tensors;
  if (!Array.isArray(entries)) fail('header has no tensor list');
  const tensors = new Map<string, TensorEntry>();
  for (const e of entries as StoredEntry[]) {
    const size = e.shape.reduce((a, b) => a * b, 1);
    if (size !== e.length || e.offset < 0 || e.offset + e.length > count)
      fail(`tensor ${e.name} lies outside the payload or has a wrong size`);
    tensors.set(e.name, {
      name: e.name,
      shape: e.shape,
      data: floats.subarray(e.offset, e.offset + e.length),
    });
  }
  delete header.tensors;
  return { header, tensors };
}
