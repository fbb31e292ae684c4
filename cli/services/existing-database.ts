import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CorellaError } from '../../ml/errors.js';

/**
 * Read-only commands (`runs`, `models`, `report`, `gc`) on a home where nothing has run yet: say so rather
 * than initialise an empty Postgres cluster (a few seconds and ~40 MB) only to list nothing from it.
 */
export function requireExistingDatabase(home: string, env: NodeJS.ProcessEnv = process.env): void {
  if (env.DATABASE_URL?.trim()) return;
  if (existsSync(join(home, 'pg', 'PG_VERSION'))) return;
  throw new CorellaError(
    'DATA_NOT_AVAILABLE',
    `no database in ${home} yet: nothing has run on this home. \`corella up\` creates it (or set DATABASE_URL, or CORELLA_HOME to the home you used)`,
    { details: { field: 'CORELLA_HOME', home } },
  );
}
