import { join } from 'node:path';
import { CorellaError } from '../../ml/errors.js';
import { acquireFileLock } from './file-lock.js';
import { ensurePrivateHome } from './paths.js';

/**
 * One `corella up` per home: two would adopt each other's Postgres and Temporal and stop them under each
 * other. A stale lock (its process is gone, e.g. SIGKILLed) is taken over.
 */
export async function lockHome(home: string): Promise<() => Promise<void>> {
  await ensurePrivateHome(home);
  return acquireFileLock(join(home, 'up.lock'), {
    waitMs: 0,
    busy: (holder) =>
      new CorellaError(
        'SERVICE_UNAVAILABLE',
        `another corella up (pid ${holder.pid}) is running on ${home}; stop it first, or use another CORELLA_HOME`,
      ),
  });
}
