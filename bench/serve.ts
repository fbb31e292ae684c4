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
 * Usage: npx tsx bench/serve.ts --home DIR [--model champion] [--rate 200] [--seconds 10] [--budget-ms 1000]
 *          [--connections 10] [--crm-only] [--in-process] [--repeat N] [--pin] [--serve-repo DIR]
 *          [--client paced|autocannon] [--bare] [--server-node-args "..."] [--server-log FILE] [--threshold T]
 *   DIR is a CORELLA_HOME holding a trained version, e.g. from
 *   `CORELLA_HOME=DIR npx corella up --data-dir ../shared/datasets/ml-1m-u2999 --config ml-1m-cpu`.
 *   --alloc: what a 50-candidate CRM-only request allocates in the engine of --serve-repo (in this process,
 *     by stage: body parse, encode, score, answer JSON), the V8 heap and ArrayBuffer bytes separately, and
 *     the heap after a full GC with that GC's time. Run under
 *     NODE_OPTIONS="--expose-gc --max-semi-space-size=256" so nothing is collected while it counts.
 *   --in-process: the CRM-only 50-candidate scenario without HTTP: the engine and the prediction log (spool,
 *     flusher into the same Postgres) in this process, requests sent open loop at --rate, latency counted
 *     from each request's scheduled send time (so a stalled loop shows as latency, not as a slower rate).
 *   --repeat N: every CRM-only figure N times (the report gives each run plus min and median).
 *   --pin: the server on CPU 0, the load generator (this process) on CPU 1 (taskset), so autocannon does not
 *     steal the server's core; Postgres and everything else on the machine still share both.
 *   --probe: beside each fixed-rate CRM-only run, bench/stall-probe.ts on each CPU (with --pin: one on the
 *     server's CPU 0, one on the client's CPU 1). Each answer over the 10 ms target is checked against the
 *     probes' stalls (≥ 2 ms late waking from a 1 ms sleep) in the same moments: an answer slow while the
 *     probe on its CPU was also late waited for the CPU itself, not for the server. Each run also reports
 *     the steal time per CPU (/proc/stat) and the server's GC pauses over 10 ms (prom-client's buckets).
 *   --serve-repo DIR: run `corella serve` from another checkout (an A/B comparison within the same minutes).
 *   --client: the fixed-rate scenarios' load generator, paced (default: evenly spaced, timed from each
 *     request's scheduled send) or autocannon (bursty; see the note at `client` below for why not default).
 *   --bare: bench/serve-bare.ts (engine and log behind bare node:http) instead of `corella serve`.
 *   --semi-space-mb N: the server's V8 young generation (NODE_OPTIONS=--max-semi-space-size=N; default 16,
 *     0 = Node's default, passed as `corella serve --semi-space-mb 0`, which checkouts before this branch
 *     cannot take). Measured in process at 200 requests/s of 50-candidate slates: GC time 850-1170 ms per
 *     10 s with Node's default against 220-300 ms with 64 MB (docs/serving.md).
 * Machine: 2 cores shared by the server and the load generator; compare figures from the same run. Each
 * figure carries the load average when it started and the server's event-loop delay and GC time while it ran.
 */
import { randomUUID } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import os from 'node:os';
import v8 from 'node:v8';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import { resolveServingBundle } from '../activities/serving-bundle.js';
import { datasetForVersion } from '../activities/datasets.js';
import { openDatabase } from '../db/connection.js';
import { resolveDatabase } from '../cli/services/embedded-postgres.js';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { mulberry32 } from '../ml/random.js';
import { ServingEngine, type EngineStats } from '../ml/serving/engine.js';
import { databaseStorage } from '../serve/storage.js';
import type { ScoreRequest } from '../ml/serving/types.js';
import { probeFigures, type ProbeReport } from './stall-attribution.js';

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
// --client paced (default) | autocannon: the load generator of the fixed-rate CRM-only scenarios (hybrid
// and closed-loop ones always use autocannon). autocannon's rate mode is not a fixed rate: each connection sends back to back
// until it has made its share of the second, then waits for the next second (a burst at the top of every
// second, two requests in flight throughout it), and it back-fills each latency above 1 ms (1/rate,
// rounded up) with synthetic samples of every millisecond below it, so one 14 ms answer counts as 14
// samples. `paced` sends request k at k/rate, evenly, over a keep-alive pool of --connections sockets, and
// times it from that scheduled moment (so a stalled server or client still shows as latency).
// --threshold T: the hybrid scenarios route at T instead of the version's calibrated threshold (a version
// whose gate routes nothing, ln 2, still shows what prefix sharing saves at a given routed share).
const hybridThreshold = arg('threshold');
if (hybridThreshold !== undefined && !Number.isFinite(Number(hybridThreshold)))
  throw new Error('--threshold must be a finite number');
const hybridArgs = hybridThreshold === undefined ? [] : ['--threshold', hybridThreshold];
const client = arg('client', 'paced');
if (client !== 'paced' && client !== 'autocannon') throw new Error('--client must be paced or autocannon');
// --crm-only: just the CRM scenarios (a minute; for re-measuring latency when the machine is quiet).
const crmOnly = process.argv.includes('--crm-only');
const inProcess = process.argv.includes('--in-process');
const alloc = process.argv.includes('--alloc');
const repeat = Math.max(1, Number(arg('repeat', '1')));
const pin = process.argv.includes('--pin');
const semiSpaceMb = Number(arg('semi-space-mb', '16'));
const repo = resolve(arg('serve-repo') ?? resolve(import.meta.dirname, '..'));
// --server-node-args "...": flags for the server's node (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p" or
// "--trace-gc", which NODE_OPTIONS refuses or which should not reach this process); --server-log FILE keeps
// the server's stdout and stderr.
const serverNodeArgs = (arg('server-node-args') ?? '').split(' ').filter(Boolean);
const serverLog = arg('server-log');
// --bare: the CRM-only figures from bench/serve-bare.ts (the engine and log behind a bare node:http handler)
// instead of `corella serve`: the floor Fastify is measured against.
const bare = process.argv.includes('--bare');
const probe = process.argv.includes('--probe');
// The 50-candidate target: answers slower than this are the ones the probes are asked about.
const SLOW_MS = 10;
const round = (x: number, d = 3) => (Number.isFinite(x) ? Number(x.toFixed(d)) : x);

interface Server {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startServe(args: string[], env: NodeJS.ProcessEnv): Promise<Server> {
  // The young generation comes through NODE_OPTIONS, so `corella serve` does not re-execute itself (the
  // child's pid is the server's, whose CPU time is read); 0 asks for Node's default explicitly.
  const young = semiSpaceMb > 0 ? [] : ['--semi-space-mb', '0'];
  const argv = bare
    ? [...serverNodeArgs, '--import', 'tsx', join(repo, 'bench', 'serve-bare.ts'), '--home', home, ...args]
    : [...serverNodeArgs, join(repo, 'bin', 'corella.mjs'), 'serve', '--port', '0', ...young, ...args];
  const child = pin
    ? spawn('taskset', ['-c', '0', process.execPath, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  if (serverLog) {
    const file = createWriteStream(resolve(serverLog), { flags: 'a' });
    child.stdout!.pipe(file);
    child.stderr!.pipe(file);
  } else child.stdout!.resume();
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

/**
 * The server's event-loop delay (prom-client's monitorEventLoopDelay, reset by each scrape) and GC time. The
 * monitor reports whole intervals of its 10 ms sampling timer; the figures here are what exceeds that.
 */
const SERVER_LOOP_RESOLUTION_MS = 10;
interface LoopSample {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  gcSeconds: number;
  /** GC pauses longer than 10 ms so far (prom-client's gc histogram, every kind). */
  gcOver10ms: number;
  /** Cumulative bucket counts (le in seconds → count) of the server's own latency histograms. */
  request: Map<number, number>;
  engine: Map<number, number>;
}

function buckets(text: string, name: string, label: string): Map<number, number> {
  const out = new Map<number, number>();
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) {
    if (!m[1].includes(label)) continue;
    const le = /le="([^"]+)"/.exec(m[1])?.[1];
    if (le !== undefined) out.set(le === '+Inf' ? Infinity : Number(le), Number(m[2]));
  }
  return out;
}

/**
 * Quantiles (ms) of what a histogram counted between two scrapes, interpolated within buckets as
 * Prometheus' histogram_quantile does: the server's own view of a scenario, to set beside the client's.
 */
function histogramQuantiles(before: Map<number, number>, after: Map<number, number>) {
  const les = [...after.keys()].sort((a, b) => a - b);
  const counts = les.map((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0));
  const total = counts.at(-1) ?? 0;
  const q = (p: number) => {
    if (total === 0) return null;
    const rank = p * total;
    const i = counts.findIndex((c) => c >= rank);
    const hi = les[i];
    const lo = i > 0 ? les[i - 1] : 0;
    if (!Number.isFinite(hi)) return round(lo * 1000, 2);
    const below = i > 0 ? counts[i - 1] : 0;
    const inside = counts[i] - below;
    return round((lo + ((hi - lo) * (rank - below)) / Math.max(1, inside)) * 1000, 2);
  };
  return { count: total, p50: q(0.5), p90: q(0.9), p99: q(0.99) };
}

async function scrapeLoop(url: string): Promise<LoopSample> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const gauge = (name: string) => {
    const m = new RegExp(
      `^corella_serve_process_nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})? (\\S+)$`,
      'm',
    ).exec(text);
    return m ? Math.max(0, Number(m[1]) * 1000 - SERVER_LOOP_RESOLUTION_MS) : NaN;
  };
  let gc = 0;
  for (const m of text.matchAll(/^corella_serve_process_nodejs_gc_duration_seconds_sum\{[^}]*\} (\S+)$/gm))
    gc += Number(m[1]);
  let gcOver10ms = 0;
  const gcBucket = /^corella_serve_process_nodejs_gc_duration_seconds_bucket\{([^}]*)\} (\S+)$/gm;
  for (const m of text.matchAll(gcBucket)) {
    if (m[1].includes('le="+Inf"')) gcOver10ms += Number(m[2]);
    else if (m[1].includes('le="0.01"')) gcOver10ms -= Number(m[2]);
  }
  return {
    p50: gauge('p50'),
    p90: gauge('p90'),
    p99: gauge('p99'),
    max: gauge('max'),
    gcSeconds: gc,
    gcOver10ms,
    request: buckets(text, 'corella_serve_request_seconds', 'endpoint="/v1/score"'),
    engine: buckets(text, 'corella_serve_route_seconds', 'route="crm"'),
  };
}

function loadAverage(): number[] {
  return os.loadavg().map((x) => round(x, 2));
}

interface Scenario {
  name: string;
  bodies: string[];
  rate?: number;
  connections?: number;
  seconds?: number;
  /** autocannon's per-request timeout in seconds (an LLM-only slate takes seconds on a CPU). */
  timeout?: number;
  /**
   * Fixed-rate CRM scenarios take the paced client (--client). The hybrid ones keep autocannon: an answer
   * there takes up to the LLM budget, so an open loop at 200/s would queue without bound in the client.
   */
  paced?: boolean;
}

type Tally = Omit<EngineStats, 'requests'> & { non200: number };

interface LoadResult {
  requestsPerSec: number;
  latency: { p50: number; p90: number; p99: number; max: number };
  errors: number;
  /** paced only: how late the client itself issued requests (its own share of the tail). */
  clientLateMs?: { p50: number; p99: number; max: number };
  /** paced only: latency from the moment each request was actually issued. */
  latencyFromSendMs?: { p50: number; p90: number; p99: number; max: number };
  /** paced only: each answer over SLOW_MS as [due, answered], epoch ms (the probes' clock). */
  slow?: [number, number][];
}

function quantilesOf(xs: number[]) {
  const sorted = Float64Array.from(xs).sort();
  return {
    p50: round(quantile(sorted, 0.5), 2),
    p90: round(quantile(sorted, 0.9), 2),
    p99: round(quantile(sorted, 0.99), 2),
    max: round(sorted[sorted.length - 1] ?? NaN, 2),
  };
}

/** The paced open-loop client (see --client): node:http, keep-alive, `connections` sockets at most. */
async function pacedLoad(
  url: string,
  s: Scenario & { rate: number },
  onResponse: (status: number, body: string) => void,
): Promise<LoadResult> {
  const target = new URL(`${url}/v1/score`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: s.connections ?? connections });
  const total = Math.round(s.rate * (s.seconds ?? seconds));
  const interval = 1000 / s.rate;
  const fromDue: number[] = [];
  const fromSend: number[] = [];
  const late: number[] = [];
  const slow: [number, number][] = [];
  let errors = 0;
  let done = 0;
  const t0 = performance.now();
  await new Promise<void>((finish) => {
    const settle = () => {
      if (++done === total) finish();
    };
    const one = (k: number, due: number) => {
      const body = s.bodies[k % s.bodies.length];
      const sent = performance.now();
      late.push(sent - due);
      const req = http.request(
        {
          hostname: target.hostname,
          port: target.port,
          path: target.pathname,
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const now = performance.now();
            fromDue.push(now - due);
            fromSend.push(now - sent);
            if (now - due > SLOW_MS) slow.push([performance.timeOrigin + due, performance.timeOrigin + now]);
            onResponse(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
            settle();
          });
        },
      );
      req.setTimeout((s.timeout ?? 10) * 1000, () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        errors++;
        settle();
      });
      req.end(body);
    };
    let k = 0;
    const pump = () => {
      const now = performance.now();
      while (k < total && t0 + k * interval <= now) {
        one(k, t0 + k * interval);
        k++;
      }
      if (k < total) setTimeout(pump, Math.max(0, t0 + k * interval - performance.now()));
    };
    pump();
  });
  const wall = (performance.now() - t0) / 1000;
  agent.destroy();
  const lateQ = quantilesOf(late);
  return {
    requestsPerSec: round(fromDue.length / wall, 1),
    latency: quantilesOf(fromDue),
    errors,
    clientLateMs: { p50: lateQ.p50, p99: lateQ.p99, max: lateQ.max },
    latencyFromSendMs: quantilesOf(fromSend),
    slow,
  };
}

/**
 * bench/stall-probe.ts on each CPU (--pin) or one unpinned, for `secs`; resolves once every probe is
 * sleeping, to the probes' reports when they finish.
 */
async function startProbes(secs: number): Promise<{ cpu: number | null; report: Promise<ProbeReport> }[]> {
  const script = join(import.meta.dirname, 'stall-probe.ts');
  const argv = ['--import', 'tsx', script, '--seconds', String(secs)];
  const cpus = pin ? [0, 1] : [null];
  return Promise.all(
    cpus.map(async (cpu) => {
      const child =
        cpu === null
          ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
          : spawn('taskset', ['-c', String(cpu), process.execPath, ...argv], {
              stdio: ['ignore', 'pipe', 'pipe'],
            });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', r));
      await new Promise<void>((ready, fail) => {
        child.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('stall-probe ready')) ready();
        });
        void exited.then((code) =>
          fail(new Error(`stall-probe exited ${code} before it was ready:\n${err}`)),
        );
      });
      const report = exited.then((code) => {
        if (code !== 0) throw new Error(`stall-probe exited ${code}:\n${err}`);
        return JSON.parse(out) as ProbeReport;
      });
      return { cpu, report };
    }),
  );
}

/** Steal time per CPU so far, ms (/proc/stat, clock ticks of 1/100 s): the hypervisor running someone else. */
async function stealMs(): Promise<number[]> {
  const stat = await readFile('/proc/stat', 'utf8');
  return [...stat.matchAll(/^cpu(\d+) (.*)$/gm)].map((m) => Number(m[2].split(' ')[7]) * 10);
}

async function autocannonLoad(
  url: string,
  s: Scenario,
  onResponse: (status: number, body: string) => void,
): Promise<LoadResult> {
  let i = 0;
  const result = await autocannon({
    url: `${url}/v1/score`,
    connections: s.connections ?? connections,
    duration: s.seconds ?? seconds,
    timeout: s.timeout ?? 10,
    ...(s.rate ? { overallRate: s.rate } : {}),
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req: autocannon.Request) => ({ ...req, body: s.bodies[i++ % s.bodies.length] }),
        onResponse,
      },
    ],
  });
  return {
    requestsPerSec: result.requests.average,
    latency: {
      p50: result.latency.p50,
      p90: result.latency.p90,
      p99: result.latency.p99,
      max: result.latency.max,
    },
    errors: result.errors + result.timeouts,
  };
}

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
  const loadAverageAtStart = loadAverage();
  const generator = s.rate && s.paced && client === 'paced' ? 'paced' : 'autocannon';
  const probes = probe && generator === 'paced' ? await startProbes((s.seconds ?? seconds) + 2) : [];
  const loop0 = await scrapeLoop(server.url); // also resets the server's event-loop histogram
  const cpu0 = await cpuSeconds(server.child.pid!);
  const steal0 = await stealMs();
  const t0 = performance.now();
  const onResponse = (status: number, body: string) => {
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
  };
  const result =
    generator === 'paced'
      ? await pacedLoad(server.url, { ...s, rate: s.rate! }, onResponse)
      : await autocannonLoad(server.url, s, onResponse);
  const wall = (performance.now() - t0) / 1000;
  const cpu = (await cpuSeconds(server.child.pid!)) - cpu0;
  const steal = (await stealMs()).map((x, i) => x - (steal0[i] ?? 0));
  const loop1 = await scrapeLoop(server.url);
  const reports = await Promise.all(probes.map(async (p) => ({ cpu: p.cpu, report: await p.report })));
  return {
    scenario: s.name,
    offeredRate: s.rate ?? null,
    loadAverageAtStart,
    serverEventLoopDelayMs: {
      p50: round(loop1.p50, 2),
      p90: round(loop1.p90, 2),
      p99: round(loop1.p99, 2),
      max: round(loop1.max, 2),
    },
    serverGcMs: round((loop1.gcSeconds - loop0.gcSeconds) * 1000, 1),
    serverGcPausesOver10ms: loop1.gcOver10ms - loop0.gcOver10ms,
    stealMsPerCpu: steal,
    ...(probes.length ? { stallProbe: probeFigures(reports, result.slow ?? [], SLOW_MS) } : {}),
    // The server's own clocks: Fastify's onRequest to onResponse (the socket read before it and the kernel
    // and client after it are outside), and the engine's score() alone. Bucket-interpolated. Client latency
    // minus these is where the rest of the tail sits. (--bare: not recorded.)
    serverRequestMs: histogramQuantiles(loop0.request, loop1.request),
    serverEngineMs: histogramQuantiles(loop0.engine, loop1.engine),
    loadGenerator: generator,
    requestsPerSec: round(result.requestsPerSec, 1),
    latencyMs: result.latency,
    ...(result.latencyFromSendMs ? { latencyFromSendMs: result.latencyFromSendMs } : {}),
    ...(result.clientLateMs ? { clientLateMs: result.clientLateMs } : {}),
    errors: result.errors,
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

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Min and median of each repeated latency figure, so one noisy minute on a shared machine does not decide. */
function summarise(runs: { latencyMs: Record<string, number> }[]) {
  const keys = Object.keys(runs[0].latencyMs);
  const pick = (f: (xs: number[]) => number) =>
    Object.fromEntries(keys.map((k) => [k, f(runs.map((r) => r.latencyMs[k]).sort((a, b) => a - b))]));
  return {
    runs: runs.length,
    latencyMsMin: pick((xs) => xs[0]),
    latencyMsMedian: pick((xs) => xs[Math.floor((xs.length - 1) / 2)]),
  };
}

/**
 * The request path without HTTP: score with the engine, append to the prediction log (whose flusher stores
 * into Postgres meanwhile), on this process's event loop. Open loop: request k is due at k / rate seconds,
 * and its latency counts from then, so a blocked loop delays the requests queued behind it as it would a
 * server's.
 */
async function inProcessRun(
  engine: ServingEngine,
  log: Awaited<ReturnType<typeof databaseStorage>>,
  bodies: string[],
  name: string,
) {
  const total = Math.round(rate * seconds);
  const lat = new Float64Array(total);
  const loop = monitorEventLoopDelay({ resolution: 1 });
  let gcMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  gc.observe({ entryTypes: ['gc'] });
  const loadAverageAtStart = loadAverage();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const interval = 1000 / rate;
  let done = 0;
  let failed = 0;
  const finished = new Promise<void>((resolveAll) => {
    const one = async (k: number, due: number) => {
      try {
        const body = JSON.parse(bodies[k % bodies.length]) as ScoreRequest;
        const t = performance.now();
        const r = await engine.score(body);
        const ms = performance.now() - t;
        log.predictions!.append({
          requestId: randomUUID(),
          at: new Date(),
          modelVersionId: Number(engine.modelVersion),
          user: body.user.id,
          history: null,
          budgetMs: null,
          threshold: engine.threshold,
          candidates: r.candidates,
          latencyMs: ms,
        });
      } catch {
        failed++;
      }
      lat[k] = performance.now() - due;
      if (++done === total) resolveAll();
    };
    loop.enable();
    const t0 = performance.now();
    let k = 0;
    const pump = () => {
      const now = performance.now();
      while (k < total && t0 + k * interval <= now) {
        void one(k, t0 + k * interval);
        k++;
      }
      if (k < total) setTimeout(pump, Math.max(0, t0 + k * interval - performance.now()));
    };
    pump();
  });
  await finished;
  // Busy time of this (the request) thread, and CPU of the whole process: the flusher thread, tfjs's pool.
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  gc.disconnect();
  const sorted = Float64Array.from(lat).sort();
  return {
    scenario: name,
    offeredRate: rate,
    loadAverageAtStart,
    latencyMs: {
      p50: round(quantile(sorted, 0.5), 2),
      p90: round(quantile(sorted, 0.9), 2),
      p99: round(quantile(sorted, 0.99), 2),
      max: round(sorted[sorted.length - 1], 2),
    },
    // Beyond the monitor's 1 ms sampling interval.
    eventLoopDelayMs: {
      p50: round(Math.max(0, loop.percentile(50) / 1e6 - 1), 2),
      p90: round(Math.max(0, loop.percentile(90) / 1e6 - 1), 2),
      p99: round(Math.max(0, loop.percentile(99) / 1e6 - 1), 2),
      max: round(Math.max(0, loop.max / 1e6 - 1), 2),
    },
    gcMs: round(gcMs, 1),
    requestLoopUtilization: round(elu.utilization, 3),
    requestLoopMsPerRequest: round(elu.active / total, 3),
    processCpuMsPerRequest: round((cpu.user + cpu.system) / 1000 / total, 3),
    failed,
    logPendingAtEnd: log.pending?.() ?? null,
  };
}

/**
 * Bytes a 50-candidate CRM-only request allocates, by stage, in the engine of --serve-repo loaded in this
 * process. Counted as the growth of V8's new space (nothing is collected meanwhile: the caller gives a
 * young generation of 256 MB, and each stage checks that no GC ran) and of ArrayBuffer memory
 * (`process.memoryUsage().arrayBuffers`: typed arrays above 64 bytes live off the V8 heap). Node 20 has no
 * `total_allocated_bytes`, hence the deltas. Then the heap used after a full GC, and that GC's CPU and wall
 * time (medians of 7: the live heap a mark-compact traces).
 */
async function allocation(
  store: FileArtifactStore,
  bundle: Awaited<ReturnType<typeof resolveServingBundle>>['bundle'],
  bs: string[],
) {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('--alloc needs NODE_OPTIONS="--expose-gc --max-semi-space-size=256"');
  const { ServingEngine: Engine } = (await import(
    join(repo, 'ml', 'serving', 'engine.ts')
  )) as typeof import('../ml/serving/engine.js');
  const engine = await Engine.load(store, { ...bundle, llm: null }, { threshold: Infinity, log: () => {} });
  const newSpace = () =>
    v8.getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')!.space_used_size;
  let gcs = 0;
  const obs = new PerformanceObserver((l) => (gcs += l.getEntries().length));
  const stage = async (name: string, fn: (b: string) => unknown, n = 300) => {
    for (let i = 0; i < 400; i++) await fn(bs[i % bs.length]); // JIT, pools
    gc();
    gc();
    gcs = 0;
    obs.observe({ entryTypes: ['gc'] });
    const h0 = newSpace();
    const a0 = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < n; i++) await fn(bs[i % bs.length]);
    const h1 = newSpace();
    const a1 = process.memoryUsage().arrayBuffers;
    await new Promise((r) => setImmediate(r)); // deliver the gc entries, if any
    obs.disconnect();
    return {
      stage: name,
      heapKBPerRequest: round((h1 - h0) / n / 1024, 1),
      arrayBufferKBPerRequest: round((a1 - a0) / n / 1024, 1),
      collected: gcs > 0,
    };
  };
  try {
    const stages = [
      await stage('body parse', (b) => JSON.parse(b)),
      await stage('+ encode', (b) => engine.encoder.encode(JSON.parse(b) as ScoreRequest)),
      await stage('+ score', (b) => engine.score(JSON.parse(b) as ScoreRequest)),
      await stage('+ answer JSON', async (b) =>
        JSON.stringify((await engine.score(JSON.parse(b) as ScoreRequest)).candidates),
      ),
    ];
    gc();
    // CPU time rather than wall time: on a shared machine the wall clock of a GC is mostly waiting.
    const fullGcMs: number[] = [];
    const fullGcCpuMs: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      gc();
      const c = process.cpuUsage(c0);
      fullGcMs.push(performance.now() - t0);
      fullGcCpuMs.push((c.user + c.system) / 1000);
    }
    fullGcMs.sort((a, b) => a - b);
    fullGcCpuMs.sort((a, b) => a - b);
    return {
      engineRepo: repo,
      loadAverageAtStart: loadAverage(),
      stages,
      heapUsedAfterFullGcMB: round(v8.getHeapStatistics().used_heap_size / 1e6, 1),
      fullGcCpuMsMedian: round(fullGcCpuMs[3], 1),
      fullGcMsMedian: round(fullGcMs[3], 1),
    };
  } finally {
    await engine.dispose();
  }
}

async function main() {
  // The load generator (autocannon, in this process) on the core the server is not pinned to.
  if (pin) execFileSync('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
  const db = await resolveDatabase({ dataDir: join(home, 'pg') });
  const nodeOptions = [
    process.env.NODE_OPTIONS ?? '',
    semiSpaceMb > 0 ? `--max-semi-space-size=${semiSpaceMb}` : '',
  ]
    .join(' ')
    .trim();
  const env = { ...process.env, CORELLA_HOME: home, DATABASE_URL: db.url, NODE_OPTIONS: nodeOptions };
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
    hybridThreshold: hybridThreshold === undefined ? bundle.threshold : Number(hybridThreshold),
    dataset: bundle.datasetVersionId.slice(0, 12),
    // Other work on the machine moves every figure: the load average says how busy it was.
    machine: { cores: os.cpus().length, loadAverageAtStart: loadAverage(), pinned: pin },
    // The server's NODE_OPTIONS (--in-process: this process's, which --semi-space-mb cannot change).
    nodeOptions: inProcess ? (process.env.NODE_OPTIONS ?? '') : nodeOptions,
    serveRepo: repo,
    loadGenerator: inProcess ? 'in-process open loop' : client,
    server: bare ? 'bench/serve-bare.ts (node:http)' : 'corella serve',
    scenarios: [] as unknown[],
  });
  const scenarios = out.scenarios as unknown[];

  if (inProcess) {
    const spoolDir = await mkdtemp(join(os.tmpdir(), 'corella-bench-serve-'));
    const dbh = openDatabase(db.url);
    // CRM only, so the LLM is not even loaded.
    const engine = await ServingEngine.load(
      store,
      { ...bundle, llm: null },
      { threshold: Infinity, log: () => {} },
    );
    const storage = await databaseStorage(dbh.db, { spoolDir });
    try {
      const bs = bodies(50);
      await inProcessRun(engine, storage, bs.slice(0, 50), 'warm-up'); // JIT and tfjs kernels
      const runs = [];
      for (let r = 0; r < repeat; r++)
        runs.push(await inProcessRun(engine, storage, bs, 'in-process crm-only slate 50 (engine + log)'));
      scenarios.push(...runs, { scenario: 'in-process crm-only slate 50, summary', ...summarise(runs) });
    } finally {
      await storage.close?.();
      await engine.dispose();
      await dbh.close();
      await rm(spoolDir, { recursive: true, force: true });
    }
    await db.stop();
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }

  if (alloc) {
    out.alloc = await allocation(store, bundle, bodies(50));
    await db.stop();
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }

  // CRM only.
  let server = await startServe(['--model', modelRef, '--threshold', 'inf'], env);
  try {
    const runs1 = [];
    const runs50 = [];
    for (let r = 0; r < repeat; r++) {
      runs1.push(await drive(server, { name: 'crm-only slate 1', bodies: bodies(1), rate, paced: true }));
      runs50.push(await drive(server, { name: 'crm-only slate 50', bodies: bodies(50), rate, paced: true }));
    }
    scenarios.push(...runs1, ...runs50);
    if (repeat > 1) {
      scenarios.push({ scenario: 'crm-only slate 1, summary', ...summarise(runs1) });
      scenarios.push({ scenario: 'crm-only slate 50, summary', ...summarise(runs50) });
    }
  } finally {
    await server.stop();
  }

  if (crmOnly) {
    await db.stop();
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }

  // Hybrid at the calibrated threshold: closed loop to find the capacity, then fixed rates.
  server = await startServe(
    ['--model', modelRef, '--budget-ms', '60000', '--llm-queue', '1000', ...hybridArgs],
    env,
  );
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
  server = await startServe(['--model', modelRef, '--budget-ms', String(budgetMs), ...hybridArgs], env);
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
