import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EXIT } from '../../cli/args.js';
import { createTestDatabase, type TestDatabase } from '../../db/testing.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { cliEnv, startCli } from '../helpers/cli-process.js';

interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  ok: boolean;
  detail: string;
  data?: Record<string, unknown>;
}

let testDb: TestDatabase;
let home: string;

beforeAll(async () => {
  testDb = await createTestDatabase(inject('databaseUrl'));
  home = await mkdtemp(join(tmpdir(), 'corella-doctor-'));
});

afterAll(async () => {
  await testDb?.close();
  await rm(home, { recursive: true, force: true });
});

/** A port nothing listens on: bound once to get a free number, then closed. */
function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function doctor(
  env: Record<string, string>,
): Promise<{ code: number | null; checks: Map<string, Check> }> {
  const cli = startCli(['doctor', '--json'], cliEnv(home, env));
  const { code } = await cli.exited();
  let checks: Check[];
  try {
    checks = JSON.parse(cli.stdout()) as Check[];
  } catch {
    throw new Error(`doctor printed no JSON (exit ${code}):\n${cli.stdout()}\n${cli.stderr()}`);
  }
  return { code, checks: new Map(checks.map((c) => [c.name, c])) };
}

describe('corella doctor', () => {
  it('connects to live Postgres and Temporal and reports the LLM and CRM devices', async () => {
    const { code, checks } = await doctor({
      DATABASE_URL: testDb.url,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    });
    expect(checks.get('postgres')).toMatchObject({ status: 'ok' });
    expect(checks.get('postgres')?.detail).toMatch(/DATABASE_URL reachable: PostgreSQL \d+/);
    expect(checks.get('temporal')?.detail).toBe(
      `reachable at ${inject('temporalAddress')}, namespace ${inject('temporalNamespace')}`,
    );
    // What llama.cpp sees: a GPU type (false on a CPU host), device names and the platform's GPU builds.
    const llama = checks.get('llama.cpp');
    expect(llama?.status).toBe('ok');
    expect(llama?.data).toHaveProperty('gpu');
    expect(Array.isArray(llama?.data?.devices)).toBe(true);
    expect(llama?.data?.cpuMathCores).toBeGreaterThan(0);
    if (llama?.data?.gpu === false) expect(llama.detail).toMatch(/^no GPU: the LLM runs on the CPU/);
    else expect(llama?.detail).toMatch(/VRAM .* GiB total/);
    expect(checks.get('tfjs backend')?.status).toBe('ok');
    const native = checks.get('tfjs native');
    expect(native).toBeDefined();
    // Either in use, or not usable with a reason per native backend.
    if (native?.status === 'warn') {
      expect(native.detail).toMatch(/tensorflow-gpu: .+; tensorflow: .+/);
    } else {
      expect(native?.detail).toMatch(/^in use: tensorflow/);
    }
    expect(code).toBe(EXIT.ok);
  });

  it('reports a dead DATABASE_URL and TEMPORAL_ADDRESS as unreachable and exits non-zero', async () => {
    const [pgPort, temporalPort] = [await deadPort(), await deadPort()];
    const { code, checks } = await doctor({
      DATABASE_URL: `postgres://corella:s3cret@127.0.0.1:${pgPort}/corella`,
      TEMPORAL_ADDRESS: `127.0.0.1:${temporalPort}`,
    });
    const postgres = checks.get('postgres');
    expect(postgres?.status).toBe('fail');
    expect(postgres?.detail).toContain('unreachable');
    expect(postgres?.detail).not.toContain('s3cret');
    expect(checks.get('temporal')?.status).toBe('fail');
    expect(checks.get('temporal')?.detail).toContain(`127.0.0.1:${temporalPort} unreachable`);
    expect(code).toBe(EXIT.unavailable);
  });

  it('reports an embedded server whose postmaster died as unreachable', async () => {
    // The files a started embedded server leaves in CORELLA_HOME/pg, for a server that is gone.
    const dataDir = join(home, 'pg');
    await mkdir(dataDir, { recursive: true });
    const port = await deadPort();
    await writeFile(
      join(dataDir, 'corella-embedded.json'),
      JSON.stringify({ superuser: 'postgres', password: 'x', port }),
    );
    await writeFile(
      join(dataDir, 'postmaster.pid'),
      ['999999', dataDir, '0', String(port), '', '127.0.0.1', '0', 'ready', ''].join('\n'),
    );
    const { code, checks } = await doctor({ TEMPORAL_ADDRESS: inject('temporalAddress') });
    expect(checks.get('postgres')?.status).toBe('fail');
    expect(checks.get('postgres')?.detail).toContain(`embedded server in ${dataDir} unreachable`);
    expect(code).toBe(EXIT.unavailable);
  });

  it('names the model corella up would take, and warns with the fix when it is 4-bit', async () => {
    const modelHome = await mkdtemp(join(tmpdir(), 'corella-doctor-model-'));
    try {
      const run = async (env: Record<string, string>) => {
        const cli = startCli(
          ['doctor', '--json'],
          cliEnv(modelHome, { TEMPORAL_ADDRESS: inject('temporalAddress'), ...env }),
        );
        await cli.exited();
        return (JSON.parse(cli.stdout()) as Check[]).find((c) => c.name === 'llm model');
      };
      expect((await run({}))?.detail).toMatch(/^none cached/);
      await mkdir(join(modelHome, 'models'));
      const q4 = join(modelHome, 'models', 'tiny.Q4_1.gguf');
      writeTinyGguf(q4, { seed: 5, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true });
      const slow = await run({});
      expect(slow?.status).toBe('warn');
      expect(slow?.detail).toContain(`cached: ${q4} holds Q4_1 matrices`);
      expect(slow?.detail).toContain(`corella llm requantize ${q4}`);
      const q8 = join(modelHome, 'tiny.Q8_0.gguf');
      writeTinyGguf(q8, { seed: 5, matrixType: 'Q8_0', embeddingType: 'Q8_0', tiedOutput: true });
      const fast = await run({ CORELLA_LLM_MODEL: q8 });
      expect(fast?.status).toBe('ok');
      expect(fast?.detail).toMatch(new RegExp(`^CORELLA_LLM_MODEL=${q8} \\(\\d+ Q8_0, \\d+ F32\\)$`));
      await writeFile(join(modelHome, 'broken.gguf'), 'not a model');
      const broken = await run({ CORELLA_LLM_MODEL: join(modelHome, 'broken.gguf') });
      expect(broken?.status).toBe('fail');
      expect(broken?.detail).toContain('could not be parsed');
    } finally {
      await rm(modelHome, { recursive: true, force: true });
    }
  });
});
