import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { sha256Hex } from '../artifacts/store.js';
import { DatasetError } from '../errors.js';
import type { InputFile } from './raw.js';

export interface LoadedFile {
  path: string;
  buf: Buffer;
  input: InputFile;
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Reads a whole input file; a missing or empty file is a DatasetError naming it. */
export async function readInputFile(path: string, what: string): Promise<LoadedFile> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DatasetError(
      code === 'ENOENT' ? `missing ${what} file` : `cannot read ${what} file (${code})`,
      {
        file: path,
        reason: 'missing_file',
      },
    );
  }
  if (buf.length === 0) throw new DatasetError(`empty ${what} file`, { file: path, reason: 'empty_file' });
  return { path, buf, input: { name: basename(path), sha256: sha256Hex(buf), bytes: buf.length } };
}

/**
 * Text files that must be ASCII/UTF-8 but hold NUL bytes are almost always UTF-16: report the encoding
 * instead of letting every line fail on field counts.
 */
export function assertNoNul(f: LoadedFile, expected: string): void {
  const at = f.buf.indexOf(0);
  if (at < 0) return;
  let line = 1;
  for (let i = 0; i < at; i++) if (f.buf[i] === 10) line++;
  throw new DatasetError(`wrong encoding: NUL byte found, expected ${expected} text (is the file UTF-16?)`, {
    file: f.path,
    line,
    reason: 'wrong_encoding',
  });
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes strictly as UTF-8; invalid bytes are a DatasetError with the line they are on. */
export function decodeUtf8Strict(f: LoadedFile): string {
  try {
    return UTF8.decode(f.buf);
  } catch {
    const line = firstInvalidUtf8Line(f.buf);
    throw new DatasetError('wrong encoding: not valid UTF-8', {
      file: f.path,
      line,
      reason: 'wrong_encoding',
    });
  }
}

/** Whether a buffer decodes as UTF-8 without errors. */
export function isValidUtf8(buf: Uint8Array): boolean {
  try {
    UTF8.decode(buf);
    return true;
  } catch {
    return false;
  }
}

export function firstInvalidUtf8Line(buf: Uint8Array): number {
  let line = 1;
  let start = 0;
  for (let i = 0; i <= buf.length; i++) {
    if (i === buf.length || buf[i] === 10) {
      if (!isValidUtf8(buf.subarray(start, i))) return line;
      line++;
      start = i + 1;
    }
  }
  return line;
}
