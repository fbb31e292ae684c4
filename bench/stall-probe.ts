/**
 * A witness for bench/serve.ts: a process that does nothing but sleep 1 ms and note how late it woke up.
 * When the server's answers are slow and this process, pinned to the same CPU, was late at the same moment,
 * the CPU itself was not running anything of ours (the hypervisor took the vCPU, or the kernel did): no
 * change in the server fixes that. When the server was slow and the probe was on time, the delay is the
 * server's own (a GC pause, a blocking call).
 *
 *   npx tsx bench/stall-probe.ts --seconds 10 [--stall-ms 2]   (bench/serve.ts starts it under taskset)
 *
 * Sleeping with Atomics.wait, not a timer: the probe never returns to an event loop and allocates nothing
 * in the loop, so its own GC and timer coalescing cannot make it late. Prints one JSON document: the
 * lateness quantiles and every stall at or above --stall-ms as [start, duration], start in epoch ms
 * (performance.timeOrigin + now, the clock bench/serve.ts stamps requests with).
 */

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const seconds = Number(arg('seconds', '10'));
const stallMs = Number(arg('stall-ms', '2'));
if (!(seconds > 0) || !(stallMs > 0)) throw new Error('--seconds and --stall-ms must be positive numbers');

const SLEEP_MS = 1;
const cell = new Int32Array(new SharedArrayBuffer(4));
// Lateness in 0.1 ms bins up to 100 ms, the last bin holding everything above: quantiles without a sort.
const bins = new Float64Array(1001);
const stalls: [number, number][] = [];
// The caller starts its load on this line, so the probe's window covers all of it.
process.stderr.write('stall-probe ready\n');
const end = performance.now() + seconds * 1000;
let wakeups = 0;
let max = 0;
for (let before = performance.now(); before < end;) {
  Atomics.wait(cell, 0, 0, SLEEP_MS);
  const now = performance.now();
  const late = Math.max(0, now - before - SLEEP_MS);
  bins[Math.min(1000, Math.floor(late * 10))]++;
  wakeups++;
  if (late > max) max = late;
  if (late >= stallMs) stalls.push([performance.timeOrigin + before + SLEEP_MS, late]);
  before = now;
}

function quantile(q: number): number {
  let seen = 0;
  for (let i = 0; i < bins.length; i++) {
    seen += bins[i];
    if (seen >= q * wakeups) return i / 10;
  }
  return max;
}

const r2 = (x: number) => Number(x.toFixed(2));
process.stdout.write(
  `${JSON.stringify({
    wakeups,
    lateMs: { p50: quantile(0.5), p99: quantile(0.99), max: r2(max) },
    stallMs,
    stalls: stalls.map(([t, d]) => [r2(t), r2(d)]),
  })}\n`,
);
