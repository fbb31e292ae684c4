import { join } from 'node:path';
import { openDatabase } from '../db/connection.js';
import { migrateDatabase } from '../db/migrate.js';
import { resolveDatabase } from './services/embedded-postgres.js';
import { corellaHome } from './services/paths.js';
import { requireExistingDatabase } from './services/existing-database.js';

/** Opens the configured database for a short CLI command; stops an embedded server only if it started it. */
export async function withDatabase<T>(
  fn: (db: ReturnType<typeof openDatabase>['db']) => Promise<T>,
): Promise<T> {
  requireExistingDatabase(corellaHome());
  const resolved = await resolveDatabase({ dataDir: join(corellaHome(), 'pg') });
  const handle = openDatabase(resolved.url);
  try {
    // Migrations are applied at every start: a command may be the first thing run against a new database.
    await migrateDatabase(handle.db);
    return await fn(handle.db);
  } finally {
    await handle.close();
    await resolved.stop();
  }
}
