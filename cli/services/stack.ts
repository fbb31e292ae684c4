import { join } from 'node:path';
import { resolveDatabase } from './embedded-postgres.js';
import { startTemporalDevServer, type TemporalServer } from './temporal-dev-server.js';
import { NAMESPACE_DEFAULT } from '../../workflows/search-attributes.js';
import { corellaHome } from './paths.js';
import { embeddedPostgresService, temporalDevService } from './health.js';
import type { SupervisedService } from './supervisor.js';

export interface Stack {
  home: string;
  databaseUrl: string;
  databaseEmbedded: boolean;
  temporal: { address: string; namespace: string; uiUrl: string | undefined; embedded: boolean };
  /**
   * The services this stack started, for `up`'s supervisor to probe and restart. A restart may change
   * `databaseUrl` or `temporal.address` (a port taken meanwhile): read them again after one.
   */
  services: SupervisedService[];
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
    let db = await resolveDatabase({ dataDir: join(home, 'pg'), log });
    stops.push(() => db.stop());
    const services: SupervisedService[] = [];

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
      let server: TemporalServer = await startTemporalDevServer({ dir: join(home, 'temporal') });
      stops.push(() => server.stop());
      temporal = {
        address: server.address,
        namespace: server.namespace,
        uiUrl: server.uiUrl,
        embedded: true,
      };
      const t = temporal;
      services.push(
        temporalDevService({
          pid: () => server.pid,
          address: () => t.address,
          namespace: t.namespace,
          // The same ports when they are still free, so workers and clients reconnect to the same address.
          restart: async () => {
            server = await startTemporalDevServer({
              dir: join(home, 'temporal'),
              port: Number(t.address.split(':').pop()),
              uiPort: t.uiUrl ? Number(new URL(t.uiUrl).port) : undefined,
            });
            t.address = server.address;
            t.uiUrl = server.uiUrl;
          },
        }),
      );
    }
    const stack: Stack = {
      home,
      databaseUrl: db.url,
      databaseEmbedded: db.embedded,
      temporal,
      services,
      stop: stopAll,
    };
    if (db.embedded) {
      services.unshift(
        embeddedPostgresService({
          dataDir: join(home, 'pg'),
          url: () => stack.databaseUrl,
          // The data dir remembers its port; a restart reuses it unless another process took it meanwhile.
          restart: async () => {
            db = await resolveDatabase({ dataDir: join(home, 'pg'), log });
            stack.databaseUrl = db.url;
          },
        }),
      );
    }
    return stack;
  } catch (e) {
    await stopAll();
    throw e;
  }
}
