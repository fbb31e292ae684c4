/**
 * Our DCNv2 CRM against PyTorch on the same machine, in the same run. Both sides use the peer script's
 * shape and protocol (../shared/peer/dcnv2_torch.py): 8 categorical fields (vocabularies 6040, 3706, 2, 7,
 * 21, 3439, 18, 100) in one embedding table, dim 16, 3 full-rank cross layers on the 128-wide input,
 * MLP 256-128-1, Adam 1e-3, batch 1024, 8 synthetic batches reused round-robin, 5 warm-up steps, then
 * `steps` timed training steps and 3×`steps` timed inference batches.
 *
 * Ours runs the trainer's own code on a synthetic split: the stepper trainCrm uses (LocalStepper or, with
 * --threads 2, ParallelStepper: batch assembly, forward, backward, lazy Adam) and, for inference,
 * CrmNet.inferInto on the split's row lists, the path predict and serving take (the fused native forward of
 * ml/crm/fused-infer.ts where the addon serves wasm; its gather from the split is inside the timing, as the
 * peer's embedding lookup is). In alternating segments of the same child it also times the tfjs path as it
 * was, CrmNet.forward + sigmoid + read-back on prepared batches, as `inferTfjs` (an A/B in the same
 * minutes; `inferOverTfjs` is the median segment ratio).
 * The default DCNv2 config is used as is (l2 on embeddings 1e-6, which the peer lacks).
 *
 * Rounds alternate the two sides (the first side swaps each round) in fresh processes, and the JSON
 * carries each round's figures, the load average before each run and the median ratios ours/torch.
 *
 * Usage: npx tsx bench/crm-vs-torch.ts [--rounds 3] [--steps 60] [--threads 1,2] [--python PATH]
 *                                      [--peer PATH] [--install-torch] [--profile] [--variants a,b]
 * --threads lists the thread settings measured in one run (default both, 1 and 2). At setting t the peer
 * gets torch.set_num_threads(t) with OMP/OPENBLAS_NUM_THREADS=t; we run one variant per way of using t
 * cores: at 1, the LocalStepper with one thread; at 2, `pool` (LocalStepper, the addon's intra-op pool on
 * 2 threads with one OpenBLAS thread: what crm.threads 2 trains with), `pool-tape` (the same on the tfjs
 * tape instead of the tape-free native step, ml/crm/native-step.ts), `pool+blas` (the same with
 * OpenBLAS on 2 threads too), `blas` (pool 1, OpenBLAS 2: the previous 2-thread option) and `parallel`
 * (ParallelStepper: a gradient worker takes half of each batch, 1 thread each). Each variant's ratio to
 * the peer at the same t is printed side by side; --variants pool,blas picks some of the 2-thread ones
 * (and local-tape adds the 1-thread step on the tape).
 * --profile adds, per variant, where a training step's time goes (batch assembly, tape forward+backward,
 * host reads, Adam/scatter, waiting for the worker), in wall and CPU milliseconds per step, and the tfjs
 * kernel counts of one step.
 *
 * PyTorch as users install it: PyPI's `torch==2.15.0` for Linux x86_64 is the CUDA build; it imports only
 * with its nvidia-* / cuda-toolkit wheels present (~4 GB; `pip install --no-deps torch` fails at import with
 * "libcublasLt.so.*[0-9] not found"), and then runs on the CPU with no GPU (torch.cuda.is_available()
 * False). `--install-torch` makes that venv at .corella/tools/torch-2.15.0-venv (python3 -m venv, then
 * pip install torch==2.15.0; 5.3 GB on disk, ~1 min from a near registry) unless it imports already;
 * never in CI. Without --python the bench uses that venv when it exists, else /usr/bin/python3.
 * The lead's idle-machine rerun: npx tsx bench/crm-vs-torch.ts --rounds 5 --threads 1,2 --profile
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const VOCABS = [6040, 3706, 2, 7, 21, 3439, 18, 100];
const BATCH = 1024;
const N_BATCHES = 8;
const WARMUP = 5;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function intArg(name: string, fallback: number, min: number, max: number): number {
  const raw = arg(name);
  const v = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(`--${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return v;
}

const steps = intArg('steps', 60, 5, 100_000);

// Checked up front, so that a misspelt form is not silently measured as the default one.
const stackWeights = process.env.CORELLA_STACK_WEIGHTS;
if (stackWeights !== undefined && stackWeights !== 'blocks' && stackWeights !== 'whole') {
  console.error(`CORELLA_STACK_WEIGHTS must be blocks or whole, got ${JSON.stringify(stackWeights)}`);
  process.exit(2);
}

// CORELLA_POOL_WAIT (native/corella_native.c): region (the default) or chunk, where a pool worker's 50 µs
// poll starts counting; the addon reads it once, so an A/B runs two processes.
const poolWait = process.env.CORELLA_POOL_WAIT;
if (poolWait !== undefined && poolWait !== 'region' && poolWait !== 'chunk') {
  console.error(`CORELLA_POOL_WAIT must be region or chunk, got ${JSON.stringify(poolWait)}`);
  process.exit(2);
}

// CORELLA_POOL_HOLD (native/corella_native.c): step (the default: a training step keeps the pool's workers
// polling between its regions) or off; read once by the addon, so an A/B runs two processes.
const poolHold = process.env.CORELLA_POOL_HOLD;
if (poolHold !== undefined && poolHold !== 'step' && poolHold !== 'off') {
  console.error(`CORELLA_POOL_HOLD must be step or off, got ${JSON.stringify(poolHold)}`);
  process.exit(2);
}

/** One way of using t cores on our side. */
interface Variant {
  name: string;
  threads: 1 | 2;
  /** ParallelStepper (a gradient worker takes half of each batch) rather than LocalStepper. */
  parallel: boolean;
  /** LocalStepper on the tfjs tape even where its tape-free native step applies (ml/crm/native-step.ts). */
  tape?: boolean;
  /** Threads of the addon's intra-op pool (CORELLA_NATIVE_THREADS), shared by the process's JS threads. */
  poolThreads: number;
  /** OpenBLAS's own threads (CORELLA_BLAS_THREADS). */
  blasThreads: number;
}

const TWO_THREAD_VARIANTS: Variant[] = [
  { name: 'pool', threads: 2, parallel: false, poolThreads: 2, blasThreads: 1 },
  { name: 'pool-tape', threads: 2, parallel: false, poolThreads: 2, blasThreads: 1, tape: true },
  { name: 'pool+blas', threads: 2, parallel: false, poolThreads: 2, blasThreads: 2 },
  { name: 'blas', threads: 2, parallel: false, poolThreads: 1, blasThreads: 2 },
  { name: 'parallel', threads: 2, parallel: true, poolThreads: 1, blasThreads: 1 },
];

function variantsAt(t: number): Variant[] {
  const local: Variant = { name: 'local', threads: 1, parallel: false, poolThreads: 1, blasThreads: 1 };
  // --variants local-tape adds the 1-thread step on the tape beside local
  if (t === 1 && arg('variants')?.split(',').includes('local-tape'))
    return [local, { ...local, name: 'local-tape', tape: true }];
  if (t === 1) return [local];
  const wanted = arg('variants')?.split(',');
  const list = wanted ? TWO_THREAD_VARIANTS.filter((v) => wanted.includes(v.name)) : TWO_THREAD_VARIANTS;
  if (list.length === 0) {
    console.error(`--variants names none of ${TWO_THREAD_VARIANTS.map((v) => v.name).join(', ')}`);
    process.exit(2);
  }
  return list;
}

function threadSettings(): number[] {
  const raw = arg('threads') ?? '1,2';
  const list = raw.split(',').map((x) => Number(x.trim()));
  if (list.length === 0 || list.some((t) => t !== 1 && t !== 2)) {
    console.error(`--threads must be a comma list of 1 and 2, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return [...new Set(list)];
}

interface SideFigures {
  trainSamplesPerSec: number;
  inferSamplesPerSec: number;
}

interface OursFigures extends SideFigures {
  variant: string;
  backend: string;
  accelerator?: string;
  nativeReason?: string;
  poolThreads?: number;
  /** true when CORELLA_STACK_WEIGHTS=blocks summed the stacks' weight gradients from row blocks */
  stackWeightsFused?: boolean;
  blasThreads?: number;
  threads: number;
  /** The step ran without the tfjs tape (ml/crm/native-step.ts). */
  tapeFree?: boolean;
  trainSamplesPerCpuSec: number;
  inferSamplesPerCpuSec: number;
  /** The path inferSamplesPerSec measured: CrmNet.inferInto's ('fused' where the addon serves wasm). */
  inferPath: string;
  /** The tfjs forward on prepared batches (the path before the fused one), in alternating segments. */
  inferTfjsSamplesPerSec: number;
  inferTfjsSamplesPerCpuSec: number;
  /** Median over the segment pairs of (inferInto samples/s) / (tfjs forward samples/s). */
  inferOverTfjs: number;
  /** Process CPU ms per training step (both threads' when there are two). */
  trainCpuMsPerStep: number;
  finalLoss: number;
  /** --profile: wall ms per step of each phase, and the tfjs kernels of one step with their counts. */
  phasesMsPerStep?: Record<string, number>;
  kernelsPerStep?: Record<string, number>;
  /** --profile: wall ms per step inside each kind of tfjs kernel (tf.profile, mean of 5 steps). */
  kernelMsPerStep?: Record<string, number>;
}

/** One measurement of our side, in this process (the parent runs it as a child per round). */
async function measureOurs(): Promise<OursFigures> {
  const variant = arg('variant') ?? 'local';
  const parallel = variant === 'parallel';
  const threads = variant === 'local' || variant === 'local-tape' ? 1 : 2;
  const tape = variant.endsWith('-tape');
  const profiling = process.argv.includes('--profile');
  const tf = await import('@tensorflow/tfjs-core');
  const { initTf } = await import('../ml/tf/index.js');
  const { loadNative } = await import('../ml/tf/native.js');
  const { CrmNet, defaultCrmConfig, disposeCrmBatch } = await import('../ml/crm/index.js');
  const { Adam } = await import('../ml/crm/adam.js');
  const { LocalStepper, ParallelStepper } = await import('../ml/crm/parallel.js');
  const { StepProfile } = await import('../ml/crm/step-profile.js');

  const init = await initTf('wasm', () => undefined);
  // CORELLA_STACK_WEIGHTS=blocks: the stacks' weight gradients summed from row blocks inside the row
  // region (off by default, docs/crm-speed.md); =whole: their own region over the batch (the default).
  // An A/B in one build and the same minutes.
  const stackAddon = loadNative().addon as { stackWeightsFused?(on?: boolean): boolean } | undefined;
  if (stackWeights === 'blocks' || stackWeights === 'whole')
    stackAddon?.stackWeightsFused?.(stackWeights === 'blocks');
  // Uniform ids and coin-flip labels, as the peer draws them.
  const { uniformCategoricalSplit } = await import('../ml/data/uniform-categorical.js');
  const { featureMap, split } = uniformCategoricalSplit('bench-crm-vs-torch', VOCABS, BATCH * N_BATCHES);
  const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
  const model = new CrmNet(config, featureMap);
  const adam = new Adam({ lr: 1e-3 });
  const stepper = parallel
    ? await ParallelStepper.start(model, adam, split, featureMap, init.backend, BATCH)
    : new LocalStepper(model, adam, split, { tape });
  // The row lists made once, as the peer builds its batches once (and the trainer reuses one buffer):
  // Int32Array.from with a callback cost ~20-40 µs a step, inside the timing, on the main thread.
  const rowLists = Array.from({ length: N_BATCHES }, (_, k) =>
    Int32Array.from({ length: BATCH }, (_, i) => k * BATCH + i),
  );
  const rowsOf = (k: number) => rowLists[k % N_BATCHES];

  let loss = NaN;
  for (let i = 0; i < WARMUP; i++) loss = await stepper.step(rowsOf(i), i);
  // The kernels of one step (this thread's: the worker's half runs the same ones), outside the timing.
  let kernelsPerStep: Record<string, number> | undefined;
  let kernelMsPerStep: Record<string, number> | undefined;
  if (profiling) {
    const PROFILED = 5;
    kernelsPerStep = {};
    kernelMsPerStep = {};
    for (let i = 0; i < PROFILED; i++) {
      const info = await tf.profile(async () => {
        loss = await stepper.step(rowsOf(WARMUP + i), WARMUP + i);
      });
      for (const k of info.kernels) {
        if (i === 0) kernelsPerStep[k.name] = (kernelsPerStep[k.name] ?? 0) + 1;
        const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
        kernelMsPerStep[k.name] = (kernelMsPerStep[k.name] ?? 0) + ms / PROFILED;
      }
      if (i === 0) kernelsPerStep.total = info.kernels.length;
    }
    for (const k of Object.keys(kernelMsPerStep)) kernelMsPerStep[k] = Number(kernelMsPerStep[k].toFixed(3));
    stepper.profile = new StepProfile();
  }
  let t0 = performance.now();
  let c0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) loss = await stepper.step(rowsOf(i), WARMUP + 5 + i);
  const trainSec = (performance.now() - t0) / 1000;
  let c = process.cpuUsage(c0);
  const trainCpu = (c.user + c.system) / 1e6;
  const phasesMsPerStep = stepper.profile?.perStep();
  await stepper.close();

  // Inference: CrmNet.inferInto on the split's rows, the path predict and serving take (the fused native
  // forward where the addon serves wasm, ml/crm/fused-infer.ts), against the tfjs forward + sigmoid +
  // read-back on prepared batches (the old path, batch assembly outside the timing) in alternating segments
  // of the same process, so both see the same minutes of a shared machine.
  const batches = Array.from({ length: N_BATCHES }, (_, k) => model.makeBatch(split, rowsOf(k)));
  const inferRows = Array.from({ length: N_BATCHES }, (_, k) => rowsOf(k));
  const probs = new Float32Array(BATCH);
  let inferPath = 'tfjs';
  const inferNew = (k: number) => {
    inferPath = model.inferInto(split, inferRows[k % N_BATCHES], probs);
  };
  const inferOld = (k: number) => {
    const p = tf.tidy(() => tf.sigmoid(model.forward(batches[k % N_BATCHES], { training: false }).logits));
    p.dataSync();
    p.dispose();
  };
  for (let i = 0; i < WARMUP; i++) {
    inferNew(i);
    inferOld(i);
  }
  const SEGMENTS = 3;
  const perSegment = Math.max(1, Math.round((steps * 3) / SEGMENTS));
  const seg = { newSec: [] as number[], oldSec: [] as number[], newCpu: 0, oldCpu: 0 };
  for (let r = 0; r < SEGMENTS; r++) {
    // Alternate which path goes first, so neither always meets a load spike first.
    for (const which of r % 2 ? ['old', 'new'] : ['new', 'old']) {
      const f = which === 'new' ? inferNew : inferOld;
      t0 = performance.now();
      c0 = process.cpuUsage();
      for (let i = 0; i < perSegment; i++) f(r * perSegment + i);
      const sec = (performance.now() - t0) / 1000;
      c = process.cpuUsage(c0);
      (which === 'new' ? seg.newSec : seg.oldSec).push(sec);
      if (which === 'new') seg.newCpu += (c.user + c.system) / 1e6;
      else seg.oldCpu += (c.user + c.system) / 1e6;
    }
  }
  const inferBatchesRun = perSegment * SEGMENTS;
  const inferSec = seg.newSec.reduce((a, b) => a + b, 0);
  const inferOldSec = seg.oldSec.reduce((a, b) => a + b, 0);
  const inferCpu = seg.newCpu;
  const segRatios = seg.newSec.map((sec, i) => seg.oldSec[i] / sec).sort((a, b) => a - b);
  batches.forEach(disposeCrmBatch);
  model.dispose();

  const native = loadNative();
  return {
    variant,
    backend: init.backend,
    accelerator: init.accelerator,
    nativeReason: init.nativeReason,
    poolThreads: native.addon?.threads(),
    blasThreads: native.addon?.blasThreads(),
    threads,
    tapeFree: stepper instanceof LocalStepper && stepper.tapeFree,
    stackWeightsFused: stackAddon?.stackWeightsFused?.(),
    trainSamplesPerSec: Math.round((steps * BATCH) / trainSec),
    inferSamplesPerSec: Math.round((inferBatchesRun * BATCH) / inferSec),
    inferPath,
    inferTfjsSamplesPerSec: Math.round((inferBatchesRun * BATCH) / inferOldSec),
    inferOverTfjs: Number(segRatios[segRatios.length >> 1].toFixed(3)),
    trainSamplesPerCpuSec: Math.round((steps * BATCH) / trainCpu),
    inferSamplesPerCpuSec: Math.round((inferBatchesRun * BATCH) / inferCpu),
    inferTfjsSamplesPerCpuSec: Math.round((inferBatchesRun * BATCH) / seg.oldCpu),
    trainCpuMsPerStep: Number(((trainCpu * 1000) / steps).toFixed(2)),
    finalLoss: Number(loss.toFixed(4)),
    phasesMsPerStep,
    kernelsPerStep,
    kernelMsPerStep,
  };
}

function uptime(): string {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return `loadavg ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`;
  }
}

function load(): number[] {
  return os.loadavg().map((x) => Number(x.toFixed(2)));
}

function lastJsonLine(stdout: string, what: string): Record<string, unknown> {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${what} printed no JSON line; its output was:\n${stdout}`);
  return JSON.parse(line) as Record<string, unknown>;
}

function runOurs(v: Variant, profile: boolean): OursFigures {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      self,
      '--ours',
      '--steps',
      String(steps),
      '--variant',
      v.name,
      ...(profile ? ['--profile'] : []),
    ],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        CORELLA_NATIVE_THREADS: String(v.poolThreads),
        CORELLA_BLAS_THREADS: String(v.blasThreads),
      },
    },
  );
  if (r.status !== 0) throw new Error(`our side (${v.name}) failed (exit ${r.status}):\n${r.stderr}`);
  return lastJsonLine(r.stdout, 'our side') as unknown as OursFigures;
}

function runTorch(python: string, peer: string, threads: number): SideFigures & Record<string, unknown> {
  const r = spawnSync(python, [peer, String(steps), String(BATCH), String(threads)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    // PyPI's torch runs its products in oneDNN/MKL under OpenMP; Debian's in OpenBLAS: pin both pools.
    env: { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) },
  });
  if (r.status !== 0) throw new Error(`the PyTorch peer failed (exit ${r.status}):\n${r.stderr}`);
  const j = lastJsonLine(r.stdout, 'the PyTorch peer');
  return {
    ...j,
    trainSamplesPerSec: Number(j.train_samples_per_s),
    inferSamplesPerSec: Number(j.infer_samples_per_s),
  };
}

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const TORCH_VENV = join(ROOT, '.corella', 'tools', 'torch-2.15.0-venv');

function torchVersion(python: string): { version?: string; error?: string } {
  const probe = spawnSync(
    python,
    ['-c', 'import torch, sys; torch.randn(2) @ torch.randn(2); sys.stdout.write(torch.__version__)'],
    { encoding: 'utf8' },
  );
  if (probe.error || probe.status !== 0)
    return { error: probe.error?.message ?? probe.stderr.trim().split('\n').at(-1) };
  return { version: probe.stdout.trim() };
}

/** PyPI's torch 2.15.0 into .corella/tools (see the header for why the full, CUDA-wheel install). */
function installTorch(): void {
  if (process.env.CI) {
    console.error('--install-torch is never run in CI (a multi-GB download)');
    process.exit(2);
  }
  const python = join(TORCH_VENV, 'bin', 'python');
  if (existsSync(python) && torchVersion(python).version === '2.15.0') return;
  const run = (cmd: string, args: string[]) => {
    console.error(`[install-torch] ${cmd} ${args.join(' ')}`);
    const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) {
      console.error(`[install-torch] ${cmd} failed (exit ${r.status})`);
      process.exit(3);
    }
  };
  mkdirSync(dirname(TORCH_VENV), { recursive: true });
  run('python3', ['-m', 'venv', TORCH_VENV]);
  run(join(TORCH_VENV, 'bin', 'pip'), ['install', '--disable-pip-version-check', 'torch==2.15.0']);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const r3 = (x: number) => Number(x.toFixed(3));

async function compare(): Promise<void> {
  const rounds = intArg('rounds', 3, 1, 50);
  const settings = threadSettings();
  const profile = process.argv.includes('--profile');
  if (process.argv.includes('--install-torch')) installTorch();
  const python =
    arg('python') ??
    (existsSync(join(TORCH_VENV, 'bin', 'python')) ? join(TORCH_VENV, 'bin', 'python') : '/usr/bin/python3');
  const peer = resolve(arg('peer') ?? join(ROOT, '..', 'shared', 'peer', 'dcnv2_torch.py'));
  if (!existsSync(peer)) {
    console.error(`the PyTorch peer script ${peer} does not exist (pass --peer PATH)`);
    process.exit(3);
  }
  const probe = torchVersion(python);
  if (!probe.version) {
    console.error(
      `PyTorch is not available to ${python}: ${probe.error}\n` +
        'Install PyPI torch 2.15.0 with --install-torch, or name another interpreter with --python.',
    );
    process.exit(3);
  }

  type Side = { side: string; threads: number; figures: SideFigures & Record<string, unknown> };
  const perRound: Side[][] = [];
  for (let i = 0; i < rounds; i++) {
    // One job per (thread setting, side); the order alternates round by round so neither side always
    // runs first (or last) in a load spike.
    const jobs: { threads: number; variant?: Variant }[] = [];
    for (const t of settings) {
      jobs.push({ threads: t });
      for (const v of variantsAt(t)) jobs.push({ threads: t, variant: v });
    }
    if (i % 2 === 1) jobs.reverse();
    const results: Side[] = [];
    for (const job of jobs) {
      const loadBefore = load();
      const figures = job.variant ? runOurs(job.variant, profile) : runTorch(python, peer, job.threads);
      results.push({
        side: job.variant ? `ours.${job.variant.name}` : 'torch',
        threads: job.threads,
        figures: { ...figures, loadBefore },
      });
    }
    perRound.push(results);
    console.error(
      `[round ${i + 1}/${rounds}] ` +
        results
          .map(
            (r) =>
              `${r.side}@${r.threads} train ${r.figures.trainSamplesPerSec}/s infer ${r.figures.inferSamplesPerSec}/s` +
              (r.side === 'torch' ? '' : ` (tfjs forward ${String(r.figures.inferTfjsSamplesPerSec)}/s)`),
          )
          .join('; ') +
        `; load ${load().join(' ')}`,
    );
  }

  // Side by side: per thread setting, torch and each of our variants, medians and median ratios.
  const table = settings.map((t) => {
    const of = (round: Side[], side: string) =>
      round.find((r) => r.threads === t && r.side === side)!.figures;
    const torchTrain = median(perRound.map((r) => of(r, 'torch').trainSamplesPerSec));
    const torchInfer = median(perRound.map((r) => of(r, 'torch').inferSamplesPerSec));
    const ours = Object.fromEntries(
      variantsAt(t).map((v) => {
        const side = `ours.${v.name}`;
        const figs = perRound.map((r) => of(r, side) as unknown as OursFigures);
        return [
          v.name,
          {
            train: median(figs.map((f) => f.trainSamplesPerSec)),
            infer: median(figs.map((f) => f.inferSamplesPerSec)),
            inferPath: figs[0].inferPath,
            inferTfjs: median(figs.map((f) => f.inferTfjsSamplesPerSec)),
            inferOverTfjs: median(figs.map((f) => f.inferOverTfjs)),
            trainCpuMsPerStep: median(figs.map((f) => f.trainCpuMsPerStep)),
            ratio: {
              train: r3(
                median(
                  perRound.map((r) => of(r, side).trainSamplesPerSec / of(r, 'torch').trainSamplesPerSec),
                ),
              ),
              infer: r3(
                median(
                  perRound.map((r) => of(r, side).inferSamplesPerSec / of(r, 'torch').inferSamplesPerSec),
                ),
              ),
              inferTfjs: r3(
                median(
                  perRound.map(
                    (r) =>
                      (of(r, side) as unknown as OursFigures).inferTfjsSamplesPerSec /
                      of(r, 'torch').inferSamplesPerSec,
                  ),
                ),
              ),
            },
            ...(profile
              ? {
                  phasesMsPerStep: medianRecord(figs.map((f) => f.phasesMsPerStep ?? {})),
                  kernelsPerStep: figs[0].kernelsPerStep,
                  kernelMsPerStep: medianRecord(figs.map((f) => f.kernelMsPerStep ?? {})),
                }
              : {}),
          },
        ];
      }),
    );
    return { threads: t, torch: { train: torchTrain, infer: torchInfer }, ours };
  });
  // Our own scaling: the best 2-thread variant's training throughput over the 1-thread one's.
  const one = table.find((r) => r.threads === 1);
  const two = table.find((r) => r.threads === 2);
  const scaling =
    one && two
      ? Object.fromEntries(Object.entries(two.ours).map(([k, v]) => [k, r3(v.train / one.ours.local.train)]))
      : undefined;
  console.log(
    JSON.stringify({
      shape: {
        fields: VOCABS.length,
        vocabularies: VOCABS,
        embeddingDim: 16,
        crossLayers: 3,
        mlp: [256, 128],
        batch: BATCH,
        steps,
        inferBatches: steps * 3,
      },
      torch: { python, peer, version: probe.version },
      cpus: os.cpus().length,
      table,
      oursTrainScaling2over1: scaling,
      rounds: perRound,
      uptimeAtEnd: uptime(),
    }),
  );
}

function medianRecord(rs: Record<string, number>[]): Record<string, number> {
  const keys = [...new Set(rs.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(keys.map((k) => [k, r3(median(rs.map((r) => r[k] ?? 0)))]));
}

if (process.argv.includes('--ours')) {
  console.log(JSON.stringify(await measureOurs()));
} else {
  await compare();
}
