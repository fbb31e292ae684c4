import { parseArgs, type ParseArgsConfig } from 'node:util';
import { didYouMean } from '../ml/config/did-you-mean.js';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Exit codes that mean something to scripts. */
export const EXIT = {
  ok: 0,
  runFailed: 1,
  usage: 2,
  unavailable: 3,
  badInput: 4,
  internal: 70,
} as const;

/**
 * One option of a command. Parsing and `--help` are both generated from these, so an option cannot be
 * accepted without being documented, nor documented without being accepted.
 */
export interface OptionDef {
  readonly type: 'string' | 'boolean';
  readonly description: string;
  /** Applied by the parser (the command sees it when the flag is absent) and printed by `--help`. */
  readonly default?: string;
  /** Printed by `--help` when the default is not a constant the parser can apply (e.g. `cli:$USER`). */
  readonly defaultText?: string;
  /** The value's name in the help text: `--data-dir DIR`. */
  readonly placeholder?: string;
  readonly multiple?: boolean;
  readonly short?: string;
}

export type OptionDefs = Readonly<Record<string, OptionDef>>;

export interface CommandSpec<O extends OptionDefs = OptionDefs> {
  readonly name: string;
  /** One line for `corella --help`. */
  readonly summary: string;
  /** What follows `corella <name>` in the usage lines; `[options]` is appended when there are options. */
  readonly usage: readonly string[];
  /** A paragraph for `corella <name> --help`: what the command does that its options do not say. */
  readonly description?: string;
  readonly options: O;
  /** Whether the command takes positional arguments (subcommands, ids); without, one is a usage error. */
  readonly positionals: boolean;
  readonly examples: readonly string[];
}

/** Every command takes these; they are not repeated in each definition. */
export const GLOBAL_OPTIONS = {
  json: { type: 'boolean', description: 'machine-readable JSON on stdout (progress stays on stderr)' },
  help: { type: 'boolean', short: 'h', description: 'this help' },
} as const satisfies OptionDefs;

type Scalar<D extends OptionDef> = D['type'] extends 'boolean' ? boolean : string;
type Value<D extends OptionDef> = D extends { multiple: true } ? Scalar<D>[] : Scalar<D>;
type Defaulted<O extends OptionDefs> = {
  [K in keyof O]: O[K] extends { default: string } ? K : never;
}[keyof O];

/** What a command receives: options with a default are always set, the others when given. */
export type Values<O extends OptionDefs> = {
  -readonly [K in Defaulted<O>]: Value<O[K]>;
} & {
  -readonly [K in Exclude<keyof O, Defaulted<O>>]?: Value<O[K]>;
} & { json: boolean };

export interface Parsed<O extends OptionDefs> {
  values: Values<O>;
  positionals: string[];
}

/** Keeps the literal types of a definition (so `values` is typed) while checking its shape. */
export function defineCommand<const O extends OptionDefs>(spec: CommandSpec<O>): CommandSpec<O> {
  return spec;
}

function parserOptions(options: OptionDefs): NonNullable<ParseArgsConfig['options']> {
  const out: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, d] of Object.entries({ ...options, ...GLOBAL_OPTIONS }) as [string, OptionDef][]) {
    out[name] = {
      type: d.type,
      ...(d.short ? { short: d.short } : {}),
      ...(d.multiple ? { multiple: true } : {}),
    };
  }
  return out;
}

/** True when `--help`/`-h` is among the options, whatever else is wrong with the command line. */
export function wantsHelp(spec: CommandSpec, argv: string[]): boolean {
  const { tokens } = parseArgs({
    args: argv,
    options: parserOptions(spec.options),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  return tokens.some((t) => t.kind === 'option' && t.name === 'help');
}

/**
 * Parses a command line against a command's definitions (util.parseArgs, strict). An unknown option is a
 * usage error naming it, with the closest known one; defaults are applied here, once.
 */
export function parseCommand<O extends OptionDefs>(spec: CommandSpec<O>, argv: string[]): Parsed<O> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: parserOptions(spec.options),
      allowPositionals: spec.positionals,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(explainParseError(spec, e as Error & { code?: string }));
  }
  const values: Record<string, unknown> = { json: false, ...parsed.values };
  for (const [name, d] of Object.entries(spec.options)) {
    if (values[name] === undefined && d.default !== undefined) values[name] = d.default;
  }
  delete values.help;
  return { values: values as Values<O>, positionals: parsed.positionals };
}

/** A typo's likely option, or the one a cut-short flag begins (`--dry` for `--dry-run`). */
function closestOption(typed: string, known: string[]): string | undefined {
  const prefixed = typed.length >= 2 ? known.filter((k) => k.startsWith(typed)) : [];
  return prefixed.length === 1 ? prefixed[0] : didYouMean(typed, known);
}

function explainParseError(spec: CommandSpec, e: Error & { code?: string }): string {
  const help = `see corella ${spec.name} --help`;
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const flag = /'([^']+)'/.exec(e.message)?.[1] ?? e.message;
    const guess = closestOption(
      flag.replace(/^-+/, '').split('=')[0],
      Object.keys({ ...spec.options, ...GLOBAL_OPTIONS }),
    );
    return `corella ${spec.name}: unknown option ${flag}${guess ? `; did you mean --${guess}?` : ''} (${help})`;
  }
  if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const arg = /'([^']+)'/.exec(e.message)?.[1] ?? '';
    return `corella ${spec.name} takes no arguments (got ${JSON.stringify(arg)}; ${help})`;
  }
  // Missing or ambiguous values: Node's message names the option and says how to fix it.
  return `corella ${spec.name}: ${e.message.replace(/\s*\n\s*/g, ' ')} (${help})`;
}

/** `--data-dir DIR`, `-h, --help`. */
function flagLabel(name: string, d: OptionDef): string {
  const long = `--${name}${d.type === 'string' ? ` ${d.placeholder ?? 'VALUE'}` : ''}`;
  return d.short ? `-${d.short}, ${long}` : long;
}

function wrap(text: string, width: number, indent: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}

/** The option lines of a help text: every option the parser accepts, with its default. */
export function optionLines(options: OptionDefs): string[] {
  const all = Object.entries({ ...options, ...GLOBAL_OPTIONS }) as [string, OptionDef][];
  const labels = all.map(([name, d]) => flagLabel(name, d));
  const col = Math.min(30, Math.max(...labels.map((l) => l.length)) + 2);
  return all.map(([, d], i) => {
    const shown = d.default !== undefined ? JSON.stringify(d.default) : d.defaultText;
    const text = `${d.description}${d.multiple ? ' (repeatable)' : ''}${shown !== undefined ? ` (default: ${shown})` : ''}`;
    const label = labels[i];
    const pad = label.length + 2 > col ? `\n  ${' '.repeat(col)}` : ' '.repeat(col - label.length);
    return `  ${label}${pad}${wrap(text, 104 - col, col + 2)}`;
  });
}

/** `corella <name> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const hasOptions = Object.keys(spec.options).length > 0;
  const usage = (spec.usage.length > 0 ? spec.usage : ['']).map(
    (u) => `  corella ${spec.name}${u ? ` ${u}` : ''}${hasOptions ? ' [options]' : ''}`,
  );
  return [
    `corella ${spec.name} — ${spec.summary}`,
    '',
    'Usage:',
    ...usage,
    ...(spec.description ? ['', wrap(spec.description, 106, 0)] : []),
    '',
    'Options:',
    ...optionLines(spec.options),
    '',
    spec.examples.length === 1 ? 'Example:' : 'Examples:',
    ...spec.examples.map((x) => `  ${x}`),
  ].join('\n');
}

/** "24h", "30m", "90s", "2d" → milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) throw new UsageError(`not a duration: ${JSON.stringify(s)} (use e.g. 90s, 30m, 24h, 2d)`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as 'ms' | 's' | 'm' | 'h' | 'd'
  ];
  return n * unit;
}

/** The parsed arguments a command's implementation receives, from its definition. */
export type ArgsOf<S> = S extends CommandSpec<infer O> ? Parsed<O> : never;
