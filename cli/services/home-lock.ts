import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CorellaError } from '../../ml/errors.js';
import { ensurePrivateHome } from './paths.js';
import { isAlive } from './process-file.js';

/**
 * One `corella up` per home: two would adopt each other's Postgres and Temporal and stop them under each
 * other. A stale lock (its process is gone, e.g. SIGKILLed) is taken over.
 */
export async function lockHome(home: string): Promise<() => Promise<void>> {
  await ensurePrivateHome(home);
  const path = join(home, 'up.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new CorellaError(
          'SERVICE_UNAVAILABLE',
          `another corella up (pid ${pid}) is running on ${home}; stop it first, or use another CORELLA_HOME`,
        );
      }
      await rm(path, { force: true });
    }
  }
  throw new CorellaError('SERVICE_UNAVAILABLE', `could not take the lock ${path}`);
}
