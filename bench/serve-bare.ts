/**
 * The floor under `corella serve` for bench/serve.ts --bare: the same CRM-only engine and prediction log
 * behind a bare `node:http` handler (JSON.parse, score, append, JSON.stringify; no Fastify, no schema
 * validation, no hooks, no metrics per request). The gap between this and `corella serve` at the same rate
 * is what Fastify's request path costs; what the two share (engine, log, socket, load generator) is not.
 * Not a server to run: no auth, no limits, no error bodies beyond a status.
 *
 * Usage (bench/serve.ts starts it): node --import tsx bench/serve-bare.ts --home DIR [--model champion]
 *   Prints `corella-ready {"url": …}` on stderr like `corella serve`, answers /readyz, /metrics (for the
 *   bench's event-loop and GC figures) and POST /v1/score; stops on SIGTERM.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { resolveServingBundle } from '../activities/serving-bundle.js';
import { resolveDatabase } from '../cli/services/embedded-postgres.js';
import { openDatabase } from '../db/connection.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { ServingEngine } from '../ml/serving/engine.js';
import type { ScoreRequest } from '../ml/serving/types.js';
import { ServeMetrics } from '../serve/metrics.js';
import { databaseStorage } from '../serve/storage.js';

function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const home = resolve(arg('home') ?? process.env.CORELLA_HOME ?? '.corella');
const db = await resolveDatabase({ dataDir: join(home, 'pg') });
const handle = openDatabase(db.url, { max: 4 });
const store = new FileArtifactStore(join(home, 'artifacts'));
const { bundle } = await resolveServingBundle(handle.db, home, arg('model', 'champion')!);
const engine = await ServingEngine.load(
  store,
  { ...bundle, llm: null },
  { threshold: Infinity, log: () => {} },
);
const storage = await databaseStorage(handle.db, { spoolDir: join(home, 'serve-spool-bare') });
const metrics = new ServeMetrics();
const versionId = Number(engine.modelVersion);

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    if (req.url === '/metrics') {
      void metrics.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(text);
      });
      return;
    }
    res.writeHead(req.url === '/readyz' || req.url === '/healthz' ? 200 : 404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const t0 = performance.now();
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ScoreRequest;
    const requestId = randomUUID();
    engine.score(body).then(
      (result) => {
        const ms = performance.now() - t0;
        storage.predictions!.append({
          requestId,
          at: new Date(),
          modelVersionId: versionId,
          user: body.user.id,
          history: body.history ?? null,
          budgetMs: body.budgetMs ?? null,
          threshold: engine.threshold,
          candidates: result.candidates,
          latencyMs: ms,
        });
        const out = JSON.stringify({
          requestId,
          modelVersion: String(versionId),
          threshold: engine.threshold,
          candidates: result.candidates.map((c) => ({
            item: c.item,
            p: c.p,
            route: c.route,
            entropy: c.entropy,
            cold: c.cold,
          })),
          timings: result.timings,
          llm: result.llm,
        });
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
        res.end(out);
      },
      () => res.writeHead(500).end(),
    );
  });
});
server.keepAliveTimeout = 72_000;
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  process.stderr.write(`corella-ready ${JSON.stringify({ url: `http://127.0.0.1:${port}` })}\n`);
});
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void (async () => {
    await storage.close?.();
    await engine.dispose();
    await handle.close();
    await db.stop();
    process.exit(0);
  })();
});
