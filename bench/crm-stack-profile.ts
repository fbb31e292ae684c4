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
 *
 * --whole-step profiles the whole tape-free training step instead (the bench shape of crm-vs-torch.ts:
 * LocalStepper, batch 1024), alternating 1 and 2 pool threads in one process, with the pool's region
 * trace on (poolTrace in native/corella_native.c): per step, each addon kernel's calls, wall µs and pool
 * regions; how much of the step is inside regions, inside kernels but outside regions (their serial
 * parts and the inline ones) and outside kernels (JS); the gaps between consecutive regions; and how late
 * the worker joined each region (regions begun with it asleep, and regions it took no chunk of).
 * --adam-ab adds each setting with adamMany hidden (the 12 adam calls it replaced), in the same rounds;
 * --hold-ab with poolHold hidden (the step no longer holds the workers awake between its regions:
 * CORELLA_POOL_HOLD=off within one process); --l2-ab with the l2 term out of the cross backward's region
 * (the serial l2Grad pass, as before). Each is the same bits as the default, A/B'd in the same minutes.
 */
import os from 'node:os';
import { loadNative, type PoolTrace } from '../ml/tf/native.js';

// A misspelt switch (say --whole-steps) would otherwise run the other profile without a word.
const AB_FLAGS = ['--adam-ab', '--hold-ab', '--l2-ab'];
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--rounds' || a === '--steps') i++;
  else if (!['--whole-step', ...AB_FLAGS].includes(a)) {
    console.error(
      `unknown option ${JSON.stringify(a)} (--rounds N, --steps N, --whole-step, ${AB_FLAGS.join(', ')})`,
    );
    process.exit(2);
  }
}
for (const flag of AB_FLAGS)
  if (process.argv.includes(flag) && !process.argv.includes('--whole-step')) {
    console.error(`${flag} needs --whole-step (it compares whole steps with and without one change)`);
    process.exit(2);
  }
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
if (process.argv.includes('--whole-step')) {
  console.log(JSON.stringify(await wholeStepProfile(rounds, steps)));
  process.exit(0);
}

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

/** --whole-step: see the header. Functions below are hoisted, so the flag's branch above can call this. */
async function wholeStepProfile(rounds: number, steps: number) {
  const { initTf } = await import('../ml/tf/index.js');
  const { CrmNet, defaultCrmConfig } = await import('../ml/crm/index.js');
  const { Adam } = await import('../ml/crm/adam.js');
  const { LocalStepper } = await import('../ml/crm/parallel.js');
  const { StepProfile } = await import('../ml/crm/step-profile.js');
  const { activeNativeAddon } = await import('../ml/tf/kernels/native-kernels.js');
  const { uniformCategoricalSplit } = await import('../ml/data/uniform-categorical.js');
  await initTf('wasm', () => undefined);
  const a = activeNativeAddon() as unknown as Record<string, unknown> & {
    setThreads(n: number): void;
    poolTrace?(on: boolean): PoolTrace;
  };
  if (!a?.poolTrace) {
    console.error('the native addon (with poolTrace) is not active on wasm');
    process.exit(3);
  }
  // The bench shape of crm-vs-torch.ts: MovieLens-sized vocabularies, uniform ids, batch 1024.
  const VOCABS = [6040, 3706, 2, 7, 21, 3439, 18, 100];
  const N_BATCHES = 8;
  // Module constants are not initialised yet when the flag's branch calls this: its own.
  const B = 1024;
  const median = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)];
  const { featureMap, split } = uniformCategoricalSplit('bench-crm-vs-torch', VOCABS, B * N_BATCHES);
  const model = new CrmNet(
    defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] }),
    featureMap,
  );
  const stepper = new LocalStepper(model, new Adam({ lr: 1e-3 }), split);
  if (!stepper.tapeFree) {
    console.error('the tape-free step does not apply');
    process.exit(3);
  }
  const rowLists = Array.from({ length: N_BATCHES }, (_, k) =>
    Int32Array.from({ length: B }, (_, i) => k * B + i),
  );

  // Each kernel call's wall span on the monotonic clock the native trace uses (hrtime is CLOCK_MONOTONIC).
  const calls: { name: string; t0: number; t1: number }[] = [];
  const KERNELS = [
    'embeddingBag',
    'crossStackForward',
    'denseStackForward',
    'bceWithLogits',
    'denseStackBackward',
    'crossStackBackward',
    'l2Grad',
    'adam',
    'adamMany',
    'embeddingAdam',
    'prewake',
  ];
  const nowUs = () => Number(process.hrtime.bigint()) / 1e3;
  // --l2-ab: the cross backward called without its l2 arguments, so NativeStep runs the serial l2Grad.
  let l2Fused = true;
  for (const k of KERNELS) {
    const f = a[k] as ((...args: unknown[]) => unknown) | undefined;
    if (!f) continue;
    a[k] = (...args: unknown[]) => {
      const t0 = nowUs();
      try {
        return f.apply(a, k === 'crossStackBackward' && !l2Fused ? args.slice(0, 10) : args);
      } finally {
        calls.push({ name: k, t0, t1: nowUs() });
      }
    };
  }

  let step = 0;
  const out: Record<string, Record<string, number>[]> = {};
  // With --adam-ab, every setting also runs with the addon's adamMany hidden (the 12 adam calls it
  // replaces), in the same rounds: the one-region Adam against the old form, the same bits. --hold-ab and
  // --l2-ab likewise each add a form without one change.
  const adamMany = a.adamMany;
  const poolHold = a.poolHold;
  const forms = [{ name: '', many: true, hold: true, l2: true }];
  if (process.argv.includes('--adam-ab')) forms.push({ name: ' adam×12', many: false, hold: true, l2: true });
  if (process.argv.includes('--hold-ab')) forms.push({ name: ' no-hold', many: true, hold: false, l2: true });
  if (process.argv.includes('--l2-ab')) forms.push({ name: ' l2Grad', many: true, hold: true, l2: false });
  for (let r = 0; r < rounds; r++)
    for (const threads of [1, 2])
      for (const form of forms) {
        a.adamMany = form.many ? adamMany : undefined;
        a.poolHold = form.hold ? poolHold : undefined;
        l2Fused = form.l2;
        a.setThreads(threads);
        for (let i = 0; i < 10; i++) await stepper.step(rowLists[step % N_BATCHES], step++);
        stepper.profile = new StepProfile();
        calls.length = 0;
        a.poolTrace(true);
        const spans: { t0: number; t1: number }[] = [];
        for (let i = 0; i < steps; i++) {
          const t0 = nowUs();
          await stepper.step(rowLists[step % N_BATCHES], step++);
          spans.push({ t0, t1: nowUs() });
          stepper.profile.steps++;
        }
        const tr = a.poolTrace(false);
        (out[`${threads}t${form.name}`] ??= []).push({
          ...summarise(spans, calls, tr, steps),
          ...stepper.profile.perStep(),
        });
      }
  a.adamMany = adamMany;
  a.poolHold = poolHold;
  l2Fused = true;
  a.setThreads(1);
  model.dispose();
  // Per thread count, the median over rounds of each figure.
  const table = Object.fromEntries(
    Object.entries(out).map(([key, rows]) => [
      key,
      Object.fromEntries(
        Object.keys(rows[0]).map((k) => [k, Number(median(rows.map((row) => row[k] ?? 0)).toFixed(2))]),
      ),
    ]),
  );
  // Each round's step µs too: on a shared machine one round can differ from the others by far more than
  // the medians above do between forms.
  const roundSteps = Object.fromEntries(
    Object.entries(out).map(([key, rows]) => [key, rows.map((row) => Math.round(row.step))]),
  );
  return {
    wholeStep: true,
    batch: B,
    steps,
    rounds,
    loadavg: os.loadavg().map((x) => +x.toFixed(2)),
    table,
    roundSteps,
  };
}

/** Per-step figures of one run: µs unless named otherwise. */
function summarise(
  spans: { t0: number; t1: number }[],
  calls: { name: string; t0: number; t1: number }[],
  tr: PoolTrace,
  steps: number,
): Record<string, number> {
  const o: Record<string, number> = {};
  const add = (k: string, v: number) => (o[k] = (o[k] ?? 0) + v / steps);
  const stepUs = spans.reduce((s, x) => s + x.t1 - x.t0, 0);
  add('step', stepUs);
  const n = tr.start.length;
  let inRegions = 0;
  for (let i = 0; i < n; i++) inRegions += tr.end[i] - tr.start[i];
  add('inRegions', inRegions);
  add('regions', n);
  add('inlineRuns', tr.inline);
  let inKernels = 0;
  for (const c of calls) {
    if (c.name === 'prewake') continue;
    inKernels += c.t1 - c.t0;
    add(`k.${c.name}.us`, c.t1 - c.t0);
    add(`k.${c.name}.calls`, 1);
  }
  // Regions by the kernel call they ran in.
  let ci = 0;
  const sorted = calls.filter((c) => c.name !== 'prewake').sort((p, q) => p.t0 - q.t0);
  let late = 0;
  let asleep = 0;
  let noWorker = 0;
  let joinWait = 0;
  let joins = 0;
  for (let i = 0; i < n; i++) {
    while (ci < sorted.length && sorted[ci].t1 < tr.start[i]) ci++;
    const name = ci < sorted.length && sorted[ci].t0 <= tr.start[i] ? sorted[ci].name : 'other';
    add(`k.${name}.regions`, 1);
    add(`k.${name}.regionUs`, tr.end[i] - tr.start[i]);
    if (tr.sleepers[i] > 0) {
      asleep++;
      add(`k.${name}.workerAsleep`, 1);
    }
    if (tr.workerChunks[i] === 0) noWorker++;
    add(`k.${name}.workerChunks`, tr.workerChunks[i]);
    add(`k.${name}.chunks`, tr.chunks[i]);
    if (tr.joined[i] >= 0) {
      const w = tr.joined[i] - tr.start[i];
      add(`k.${name}.joinUs`, w);
      joinWait += w;
      joins++;
      if (w > 20) late++;
    }
  }
  add('inKernelsOutsideRegions', inKernels - inRegions);
  add('outsideKernels', stepUs - inKernels);
  add('regionsWorkerAsleep', asleep);
  add('regionsNoWorkerChunk', noWorker);
  add('regionsWorkerJoinedAfter20us', late);
  o.meanWorkerJoinUs = joins ? joinWait / joins : -1;
  // Gaps between consecutive regions of one step (the serial stretches a worker polls or sleeps through).
  let gaps = 0;
  let longGaps = 0;
  for (let i = 1; i < n; i++) {
    const gap = tr.start[i] - tr.end[i - 1];
    const sameStep = spans.some((s) => s.t0 <= tr.end[i - 1] && tr.start[i] <= s.t1);
    if (!sameStep) continue;
    gaps += gap;
    if (gap > 50) longGaps++;
  }
  add('gapsBetweenRegions', gaps);
  add('gapsOver50us', longGaps);
  return o;
}
