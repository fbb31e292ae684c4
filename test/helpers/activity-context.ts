import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, inject } from 'vitest';
import type { ActivityContext } from '../../activities/context.js';
import type { Database } from '../../db/connection.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { installWorkerRuntime } from '../../workers/runtime.js';

/** What activities need in a test: the test's database and a file store in its temporary home. */
export function fileActivityContext(
  db: Database,
  dir: string,
): ActivityContext & { store: FileArtifactStore } {
  return {
    db,
    store: new FileArtifactStore(join(dir, 'artifacts')),
    home: dir,
    close: async () => undefined,
  };
}

/** What one integration test file shares: its own database, a temporary home and the activity context. */
export interface E2eHome {
  testDb: TestDatabase;
  dir: string;
  ctx: ActivityContext & { store: FileArtifactStore };
}

/**
 * Registers the file's beforeAll/afterAll for an E2eHome: the worker runtime, a fresh database from the
 * global setup's server and a temporary home (prefix names it), removed afterwards. The fields are filled in
 * by beforeAll, so read them inside hooks and tests, not at collection time.
 */
export function useE2eHome(prefix: string): E2eHome {
  const home = {} as E2eHome;
  beforeAll(async () => {
    installWorkerRuntime();
    home.testDb = await createTestDatabase(inject('databaseUrl'));
    home.dir = await mkdtemp(join(tmpdir(), prefix));
    home.ctx = fileActivityContext(home.testDb.db, home.dir);
  });
  afterAll(async () => {
    await home.testDb?.close();
    if (home.dir) await rm(home.dir, { recursive: true, force: true });
  });
  return home;
}
