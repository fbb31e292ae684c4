import { describe, expect, it } from 'vitest';
import { DatasetError } from '../../../ml/errors.js';
import {
  formatResultLine,
  groupRequests,
  lineSpans,
  parseBatch,
  planBatch,
  planChunks,
  scanBatch,
  toScoreRequest,
  verifyChunkOutput,
  type BatchCandidate,
} from '../../../ml/serving/jsonl-batch.js';

const FILE = 'in.jsonl';
const enc = (s: string) => Buffer.from(s, 'utf8');

/** The DatasetError that parsing `text` throws (fails the test when it does not throw one). */
function errorOf(text: string | Buffer): DatasetError {
  try {
    parseBatch(typeof text === 'string' ? enc(text) : text, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(DatasetError);
    return e as DatasetError;
  }
  throw new Error('expected a DatasetError');
}

const good = (user: string, item: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ user, item, ...extra });

describe('parseBatch: validation', () => {
  it('parses good lines with every optional field, numbering lines from 1', () => {
    const text = [
      good('u1', 'i1', { id: 'a', history: [{ item: 'i0', rating: 4, ts: 978300760 }, { item: 'i9' }] }),
      good('u1', 'i2', { features: { gender: 'F', age: '25' } }),
      '',
    ].join('\r\n');
    const { candidates, spans } = parseBatch(enc(text), FILE);
    expect(candidates).toEqual([
      {
        line: 1,
        id: 'a',
        user: 'u1',
        item: 'i1',
        history: [{ item: 'i0', rating: 4, ts: 978300760 }, { item: 'i9' }],
      },
      { line: 2, user: 'u1', item: 'i2', features: { gender: 'F', age: '25' } },
    ]);
    expect(spans).toHaveLength(2);
  });

  it('bad JSON names the file and the line', () => {
    const e = errorOf(`${good('u', 'i')}\n{"user": "u", "item": \n${good('u', 'j')}\n`);
    expect(e.code).toBe('BAD_DATASET');
    expect(e.file).toBe(FILE);
    expect(e.line).toBe(2);
    expect(e.message).toMatch(/^in\.jsonl:2: not valid JSON/);
  });

  it.each([
    ['user is a number', { user: 7, item: 'i' }, 'user', /must be a string, got a number/],
    ['item is missing', { user: 'u' }, 'item', /is required/],
    ['user is empty', { user: '', item: 'i' }, 'user', /must not be empty/],
    ['id is a number', { id: 3, user: 'u', item: 'i' }, 'id', /must be a string/],
    ['history is an object', { user: 'u', item: 'i', history: {} }, 'history', /must be an array/],
    [
      'history rating is a string',
      { user: 'u', item: 'i', history: [{ item: 'a' }, { item: 'b', rating: '5' }] },
      'history[1].rating',
      /finite number, got a string/,
    ],
    [
      'history entry lacks item',
      { user: 'u', item: 'i', history: [{ ts: 1 }] },
      'history[0].item',
      /required/,
    ],
    ['features value is a number', { user: 'u', item: 'i', features: { age: 25 } }, 'features.age', /string/],
    [
      'history is too long',
      { user: 'u', item: 'i', history: Array.from({ length: 1001 }, () => ({ item: 'a' })) },
      'history',
      /1001 events exceed the limit of 1000/,
    ],
    ['features is an array', { user: 'u', item: 'i', features: ['F'] }, 'features', /object of strings/],
  ])('wrong type: %s', (_name, value, field, message) => {
    const e = errorOf(`${good('u', 'ok')}\n${JSON.stringify(value)}\n`);
    expect(e.line).toBe(2);
    expect(e.field).toBe(field);
    expect(e.message).toMatch(message);
    expect(e.message).toContain(`in.jsonl:2 (field ${field})`);
  });

  it('unknown fields are rejected, at the top level and inside history', () => {
    const top = errorOf(`${good('u', 'i', { score: 1 })}\n`);
    expect([top.line, top.field]).toEqual([1, 'score']);
    expect(top.message).toMatch(/unknown field/);
    const nested = errorOf(`${good('u', 'i', { history: [{ item: 'a', when: 1 }] })}\n`);
    expect([nested.line, nested.field]).toEqual([1, 'history[0].when']);
  });

  it('a non-object line, a blank line and invalid UTF-8 each name their line', () => {
    expect(errorOf(`${good('u', 'i')}\n[1,2]\n`).line).toBe(2);
    expect(errorOf(`${good('u', 'i')}\n[1,2]\n`).message).toMatch(/expected a JSON object, got an array/);
    const blank = errorOf(`${good('u', 'i')}\n\n${good('u', 'j')}\n`);
    expect([blank.line, blank.message]).toEqual([2, expect.stringMatching(/blank line/)]);
    const bytes = Buffer.concat([
      enc(`${good('u', 'i')}\n{"user":"`),
      Buffer.from([0xff, 0xfe]),
      enc('","item":"x"}\n'),
    ]);
    const utf = errorOf(bytes);
    expect([utf.line, utf.message]).toEqual([2, expect.stringMatching(/UTF-8/)]);
  });

  it('an empty file is an error naming line 1 and the first required field', () => {
    const e = errorOf('');
    expect([e.line, e.field]).toEqual([1, 'user']);
    expect(e.message).toMatch(/empty/);
    const blankOnly = errorOf(' \n');
    expect([blankOnly.line, blankOnly.message]).toEqual([1, expect.stringMatching(/blank line/)]);
  });

  it('reports the first bad line and how many more there are', () => {
    const e = errorOf(`${good('u', 'i')}\n{"user": 1, "item": "i"}\n{\n{"user": "u"}\n`);
    expect([e.line, e.field]).toEqual([2, 'user']);
    expect(e.message).toMatch(/and 2 more bad lines/);
  });
});

describe('request grouping and chunk planning', () => {
  const cands = (users: string[]): BatchCandidate[] =>
    users.map((user, i) => ({ line: i + 1, user, item: `i${i}` }));

  it('groups consecutive lines of one user, splitting at other users, other histories and the cap', () => {
    const c = cands(['a', 'a', 'a', 'b', 'a', 'a']);
    expect(groupRequests(c)).toEqual([
      { start: 0, end: 3 },
      { start: 3, end: 4 },
      { start: 4, end: 6 },
    ]);
    expect(groupRequests(c, 2)).toEqual([
      { start: 0, end: 2 },
      { start: 2, end: 3 },
      { start: 3, end: 4 },
      { start: 4, end: 6 },
    ]);
    const withHistory = c.map((x, i) => (i === 1 ? { ...x, history: [{ item: 'h' }] } : x));
    expect(groupRequests(withHistory).map((r) => r.end - r.start)).toEqual([1, 1, 1, 1, 2]);
    // The same attributes in another key order are the same request.
    const f = [
      { user: 'a', features: { x: '1', y: '2' } },
      { user: 'a', features: { y: '2', x: '1' } },
    ];
    expect(groupRequests(f)).toEqual([{ start: 0, end: 2 }]);
  });

  it('cuts chunks at request boundaries; the chunks cover every line and byte exactly once', () => {
    const users = ['a', 'a', 'a', 'b', 'b', 'c', 'd', 'd', 'd', 'd', 'd', 'e'];
    const text = users.map((u, i) => good(u, `i${i}`)).join('\n') + '\n';
    const data = enc(text);
    const parsed = parseBatch(data, FILE);
    const chunks = planChunks(parsed, 4);
    // a×3 | b×2 c | d×4 (capped at 4) | d e
    expect(chunks.map((c) => [c.startLine, c.endLine, c.requests])).toEqual([
      [1, 4, 1],
      [4, 7, 2],
      [7, 11, 1],
      [11, 13, 2],
    ]);
    expect(chunks.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(chunks[0].startByte).toBe(0);
    expect(chunks.at(-1)!.endByte).toBe(data.length - 1);
    for (let i = 1; i < chunks.length; i++) expect(chunks[i].startByte).toBe(chunks[i - 1].endByte);
    // Each chunk's byte range parses, on its own, to exactly its lines and regroups to its request count.
    const again: BatchCandidate[] = [];
    for (const c of chunks) {
      const part = parseBatch(data.subarray(c.startByte, c.endByte), FILE, c.startLine);
      expect(part.candidates.map((x) => x.line)).toEqual(
        Array.from({ length: c.endLine - c.startLine }, (_, k) => c.startLine + k),
      );
      expect(groupRequests(part.candidates, 4)).toHaveLength(c.requests);
      again.push(...part.candidates);
    }
    expect(again).toEqual(parsed.candidates);
  });

  it('on random files, the one-pass planner covers every line once, in chunks that fit and regroup exactly', () => {
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let trial = 0; trial < 40; trial++) {
      const n = 1 + Math.floor(rand() * 400);
      const chunkRows = 1 + Math.floor(rand() * 60);
      const maxCandidates = 1 + Math.floor(rand() * 40);
      const rows: string[] = [];
      let user = 'u0';
      for (let i = 0; i < n; i++) {
        if (rand() < 0.15) user = `u${Math.floor(rand() * 5)}`;
        const extra = rand() < 0.05 ? { history: [{ item: `h${i % 3}` }] } : {};
        rows.push(good(user, `i${i}`, extra));
      }
      const data = enc(rows.join(rand() < 0.5 ? '\n' : '\r\n') + (rand() < 0.5 ? '\n' : ''));
      const plan = planBatch(data, FILE, chunkRows, maxCandidates);
      const parsed = parseBatch(data, FILE);
      expect(plan.chunks).toEqual(planChunks(parsed, chunkRows, maxCandidates));
      expect(plan.rows).toBe(n);
      expect(plan.maxRequest).toBe(Math.min(chunkRows, maxCandidates));
      expect(plan.chunks[0].startLine).toBe(1);
      expect(plan.chunks.at(-1)!.endLine).toBe(n + 1);
      let requests = 0;
      plan.chunks.forEach((c, k) => {
        expect(c.index).toBe(k);
        if (k > 0) {
          expect(c.startLine).toBe(plan.chunks[k - 1].endLine);
          expect(c.startByte).toBe(plan.chunks[k - 1].endByte);
        }
        expect(c.endLine - c.startLine).toBeLessThanOrEqual(chunkRows);
        const part = parseBatch(data.subarray(c.startByte, c.endByte), FILE, c.startLine);
        expect(part.candidates).toEqual(parsed.candidates.slice(c.startLine - 1, c.endLine - 1));
        expect(groupRequests(part.candidates, plan.maxRequest)).toHaveLength(c.requests);
        requests += c.requests;
      });
      // Regrouping chunk by chunk gives the same requests as grouping the whole file.
      expect(requests).toBe(groupRequests(parsed.candidates, plan.maxRequest).length);
    }
  });

  it('scanBatch visits nothing once a line is bad, and counts lines', () => {
    const seen: number[] = [];
    expect(scanBatch(enc(`${good('a', 'x')}\n${good('b', 'y')}\n`), FILE, 1, (c) => seen.push(c.line))).toBe(
      2,
    );
    expect(seen).toEqual([1, 2]);
    seen.length = 0;
    expect(() => scanBatch(enc(`{\n${good('a', 'x')}\n`), FILE, 1, (c) => seen.push(c.line))).toThrow(
      DatasetError,
    );
    expect(seen).toEqual([]);
  });

  it('one chunk when everything fits, and bad sizes are rejected', () => {
    const parsed = parseBatch(enc(`${good('a', 'x')}\n${good('b', 'y')}`), FILE);
    expect(planChunks(parsed, 100)).toEqual([
      {
        index: 0,
        startLine: 1,
        endLine: 3,
        startByte: 0,
        endByte: lineSpans(enc(`${good('a', 'x')}\n${good('b', 'y')}`))[1].end,
        requests: 2,
      },
    ]);
    expect(() => planChunks(parsed, 0)).toThrow(RangeError);
    expect(() => groupRequests([], 1.5)).toThrow(RangeError);
  });
});

describe('requests and output lines', () => {
  it('builds one ScoreRequest per group with the shared history and attributes', () => {
    const group: BatchCandidate[] = [
      { line: 3, user: 'u', item: 'a', history: [{ item: 'h', rating: 5 }], features: { age: '25' } },
      { line: 4, user: 'u', item: 'b', history: [{ item: 'h', rating: 5 }], features: { age: '25' } },
    ];
    expect(toScoreRequest(group, 60_000)).toEqual({
      user: { id: 'u', features: { age: '25' } },
      candidates: [{ item: 'a' }, { item: 'b' }],
      history: [{ item: 'h', rating: 5 }],
      budgetMs: 60_000,
    });
    expect(toScoreRequest([{ line: 1, user: 'v', item: 'c' }])).toEqual({
      user: { id: 'v' },
      candidates: [{ item: 'c' }],
    });
  });

  it('writes the documented fields in order, id and pLlm only when present, and checks the item', () => {
    const s = { item: 'a', p: 0.7, route: 'llm' as const, entropy: 0.69, pCrm: 0.5, pLlm: 0.7, cold: false };
    expect(formatResultLine({ line: 2, id: 'x', user: 'u', item: 'a' }, s)).toBe(
      '{"line":2,"id":"x","user":"u","item":"a","p":0.7,"route":"llm","entropy":0.69,"pCrm":0.5,"pLlm":0.7}',
    );
    const crm = { item: 'a', p: 0.1, route: 'crm' as const, entropy: 0.3, pCrm: 0.1, cold: false };
    expect(Object.keys(JSON.parse(formatResultLine({ line: 1, user: 'u', item: 'a' }, crm)))).toEqual([
      'line',
      'user',
      'item',
      'p',
      'route',
      'entropy',
      'pCrm',
    ]);
    expect(() => formatResultLine({ line: 1, user: 'u', item: 'b' }, crm)).toThrow(/answered item a/);
  });

  it('verifyChunkOutput accepts exactly the chunk lines in order and rejects gaps, repeats and extras', () => {
    const out = (lines: number[]) => lines.map((line) => JSON.stringify({ line })).join('\n') + '\n';
    const chunk = { index: 1, startLine: 5, endLine: 8 };
    expect(verifyChunkOutput(out([5, 6, 7]), chunk)).toBe(3);
    expect(() => verifyChunkOutput(out([5, 7]), chunk)).toThrow(/2 output lines, expected 3/);
    expect(() => verifyChunkOutput(out([5, 5, 7]), chunk)).toThrow(/input line 5, expected 6/);
    expect(() => verifyChunkOutput(out([5, 6, 7, 8]), chunk)).toThrow(/expected 3/);
  });
});
