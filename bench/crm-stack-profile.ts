/**
 * The big stacks of a CRM training step, kernel by kernel (docs/crm-speed.md, "The big stacks"): the
 * bench shape's cross stack (3 layers over a 128-wide x0) and dense stack (128 → 256 → 128 → 1, relu,
 * relu, linear) at batch 1024, run in a step's order (cross forward, dense forward, dense backward, cross
 * backward) on the same buffers, so each kernel finds in cache what a real step leaves there. Rounds
 * alternate pool threads (1, 2) and the backward's weight gradients fused into its row region or not
 * (`stackWeightsFused`), all in one process and within the same minutes. For each kernel: wall µs, the
 * bytes of the arrays it reads or writes (each once: the least it must move if nothing stays in cache),
 * and those bytes over its time, against a copy of 64 MB arrays in the same process (read + write).
 *
 * Usage: npx tsx bench/crm-stack-profile.ts [--rounds 3] [--steps 200]  (`chrt -f 1 node --import tsx`
 * on a shared machine). Prints one JSON object.
 */
import os from 'node:os';
import { loadNative } from '../ml/tf/native.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  const v = i > 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isInteger(v) || v < 1) {
    console.error(`${name} must be a positive integer`);
    process.exit(2);
  }
  return v;
};
const rounds = arg('--rounds', 3);
const steps = arg('--steps', 200);

const addon = loadNative().addon as
  | (NonNullable<ReturnType<typeof loadNative>['addon']> & { stackWeightsFused?(on?: boolean): boolean })
  | undefined;
if (!addon?.stackWeightsFused) {
  console.error('the native addon (with stackWeightsFused) is not available');
  process.exit(3);
}

const B = 1024;
const W = 128;
const L = 3;
const MLP = [256, 128, 1];
let seed = 7;
const fill = (n: number, scale = 1) =>
  Float32Array.from(
    { length: n },
    () => scale * ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5),
  );

const x0 = fill(B * W);
const cw = Array.from({ length: L }, () => fill(W * W, 0.1));
const cb = Array.from({ length: L }, () => fill(W, 0.1));
const ys = Array.from({ length: L }, () => new Float32Array(B * W));
const zs = Array.from({ length: L }, () => new Float32Array(B * W));
const widths = [W, ...MLP];
const sw = MLP.map((n, l) => fill(widths[l] * n, 2 / Math.sqrt(widths[l])));
const sb = MLP.map((n) => fill(n, 0.1));
const hs = MLP.map((n) => new Float32Array(B * n));
const g = fill(B, 1 / B);
const dtop = new Float32Array(B * W);
const dx0 = new Float32Array(B * W);
const gcw = cw.map((w) => new Float32Array(w.length));
const gcb = cb.map((b) => new Float32Array(b.length));
const gsw = sw.map((w) => new Float32Array(w.length));
const gsb = sb.map((b) => new Float32Array(b.length));
const RELU = 0b011;

const F = 4; // bytes a float
const BW = B * W * F;
/** Each array a kernel reads or writes, once (weights included). */
const bytes = {
  crossForward: L * (4 * BW + (W * W + W) * F), // x_l, x0, z_l, y_l
  denseForward: B * (W + 256 + 128 + 1) * F + sw.reduce((s, w) => s + w.length * F, 0),
  // dy, x, h_0..2, dz_0..1, dx, and w, dw
  denseBackward:
    B * (1 + W + 256 + 128 + 1 + 256 + 128 + W) * F + 2 * sw.reduce((s, w) => s + w.length * F, 0),
  // dy, x0, z_0..2, x_1..2, dz_0..2, dx0, one carry; w, dw
  crossBackward: (1 + 1 + L + (L - 1) + L + 1 + 1) * BW + 2 * L * W * W * F,
};

function step(t: Record<string, number>) {
  let a = process.hrtime.bigint();
  const lap = (k: string) => {
    const b = process.hrtime.bigint();
    t[k] += Number(b - a) / 1e3;
    a = b;
  };
  addon!.crossStackForward(x0, cw, cb, ys, zs, B, W);
  lap('crossForward');
  addon!.denseStackForward(ys[L - 1], sw, sb, hs, B, W, RELU);
  lap('denseForward');
  addon!.denseStackBackward(g, ys[L - 1], sw, hs, dtop, gsw, gsb, B, W, RELU);
  lap('denseBackward');
  addon!.crossStackBackward(dtop, x0, cw, zs, ys.slice(0, -1), dx0, gcw, gcb, B, W);
  lap('crossBackward');
}

/** GB/s of a copy between two 64 MB arrays (read + write counted), best of 5. */
function copyGBs(): number {
  const n = 16 * 1024 * 1024;
  const src = fill(n);
  const dst = new Float32Array(n);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const a = process.hrtime.bigint();
    dst.set(src);
    best = Math.min(best, Number(process.hrtime.bigint() - a) / 1e9);
  }
  return (2 * n * F) / best / 1e9;
}

const median = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)];
const results: Record<string, Record<string, number[]>> = {};
const copies: number[] = [];
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  loads.push(os.loadavg()[0]);
  copies.push(copyGBs());
  for (const threads of [1, 2])
    for (const fused of [false, true]) {
      addon.setThreads(threads);
      addon.stackWeightsFused(fused);
      const key = `${threads}t ${fused ? 'fused' : 'unfused'}`;
      const t: Record<string, number> = {
        crossForward: 0,
        denseForward: 0,
        denseBackward: 0,
        crossBackward: 0,
      };
      for (let i = 0; i < 10; i++) step(t);
      for (const k of Object.keys(t)) t[k] = 0;
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < steps; i++) step(t);
      const cpu = process.cpuUsage(cpu0);
      const row = (results[key] ??= {});
      for (const [k, v] of Object.entries(t)) (row[k] ??= []).push(v / steps);
      (row.stacks ??= []).push(Object.values(t).reduce((s, v) => s + v, 0) / steps);
      (row.cpuUs ??= []).push((cpu.user + cpu.system) / steps);
    }
}
addon.stackWeightsFused(false);
const copy = median(copies);
const table = Object.fromEntries(
  Object.entries(results).map(([key, row]) => [
    key,
    Object.fromEntries(
      Object.entries(row).map(([k, v]) => {
        const us = median(v);
        const b = (bytes as Record<string, number>)[k];
        return [
          k,
          b === undefined
            ? { us: Math.round(us), range: [Math.round(Math.min(...v)), Math.round(Math.max(...v))] }
            : {
                us: Math.round(us),
                min: Math.round(Math.min(...v)),
                mb: +(b / 1e6).toFixed(2),
                gbs: +(b / us / 1e3).toFixed(1),
                gbsAtMin: +(b / Math.min(...v) / 1e3).toFixed(1),
              },
        ];
      }),
    ),
  ]),
);
console.log(JSON.stringify({ batch: B, steps, rounds, loadavg: loads, copyGBs: +copy.toFixed(1), table }));
