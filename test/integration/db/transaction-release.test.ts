import net from 'node:net';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../../db/connection.js';
import type { TestDatabase } from '../../../db/testing.js';
import { openTestDatabase } from './support.js';

/**
 * A TCP hop between the pool and Postgres that can turn into what a dead connection looks like to a pooled
 * client: once `broken`, any byte a client sends closes its connection (a restarted server, a pooler or a
 * NAT that dropped it while idle).
 */
function flakyProxy(target: { host: string; port: number }) {
  let broken = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => (broken ? end() : upstream.write(d)));
    upstream.on('data', (d) => client.write(d));
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  return {
    server,
    listen: () =>
      new Promise<number>((r) =>
        server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)),
      ),
    setBroken: (b: boolean) => (broken = b),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what} hung for ${ms} ms`)), ms)),
  ]);
}

let t: TestDatabase;
beforeAll(async () => {
  t = await openTestDatabase();
});
afterAll(async () => {
  await t?.close();
});

describe('transactions on a pool whose connections die while idle', () => {
  it('a failed BEGIN gives its client back: the pool serves again once the connection works', async () => {
    const url = new URL(t.url);
    const proxy = flakyProxy({ host: url.hostname, port: Number(url.port) });
    url.port = String(await proxy.listen());
    const handle = openDatabase(url.toString(), {
      max: 2,
      connectionTimeoutMillis: 3_000,
      onIdleError: () => undefined,
    });
    try {
      // Two idle pooled connections.
      await Promise.all(
        [0, 1].map(() => handle.db.transaction((tx) => tx.execute(sql`SELECT pg_sleep(0.05)`))),
      );
      expect(handle.pool.idleCount).toBe(2);
      proxy.setBroken(true);
      // Each takes a dead connection from the pool (or cannot connect): BEGIN or connect fails.
      for (let i = 0; i < 3; i++) {
        await expect(handle.db.transaction((tx) => tx.execute(sql`SELECT 1`))).rejects.toThrow();
      }
      proxy.setBroken(false);
      // Without releasing those clients the pool would be full of dead ones and this would time out.
      const r = await handle.db.transaction((tx) => tx.execute<{ one: number }>(sql`SELECT 1 AS one`));
      expect(r.rows[0].one).toBe(1);
      expect(handle.pool.totalCount).toBeLessThanOrEqual(2);
    } finally {
      await within(10_000, handle.close(), 'pool.end()');
      await proxy.close();
    }
  });
});
