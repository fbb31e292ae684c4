import { join } from 'node:path';
import type { ActivityContext } from '../../activities/context.js';
import type { Database } from '../../db/connection.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';

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
