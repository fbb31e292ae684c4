import { CorellaError } from '../ml/errors.js';
import { connectionFailure } from './retry.js';

/** A row the caller named does not exist (e.g. `corella models promote 999`). */
export class NotFoundError extends CorellaError {
  readonly entity: string;
  readonly key: string;

  constructor(entity: string, key: string | number) {
    super('BAD_CONFIG', `${entity} ${JSON.stringify(String(key))} not found`, {
      details: { entity, key: String(key) },
    });
    this.name = 'NotFoundError';
    this.entity = entity;
    this.key = String(key);
  }
}

/** Bad input to a repository: names the field; nothing was written. */
export function badInput(field: string, message: string, value?: unknown): CorellaError {
  const shown = value === undefined ? '' : ` (got ${JSON.stringify(value)?.slice(0, 80)})`;
  return new CorellaError('BAD_CONFIG', `${field}: ${message}${shown}`, { details: { field } });
}

/** Longest driver message kept: the reason, not the statement or its values. */
const MAX_DRIVER_MESSAGE = 300;

function clip(text: string, max = MAX_DRIVER_MESSAGE): string {
  const line = text.split('\n')[0];
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/** "ECONNREFUSED 127.0.0.1:5432", "57P01", "connection terminated": what went wrong with the connection. */
function connectionReason(e: unknown): string | undefined {
  const f = connectionFailure(e);
  if (!f) return undefined;
  const where = f.error as { address?: unknown; port?: unknown; errors?: unknown };
  // Node's happy-eyeballs connect throws an AggregateError whose members carry the address.
  const first = Array.isArray(where.errors) ? (where.errors[0] as typeof where) : where;
  const address =
    typeof first?.address === 'string'
      ? `${first.address}${first.port !== undefined ? `:${String(first.port)}` : ''}`
      : '';
  if (f.code && /^[0-9A-Z]{5}$/.test(f.code) && !f.code.startsWith('E'))
    return `${f.code} ${clip(f.message, 120)}`;
  if (f.code) return `${f.code}${address ? ` ${address}` : ''}`;
  return clip(f.message, 120).replace(/^Connection terminated.*$/i, 'connection terminated');
}

/** Postgres could not be reached. Retryable: the same call works once the server is back. */
export class DbUnavailableError extends CorellaError {
  constructor(cause: unknown) {
    super('DB_UNAVAILABLE', `DB_UNAVAILABLE: ${connectionReason(cause) ?? 'database unreachable'}`, {
      retryable: true,
    });
    this.name = 'DbUnavailableError';
  }
}

/** The driver's error (a pg DatabaseError) in `e`'s cause chain: drizzle wraps it in "Failed query: …". */
function driverError(
  e: unknown,
): { code: string; message: string; constraint?: string; table?: string; column?: string } | undefined {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 8; cur = cur.cause, depth++) {
    const d = cur as Error & {
      code?: unknown;
      severity?: unknown;
      constraint?: string;
      table?: string;
      column?: string;
    };
    if (typeof d.code === 'string' && /^[0-9A-Z]{5}$/.test(d.code) && typeof d.severity === 'string')
      return { code: d.code, message: d.message, constraint: d.constraint, table: d.table, column: d.column };
  }
  return undefined;
}

/**
 * A database error as a short typed error: DB_UNAVAILABLE with the connection's reason, or DB_ERROR with the
 * SQL state, constraint and table. Never the statement and its parameters (a failed INSERT of a batch
 * quoted kilobytes of values, and Temporal refused the failure as too large). Undefined for other errors.
 */
export function boundDbError(e: unknown): CorellaError | undefined {
  if (e instanceof CorellaError) return undefined;
  if (connectionFailure(e)) return new DbUnavailableError(e);
  const d = driverError(e);
  if (!d) return undefined;
  const on = [
    d.constraint ? `constraint ${d.constraint}` : '',
    d.table ? `table ${d.table}` : '',
    d.column ? `column ${d.column}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  // 40001/40P01 (serialization failure, deadlock) succeed when run again; the rest would fail the same way.
  const retryable = d.code === '40001' || d.code === '40P01';
  return new CorellaError(
    'DB_ERROR',
    `DB_ERROR: SQLSTATE ${d.code}${on ? ` (${on})` : ''}: ${clip(d.message)}`,
    {
      retryable,
      details: { sqlState: d.code, constraint: d.constraint, table: d.table, column: d.column },
    },
  );
}
