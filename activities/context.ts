import { join } from 'node:path';
import { openDatabase, type DatabaseHandle } from '../db/connection.js';
import { migrateDatabase } from '../db/migrate.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';

/** What activities need: the database, the artifact store and the home folder for caches. */
export interface ActivityContext {
  db: DatabaseHandle['db'];
  store: FileArtifactStore;
  home: string;
  close(): Promise<void>;
}

export async function createActivityContext(opts: {
  databaseUrl: string;
  home: string;
  store?: FileArtifactStore;
}): Promise<ActivityContext> {
  const handle = openDatabase(opts.databaseUrl);
  return {
    db: handle.db,
    store: opts.store ?? new FileArtifactStore(join(opts.home, 'artifacts')),
    home: opts.home,
    close: () => handle.close(),
  };
}

/** Applies the committed migrations (idempotent). */
export async function migrateUrl(url: string): Promise<void> {
  const handle = openDatabase(url);
  try {
    await migrateDatabase(handle.db);
  } finally {
    await handle.close();
  }
}
