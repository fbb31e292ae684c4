import { join } from 'node:path';
import { resolveDatabase } from './embedded-postgres.js';
import { startTemporalDevServer, type TemporalServer } from './temporal-dev-server.js';
import { NAMESPACE_DEFAULT } from '../../workflows/search-attributes.js';
import { corellaHome } from './paths.js';

export interface Stack {
  home: string;
  databaseUrl: string;
  databaseEmbedded: boolean;
  temporal: { address: string; namespace: string; uiUrl: string | undefined; embedded: boolean };
  stop(): Promise<void>;
}

/**
 * Postgres (DATABASE_URL or the embedded server under .corella/pg) and Temporal (TEMPORAL_ADDRESS or a dev
 * server under .corella/temporal). Stops, in reverse order, only what it started.
 */
export async function startStack(
  opts: { home?: string; log?: (line: string) => void; temporal?: boolean } = {},
): Promise<Stack> {
  const home = opts.home ?? corellaHome();
  const log = opts.log ?? (() => undefined);
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.splice(0).reverse())
      await stop().catch((e: unknown) => log(`shutdown: ${String(e)}`));
  };
  try {
    log(
      process.env.DATABASE_URL ? 'Postgres: DATABASE_URL' : `Postgres: embedded, data in ${join(home, 'pg')}`,
    );
    const db = await resolveDatabase({ dataDir: join(home, 'pg'), log });
    stops.push(() => db.stop());

    let temporal: Stack['temporal'];
    if (process.env.TEMPORAL_ADDRESS) {
      temporal = {
        address: process.env.TEMPORAL_ADDRESS,
        namespace: process.env.TEMPORAL_NAMESPACE ?? NAMESPACE_DEFAULT,
        uiUrl: process.env.TEMPORAL_UI_URL,
        embedded: false,
      };
      log(`Temporal: ${temporal.address} (TEMPORAL_ADDRESS)`);
    } else if (opts.temporal === false) {
      temporal = { address: '', namespace: NAMESPACE_DEFAULT, uiUrl: undefined, embedded: false };
    } else {
      log(`Temporal: dev server, state in ${join(home, 'temporal')}`);
      const server: TemporalServer = await startTemporalDevServer({ dir: join(home, 'temporal') });
      stops.push(() => server.stop());
      temporal = {
        address: server.address,
        namespace: server.namespace,
        uiUrl: server.uiUrl,
        embedded: true,
      };
    }
    return { home, databaseUrl: db.url, databaseEmbedded: db.embedded, temporal, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
