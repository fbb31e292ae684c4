import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { DatasetError } from '../../../ml/errors.js';
import { streamLines } from '../../../ml/data/json-lines.js';

/**
 * A truncated gzip file is always the typed DatasetError, whatever the line handler is doing when the stream
 * breaks. The broken stream reaches both pipeline() and the consumer's `for await`; recorded from the
 * latter it used to be thrown raw ("unexpected end of file"), which a loaded CI run hit in amazon.test.ts.
 */
const dir = mkdtempSync(join(tmpdir(), 'corella-gzip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A small file, cut short: the stream breaks within its first chunk or two, where the race was (about 4% of
// such runs threw raw on the old code, 26 of 600 in one measurement; 0 of 600 now).
const text = Array.from({ length: 50 }, (_, i) => JSON.stringify({ i, review: 'x'.repeat(i % 97) })).join(
  '\n',
);
const whole = gzipSync(Buffer.from(text));

describe('streamLines on a truncated gzip file', () => {
  const handlers: [string, () => void | Promise<void>][] = [
    ['a synchronous handler', () => undefined],
    ['a handler that awaits a microtask', () => Promise.resolve()],
    ['a handler that awaits the next turn', () => new Promise<void>((r) => setImmediate(r))],
  ];
  for (const [what, handler] of handlers) {
    it(`${what}: a DatasetError naming the file, every time, at every cut`, async () => {
      const raw: string[] = [];
      for (let rep = 0; rep < 50; rep++) {
        for (const cut of [60, 120, 200]) {
          const path = join(dir, `cut-${cut}.json.gz`);
          writeFileSync(path, whole.subarray(0, cut));
          const err = await streamLines(path, handler).catch((e: unknown) => e);
          if (!(err instanceof DatasetError)) {
            raw.push(`cut ${cut}, run ${rep}: ${String(err)}`);
            continue;
          }
          expect(err.file).toBe(path);
          expect(err.details.reason).toBe('truncated_gzip');
        }
      }
      expect(raw).toEqual([]);
    });
  }

  it("keeps the handler's own error", async () => {
    const path = join(dir, 'whole.json.gz');
    writeFileSync(path, whole);
    const mine = new Error('the handler refused line 3');
    const err = await streamLines(path, ({ lineNo }) => {
      if (lineNo === 3) throw mine;
    }).catch((e: unknown) => e);
    expect(err).toBe(mine);
  });
});
