/**
 * Our DCNv2 CRM against PyTorch on the same machine, in the same run. Both sides use the peer script's
 * shape and protocol (../shared/peer/dcnv2_torch.py): 8 categorical fields (vocabularies 6040, 3706, 2, 7,
 * 21, 3439, 18, 100) in one embedding table, dim 16, 3 full-rank cross layers on the 128-wide input,
 * MLP 256-128-1, Adam 1e-3, batch 1024, 8 synthetic batches reused round-robin, 5 warm-up steps, then
 * `steps` timed training steps and 3×`steps` timed inference batches.
 *
 * Ours runs the trainer's own code on a synthetic split: the stepper trainCrm uses (LocalStepper or, with
 * --threads 2, ParallelStepper: batch assembly, forward, backward, lazy Adam) and, for inference,
 * CrmNet.forward + sigmoid + read-back on prepared batches (the peer also feeds prepared index tensors).
 * The default DCNv2 config is used as is (l2 on embeddings 1e-6, which the peer lacks).
 *
 * Rounds alternate the two sides (the first side swaps each round) in fresh processes, and the JSON
 * carries each round's figures, the load average before each run and the median ratios ours/torch.
 *
 * Usage: npx tsx bench/crm-vs-torch.ts [--rounds 3] [--steps 60] [--torch-threads 1] [--threads 1|2]
 *                                      [--blas-threads 1] [--python /usr/bin/python3] [--peer PATH]
 * --torch-threads is the peer's torch.set_num_threads. Debian's PyTorch runs its matrix products in
 * OpenBLAS, whose own thread pool ignores that setting (it defaults to one thread per core);
 * --blas-threads sets OPENBLAS_NUM_THREADS for the peer and CORELLA_NATIVE_THREADS for our addon, so
 * both sides get the same number of BLAS threads (default 1; `env` keeps whatever the environment says).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
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
const blasArg = arg('blas-threads') ?? '1';
if (blasArg !== 'env' && !/^[1-9][0-9]?$/.test(blasArg)) {
  console.error(`--blas-threads must be 1..99 or env, got ${JSON.stringify(blasArg)}`);
  process.exit(2);
}
/** The environment of a child with the chosen BLAS thread count. */
function childEnv(variable: string): NodeJS.ProcessEnv {
  return blasArg === 'env' ? process.env : { ...process.env, [variable]: blasArg };
}
const threads = intArg('threads', 1, 1, 2) as 1 | 2;

interface SideFigures {
  trainSamplesPerSec: number;
  inferSamplesPerSec: number;
}

interface OursFigures extends SideFigures {
  backend: string;
  accelerator?: string;
  nativeReason?: string;
  blasThreads?: number;
  threads: number;
  trainSamplesPerCpuSec: number;
  inferSamplesPerCpuSec: number;
  finalLoss: number;
}

/** One measurement of our side, in this process (the parent runs it as a child per round). */
async function measureOurs(): Promise<OursFigures> {
  const tf = await import('@tensorflow/tfjs-core');
  const { initTf } = await import('../ml/tf/index.js');
  const { loadNative } = await import('../ml/tf/native.js');
  const { CrmNet, defaultCrmConfig, disposeCrmBatch } = await import('../ml/crm/index.js');
  const { Adam } = await import('../ml/crm/adam.js');
  const { LocalStepper, ParallelStepper } = await import('../ml/crm/parallel.js');

  const init = await initTf('wasm', () => undefined);
  const featureMap = {
    id: 'bench-crm-vs-torch',
    categorical: VOCABS.map((v, i) => ({ name: `f${i}`, kind: 'categorical' as const, vocabSize: v })),
    sequences: [],
    dense: [],
    vocabularies: {},
  };
  // Uniform ids and coin-flip labels, as the peer draws them.
  let s = 42;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
  const n = BATCH * N_BATCHES;
  const split = {
    name: 'train' as const,
    size: n,
    labels: Float32Array.from({ length: n }, () => (rnd() < 0.5 ? 1 : 0)),
    sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
    timestamps: new Float64Array(n),
    userRows: new Int32Array(n),
    categorical: Int32Array.from({ length: n * VOCABS.length }, (_, i) =>
      Math.floor(rnd() * VOCABS[i % VOCABS.length]),
    ),
    sequences: [],
    dense: new Float32Array(0),
    targetItemRows: new Int32Array(n),
    historyItemRows: new Int32Array(0),
    historyRatings: new Float32Array(0),
    historyLen: 0,
  };
  const config = defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] });
  const model = new CrmNet(config, featureMap);
  const adam = new Adam({ lr: 1e-3 });
  const stepper =
    threads === 2
      ? await ParallelStepper.start(model, adam, split, featureMap, init.backend, BATCH)
      : new LocalStepper(model, adam, split);
  const rowsOf = (k: number) => Int32Array.from({ length: BATCH }, (_, i) => (k % N_BATCHES) * BATCH + i);

  let loss = NaN;
  for (let i = 0; i < WARMUP; i++) loss = await stepper.step(rowsOf(i), i);
  let t0 = performance.now();
  let c0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) loss = await stepper.step(rowsOf(i), WARMUP + i);
  const trainSec = (performance.now() - t0) / 1000;
  let c = process.cpuUsage(c0);
  const trainCpu = (c.user + c.system) / 1e6;
  await stepper.close();

  const batches = Array.from({ length: N_BATCHES }, (_, k) => model.makeBatch(split, rowsOf(k)));
  const infer = (k: number) => {
    const p = tf.tidy(() => tf.sigmoid(model.forward(batches[k % N_BATCHES], { training: false }).logits));
    p.dataSync();
    p.dispose();
  };
  for (let i = 0; i < WARMUP; i++) infer(i);
  t0 = performance.now();
  c0 = process.cpuUsage();
  for (let i = 0; i < steps * 3; i++) infer(i);
  const inferSec = (performance.now() - t0) / 1000;
  c = process.cpuUsage(c0);
  const inferCpu = (c.user + c.system) / 1e6;
  batches.forEach(disposeCrmBatch);
  model.dispose();

  const native = loadNative();
  return {
    backend: init.backend,
    accelerator: init.accelerator,
    nativeReason: init.nativeReason,
    blasThreads: native.addon?.threads(),
    threads,
    trainSamplesPerSec: Math.round((steps * BATCH) / trainSec),
    inferSamplesPerSec: Math.round((steps * 3 * BATCH) / inferSec),
    trainSamplesPerCpuSec: Math.round((steps * BATCH) / trainCpu),
    inferSamplesPerCpuSec: Math.round((steps * 3 * BATCH) / inferCpu),
    finalLoss: Number(loss.toFixed(4)),
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

function runOurs(): OursFigures {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', self, '--ours', '--steps', String(steps), '--threads', String(threads)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: childEnv('CORELLA_NATIVE_THREADS') },
  );
  if (r.status !== 0) throw new Error(`our side failed (exit ${r.status}):\n${r.stderr}`);
  return lastJsonLine(r.stdout, 'our side') as unknown as OursFigures;
}

function runTorch(python: string, peer: string, torchThreads: number): SideFigures & Record<string, unknown> {
  const r = spawnSync(python, [peer, String(steps), String(BATCH), String(torchThreads)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv('OPENBLAS_NUM_THREADS'),
  });
  if (r.status !== 0) throw new Error(`the PyTorch peer failed (exit ${r.status}):\n${r.stderr}`);
  const j = lastJsonLine(r.stdout, 'the PyTorch peer');
  return {
    ...j,
    trainSamplesPerSec: Number(j.train_samples_per_s),
    inferSamplesPerSec: Number(j.infer_samples_per_s),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const r3 = (x: number) => Number(x.toFixed(3));

async function compare(): Promise<void> {
  const rounds = intArg('rounds', 3, 1, 50);
  const torchThreads = intArg('torch-threads', 1, 1, 64);
  const python = arg('python') ?? '/usr/bin/python3';
  const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
  const peer = resolve(arg('peer') ?? join(root, '..', 'shared', 'peer', 'dcnv2_torch.py'));
  if (!existsSync(peer)) {
    console.error(`the PyTorch peer script ${peer} does not exist (pass --peer PATH)`);
    process.exit(3);
  }
  const probe = spawnSync(python, ['-c', 'import torch, sys; sys.stdout.write(torch.__version__)'], {
    encoding: 'utf8',
  });
  if (probe.error || probe.status !== 0) {
    console.error(
      `PyTorch is not available to ${python}: ${probe.error?.message ?? probe.stderr.trim().split('\n').at(-1)}\n` +
        `Install it (Debian: apt-get install -y python3-torch) or name another interpreter with --python.`,
    );
    process.exit(3);
  }

  const perRound: {
    round: Record<string, unknown>;
    ours: OursFigures;
    torch: SideFigures & Record<string, unknown>;
  }[] = [];
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? (['ours', 'torch'] as const) : (['torch', 'ours'] as const);
    const round: Record<string, unknown> = { round: i + 1, order };
    let ours: OursFigures | undefined;
    let torch: (SideFigures & Record<string, unknown>) | undefined;
    for (const side of order) {
      const before = { uptime: uptime(), loadavg: load() };
      if (side === 'ours') {
        ours = runOurs();
        round.ours = { ...ours, loadBefore: before };
      } else {
        torch = runTorch(python, peer, torchThreads);
        round.torch = { ...torch, loadBefore: before };
      }
    }
    round.ratio = {
      train: r3(ours!.trainSamplesPerSec / torch!.trainSamplesPerSec),
      infer: r3(ours!.inferSamplesPerSec / torch!.inferSamplesPerSec),
    };
    perRound.push({ round, ours: ours!, torch: torch! });
    console.error(
      `[round ${i + 1}/${rounds}] ours train ${ours!.trainSamplesPerSec}/s infer ${ours!.inferSamplesPerSec}/s; ` +
        `torch train ${torch!.trainSamplesPerSec}/s infer ${torch!.inferSamplesPerSec}/s; load ${load().join(' ')}`,
    );
  }
  const med = (f: (r: (typeof perRound)[number]) => number) => median(perRound.map(f));
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
      ours: { threads, accelerator: perRound[0].ours.accelerator, blasThreads: perRound[0].ours.blasThreads },
      torch: {
        python,
        peer,
        version: probe.stdout.trim(),
        threads: torchThreads,
        openblasThreads:
          blasArg === 'env' ? (process.env.OPENBLAS_NUM_THREADS ?? 'unset (one per core)') : blasArg,
      },
      blasThreads: blasArg,
      cpus: os.cpus().length,
      rounds: perRound.map((r) => r.round),
      median: {
        ours: {
          train: med((r) => r.ours.trainSamplesPerSec),
          infer: med((r) => r.ours.inferSamplesPerSec),
        },
        torch: {
          train: med((r) => r.torch.trainSamplesPerSec),
          infer: med((r) => r.torch.inferSamplesPerSec),
        },
        ratio: {
          train: r3(med((r) => r.ours.trainSamplesPerSec / r.torch.trainSamplesPerSec)),
          infer: r3(med((r) => r.ours.inferSamplesPerSec / r.torch.inferSamplesPerSec)),
        },
      },
      uptimeAtEnd: uptime(),
    }),
  );
}

if (process.argv.includes('--ours')) {
  console.log(JSON.stringify(await measureOurs()));
} else {
  await compare();
}
