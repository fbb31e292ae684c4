import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { DatasetError } from '../errors.js';
import type { InputFile } from './raw.js';

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export interface JsonLine {
  /** Decoded text, or undefined when the bytes are not valid UTF-8. */
  text: string | undefined;
  lineNo: number;
}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await fh.read(head, 0, 2, 0);
    return bytesRead === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/**
 * Streams the lines of a plain or gzipped text file (gzip detected from its magic bytes) without ever
 * holding more than one chunk plus a partial line, and hashes the file's bytes on the way.
 * `onLine` may return a promise (to report progress); blank lines are skipped.
 * A truncated or corrupt gzip stream is a DatasetError naming the line where it broke off.
 */
export async function streamLines(
  path: string,
  onLine: (l: JsonLine) => void | Promise<void>,
): Promise<InputFile> {
  const gz = await isGzip(path);
  const hash = createHash('sha256');
  let bytes = 0;
  let lineNo = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  // pipeline() reports an AbortError when the line handler throws: keep the handler's own error. Only the
  // handler's: a broken gzip stream also reaches the consumer, through its `for await`, when the consumer
  // is waiting for the next chunk at that moment (a race that a loaded machine loses), and recorded there
  // it would be thrown raw instead of as the DatasetError below.
  let consumerError: unknown;
  const emit = async (buf: Buffer) => {
    lineNo++;
    let end = buf.length;
    if (end > 0 && buf[end - 1] === 13) end--;
    let blank = true;
    for (let i = 0; i < end && blank; i++) if (buf[i] !== 32 && buf[i] !== 9) blank = false;
    if (blank) return;
    let text: string | undefined;
    try {
      text = UTF8.decode(buf.subarray(0, end));
    } catch {
      text = undefined;
    }
    try {
      await onLine({ text, lineNo });
    } catch (e) {
      consumerError = e;
      throw e;
    }
  };
  const consume = async (source: AsyncIterable<Buffer>) => {
    let rest: Buffer | undefined;
    for await (const chunk of source) {
      const buf: Buffer = rest ? Buffer.concat([rest, chunk]) : chunk;
      let start = 0;
      for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
        await emit(buf.subarray(start, nl));
        start = nl + 1;
      }
      rest = start < buf.length ? Buffer.from(buf.subarray(start)) : undefined;
    }
    if (rest) await emit(rest);
  };
  try {
    if (gz) await pipeline(createReadStream(path), hasher, createGunzip(), consume);
    else await pipeline(createReadStream(path), hasher, consume);
  } catch (e) {
    if (consumerError !== undefined) throw consumerError;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DatasetError('missing file', { file: path, reason: 'missing_file' });
    if (gz && typeof code === 'string' && code.startsWith('Z_')) {
      throw new DatasetError(`truncated or corrupt gzip stream (${(e as Error).message})`, {
        file: path,
        line: lineNo + 1,
        reason: 'truncated_gzip',
      });
    }
    throw e;
  }
  if (bytes === 0 || lineNo === 0) throw new DatasetError('empty file', { file: path, reason: 'empty_file' });
  return { name: basename(path), sha256: hash.digest('hex'), bytes };
}
