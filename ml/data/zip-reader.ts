import { crc32, inflateRawSync } from 'node:zlib';
import { DatasetError } from '../errors.js';

export interface ZipEntry {
  name: string;
  data: Buffer;
}

const EOCD = 0x06054b50;
const CDIR = 0x02014b50;
const LOCAL = 0x04034b50;

/**
 * Minimal reader for plain (non-zip64, unencrypted) zip archives with stored or deflated entries —
 * enough for the MovieLens archive without adding a dependency. Entries are CRC-checked.
 * `want` selects entries by name; others are not inflated.
 */
export function readZip(buf: Buffer, file: string, want: (name: string) => boolean): ZipEntry[] {
  const bad = (msg: string) =>
    new DatasetError(`not a readable zip archive: ${msg}`, { file, reason: 'bad_zip' });
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 0xffff); i--) {
    if (buf.readUInt32LE(i) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad('end of central directory not found');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out: ZipEntry[] = [];
  for (let k = 0; k < count; k++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== CDIR) throw bad('corrupt central directory');
    const method = buf.readUInt16LE(p + 10);
    const crc = buf.readUInt32LE(p + 16);
    const compSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith('/') || !want(name)) continue;
    if (local + 30 > buf.length || buf.readUInt32LE(local) !== LOCAL)
      throw bad(`corrupt local header of ${name}`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    if (start + compSize > buf.length) throw bad(`${name} is truncated`);
    const raw = buf.subarray(start, start + compSize);
    let data: Buffer;
    if (method === 0) data = Buffer.from(raw);
    else if (method === 8) data = inflateRawSync(raw);
    else throw bad(`${name} uses unsupported compression method ${method}`);
    if (data.length !== size || crc32(data) >>> 0 !== crc) throw bad(`${name} fails its CRC check`);
    out.push({ name, data });
  }
  return out;
}
