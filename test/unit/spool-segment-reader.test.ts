/**
 * The drainer's SegmentReader against `Spool.read` (the whole-file string split at newlines, the old path)
 * on tricky segments, and decodeRecord on what each returns.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeRecord, encodeRecord } from '../../serve/spool-drainer.js';
import { SegmentReader, Spool, type SpoolSegment } from '../../serve/spool.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-segment-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;

function segment(bytes: Buffer | string): SpoolSegment {
  seq += 1;
  const path = join(dir, `${String(seq).padStart(12, '0')}.jsonl`);
  writeFileSync(path, bytes);
  return { seq, path };
}

function readAll(reader: SegmentReader, seg: SpoolSegment) {
  reader.load(seg);
  return {
    lines: Array.from({ length: reader.lineCount }, (_, i) => reader.line(i)),
    tornBytes: reader.tornBytes,
  };
}

const record = (user: string, item: string, history: boolean) =>
  encodeRecord({
    requestId: '01234567-89ab-4def-8123-456789abcdef',
    at: new Date(Date.UTC(2026, 11, 1, 18, 0, 0, 5)),
    modelVersionId: 3,
    userId: user,
    history: history ? [{ item: 'h"1\\', rating: 4, ts: 1 }] : null,
    budgetMs: null,
    threshold: Infinity,
    candidates: [
      { item, p: 0.1, pCrm: 0.1, pLlm: null, route: 'crm', entropy: 0.3, latencyMs: 1, cold: false },
      {
        item: `${item}-2`,
        p: 0.7,
        pCrm: 0.2,
        pLlm: 0.7,
        route: 'llm',
        entropy: 0.6,
        latencyMs: 2,
        cold: true,
      },
    ],
  });

describe('SegmentReader', () => {
  const reader = new SegmentReader();

  it('returns the lines and torn bytes Spool.read does: unicode ids, null fields, a torn last line', () => {
    const lines = [
      record('ユーザー', '映画🎬', true),
      record('u\u00e9\u0301', 'a,b"c{d}', false),
      record('NULL', ' x ', true),
    ];
    // The last line cut inside a 4-byte emoji, as a kill in the middle of write(2) leaves it.
    const torn = Buffer.from(record('u9', '🎬🎬', false)).subarray(0, 120 + 2);
    const seg = segment(Buffer.concat([Buffer.from(lines.join('\n') + '\n'), torn]));
    const got = readAll(reader, seg);
    expect(got.lines).toEqual(lines);
    expect(got.lines).toEqual(Spool.read(seg).lines);
    expect(got.tornBytes).toBe(torn.length);
    expect(got.lines.map((l) => decodeRecord(l))).toEqual(Spool.read(seg).lines.map((l) => decodeRecord(l)));
    expect(decodeRecord(got.lines[1]).candidates[0]).toMatchObject({ item: 'a,b"c{d}', pLlm: null });
    expect(decodeRecord(got.lines[0]).userId).toBe('ユーザー');
  });

  it('agrees on empty lines, an empty file, a file of one torn line, and invalid UTF-8', () => {
    for (const bytes of [
      Buffer.from('a\n\nb\n'),
      Buffer.alloc(0),
      Buffer.from('{"v":1,"requestId":'),
      Buffer.from([0x7b, 0xff, 0xe6, 0x98, 0x0a, 0xe6, 0x0a]), // a bad byte, a sequence cut by the newline
    ]) {
      const seg = segment(bytes);
      const old = Spool.read(seg);
      const got = readAll(reader, seg);
      expect(got.lines).toEqual(old.lines);
      expect(got.tornBytes > 0).toBe(old.tornBytes > 0);
    }
  });

  it('keeps nothing of a longer segment read before (the Buffer is reused), and grows past 1,024 lines', () => {
    const many = Array.from({ length: 3_000 }, (_, i) => `{"n":${i},"s":"${'é'.repeat(i % 7)}"}`);
    const big = segment(many.join('\n') + '\n');
    expect(readAll(reader, big)).toEqual({ lines: many, tornBytes: 0 });
    const small = segment('{"n":1}\n{"n":2');
    expect(readAll(reader, small)).toEqual({ lines: ['{"n":1}'], tornBytes: 6 });
    expect(() => reader.line(1)).toThrow(RangeError);
  });
});
