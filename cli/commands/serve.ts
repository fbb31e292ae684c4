import { join } from 'node:path';
import { resolveDatabase, type ResolvedDatabase } from '../services/embedded-postgres.js';
import { migrateDatabase } from '../../db/migrate.js';
import { openDatabase } from '../../db/connection.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { startServer, type RunningServer, type ServeOptions } from '../../serve/server.js';
import { databaseStorage } from '../../serve/storage.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { makeOutput } from '../output.js';
import { corellaHome } from '../services/paths.js';
import { listenForStop } from '../stop-signal.js';
import type { serveSpec } from '../specs/serve.js';
import {
  followParent,
  reexecWithYoungGeneration,
  semiSpaceFlag,
  youngGenerationSet,
} from '../serve-young-generation.js';

function positiveInt(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer`);
  return n;
}

/** `inf` serves CRM-only, `-inf` sends every candidate to the LLM; a number overrides the calibrated one. */
export function thresholdFlag(raw: string | undefined): number | undefined {
  if (raw === undefined || raw === 'calibrated') return undefined;
  if (raw === 'inf' || raw === '+inf') return Infinity;
  if (raw === '-inf') return -Infinity;
  const t = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(t))
    throw new UsageError('--threshold must be calibrated, inf (CRM only), -inf (LLM only) or a number');
  return t;
}

export function serveOptionsFrom(
  values: Record<string, string | boolean | undefined>,
): Partial<ServeOptions> {
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const port = str('port') === undefined ? undefined : Number(str('port'));
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536))
    throw new UsageError('--port must be a port number (0 picks a free one)');
  const budget = {
    maxConcurrency: positiveInt('llm-concurrency', str('llm-concurrency')),
    maxQueue: positiveInt('llm-queue', str('llm-queue')),
    defaultBudgetMs: positiveInt('budget-ms', str('budget-ms')),
  };
  return {
    model: str('model'),
    host: str('host'),
    port,
    budget: Object.fromEntries(Object.entries(budget).filter(([, v]) => v !== undefined)),
    limits: positiveInt('max-candidates', str('max-candidates'))
      ? { maxCandidates: positiveInt('max-candidates', str('max-candidates'))! }
      : undefined,
    threshold: thresholdFlag(str('threshold')),
    token: process.env.CORELLA_SERVE_TOKEN || undefined,
  };
}

/**
 * `corella serve`: the online hybrid predictor. Postgres (DATABASE_URL or the embedded one) and the artifact
 * store are all it needs; it runs until SIGINT/SIGTERM.
 */
export async function serve({ values }: ArgsOf<typeof serveSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const opts = serveOptionsFrom(values);
  const semiSpaceMb = semiSpaceFlag(values['semi-space-mb']);
  if (semiSpaceMb > 0 && !youngGenerationSet()) return reexecWithYoungGeneration(semiSpaceMb);
  followParent();
  const stop = listenForStop((signal) => out.info(`${signal}: stopping`));
  const home = corellaHome();
  let db: ResolvedDatabase | undefined;
  let server: RunningServer | undefined;
  try {
    db = await resolveDatabase({ dataDir: join(home, 'pg') });
    if (stop.requested) return EXIT.ok;
    const m = openDatabase(db.url);
    try {
      await migrateDatabase(m.db);
    } finally {
      await m.close();
    }
    if (stop.requested) return EXIT.ok;
    server = await startServer({
      ...opts,
      databaseUrl: db.url,
      store: openArtifactStore(home),
      home,
      storage: (d) => databaseStorage(d, { spoolDir: join(home, 'serve-spool') }),
      log: (msg) => out.info(msg),
    });
    const ready = { url: server.url, model: opts.model ?? 'champion', pid: String(process.pid) };
    // The same machine-readable line `up` prints, for scripts and tests that start the server.
    out.info(`corella-ready ${JSON.stringify(ready)}`);
    out.result(ready, () => `serving ${ready.model} at ${ready.url}; Ctrl-C stops it`);
    await stop.stopped;
    return EXIT.ok;
  } finally {
    await server?.close();
    await db?.stop();
    stop.dispose();
  }
}
