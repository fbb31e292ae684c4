import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pg from 'pg';
import { EXIT, parse } from '../args.js';
import { resolveTemporalAddress } from '../client.js';
import { makeOutput, table } from '../output.js';
import { corellaHome } from '../services/paths.js';
import { findTemporalCli } from '../services/temporal-cli.js';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

async function check(name: string, fn: () => Promise<string>): Promise<Check> {
  try {
    return { name, ok: true, detail: await fn() };
  } catch (e) {
    return { name, ok: false, detail: (e as Error).message };
  }
}

/** `corella doctor`: what is configured, what is reachable, which backends load. */
export async function doctor(argv: string[]): Promise<number> {
  const { values } = parse(argv, {});
  const out = makeOutput(Boolean(values.json));
  const home = corellaHome();
  const checks: Check[] = [];
  checks.push({ name: 'home', ok: true, detail: home });
  checks.push(
    await check('postgres', async () => {
      const url = process.env.DATABASE_URL;
      if (!url) {
        const { resolvePostgresBinaries } = await import('../../db/embedded-postgres.js');
        const bins = await resolvePostgresBinaries();
        return `embedded (binaries ${bins.postgres}), data ${join(home, 'pg')}`;
      }
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
      await client.connect();
      const r = await client.query<{ v: string }>('select version() as v');
      await client.end();
      return `DATABASE_URL reachable: ${r.rows[0].v.split(' ').slice(0, 2).join(' ')}`;
    }),
  );
  checks.push(
    await check('temporal', async () => {
      let addr: string;
      try {
        addr = (await resolveTemporalAddress(home)).address;
      } catch {
        return `no server running; dev server binary: ${await findTemporalCli({ install: false })}`;
      }
      const c = await Connection.connect({ address: addr, connectTimeout: 3_000 });
      await c.close();
      return `reachable at ${addr}`;
    }),
  );
  checks.push(
    await check('tfjs backend', async () => {
      const { initTf } = await import('../../ml/tf/backend.js');
      const r = await initTf();
      return `${r.backend}`;
    }),
  );
  checks.push(
    await check('node-llama-cpp', async () => {
      const { getLlama } = await import('node-llama-cpp');
      const llama = await getLlama({ build: 'never', gpu: false });
      const info = `loaded (gpu: ${String(llama.gpu)})`;
      await llama.dispose();
      return info;
    }),
  );
  checks.push(
    await check('llm model', async () => {
      const m = process.env.CORELLA_LLM_MODEL;
      if (m) {
        if (!m.startsWith('hf:')) await access(m, constants.R_OK);
        return m;
      }
      return 'not set: `corella up` uses a cached model or scripts/fetch-model';
    }),
  );
  checks.push({
    name: 'data dir',
    ok: true,
    detail: process.env.CORELLA_DATA_DIR ?? 'not set (synthetic dataset is the fallback)',
  });
  out.result(checks, () =>
    table(
      checks.map((c) => [c.ok ? 'ok' : 'FAIL', c.name, c.detail]),
      ['', 'check', 'detail'],
    ),
  );
  return checks.every((c) => c.ok) ? EXIT.ok : EXIT.unavailable;
}
