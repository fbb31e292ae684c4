import { createHash } from 'node:crypto';

/**
 * Named entries (pointers, manifests, cache indexes) are the only unhashed files in the store: their name
 * is not their content's hash, so nothing would notice a flipped byte. Each is therefore written as a JSON
 * envelope carrying the sha256 and length of the bytes the caller gave; reads verify both. The body stays
 * readable text (a JSON manifest is still greppable) unless it is not UTF-8, then it is base64.
 *
 * Entries written before the envelope existed are plain bytes (JSON): they are returned as they are.
 */
const FORMAT = 'named/1';
/** Every envelope starts with exactly this, because sealNamed writes its keys in this order. */
const PREFIX = Buffer.from(`{"corella":"${FORMAT}"`, 'utf8');

interface Envelope {
  corella: typeof FORMAT;
  sha256: string;
  bytes: number;
  text?: string;
  base64?: string;
}

export type Opened = { ok: true; body: Buffer; legacy: boolean } | { ok: false; reason: string };

function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

export function sealNamed(data: Uint8Array | string): string {
  const body = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  const text = body.toString('utf8');
  const roundTrips = Buffer.from(text, 'utf8').equals(body);
  const env: Envelope = {
    corella: FORMAT,
    sha256: sha256(body),
    bytes: body.byteLength,
    ...(roundTrips ? { text } : { base64: body.toString('base64') }),
  };
  return JSON.stringify(env);
}

export function openNamed(raw: Buffer): Opened {
  if (raw.subarray(0, PREFIX.length).compare(PREFIX) !== 0) return { ok: true, body: raw, legacy: true };
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
  const actual = sha256(body);
  if (actual !== env.sha256)
    return { ok: false, reason: `hashes to ${actual}, its checksum says ${String(env.sha256)}` };
  return { ok: true, body, legacy: false };
}
