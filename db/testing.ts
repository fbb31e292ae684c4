/**
 * Test support: one Postgres server for a whole test run, one fresh migrated database per test file, so
 * files running in parallel never see each other's rows.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Database } from './connection.js';
import { openMigratedDatabase } from './migrate.js';

export interface TestDatabase {
  url: string;
  db: Database;
  pool: pg.Pool;
  /** Closes the pool and drops the database. */
  close(): Promise<void>;
}

async function withAdmin<T>(baseUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Create `corella_test_<random>` on the server of `baseUrl` and apply all migrations to it. */
export async function createTestDatabase(baseUrl: string, prefix = 'corella_test'): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await withAdmin(baseUrl, (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  const handle = await openMigratedDatabase(url.toString(), { onIdleError: () => {} });
  let closed: Promise<void> | undefined;
  return {
    url: url.toString(),
    db: handle.db,
    pool: handle.pool,
    close: () =>
      (closed ??= (async () => {
        await handle.close();
        await withAdmin(baseUrl, (c) =>
          c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
        );
      })()),
  };
}
