/**
 * `CORELLA_LOG_FORMAT=json` for `corella serve`: every line is one JSON object in the workers' format, and a
 * request's lines carry the request id that its response and its stored predictions carry. Real HTTP.
 */
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../serve/app.js';
import { serveLogger } from '../../serve/logging.js';
import { ServeMetrics } from '../../serve/metrics.js';
import { ModelHolder } from '../../serve/model-holder.js';
import { DEFAULT_LIMITS } from '../../ml/serving/engine.js';

function memory(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'));
      cb();
    },
  });
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { stream, lines };
}

describe('serve logs', () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    while (closers.length) await closers.pop()!();
  });

  it('text (the default) has no logger; a bogus format is an error naming the variable', () => {
    expect(serveLogger({})).toBeUndefined();
    expect(serveLogger({ CORELLA_LOG_FORMAT: 'text' })).toBeUndefined();
    expect(() => serveLogger({ CORELLA_LOG_FORMAT: 'yaml' })).toThrow(/CORELLA_LOG_FORMAT/);
  });

  it('json: one object a line, with the request id of each request on its lines', async () => {
    const mem = memory();
    const logger = serveLogger({ CORELLA_LOG_FORMAT: 'json' }, mem.stream)!;
    const holder = new ModelHolder();
    const app = buildApp({ holder, metrics: new ServeMetrics(), limits: DEFAULT_LIMITS, logger });
    closers.push(
      () => holder.close(),
      () => app.close(),
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    const addr = app.server.address();
    const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;

    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const bad = await fetch(`${base}/v1/score`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: { id: 'u1' }, candidates: [{ item: 'i1' }], surprise: 1 }),
    });
    expect(bad.status).toBe(400);

    const lines = mem.lines();
    for (const l of lines) {
      expect(l).toMatchObject({ service: 'corella-serve', pid: process.pid });
      expect(typeof l.level).toBe('string');
      expect(new Date(String(l.time)).toISOString()).toBe(l.time);
    }
    const done = lines.filter((l) => l.msg === 'request completed');
    expect(done.map((l) => (l.res as { statusCode: number }).statusCode)).toEqual([200, 400]);
    const ids = new Set(done.map((l) => l.reqId));
    expect(ids.size).toBe(2);
    for (const id of ids) expect(String(id)).toMatch(/^[0-9a-f-]{36}$/);
    // The incoming line and the completed line of one request share its id.
    for (const id of ids) expect(lines.filter((l) => l.reqId === id).length).toBeGreaterThanOrEqual(2);
  });
});
