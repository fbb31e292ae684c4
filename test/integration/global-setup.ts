import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { startTemporalDevServer, type TemporalServer } from '../../cli/services/temporal-dev-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalNamespace: string;
    temporalUiUrl: string;
    databaseUrl: string;
  }
}

/** One real Temporal dev server and one real Postgres for the whole integration project. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'corella-it-'));
  const stops: (() => Promise<void>)[] = [];
  try {
    const temporal: TemporalServer = await startTemporalDevServer({
      dir: join(dir, 'temporal'),
      persistent: false,
      port: 0,
      uiPort: 0,
    });
    stops.push(() => temporal.stop());
    project.provide('temporalAddress', temporal.address);
    project.provide('temporalNamespace', temporal.namespace);
    project.provide('temporalUiUrl', temporal.uiUrl ?? '');

    const { resolveDatabase } = await import('../../cli/services/embedded-postgres.js');
    const pg = await resolveDatabase({ dataDir: join(dir, 'pg') });
    stops.push(() => pg.stop());
    project.provide('databaseUrl', pg.url);
  } catch (e) {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    throw e;
  }
  return async () => {
    for (const stop of stops.reverse()) await stop().catch((e: unknown) => console.error('teardown:', e));
    await rm(dir, { recursive: true, force: true });
  };
}
