/**
 * Whether this machine's second core is a whole core (docs/crm-speed.md, "Is the 2-over-1 ceiling the
 * hardware?"). A fixed compute loop runs in one process alone, then in two processes at once, and each
 * reports its rate; the per-core rate with both cores busy over the rate with one busy is what any code's
 * 2-over-1 can reach on this machine: ceiling = 2 · (2-busy rate / 1-busy rate). A VM whose vCPUs share a
 * physical core (SMT siblings), or a host that turbos one busy core higher than two, shows it here and
 * nowhere else: the CRM step's own 2-over-1 mixes it with the pool's synchronisation and serial parts.
 *
 * Two loops, so that a drop can be told apart:
 * - `sgemm`: the step's biggest product ([1024, 128] · [128, 256], the first MLP layer) through our
 *   OpenBLAS addon on one thread, data in L2: the work the stacks really do (AVX-512 FMA units).
 * - `sgemm64`: 256 products of [64, 64] · [64, 64] a unit, all in L1: the same FMA units with no cache
 *   or memory traffic, so a drop in `sgemm` but not here points at the caches, a drop in both at the core.
 * - `js`: a scalar dependent float chain in JS, no memory traffic: the core's clock and issue alone.
 * Processes, not threads, so that neither the addon's pool nor a shared heap takes part. Rounds alternate
 * 1-busy and 2-busy windows within the same seconds. /proc/cpuinfo's MHz is sampled in each window (a
 * KVM guest often reports its nominal clock only, which the output says as it finds it).
 *
 * Usage: npx tsx bench/core-scaling.ts [--rounds 3] [--ms 2000] [--kinds sgemm,sgemm64,js]
 *   (`chrt -f 1 node --import tsx bench/core-scaling.ts` on a shared machine: the children inherit it).
 * Prints one JSON object.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const KINDS = ['sgemm', 'sgemm64', 'js'] as const;
type Kind = (typeof KINDS)[number];

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

function intFlag(name: string, raw: string | undefined, dflt: number, lo: number, hi: number): number {
  if (raw === undefined) return dflt;
  const v = Number(raw);
  if (!/^\d+$/.test(raw) || v < lo || v > hi)
    fail(`--${name} must be an integer in [${lo}, ${hi}], got "${raw}"`);
  return v;
}

let parsed: ReturnType<typeof parseFlags>;
function parseFlags() {
  return parseArgs({
    options: {
      rounds: { type: 'string' },
      ms: { type: 'string' },
      kinds: { type: 'string' },
      child: { type: 'string' },
      start: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }).values;
}
try {
  parsed = parseFlags();
} catch (e) {
  fail((e as Error).message);
}
const rounds = intFlag('rounds', parsed.rounds, 3, 1, 50);
const windowMs = intFlag('ms', parsed.ms, 2000, 200, 60_000);
const kinds = (parsed.kinds ?? KINDS.join(',')).split(',').map((k) => {
  if (!(KINDS as readonly string[]).includes(k)) fail(`--kinds must list ${KINDS.join(' or ')}, got "${k}"`);
  return k as Kind;
});

/** One unit of work of each kind; the count of units in a window is the rate. */
function makeWork(kind: Kind): () => void {
  if (kind === 'js') {
    let x = 1.000001;
    return () => {
      // 200k dependent multiply-adds, kept live so the JIT cannot drop them
      for (let i = 0; i < 200_000; i++) x = x * 0.9999999 + 1e-7;
      if (x === 0) console.log(x);
    };
  }
  // The addon is loaded in the child only: the parent must not hold a pool or OpenBLAS threads.
  return kind === 'sgemm' ? sgemmWork(1024, 128, 256, 1) : sgemmWork(64, 64, 64, 256);
}

/** reps products of [M, K] · [K, N] a unit. */
function sgemmWork(M: number, K: number, N: number, reps: number): () => void {
  const a = Float32Array.from({ length: M * K }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const b = Float32Array.from({ length: K * N }, (_, i) => ((i * 104729) % 1000) / 1000 - 0.5);
  const out = new Float32Array(M * N);
  return () => {
    for (let r = 0; r < reps; r++) addonMatmul(a, b, out, M, N, K);
  };
}

let addonMatmul: (
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  m: number,
  n: number,
  k: number,
) => void;

async function child(kind: Kind, startAt: number): Promise<void> {
  if (kind !== 'js') {
    const { loadNative } = await import('../ml/tf/native.js');
    const addon = loadNative().addon;
    if (!addon) fail('the native addon is not available (npm run build:native)');
    addon.setThreads(1);
    addon.setBlasThreads(1);
    addonMatmul = (a, b, out, m, n, k) => addon.matmul(a, b, out, 1, m, n, k, false, false, 0, 0, null, 0);
  }
  const work = makeWork(kind);
  for (let i = 0; i < 20; i++) work(); // warm-up: JIT and caches
  const late = Date.now() - startAt;
  if (late < 0) await new Promise((r) => setTimeout(r, -late));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let units = 0;
  while (performance.now() - t0 < windowMs) {
    work();
    units++;
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  console.log(
    JSON.stringify({ units, wallMs: wall, cpuMs: (cpu.user + cpu.system) / 1000, lateMs: Math.max(0, late) }),
  );
}

interface ChildResult {
  units: number;
  wallMs: number;
  cpuMs: number;
  lateMs: number;
}

function runChild(kind: Kind, startAt: number): Promise<ChildResult> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      ['--import', 'tsx', self, '--child', kind, '--start', String(startAt), '--ms', String(windowMs)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) reject(new Error(`core-scaling child (${kind}) exited ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as ChildResult);
    });
  });
}

/** The MHz /proc/cpuinfo reports for each CPU. */
function cpuMHz(): number[] {
  try {
    return [...readFileSync('/proc/cpuinfo', 'utf8').matchAll(/^cpu MHz\s*:\s*([\d.]+)/gm)].map((m) => +m[1]);
  } catch {
    return [];
  }
}

/** Runs `copies` children of kind in one window, sampling the clock every 250 ms meanwhile. */
async function window(kind: Kind, copies: number) {
  // tsx and the addon take a second or more to load on a loaded machine: start the window after that
  const startAt = Date.now() + 4000;
  const mhz: number[][] = [];
  const sampler = setInterval(() => {
    if (Date.now() > startAt) mhz.push(cpuMHz());
  }, 250);
  const load = os.loadavg()[0];
  try {
    const res = await Promise.all(Array.from({ length: copies }, () => runChild(kind, startAt)));
    return { res, mhz, load };
  } finally {
    clearInterval(sampler);
  }
}

const median = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)];
const round3 = (x: number) => Number(x.toFixed(3));

async function main(): Promise<void> {
  const perKind: Record<
    string,
    { one: number[]; two: number[]; cpuOne: number[]; cpuTwo: number[]; cpuShareTwo: number[] }
  > = {};
  const mhzOne: number[] = [];
  const mhzTwo: number[] = [];
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++)
    for (const kind of kinds) {
      const row = (perKind[kind] ??= { one: [], two: [], cpuOne: [], cpuTwo: [], cpuShareTwo: [] });
      // alternate which window runs first, so that a trend in the machine's load favours neither
      const order = r % 2 === 0 ? [1, 2] : [2, 1];
      for (const copies of order) {
        const w = await window(kind, copies);
        loads.push(w.load);
        // units per second of CPU-wall: the rate of one core while it runs the loop
        const rates = w.res.map((c) => (c.units / c.wallMs) * 1000);
        const perCore = rates.reduce((s, x) => s + x, 0) / rates.length;
        (copies === 1 ? row.one : row.two).push(perCore);
        // units per CPU second: the core's speed while the loop holds it, whatever else was scheduled
        const perCpu = w.res.reduce((s, c) => s + (c.units / c.cpuMs) * 1000, 0) / w.res.length;
        (copies === 1 ? row.cpuOne : row.cpuTwo).push(perCpu);
        if (copies === 2) row.cpuShareTwo.push(w.res.reduce((s, c) => s + c.cpuMs / c.wallMs, 0) / 2);
        for (const m of w.mhz) (copies === 1 ? mhzOne : mhzTwo).push(...m);
      }
    }
  const table = Object.fromEntries(
    Object.entries(perKind).map(([kind, row]) => {
      const one = median(row.one);
      const two = median(row.two);
      // per round, so that the spread shows
      const perRound = row.one.map((o, i) => round3(row.two[i] / o));
      return [
        kind,
        {
          unitsPerSecOneBusy: round3(one),
          unitsPerSecEachTwoBusy: round3(two),
          perCoreDropPct: round3((1 - two / one) * 100),
          twoOverOneCeiling: round3((2 * two) / one),
          perRoundRatio: perRound,
          // the same on CPU time: what a loaded machine's descheduling does not bend
          unitsPerCpuSecOneBusy: round3(median(row.cpuOne)),
          unitsPerCpuSecEachTwoBusy: round3(median(row.cpuTwo)),
          perCpuSecDropPct: round3((1 - median(row.cpuTwo) / median(row.cpuOne)) * 100),
          twoOverOneCeilingCpu: round3((2 * median(row.cpuTwo)) / median(row.cpuOne)),
          cpuShareEachTwoBusy: row.cpuShareTwo.map(round3),
        },
      ];
    }),
  );
  const mhzStat = (v: number[]) =>
    v.length ? { min: Math.min(...v), median: median(v), max: Math.max(...v) } : 'not reported';
  console.log(
    JSON.stringify({
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      rounds,
      windowMs,
      loadavg: loads.map((l) => round3(l)),
      mhz: { oneBusy: mhzStat(mhzOne), twoBusy: mhzStat(mhzTwo) },
      table,
    }),
  );
}

if (parsed.child !== undefined) {
  const kind = parsed.child as Kind;
  if (!(KINDS as readonly string[]).includes(kind)) fail(`--child must be ${KINDS.join(' or ')}`);
  await child(kind, intFlag('start', parsed.start, Date.now(), 0, Number.MAX_SAFE_INTEGER));
} else {
  await main();
}
