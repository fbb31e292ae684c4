import { redactSecrets } from './services/secrets.js';

/** Human-readable by default, JSON for scripts (`--json`). Nothing printed carries a URL's password. */
export interface Output {
  json: boolean;
  result(value: unknown, human: () => string): void;
  info(message: string): void;
  warn(message: string): void;
}

export function makeOutput(json: boolean): Output {
  return {
    json,
    result(value, human) {
      process.stdout.write(redactSecrets(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`));
    },
    info(message) {
      // Progress and notices go to stderr so stdout stays machine-readable with --json.
      process.stderr.write(redactSecrets(`${message}\n`));
    },
    warn(message) {
      process.stderr.write(redactSecrets(`warning: ${message}\n`));
    },
  };
}

/** A fixed-width text table. */
export function table(rows: (string | number | null | undefined)[][], header?: string[]): string {
  const all = header ? [header, ...rows] : rows;
  const cells = all.map((r) =>
    r.map((c) => (c === null || c === undefined ? '' : typeof c === 'number' ? fmt(c) : c)),
  );
  const widths: number[] = [];
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const lines = cells.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.join('\n');
}

export function fmt(n: number): string {
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 1000 ? n.toFixed(0) : n.toFixed(4);
}

/** A one-line progress bar for a TTY; silent elsewhere. */
export function progressLine(label: string, done: number, total: number | undefined): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const frac = total ? Math.min(1, done / total) : 0;
  const bar = total ? '#'.repeat(Math.round(frac * width)).padEnd(width, '.') : '';
  process.stderr.write(`\r${label} ${bar} ${total ? `${(frac * 100).toFixed(0)}%` : done}   `);
}
