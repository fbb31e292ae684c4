import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { CorellaError } from '../ml/errors.js';
import { NAMESPACE_DEFAULT } from '../workflows/search-attributes.js';
import { corellaHome } from './services/paths.js';
import { findRunningDevServer } from './services/temporal-dev-server.js';

export interface TemporalClientHandle {
  client: Client;
  namespace: string;
  address: string;
  uiBase: string | undefined;
  close(): Promise<void>;
}

/** TEMPORAL_ADDRESS, else the dev server a running `corella up` started. */
export async function resolveTemporalAddress(
  home = corellaHome(),
): Promise<{ address: string; uiBase?: string }> {
  if (process.env.TEMPORAL_ADDRESS)
    return { address: process.env.TEMPORAL_ADDRESS, uiBase: process.env.TEMPORAL_UI_URL };
  const running = await findRunningDevServer(join(home, 'temporal'));
  if (running) {
    return {
      address: running.address,
      uiBase: running.uiPort ? `http://127.0.0.1:${running.uiPort}` : undefined,
    };
  }
  throw new CorellaError(
    'SERVICE_UNAVAILABLE',
    'no Temporal server: start one with `corella up --keep-alive` (embedded) or set TEMPORAL_ADDRESS',
  );
}

export async function connectClient(target?: {
  address: string;
  namespace?: string;
  uiBase?: string;
}): Promise<TemporalClientHandle> {
  const t = target ?? (await resolveTemporalAddress());
  const namespace = target?.namespace ?? process.env.TEMPORAL_NAMESPACE ?? NAMESPACE_DEFAULT;
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: t.address, connectTimeout: 5_000 });
  } catch (e) {
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `cannot reach Temporal at ${t.address}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  return {
    client: new Client({ connection, namespace }),
    namespace,
    address: t.address,
    uiBase: t.uiBase,
    close: () => connection.close(),
  };
}

export function workflowUiUrl(
  uiBase: string | undefined,
  namespace: string,
  workflowId: string,
): string | undefined {
  if (!uiBase) return undefined;
  const base = uiBase.replace(/\/namespaces\/.*$/, '').replace(/\/$/, '');
  return `${base}/namespaces/${namespace}/workflows/${encodeURIComponent(workflowId)}`;
}
