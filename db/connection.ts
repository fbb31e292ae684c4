import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { isConnectionError } from './retry.js';
import * as schema from './schema/index.js';

export type Schema = typeof schema;
export type Database = NodePgDatabase<Schema> & { $client: pg.Pool };
/** A transaction handle; repositories accept either this or a Database for composition. */
export type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0];
export type Executor = Database | Transaction;

export interface DatabaseHandle {
  db: Database;
  pool: pg.Pool;
  /** Ends the pool; idempotent. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** Pool size; default 10. */
  max?: number;
  /** Connect timeout; default 10 s, so a dead server fails fast instead of hanging. */
  connectionTimeoutMillis?: number;
  /** Idle clients are closed after this; default 30 s. */
  idleTimeoutMillis?: number;
  /** Per-statement server-side timeout; default none. */
  statementTimeoutMillis?: number;
  applicationName?: string;
  /**
   * Errors of idle pooled clients (e.g. the server restarted). Without a listener pg would throw them as
   * uncaught exceptions and crash the process; the broken client is discarded either way.
   */
  onIdleError?: (error: Error) => void;
}

/** One pool per call: no module-global connection, so tests and workers can hold several databases. */
export function openDatabase(url: string, options: OpenDatabaseOptions = {}): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 10_000,
    idleTimeoutMillis: options.idleTimeoutMillis ?? 30_000,
    statement_timeout: options.statementTimeoutMillis,
    application_name: options.applicationName ?? 'corella',
    keepAlive: true,
    // A CLI command must be able to exit once its work is done even if close() was forgotten.
    allowExitOnIdle: true,
  });
  const onIdleError =
    options.onIdleError ?? ((e: Error) => console.warn(`corella db: idle connection dropped: ${e.message}`));
  pool.on('error', onIdleError);
  // A checked-out client (e.g. inside a transaction, between statements) has no pool listener: without one
  // of its own, the server going away emits an unhandled 'error' that kills the process. Its queries fail
  // anyway, which is where callers handle the outage.
  pool.on('connect', (client) => client.on('error', onIdleError));
  const db = drizzle(pool, { schema }) as Database;
  // drizzle-orm 0.45's pooled transaction() sends BEGIN before its try/finally: a BEGIN that fails (a pooled
  // connection that died while idle, Postgres restarting) never releases its client, and a few such failures
  // exhaust the pool for the life of the process (drizzle-team/drizzle-orm#6241, open). So every transaction
  // runs on a client checked out and always released here, and destroyed when its connection failed.
  db.transaction = async (fn, config) => {
    const client = await pool.connect();
    let failure: unknown;
    try {
      return await drizzle(client, { schema }).transaction(fn, config);
    } catch (e) {
      failure = e;
      throw e;
    } finally {
      client.release(failure !== undefined && isConnectionError(failure));
    }
  };
  let closed: Promise<void> | undefined;
  return {
    db,
    pool,
    close: () => (closed ??= pool.end()),
  };
}
