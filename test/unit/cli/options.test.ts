import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  commandHelp,
  GLOBAL_OPTIONS,
  parseCommand,
  UsageError,
  type CommandSpec,
  type OptionDef,
} from '../../../cli/args.js';
import { COMMANDS, globalHelp, main } from '../../../cli/main.js';
import { repoRoot } from '../../../cli/services/paths.js';

const names = Object.keys(COMMANDS);
const specs = names.map((n) => [n, COMMANDS[n].spec] as const);

/** The long flags a help text lists, read back from the text itself. */
function flagsInHelp(text: string): string[] {
  const options = text.slice(text.indexOf('\nOptions:\n'));
  return [...options.matchAll(/^ {2}(?:-\w, )?--([a-z][a-z0-9-]*)/gm)].map((m) => m[1]);
}

/** Every option name the parser accepts: each one is fed to the real parser, with a value if it takes one. */
function acceptedByParser(spec: CommandSpec): string[] {
  const all = Object.entries({ ...spec.options, ...GLOBAL_OPTIONS }) as [string, OptionDef][];
  return all
    .filter(([name, d]) => {
      const argv = d.type === 'string' ? [`--${name}=x`] : [`--${name}`];
      parseCommand(spec, argv);
      return true;
    })
    .map(([name]) => name);
}

describe('every command has its own --help, generated from its option definitions', () => {
  it('registers a definition for every module in cli/commands/', () => {
    const files = readdirSync(join(repoRoot, 'cli', 'commands'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => f.replace(/\.ts$/, ''));
    // A command module without an entry in main.ts would have no --help and no flag checking.
    expect(files.filter((f) => !names.includes(f))).toEqual([]);
    for (const [name, spec] of specs) expect(spec.name).toBe(name);
  });

  it('no command parses its own argv: main parses it once, against the definition --help prints', () => {
    for (const name of names) {
      const src = readFileSync(join(repoRoot, 'cli', 'commands', `${name}.ts`), 'utf8');
      expect(src, `cli/commands/${name}.ts`).not.toMatch(/\bparse(Args|Command)?\(/);
    }
  });

  it.each(specs)('`%s --help` lists exactly the options its parser accepts', (_name, spec) => {
    const help = commandHelp(spec);
    const listed = flagsInHelp(help);
    expect([...listed].sort()).toEqual(acceptedByParser(spec).sort());
    expect(new Set(listed).size).toBe(listed.length);
    expect(help).toContain(`corella ${spec.name}`);
    expect(help).toMatch(/\nExamples?:\n {2}corella /);
    for (const [name, d] of Object.entries(spec.options) as [string, OptionDef][]) {
      expect(d.description.trim(), `${spec.name} --${name}`).not.toBe('');
      // The line of the option (and its continuation) shows the default the parser applies.
      const options = help.slice(help.indexOf('\nOptions:\n'));
      const line = options
        .slice(options.indexOf(`\n  --${name}`) + 1)
        .split(/\n {2}-/)[0]
        .replace(/\s+/g, ' ');
      if (d.default !== undefined) expect(line).toContain(`(default: ${JSON.stringify(d.default)})`);
      if (d.defaultText !== undefined) expect(line).toContain(`(default: ${d.defaultText})`);
    }
  });

  it.each(specs)('`%s` rejects an unknown flag with a usage error naming it', async (_name, spec) => {
    const run = COMMANDS[spec.name].run(['--definitely-not-a-flag']);
    await expect(run).rejects.toThrow(UsageError);
    await expect(COMMANDS[spec.name].run(['--definitely-not-a-flag'])).rejects.toThrow(
      /unknown option --definitely-not-a-flag/,
    );
  });

  it.each(specs)('`%s` suggests the option a typo was meant to be', (_name, spec) => {
    for (const name of Object.keys(spec.options)) {
      // One letter swapped near the end: `--dyr-run` → `--dry-run`.
      const typo = name.length > 3 ? `${name.slice(0, -2)}${name.at(-1)}${name.at(-2)}` : `${name}x`;
      if (Object.keys(spec.options).includes(typo)) continue;
      expect(() => parseCommand(spec, [`--${typo}`])).toThrow(`did you mean --${name}?`);
    }
  });

  it('applies the defaults it prints, and keeps every spelling the README shows', () => {
    const c = (n: string) => COMMANDS[n].spec;
    expect(parseCommand(c('runs'), ['list']).values).toEqual({ json: false, limit: '20' });
    expect(parseCommand(c('runs'), ['list', '--kind', 'retrain', '--status=failed']).values).toMatchObject({
      kind: 'retrain',
      status: 'failed',
    });
    expect(parseCommand(c('serve'), ['--threshold=-inf', '--port', '0']).values).toMatchObject({
      threshold: '-inf',
      port: '0',
    });
    // Without `=` a value starting with a dash is ambiguous; the error says how to write it.
    expect(() => parseCommand(c('serve'), ['--threshold', '-inf'])).toThrow(/--threshold=-XYZ/);
    expect(parseCommand(c('up'), ['--no-run', '--serve']).values).toMatchObject({
      'no-run': true,
      serve: true,
      'serve-port': '8080',
      config: 'default',
    });
    expect(parseCommand(c('worker'), ['--queue', 'cpu', '--task-queue', 'q']).values).toMatchObject({
      queue: 'cpu',
      'task-queue': 'q',
    });
    expect(
      parseCommand(c('models'), ['promote', '7', '--alias', 'challenger', '--actor', 'me', '--limit', '3']),
    ).toEqual({
      values: { json: false, alias: 'challenger', actor: 'me', limit: '3', reason: 'promoted by hand' },
      positionals: ['promote', '7'],
    });
    expect(parseCommand(c('gc'), ['--dry-run', '--older-than', '30d', '--json']).values).toEqual({
      json: true,
      'dry-run': true,
      'older-than': '30d',
    });
    expect(
      parseCommand(c('schedule'), ['create', '--cron', '0 3 * * *', '--source', 'served']).values,
    ).toMatchObject({ cron: '0 3 * * *', source: 'served', id: 'corella-recalibrate', catchup: '1h' });
    expect(parseCommand(c('schedule'), ['pause', 'nightly']).positionals).toEqual(['pause', 'nightly']);
    expect(() => parseCommand(c('gc'), ['extra'])).toThrow(/takes no arguments/);
    // A flag cut short suggests the one it begins.
    expect(() => parseCommand(c('gc'), ['--dry'])).toThrow('did you mean --dry-run?');
    expect(() => parseCommand(c('runs'), ['list', '--limit'])).toThrow(/--limit/);
  });
});

describe('main', () => {
  let written = '';
  afterEach(() => {
    vi.restoreAllMocks();
    written = '';
  });
  const capture = () => {
    vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((written += String(s)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((written += String(s)), true));
  };

  it('`corella --help` lists every command with one line', () => {
    const text = globalHelp();
    for (const [name, spec] of specs) expect(text).toContain(`  ${name.padEnd(10)}${spec.summary}\n`);
  });

  it('`corella help X` and `corella X --help` print the same help, even beside a bad flag', async () => {
    capture();
    expect(await main(['help', 'gc'])).toBe(0);
    const viaHelp = written;
    written = '';
    expect(await main(['gc', '--bogus', '--help'])).toBe(0);
    expect(written).toBe(viaHelp);
    expect(viaHelp).toBe(`${commandHelp(COMMANDS.gc.spec)}\n`);
  });

  it('`--help --json` prints the definitions themselves', async () => {
    capture();
    expect(await main(['models', '--help', '--json'])).toBe(0);
    const spec = JSON.parse(written) as CommandSpec;
    expect(Object.keys(spec.options).sort()).toEqual(acceptedByParser(COMMANDS.models.spec).sort());
    expect(spec.options.alias).toMatchObject({ type: 'string', default: 'champion' });
  });

  it('an unknown command or flag exits 2 (usage) and names it', async () => {
    capture();
    expect(await main(['retrian'])).toBe(2);
    expect(written).toContain('unknown command: retrian; did you mean retrain?');
    written = '';
    expect(await main(['models', 'list', '--limt', '5'])).toBe(2);
    expect(written).toContain('unknown option --limt; did you mean --limit?');
    written = '';
    expect(await main(['help', 'nope'])).toBe(2);
    expect(written).toContain('unknown command: nope');
  });
});

describe('the real binary', () => {
  const bin = join(repoRoot, 'bin', 'corella.mjs');
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

  it('prints per-command help and rejects unknown flags with exit 2', () => {
    const up = run('up', '--help');
    expect(up.status).toBe(0);
    expect(flagsInHelp(up.stdout)).toContain('no-run');
    const schedule = run('help', 'schedule');
    expect(schedule.status).toBe(0);
    expect(schedule.stdout).toBe(`${commandHelp(COMMANDS.schedule.spec)}\n`);
    const bad = run('worker', '--queue', 'cpu', '--task-queu', 'q');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unknown option --task-queu; did you mean --task-queue?');
    const global = run('--help');
    expect(global.status).toBe(0);
    expect(global.stdout).toContain('Usage: corella <command>');
  }, 120_000);
});
