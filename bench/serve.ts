/**
 * Serving benchmark: a real `corella serve` process over a trained model version, driven by autocannon at
 * fixed request rates, printing one JSON object. Scenarios:
 *  - CRM-only (threshold +∞), slates of 1 and 50, at --rate requests/s (target: 50-candidate p99 ≤ 10 ms);
 *  - hybrid at the calibrated threshold, slates of 1 and 50: LLM tokens evaluated per routed candidate
 *    against its full prompt (target ≤ 0.3 with prefix sharing);
 *  - the LLM offered 2× its measured capacity with a budget: fallbacks bounded, p99 ≤ budgetMs + 50 ms;
 *  - "LLM for every candidate" (threshold −∞, an LLM-only recommender) against the hybrid: throughput and
 *    server CPU seconds per 1,000 candidates — the cost ratio CoReLLa promises.
 *
 * Usage: npx tsx bench/serve.ts --home DIR [--model champion] [--rate 200] [--seconds 10] [--budget-ms 1000] [--connections 10] [--crm-only]
 *   DIR is a CORELLA_HOME holding a trained version, e.g. from
 *   `CORELLA_HOME=DIR npx corella up --data-dir ../shared/datasets/ml-1m-u2999 --config ml-1m-cpu`.
 * Machine: 2 cores shared by the server and the load generator; compare figures from the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import { resolveServingBundle } from '../activities/serving-bundle.js';
import { datasetForVersion } from '../activities/datasets.js';
import { openDatabase } from '../db/connection.js';
import { resolveDatabase } from '../cli/services/embedded-postgres.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { mulberry32 } from '../ml/random.js';
import type { EngineStats } from '../ml/serving/engine.js';
import type { ScoreRequest } from '../ml/serving/types.js';

function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const home = resolve(arg('home') ?? '.corella');
const modelRef = arg('model', 'champion')!;
const rate = Number(arg('rate', '200'));
const seconds = Number(arg('seconds', '10'));
// A 50-candidate slate's routed share takes ~1-2 s of SmolLM2 on a busy 2-core CPU: a budget well below
// that answers nothing and measures only the fallback path.
const budgetMs = Number(arg('budget-ms', '1000'));
// Connections of the fixed-rate scenarios: autocannon paces each one separately, so N connections send in
// bursts of up to N requests at once; fewer connections at the same rate arrive more evenly.
const connections = Number(arg('connections', '10'));
// --crm-only: just the CRM scenarios (a minute; for re-measuring latency when the machine is quiet).
const crmOnly = process.argv.includes('--crm-only');
const repo = resolve(import.meta.dirname, '..');
const round = (x: number, d = 3) => (Number.isFinite(x) ? Number(x.toFixed(d)) : x);

interface Server {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startServe(args: string[], env: NodeJS.ProcessEnv): Promise<Server> {
  const child = spawn(process.execPath, [join(repo, 'bin', 'corella.mjs'), 'serve', '--port', '0', ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.resume();
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const m = /corella-ready (\{.*\})/.exec(err);
    if (m) {
      const url = (JSON.parse(m[1]) as { url: string }).url;
      // Ready means listening; the model may still be loading.
      while (Date.now() < deadline) {
        const r = await fetch(`${url}/readyz`).catch(() => undefined);
        if (r?.status === 200) break;
        await new Promise((res) => setTimeout(res, 250));
      }
      return {
        url,
        child,
        stop: async () => {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
          await exited;
          clearTimeout(t);
        },
      };
    }
    if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}:\n${err}`);
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`serve not ready:\n${err}`);
}

/** User + system CPU seconds of a process so far (Linux /proc, clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Scenario {
  name: string;
  bodies: string[];
  rate?: number;
  connections?: number;
  seconds?: number;
  /** autocannon's per-request timeout in seconds (an LLM-only slate takes seconds on a CPU). */
  timeout?: number;
}

type Tally = Omit<EngineStats, 'requests'> & { non200: number };

async function drive(server: Server, s: Scenario) {
  const tally: Tally = {
    candidates: 0,
    routed: 0,
    answered: 0,
    fallbacks: 0,
    promptTokens: 0,
    evaluatedTokens: 0,
    non200: 0,
  };
  let i = 0;
  const cpu0 = await cpuSeconds(server.child.pid!);
  const t0 = performance.now();
  const result = await autocannon({
    url: `${server.url}/v1/score`,
    connections: s.connections ?? connections,
    duration: s.seconds ?? seconds,
    timeout: s.timeout ?? 10,
    ...(s.rate ? { overallRate: s.rate } : {}),
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req: autocannon.Request) => ({ ...req, body: s.bodies[i++ % s.bodies.length] }),
        onResponse: (status: number, body: string) => {
          if (status !== 200) {
            tally.non200++;
            return;
          }
          const r = JSON.parse(body) as {
            candidates: unknown[];
            llm: {
              routed: number;
              answered: number;
              fallbacks: number;
              promptTokens: number;
              evaluatedTokens: number;
            };
          };
          tally.candidates += r.candidates.length;
          tally.routed += r.llm.routed;
          tally.answered += r.llm.answered;
          tally.fallbacks += r.llm.fallbacks;
          tally.promptTokens += r.llm.promptTokens;
          tally.evaluatedTokens += r.llm.evaluatedTokens;
        },
      },
    ],
  });
  const wall = (performance.now() - t0) / 1000;
  const cpu = (await cpuSeconds(server.child.pid!)) - cpu0;
  return {
    scenario: s.name,
    offeredRate: s.rate ?? null,
    requestsPerSec: round(result.requests.average, 1),
    latencyMs: {
      p50: result.latency.p50,
      p90: result.latency.p90,
      p99: result.latency.p99,
      max: result.latency.max,
    },
    errors: result.errors + result.timeouts,
    non200: tally.non200,
    candidates: tally.candidates,
    candidatesPerSec: round(tally.candidates / wall, 1),
    routedFraction: round(tally.routed / Math.max(1, tally.candidates), 4),
    fallbackFraction: round(tally.fallbacks / Math.max(1, tally.routed), 4),
    answered: tally.answered,
    evaluatedPerPromptToken: round(tally.evaluatedTokens / Math.max(1, tally.promptTokens), 4),
    evaluatedTokensPerAnswered: round(tally.evaluatedTokens / Math.max(1, tally.answered), 1),
    serverCpuSeconds: round(cpu, 2),
    cpuSecondsPer1000Candidates: round((cpu / Math.max(1, tally.candidates)) * 1000, 3),
  };
}

let partial: Record<string, unknown> = {};

async function main() {
  const db = await resolveDatabase({ dataDir: join(home, 'pg') });
  const env = { ...process.env, CORELLA_HOME: home, DATABASE_URL: db.url };
  const handle = openDatabase(db.url);
  const store = new FileArtifactStore(join(home, 'artifacts'));
  const { bundle, version } = await resolveServingBundle(handle.db, home, modelRef);
  await handle.close();
  const ds = await datasetForVersion(store, bundle.datasetVersionId);
  const vocabUsers = ds.featureMap.vocabularies.user_id.slice(1);
  const vocabItems = ds.featureMap.vocabularies.item_id.slice(1);
  const rnd = mulberry32(7);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  // `perUser` consecutive requests of one user: a browsing session (page after page of candidates), where
  // the per-user sequence LRU keeps the history prefix cached; 1 = every request from a new random user.
  const bodies = (slate: number, n = 400, perUser = 1): string[] => {
    let user = pick(vocabUsers);
    return Array.from({ length: n }, (_, k) => {
      if (k % perUser === 0) user = pick(vocabUsers);
      const req: ScoreRequest = {
        user: { id: user },
        candidates: Array.from({ length: slate }, () => ({ item: pick(vocabItems) })),
      };
      return JSON.stringify(req);
    });
  };
  const withBudget = (bs: string[], ms: number) =>
    bs.map((b) => JSON.stringify({ ...(JSON.parse(b) as object), budgetMs: ms }));
  const out: Record<string, unknown> = (partial = {
    bench: 'serve',
    modelVersion: version.id,
    threshold: bundle.threshold,
    dataset: bundle.datasetVersionId.slice(0, 12),
    // Other work on the machine moves every figure: the load average says how busy it was.
    machine: { cores: os.cpus().length, loadAverageAtStart: os.loadavg().map((x) => round(x, 2)) },
    scenarios: [] as unknown[],
  });
  const scenarios = out.scenarios as unknown[];

  // CRM only.
  let server = await startServe(['--model', modelRef, '--threshold', 'inf'], env);
  try {
    scenarios.push(await drive(server, { name: 'crm-only slate 1', bodies: bodies(1), rate }));
    scenarios.push(await drive(server, { name: 'crm-only slate 50', bodies: bodies(50), rate }));
  } finally {
    await server.stop();
  }

  if (crmOnly) {
    await db.stop();
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }

  // Hybrid at the calibrated threshold: closed loop to find the capacity, then fixed rates.
  server = await startServe(['--model', modelRef, '--budget-ms', '60000', '--llm-queue', '1000'], env);
  let capacity = 0;
  try {
    const closed1 = await drive(server, {
      name: 'hybrid slate 1, closed loop',
      bodies: bodies(1),
      connections: 2,
      timeout: 120,
    });
    scenarios.push(closed1);
    const closed50 = await drive(server, {
      name: 'hybrid slate 50, closed loop',
      bodies: bodies(50, 100),
      connections: 2,
      seconds: 2 * seconds,
      timeout: 120,
    });
    scenarios.push(closed50);
    capacity = closed50.requestsPerSec;
    scenarios.push(
      await drive(server, {
        name: 'hybrid slate 50, closed loop, sessions of 5 requests per user',
        bodies: bodies(50, 100, 5),
        connections: 1,
        seconds: 2 * seconds,
        timeout: 120,
      }),
    );
  } finally {
    await server.stop();
  }
  server = await startServe(['--model', modelRef, '--budget-ms', String(budgetMs)], env);
  try {
    const offered = Math.max(1, Math.round(2 * capacity));
    scenarios.push(
      await drive(server, {
        name: `hybrid slate 50 at 2x LLM capacity, budget ${budgetMs} ms`,
        bodies: withBudget(bodies(50, 100), budgetMs),
        rate: offered,
      }),
    );
    scenarios.push(await drive(server, { name: 'hybrid slate 50 at rate', bodies: bodies(50, 100), rate }));
  } finally {
    await server.stop();
  }

  // LLM for every candidate: the LLM-only recommender CoReLLa is measured against.
  server = await startServe(['--model', modelRef, '--threshold=-inf', '--budget-ms', '60000'], env);
  try {
    scenarios.push(
      await drive(server, {
        name: 'llm-only slate 50, closed loop',
        bodies: bodies(50, 100),
        connections: 2,
        seconds: 2 * seconds,
        timeout: 120,
      }),
    );
  } finally {
    await server.stop();
  }
  await db.stop();
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

await main().catch((e: unknown) => {
  // What was measured before the failure is still worth having.
  process.stdout.write(`${JSON.stringify({ ...partial, error: String(e) }, null, 2)}\n`);
  process.exitCode = 1;
});
