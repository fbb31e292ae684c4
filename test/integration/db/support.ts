import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { startEmbeddedPostgres } from '../../../cli/services/embedded-postgres.js';
import { createTestDatabase, type TestDatabase } from '../../../db/testing.js';

/** A temp dir that a dropped-privilege postgres can traverse (mkdtemp makes 0700 dirs). */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

/**
 * A fresh migrated database on the integration project's shared server (global setup), or, when this file
 * runs without it, on a private embedded server in a temp dir.
 */
export async function openTestDatabase(): Promise<TestDatabase> {
  let provided: string | undefined;
  try {
    provided = inject('databaseUrl');
  } catch {
    provided = undefined;
  }
  const base = provided ?? process.env.CORELLA_TEST_DATABASE_URL;
  if (base) return createTestDatabase(base);
  const dir = await makeTempDir('corella-db-test-');
  const server = await startEmbeddedPostgres({ dataDir: join(dir, 'pg'), port: 0 });
  const test = await createTestDatabase(server.url);
  return {
    ...test,
    close: async () => {
      await test.close();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
