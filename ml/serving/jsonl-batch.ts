/**
 * Batch scoring files: one candidate per JSON line in, one scored line per input line out, in input order.
 * Pure code (no Temporal, no database): the CLI validates a whole file with it before any workflow starts,
 * the plan activity cuts the file into chunks with it, and each chunk activity re-parses only its own byte
 * range and writes its output lines with it.
 */
import { canonicalJson } from '../canonical.js';
import { DatasetError } from '../errors.js';
import type { CandidateScore, HistoryEvent, ScoreRequest } from './types.js';

/** One input line. `line` is its 1-based line number in the input file. */
export interface BatchCandidate {
  line: number;
  id?: string;
  user: string;
  item: string;
  history?: HistoryEvent[];
  features?: Record<string, string>;
}

/** One output line, exactly as written. */
export interface BatchResultLine {
  line: number;
  id?: string;
  user: string;
  item: string;
  p: number;
  route: CandidateScore['route'];
  entropy: number;
  pCrm: number;
  pLlm?: number;
}

/** Byte range of one line (without its newline) inside the file. */
export interface LineSpan {
  start: number;
  end: number;
}

/** A run of consecutive candidates that become one ScoreRequest (indices into the candidate list). */
export interface RequestSpan {
  start: number;
  end: number;
}

/** One chunk of the file: whole requests only, so a chunk re-groups exactly as the whole file did. */
export interface ChunkSpec {
  index: number;
  /** 1-based input line numbers, `endLine` exclusive. */
  startLine: number;
  endLine: number;
  /** Byte range of the chunk in the input, newlines included. */
  startByte: number;
  endByte: number;
  requests: number;
}

/** The engine's default slate limit (ServingLimits.maxCandidates): a request of one user never exceeds it. */
export const DEFAULT_MAX_REQUEST_CANDIDATES = 500;

/** The engine's default history limit (ServingLimits.maxHistory): checked here so it fails before any run. */
export const MAX_HISTORY_EVENTS = 1000;

const TOP_FIELDS = new Set(['id', 'user', 'item', 'history', 'features']);
const HISTORY_FIELDS = new Set(['item', 'rating', 'ts']);
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The line spans of a JSON-lines buffer, one at a time (a file of millions of lines needs no array of them).
 * A final newline ends the last line (it does not start an empty one); a trailing CR is dropped so files
 * written on Windows read the same.
 */
export function* iterateLines(data: Uint8Array): Generator<LineSpan> {
  let start = 0;
  for (;;) {
    const nl = data.indexOf(10, start);
    if (nl < 0) break;
    yield { start, end: nl > start && data[nl - 1] === 13 ? nl - 1 : nl };
    start = nl + 1;
  }
  if (start < data.length) yield { start, end: data.length };
}

export function lineSpans(data: Uint8Array): LineSpan[] {
  return [...iterateLines(data)];
}

function fail(file: string, line: number, field: string | undefined, message: string, excerpt?: string) {
  return new DatasetError(message, { file, line, field, excerpt, reason: message });
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses and validates one input line; every problem is a DatasetError naming the file, the line and the
 * field. Hand checks rather than a schema library: the rules are few, and they give messages that name
 * the exact path (`history[3].rating`) in the words a user of this file format expects.
 */
export function parseCandidateLine(text: string, file: string, line: number): BatchCandidate {
  if (text.trim() === '') {
    throw fail(file, line, undefined, 'blank line: every line must hold one candidate as a JSON object');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw fail(file, line, undefined, `not valid JSON (${(e as Error).message})`, text);
  }
  if (!isPlainObject(value)) {
    throw fail(file, line, undefined, `expected a JSON object, got ${typeName(value)}`, text);
  }
  for (const key of Object.keys(value)) {
    if (!TOP_FIELDS.has(key)) {
      throw fail(file, line, key, `unknown field (allowed: ${[...TOP_FIELDS].join(', ')})`);
    }
  }
  const str = (field: string, v: unknown, required: boolean): string | undefined => {
    if (v === undefined && !required) return undefined;
    if (v === undefined) throw fail(file, line, field, 'is required');
    if (typeof v !== 'string') throw fail(file, line, field, `must be a string, got ${typeName(v)}`);
    if (required && v === '') throw fail(file, line, field, 'must not be empty');
    return v;
  };
  const out: BatchCandidate = {
    line,
    user: str('user', value.user, true)!,
    item: str('item', value.item, true)!,
  };
  const id = str('id', value.id, false);
  if (id !== undefined) out.id = id;

  if (value.history !== undefined) {
    if (!Array.isArray(value.history)) {
      throw fail(file, line, 'history', `must be an array, got ${typeName(value.history)}`);
    }
    if (value.history.length > MAX_HISTORY_EVENTS) {
      throw fail(
        file,
        line,
        'history',
        `${value.history.length} events exceed the limit of ${MAX_HISTORY_EVENTS}`,
      );
    }
    out.history = value.history.map((ev: unknown, i) => {
      const at = `history[${i}]`;
      if (!isPlainObject(ev)) throw fail(file, line, at, `must be an object, got ${typeName(ev)}`);
      for (const key of Object.keys(ev)) {
        if (!HISTORY_FIELDS.has(key)) {
          throw fail(
            file,
            line,
            `${at}.${key}`,
            `unknown field (allowed: ${[...HISTORY_FIELDS].join(', ')})`,
          );
        }
      }
      const h: HistoryEvent = { item: str(`${at}.item`, ev.item, true)! };
      for (const k of ['rating', 'ts'] as const) {
        const v = ev[k];
        if (v === undefined) continue;
        if (typeof v !== 'number' || !Number.isFinite(v)) {
          throw fail(file, line, `${at}.${k}`, `must be a finite number, got ${typeName(v)}`);
        }
        h[k] = v;
      }
      return h;
    });
  }

  if (value.features !== undefined) {
    if (!isPlainObject(value.features)) {
      throw fail(file, line, 'features', `must be an object of strings, got ${typeName(value.features)}`);
    }
    const features: Record<string, string> = {};
    for (const [k, v] of Object.entries(value.features)) {
      if (typeof v !== 'string')
        throw fail(file, line, `features.${k}`, `must be a string, got ${typeName(v)}`);
      features[k] = v;
    }
    out.features = features;
  }
  return out;
}

export interface ParsedBatch {
  candidates: BatchCandidate[];
  /** Byte span of each candidate's line. */
  spans: LineSpan[];
}

/**
 * Parses every line of a batch file (or of one chunk of it: `firstLine` numbers its first line), handing
 * each candidate to `visit` without keeping it. The first bad line throws, its message also saying how many
 * further lines are bad, so one run of the CLI shows the size of the problem. An empty file is an error too:
 * a batch with nothing to score is almost always a mistake. Returns the number of lines.
 */
export function scanBatch(
  data: Uint8Array,
  file: string,
  firstLine: number,
  visit: (c: BatchCandidate, span: LineSpan) => void,
): number {
  let n = 0;
  let first: DatasetError | undefined;
  let more = 0;
  for (const span of iterateLines(data)) {
    const lineNo = firstLine + n++;
    let c: BatchCandidate;
    try {
      let text: string;
      try {
        text = UTF8.decode(data.subarray(span.start, span.end));
      } catch {
        throw fail(file, lineNo, undefined, 'not valid UTF-8');
      }
      c = parseCandidateLine(text, file, lineNo);
    } catch (e) {
      if (!(e instanceof DatasetError)) throw e;
      if (first) more++;
      else first = e;
      continue;
    }
    if (!first) visit(c, span);
  }
  if (n === 0) {
    throw fail(file, firstLine, 'user', 'the file is empty: expected one {"user", "item"} object per line');
  }
  if (first) {
    if (more === 0) throw first;
    const reason = String(first.details.reason ?? 'bad line');
    throw new DatasetError(`${reason} (and ${more} more bad ${more === 1 ? 'line' : 'lines'})`, {
      file: first.file,
      line: first.line,
      field: first.field,
      excerpt: first.excerpt,
      reason,
    });
  }
  return n;
}

/** Every candidate of a (small) batch or chunk, with its line's byte span. */
export function parseBatch(data: Uint8Array, file: string, firstLine = 1): ParsedBatch {
  const candidates: BatchCandidate[] = [];
  const spans: LineSpan[] = [];
  scanBatch(data, file, firstLine, (c, span) => {
    candidates.push(c);
    spans.push(span);
  });
  return { candidates, spans };
}

/** What makes two consecutive lines one request: the same user, with the same history and attributes. */
function requestKey(c: Pick<BatchCandidate, 'user' | 'history' | 'features'>): string {
  return canonicalJson([c.user, c.history ?? null, c.features ?? null]);
}

/**
 * Groups consecutive candidates of one user (same history, same user attributes) into requests of at most
 * `maxCandidates`, so the LLM renders that user's prompt prefix once for all of them. Only consecutive
 * lines are grouped: reordering the file would cost a sort and buy little, since producers usually write a
 * user's candidates together.
 */
export function groupRequests(
  candidates: Pick<BatchCandidate, 'user' | 'history' | 'features'>[],
  maxCandidates = DEFAULT_MAX_REQUEST_CANDIDATES,
): RequestSpan[] {
  if (!(Number.isInteger(maxCandidates) && maxCandidates > 0)) {
    throw new RangeError(`maxCandidates must be a positive integer, got ${maxCandidates}`);
  }
  const out: RequestSpan[] = [];
  let prevKey: string | undefined;
  for (let i = 0; i < candidates.length; i++) {
    const key = requestKey(candidates[i]);
    const cur = out.at(-1);
    if (cur && key === prevKey && cur.end - cur.start < maxCandidates) cur.end = i + 1;
    else out.push({ start: i, end: i + 1 });
    prevKey = key;
  }
  return out;
}

interface OpenRun {
  key?: string;
  rows: number;
  requests: number;
  startLine: number;
  startByte: number;
  lastLine: number;
  lastEnd: number;
}

/**
 * Cuts a stream of candidates into chunks of at most `chunkRows` lines at request boundaries (requests are
 * capped at `chunkRows` too, so every chunk fits), holding only the open request and the open chunk.
 * Chunks are the unit of retry and of resumption: a finished chunk is never scored again.
 */
export class ChunkPlanner {
  readonly chunks: ChunkSpec[] = [];
  /** Cap on one request's candidates; chunk activities regroup their lines with the same cap. */
  readonly maxRequest: number;
  rows = 0;
  private req: OpenRun | undefined;
  private chunk: OpenRun | undefined;

  constructor(
    readonly chunkRows: number,
    maxCandidates = DEFAULT_MAX_REQUEST_CANDIDATES,
  ) {
    if (!(Number.isInteger(chunkRows) && chunkRows > 0)) {
      throw new RangeError(`chunkRows must be a positive integer, got ${chunkRows}`);
    }
    this.maxRequest = Math.min(maxCandidates, chunkRows);
  }

  add(c: BatchCandidate, span: LineSpan): void {
    this.rows++;
    const key = requestKey(c);
    const r = this.req;
    if (r && r.key === key && r.rows < this.maxRequest) {
      r.rows++;
      r.lastLine = c.line;
      r.lastEnd = span.end;
      return;
    }
    if (r) this.place(r);
    this.req = {
      key,
      rows: 1,
      requests: 1,
      startLine: c.line,
      startByte: span.start,
      lastLine: c.line,
      lastEnd: span.end,
    };
  }

  finish(): ChunkSpec[] {
    if (this.req) this.place(this.req);
    this.req = undefined;
    if (this.chunk) this.close(this.chunk.lastEnd);
    return this.chunks;
  }

  private place(r: OpenRun): void {
    const ch = this.chunk;
    if (ch && ch.rows + r.rows > this.chunkRows) this.close(r.startByte);
    if (!this.chunk) {
      this.chunk = { ...r, key: undefined };
      return;
    }
    const open = this.chunk;
    open.rows += r.rows;
    open.requests++;
    open.lastLine = r.lastLine;
    open.lastEnd = r.lastEnd;
  }

  /** `endByte`: the start of the next line (newline included) or, for the last chunk, the end of its line. */
  private close(endByte: number): void {
    const ch = this.chunk!;
    this.chunks.push({
      index: this.chunks.length,
      startLine: ch.startLine,
      endLine: ch.lastLine + 1,
      startByte: ch.startByte,
      endByte,
      requests: ch.requests,
    });
    this.chunk = undefined;
  }
}

/** The chunks of already parsed candidates. */
export function planChunks(
  parsed: ParsedBatch,
  chunkRows: number,
  maxCandidates = DEFAULT_MAX_REQUEST_CANDIDATES,
): ChunkSpec[] {
  const planner = new ChunkPlanner(chunkRows, maxCandidates);
  parsed.candidates.forEach((c, i) => planner.add(c, parsed.spans[i]));
  return planner.finish();
}

/** Validates and plans a whole batch file in one pass, keeping no candidate. */
export function planBatch(
  data: Uint8Array,
  file: string,
  chunkRows: number,
  maxCandidates = DEFAULT_MAX_REQUEST_CANDIDATES,
): { rows: number; maxRequest: number; chunks: ChunkSpec[] } {
  const planner = new ChunkPlanner(chunkRows, maxCandidates);
  scanBatch(data, file, 1, (c, span) => planner.add(c, span));
  return { rows: planner.rows, maxRequest: planner.maxRequest, chunks: planner.finish() };
}

/** The engine request for one group of candidates; `budgetMs` lets batch work wait for the LLM. */
export function toScoreRequest(group: BatchCandidate[], budgetMs?: number): ScoreRequest {
  const head = group[0];
  const req: ScoreRequest = {
    user: head.features ? { id: head.user, features: head.features } : { id: head.user },
    candidates: group.map((c) => ({ item: c.item })),
  };
  if (head.history) req.history = head.history;
  if (budgetMs !== undefined) req.budgetMs = budgetMs;
  return req;
}

/** One output line (no newline), fields in the documented order; `id` and `pLlm` only when present. */
export function formatResultLine(c: BatchCandidate, s: CandidateScore): string {
  if (s.item !== c.item) {
    throw new Error(`line ${c.line}: the engine answered item ${s.item} for candidate ${c.item}`);
  }
  // Built key by key: JSON.stringify keeps insertion order, which is the documented field order.
  const out: Partial<BatchResultLine> = { line: c.line };
  if (c.id !== undefined) out.id = c.id;
  out.user = c.user;
  out.item = c.item;
  out.p = s.p;
  out.route = s.route;
  out.entropy = s.entropy;
  out.pCrm = s.pCrm;
  if (s.pLlm !== undefined) out.pLlm = s.pLlm;
  return JSON.stringify(out);
}

/**
 * Checks a chunk's output before it joins the result: exactly the lines startLine … endLine−1, each once,
 * in order. This is the guarantee batch scoring makes (every input row exactly once), checked where the
 * pieces meet rather than assumed.
 */
export function verifyChunkOutput(
  text: string,
  chunk: Pick<ChunkSpec, 'index' | 'startLine' | 'endLine'>,
): number {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const want = chunk.endLine - chunk.startLine;
  if (lines.length !== want) {
    throw new Error(`chunk ${chunk.index}: ${lines.length} output lines, expected ${want}`);
  }
  for (let i = 0; i < lines.length; i++) {
    const { line } = JSON.parse(lines[i]) as { line: unknown };
    if (line !== chunk.startLine + i) {
      throw new Error(
        `chunk ${chunk.index}: output line ${i + 1} is for input line ${String(line)}, expected ${chunk.startLine + i}`,
      );
    }
  }
  return lines.length;
}
