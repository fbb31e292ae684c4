import { openDatabase, type DatabaseHandle } from '../db/connection.js';
import { migrateDatabase } from '../db/migrate.js';
import { openArtifactStore } from '../ml/artifacts/open-store.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';

/** What activities need: the database, the artifact store and the home folder for caches. */
export interface ActivityContext {
  db: DatabaseHandle['db'];
  store: ArtifactStore;
  home: string;
  close(): Promise<void>;
}

export async function createActivityContext(opts: {
  databaseUrl: string;
  home: string;
  store?: ArtifactStore;
}): Promise<ActivityContext> {
  const handle = openDatabase(opts.databaseUrl);
  return {
    db: handle.db,
    // CORELLA_ARTIFACTS picks the store (S3 for workers on different machines); unset, the home's folder.
    store: opts.store ?? openArtifactStore(opts.home),
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
