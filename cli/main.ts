import { CorellaError } from '../ml/errors.js';
import { EXIT, UsageError } from './args.js';
import { makeOutput } from './output.js';
import { redactSecrets } from './services/secrets.js';

const USAGE = `corella — train, calibrate and serve CoReLLa recommenders

Usage: corella <command> [options]   (add --json for machine-readable output)

  up [--data-dir DIR] [--source S] [--config NAME|FILE] [--model PATH|hf:URI] [--no-download] [--keep-alive]
     [--no-run] [--serve [--serve-port N]]
                        start Postgres, Temporal and workers, run the retrain pipeline, print a summary
                        (data: --data-dir, CORELLA_DATA_DIR, cached or downloaded MovieLens-1M, synthetic)
  worker --queue cpu|gpu [--concurrency N]
                        run one worker process against TEMPORAL_ADDRESS / DATABASE_URL (or the embedded stack)
  retrain [--data-dir DIR] [--source S] [--config NAME|FILE] [--no-download] [--wait]
                        start retrainWorkflow (one run per dataset + config)
  score --input FILE.jsonl --output FILE.jsonl [--model champion|challenger|VERSION] [--chunk-rows N] [--wait]
                        batch-score candidate lines as scoreWorkflow (resumable chunks; same scores as serving)
  runs list [--limit N] | runs show ID | runs compare A B
  report RUN [--out FILE.html]
                        render a run's HTML report (charts, summary table, comparison with the champion)
  models list | models show ID | models promote ID [--reason TEXT]
  schedule create [--every 24h | --cron "0 3 * * *"] [--id ID] [--catchup 1h] [--source dataset|served] | schedule pause|unpause|trigger|delete ID
  serve [--model champion|challenger|VERSION] [--host 127.0.0.1] [--port 8080] [--threshold=inf|-inf|T]
        [--llm-concurrency N] [--llm-queue N] [--budget-ms MS] [--max-candidates N]
                        the online hybrid predictor over HTTP (POST /v1/score, /v1/feedback; /healthz,
                        /readyz, /metrics); follows the alias and swaps versions live. Beyond loopback it
                        needs CORELLA_SERVE_TOKEN (a bearer token)
  config show [--config NAME|FILE] | config schema
                        the pipeline config validated with every default resolved | its JSON Schema
  doctor                what is configured and what is reachable
  gc [--dry-run] [--older-than 7d]   remove artifact blobs nothing references (young ones are kept)

Environment: DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, CORELLA_HOME, CORELLA_DATA_DIR,
CORELLA_NO_DOWNLOAD, CORELLA_DOWNLOAD_TIMEOUT (seconds, default 5), CORELLA_ML1M_URL, CORELLA_ML1M_SHA256,
CORELLA_LLM_MODEL, CORELLA_TF_BACKEND, CORELLA_SERVE_TOKEN, CORELLA_PG_BIN (PostgreSQL bin dir for the embedded
server), CORELLA_TSX=1 (run the TypeScript sources, not dist/).`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  up: async () => (await import('./commands/up.js')).up,
  worker: async () => (await import('./commands/worker.js')).worker,
  retrain: async () => (await import('./commands/retrain.js')).retrain,
  runs: async () => (await import('./commands/runs.js')).runs,
  score: async () => (await import('./commands/score.js')).score,
  report: async () => (await import('./commands/report.js')).report,
  models: async () => (await import('./commands/models.js')).models,
  schedule: async () => (await import('./commands/schedule.js')).schedule,
  doctor: async () => (await import('./commands/doctor.js')).doctor,
  serve: async () => (await import('./commands/serve.js')).serve,
  gc: async () => (await import('./commands/gc.js')).gc,
  config: async () => (await import('./commands/config.js')).config,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const json = rest.includes('--json');
  const out = makeOutput(json);
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return name ? EXIT.ok : EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`unknown command: ${name}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  try {
    return await (
      await load()
    )(rest);
  } catch (e) {
    return reportError(e, out.json);
  }
}

export function reportError(e: unknown, json: boolean): number {
  let code: number = EXIT.internal;
  let kind = 'INTERNAL';
  if (e instanceof UsageError) {
    code = EXIT.usage;
    kind = 'USAGE';
  } else if (e instanceof CorellaError) {
    kind = e.code;
    code =
      e.code === 'SERVICE_UNAVAILABLE' || e.code === 'DATA_NOT_AVAILABLE' ? EXIT.unavailable : EXIT.badInput;
  }
  // A driver error can quote a connection URL: errors are masked like every other output.
  const message = redactSecrets(describeError(e));
  if (code === EXIT.internal && isConnectionRefused(e)) {
    code = EXIT.unavailable;
    kind = 'SERVICE_UNAVAILABLE';
  }
  if (json) process.stdout.write(`${JSON.stringify({ error: { kind, message } })}\n`);
  process.stderr.write(`corella: ${kind === 'INTERNAL' ? '' : `${kind}: `}${message}\n`);
  if (code === EXIT.internal && e instanceof Error && e.stack && process.env.CORELLA_DEBUG)
    process.stderr.write(redactSecrets(`${e.stack}\n`));
  return code;
}

/** The message and its causes: drizzle wraps driver errors in "Failed query: …", hiding the real reason. */
function describeError(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 4; depth++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(': caused by: ');
}

function isConnectionRefused(e: unknown): boolean {
  for (let cur: unknown = e; cur instanceof Error; cur = cur.cause) {
    const code = (cur as NodeJS.ErrnoException).code;
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'ETIMEDOUT') return true;
  }
  return false;
}
