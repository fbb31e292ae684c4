import { parseArgs, type ParseArgsConfig } from 'node:util';

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

export type Options = ParseArgsConfig['options'];

export function parse<O extends NonNullable<Options>>(argv: string[], options: O) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
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
