/**
 * Byte-level scanning of delimited text. Parsing MovieLens with split()/regex per line allocates several
 * strings per field; scanning the Buffer directly keeps ingestion of ~0.5M lines well under a second.
 */

/** True when the line holds only spaces/tabs (blank lines are ignored rather than reported). */
export function isBlank(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c !== 32 && c !== 9) return false;
  }
  return true;
}

/**
 * Splits [start, end) on a one- or two-byte separator, writing field boundaries into `bounds`
 * (pairs start,end). Returns the number of fields found (which may exceed bounds capacity / 2;
 * extra fields are counted but not recorded).
 */
export function splitFields(
  buf: Uint8Array,
  start: number,
  end: number,
  sep0: number,
  sep1: number,
  bounds: Int32Array,
): number {
  const cap = bounds.length >> 1;
  let count = 0;
  let fs = start;
  let i = start;
  const two = sep1 >= 0;
  while (i < end) {
    if (buf[i] === sep0 && (!two || (i + 1 < end && buf[i + 1] === sep1))) {
      if (count < cap) {
        bounds[2 * count] = fs;
        bounds[2 * count + 1] = i;
      }
      count++;
      i += two ? 2 : 1;
      fs = i;
    } else {
      i++;
    }
  }
  if (count < cap) {
    bounds[2 * count] = fs;
    bounds[2 * count + 1] = end;
  }
  return count + 1;
}

/**
 * Parses an optionally signed decimal number (integer or with a fraction/exponent) from bytes.
 * Returns NaN for anything that is not a complete number, so callers report the field.
 */
export function parseNumber(buf: Uint8Array, start: number, end: number): number {
  while (start < end && (buf[start] === 32 || buf[start] === 9)) start++;
  while (end > start && (buf[end - 1] === 32 || buf[end - 1] === 9)) end--;
  if (start >= end) return NaN;
  let i = start;
  let neg = false;
  if (buf[i] === 45 || buf[i] === 43) {
    neg = buf[i] === 45;
    i++;
  }
  let v = 0;
  let digits = 0;
  while (i < end) {
    const c = buf[i] - 48;
    if (c < 0 || c > 9) break;
    v = v * 10 + c;
    digits++;
    i++;
  }
  if (i === end) return digits > 0 ? (neg ? -v : v) : NaN;
  // Rare path (fractions, exponents): let the engine parse, but only a strictly numeric token.
  const s = latin1(buf, start, end);
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s) ? Number(s) : NaN;
}

function latin1(buf: Uint8Array, start: number, end: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

/** A short printable excerpt of a line for error messages. */
export function excerptOf(buf: Uint8Array, start: number, end: number, max = 80): string {
  let s = '';
  for (let i = start; i < Math.min(end, start + max); i++)
    s += buf[i] < 32 ? '?' : String.fromCharCode(buf[i]);
  return s;
}
