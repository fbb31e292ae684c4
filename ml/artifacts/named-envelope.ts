import { createHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';

/**
 * Named entries (pointers, manifests, cache indexes, frozen LoRA outputs) are the only unhashed files in the
 * store: their name is not their content's hash, so nothing would notice a flipped byte. Each is therefore
 * sealed with the sha256 and length of the bytes the caller gave; reads verify both. Two sealed forms:
 *
 * - Text bodies (valid UTF-8: JSON manifests, pointers) keep the readable JSON envelope `named/1`, so a
 *   manifest is still greppable.
 * - Other bodies (e.g. a 450 KB frozen-prefix entry of f32 rows) use the binary form `named/2`: an 8-byte
 *   magic, the raw sha256 (32 bytes), the body length (u64 LE), then the body as it is. Why: the JSON form
 *   held such a body as base64 inside JSON, and reading one back cost 4.5–5 ms (JSON.parse of a 600 KB
 *   string, the base64 decode and its copy), most of a read that a bounded frozen cache makes per training
 *   sample; the binary read is the file read plus the sha256 (see bench/frozen-readback.ts). The header is 48
 *   bytes, a multiple of 16, so a body read into a fresh buffer is aligned for a Float32Array view.
 *
 * Entries in the JSON form (binary bodies as base64) still read, and so do entries written before any
 * envelope existed (plain bytes): they are returned as they are.
 */
const FORMAT = 'named/1';
/** Every JSON envelope starts with exactly this, because sealNamedJson writes its keys in this order. */
const PREFIX = Buffer.from(`{"corella":"${FORMAT}"`, 'utf8');

/**
 * The binary form's magic. Its first byte (0x89) can open neither UTF-8 text nor the legacy frozen-entry
 * layout ("CLFZ"), so no older entry is mistaken for it; "\r\n\x1a" catches text-mode mangling (as PNG's).
 */
const MAGIC = Buffer.from([0x89, 0x43, 0x4e, 0x41, 0x4d, 0x0d, 0x0a, 0x1a]); // \x89 C N A M \r \n \x1a
const SHA_BYTES = 32;
/** magic | sha256 | u64 LE body length | body */
export const BINARY_HEADER_BYTES = MAGIC.length + SHA_BYTES + 8;
/**
 * A header whose magic is this close to MAGIC is a damaged binary envelope, not a legacy plain entry: a
 * flipped byte in the magic must be ARTIFACT_CORRUPT, not bytes handed back unchecked.
 */
const MAGIC_NEAR = 5;

interface Envelope {
  corella: typeof FORMAT;
  sha256: string;
  bytes: number;
  text?: string;
  base64?: string;
}

export type Opened = { ok: true; body: Buffer; legacy: boolean } | { ok: false; reason: string };

function sha256(buf: Uint8Array): Buffer {
  return createHash('sha256').update(buf).digest();
}

function asBuffer(data: Uint8Array | string): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** The readable JSON form (`named/1`): text bodies as text, others as base64. */
export function sealNamedJson(data: Uint8Array | string): string {
  const body = asBuffer(data);
  const text = isUtf8(body);
  const env: Envelope = {
    corella: FORMAT,
    sha256: sha256(body).toString('hex'),
    bytes: body.byteLength,
    ...(text ? { text: body.toString('utf8') } : { base64: body.toString('base64') }),
  };
  return JSON.stringify(env);
}

/** The binary form (`named/2`): one allocation, header then the body's bytes. */
export function sealNamedBinary(data: Uint8Array | string): Buffer {
  const body = asBuffer(data);
  const out = Buffer.allocUnsafe(BINARY_HEADER_BYTES + body.byteLength);
  MAGIC.copy(out, 0);
  sha256(body).copy(out, MAGIC.length);
  out.writeBigUInt64LE(BigInt(body.byteLength), MAGIC.length + SHA_BYTES);
  body.copy(out, BINARY_HEADER_BYTES);
  return out;
}

/** What the stores write: the JSON form for UTF-8 text, the binary form for anything else. */
export function sealNamed(data: Uint8Array | string): string | Buffer {
  const body = asBuffer(data);
  return isUtf8(body) ? sealNamedJson(body) : sealNamedBinary(body);
}

/** The MIME type of a sealed entry, for stores that keep one (S3). */
export function sealedContentType(sealed: string | Buffer): string {
  return typeof sealed === 'string' ? 'application/json' : 'application/octet-stream';
}

function magicMatches(raw: Buffer): number {
  let n = 0;
  for (let i = 0; i < MAGIC.length && i < raw.length; i++) if (raw[i] === MAGIC[i]) n++;
  return n;
}

function openBinary(raw: Buffer): Opened {
  if (raw.length < BINARY_HEADER_BYTES)
    return {
      ok: false,
      reason: `is ${raw.length} bytes, shorter than its ${BINARY_HEADER_BYTES}-byte header`,
    };
  if (magicMatches(raw) !== MAGIC.length) return { ok: false, reason: 'has a damaged header (its magic)' };
  const declared = raw.readBigUInt64LE(MAGIC.length + SHA_BYTES);
  // A view, not a copy: the bits read are the bits written, and a frozen entry decodes from it in place.
  const body = raw.subarray(BINARY_HEADER_BYTES);
  if (BigInt(body.byteLength) !== declared)
    return { ok: false, reason: `holds ${body.byteLength} bytes, its checksum says ${declared}` };
  const expected = raw.subarray(MAGIC.length, MAGIC.length + SHA_BYTES);
  const actual = sha256(body);
  if (!actual.equals(expected))
    return {
      ok: false,
      reason: `hashes to ${actual.toString('hex')}, its checksum says ${expected.toString('hex')}`,
    };
  return { ok: true, body, legacy: false };
}

function openJson(raw: Buffer): Opened {
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(raw.toString('utf8')) as Partial<Envelope>;
  } catch {
    return { ok: false, reason: 'is not valid JSON' };
  }
  let body: Buffer;
  if (typeof env.text === 'string') body = Buffer.from(env.text, 'utf8');
  else if (typeof env.base64 === 'string') body = Buffer.from(env.base64, 'base64');
  else return { ok: false, reason: 'has no body' };
  if (body.byteLength !== env.bytes)
    return { ok: false, reason: `holds ${body.byteLength} bytes, its checksum says ${String(env.bytes)}` };
  const actual = sha256(body).toString('hex');
  if (actual !== env.sha256)
    return { ok: false, reason: `hashes to ${actual}, its checksum says ${String(env.sha256)}` };
  return { ok: true, body, legacy: false };
}

/** The body of a sealed entry in either form, verified; legacy plain bytes as they are. */
export function openNamed(raw: Buffer): Opened {
  // A file cut inside the magic is a truncated binary entry too (no text starts with 0x89).
  const cutInMagic = raw.length > 0 && raw.length < MAGIC.length && MAGIC.subarray(0, raw.length).equals(raw);
  if (cutInMagic || magicMatches(raw) >= MAGIC_NEAR) return openBinary(raw);
  if (raw.subarray(0, PREFIX.length).compare(PREFIX) === 0) return openJson(raw);
  return { ok: true, body: raw, legacy: true };
}
