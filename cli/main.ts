import { CorellaError } from '../ml/errors.js';
import { redactSecrets } from './services/secrets.js';

import {
  commandHelp,
  GLOBAL_OPTIONS,
  EXIT,
  parseCommand,
  UsageError,
  wantsHelp,
  type CommandSpec,
  type OptionDefs,
  type Parsed,
} from './args.js';
import { didYouMean } from '../ml/config/did-you-mean.js';
import { configSpec } from './specs/config.js';
import { doctorSpec } from './specs/doctor.js';
import { gcSpec } from './specs/gc.js';
import { llmSpec } from './specs/llm.js';
import { modelsSpec } from './specs/models.js';
import { reportSpec } from './specs/report.js';
import { retrainSpec } from './specs/retrain.js';
import { runsSpec } from './specs/runs.js';
import { scheduleSpec } from './specs/schedule.js';
import { scoreSpec } from './specs/score.js';
import { serveSpec } from './specs/serve.js';
import { upSpec } from './specs/up.js';
import { workerSpec } from './specs/worker.js';

export interface Command {
  spec: CommandSpec;
  /** Parses `argv` against the spec (a usage error before the command's module is even loaded), then runs. */
  run(argv: string[]): Promise<number>;
}

/**
 * A command's definitions live in cli/specs/ (cheap to import, so `--help` and a mistyped flag never load
 * Temporal, tfjs or the database code); its implementation is imported only to run it.
 */
function command<O extends OptionDefs>(
  spec: CommandSpec<O>,
  load: () => Promise<(args: Parsed<O>) => Promise<number>>,
): Command {
  return {
    spec,
    async run(argv) {
      const args = parseCommand(spec, argv);
      return (await load())(args);
    },
  };
}

/** Every command, in the order `corella --help` lists them. */
export const COMMANDS: Record<string, Command> = {
  up: command(upSpec, async () => (await import('./commands/up.js')).up),
  worker: command(workerSpec, async () => (await import('./commands/worker.js')).worker),
  retrain: command(retrainSpec, async () => (await import('./commands/retrain.js')).retrain),
  score: command(scoreSpec, async () => (await import('./commands/score.js')).score),
  runs: command(runsSpec, async () => (await import('./commands/runs.js')).runs),
  report: command(reportSpec, async () => (await import('./commands/report.js')).report),
  models: command(modelsSpec, async () => (await import('./commands/models.js')).models),
  schedule: command(scheduleSpec, async () => (await import('./commands/schedule.js')).schedule),
  serve: command(serveSpec, async () => (await import('./commands/serve.js')).serve),
  doctor: command(doctorSpec, async () => (await import('./commands/doctor.js')).doctor),
  gc: command(gcSpec, async () => (await import('./commands/gc.js')).gc),
  llm: command(llmSpec, async () => (await import('./commands/llm.js')).llm),
  config: command(configSpec, async () => (await import('./commands/config.js')).config),
};

const ENVIRONMENT = `Environment: DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, CORELLA_HOME, CORELLA_DATA_DIR,
CORELLA_NO_DOWNLOAD, CORELLA_DOWNLOAD_TIMEOUT (seconds, default 5), CORELLA_ML1M_URL, CORELLA_ML1M_SHA256,
CORELLA_LLM_MODEL, CORELLA_TF_BACKEND, CORELLA_SERVE_TOKEN, CORELLA_PG_BIN (PostgreSQL bin dir for the embedded
server), CORELLA_TSX=1 (run the TypeScript sources, not dist/).

Exit codes: 0 ok, 1 the run failed, 2 usage error, 3 a service or the data is unavailable, 4 bad input,
70 internal error.`;

/** `corella --help`: one line per command; each command's own `--help` has its options. */
export function globalHelp(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    'corella — train, calibrate and serve CoReLLa recommenders',
    '',
    'Usage: corella <command> [options]   (add --json for machine-readable output)',
    '       corella <command> --help       (or corella help <command>: its options, defaults and an example)',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}${COMMANDS[n].spec.summary}`),
    '',
    ENVIRONMENT,
  ].join('\n');
}

/** A command's help; with --json its definitions (options, defaults, examples) for editors and scripts. */
function printHelp(spec: CommandSpec, json: boolean): void {
  const options = { ...spec.options, ...GLOBAL_OPTIONS };
  process.stdout.write(
    json ? `${JSON.stringify({ ...spec, options }, null, 2)}\n` : `${commandHelp(spec)}\n`,
  );
}

function unknownCommand(name: string): UsageError {
  const guess = didYouMean(name, Object.keys(COMMANDS));
  return new UsageError(
    `unknown command: ${name}${guess ? `; did you mean ${guess}?` : ''} (corella --help lists them)`,
  );
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const json = rest.includes('--json');
  if (!name || name === '--help' || name === '-h') {
    process.stdout.write(`${globalHelp()}\n`);
    return name ? EXIT.ok : EXIT.usage;
  }
  try {
    if (name === 'help') {
      const [topic, ...extra] = rest.filter((a) => a !== '--json');
      if (topic === undefined) {
        process.stdout.write(`${globalHelp()}\n`);
        return EXIT.ok;
      }
      if (extra.length > 0) throw new UsageError(`corella help takes one command (got ${rest.join(' ')})`);
      const cmd = COMMANDS[topic];
      if (!cmd) throw unknownCommand(topic);
      printHelp(cmd.spec, json);
      return EXIT.ok;
    }
    const cmd = COMMANDS[name];
    if (!cmd) throw unknownCommand(name);
    if (wantsHelp(cmd.spec, rest)) {
      printHelp(cmd.spec, json);
      return EXIT.ok;
    }
    return await cmd.run(rest);
  } catch (e) {
    // failure.ts loads the Temporal SDK: only an error that may have come from it pays for that, so
    // `--help` and a mistyped flag stay free of it.
    const unavailable =
      !(e instanceof UsageError) &&
      !(e instanceof CorellaError) &&
      (await import('./failure.js')).isUnavailable(e);
    return reportError(e, json, unavailable);
  }
}

/** Prints an error and returns its exit code; `unavailable`: a Temporal server could not be reached. */
export function reportError(e: unknown, json: boolean, unavailable = false): number {
  let code: number = EXIT.internal;
  let kind = 'INTERNAL';
  if (e instanceof UsageError) {
    code = EXIT.usage;
    kind = 'USAGE';
  } else if (e instanceof CorellaError) {
    kind = e.code;
    code =
      e.code === 'SERVICE_UNAVAILABLE' || e.code === 'DATA_NOT_AVAILABLE' || e.code === 'DB_UNAVAILABLE'
        ? EXIT.unavailable
        : e.code === 'DB_ERROR'
          ? EXIT.internal
          : EXIT.badInput;
  }
  // A driver error can quote a connection URL: errors are masked like every other output.
  const message = redactSecrets(describeError(e));
  if (code === EXIT.internal && (isConnectionRefused(e) || unavailable)) {
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
