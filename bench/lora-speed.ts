/**
 * What the LoRA branch's tfjs passes cost on SmolLM2-135M with the pipeline's prompts (issue 19, "Speed"):
 * the one-time frozen pass below the top k blocks and a LoRA training step of the top k blocks, in CPU
 * seconds (user + system of the whole process, worker threads included) and wall seconds, with the load
 * average beside each figure (the machine is shared: wall time under load says more about the load).
 *
 *   npx tsx bench/lora-speed.ts [--model PATH.gguf (default: the model `corella up` takes)]
 *     [--data ../shared/datasets/ml-1m-u2999] [--prompts 64] [--block 8] [--k 2,4] [--train-samples 8]
 *     [--steps 3] [--threads 2] [--modes per-prompt,batched,batched-host] [--parallel 1]
 *     [--train-threads 1,2] [--rounds 2] [--frozen 1] [--profile 0] [--stage2 0] [--stage2-gamma 0.1]
 *     [--align-dim 32] [--eval 0]
 *
 * Frozen-pass modes: `per-prompt` is FrozenPrefixCache.compute prompt by prompt with the previous prompt's
 * prefix reused (the pass before batching), `batched` one tfjs pass per prompt-trie group (the default of
 * warm() and the workers), `batched-host` the same groups on host arrays with the native sgemm
 * (host-frozen.ts; needs the addon). `--parallel 1` also times warmFrozenParallel on `--threads` workers for per-prompt and
 * batched (there wall time includes each worker loading and dequantizing its model).
 *
 * Training: `--train-threads 1,2` times LoraTrainer steps at each thread count (the data-parallel step,
 * lora-parallel.ts), alternating the counts `--rounds` times so that each pair is measured in the same
 * minutes of a shared machine; worker start-up is timed apart (`startSeconds`). `--profile 1` adds one
 * profiled one-thread step per k, its kernel time by op kind (tf.profile) and the frozen-output reads.
 * `--frozen 0` skips the frozen-pass timings.
 *
 * Evaluation: `--eval 1` also times the evaluation pass over all `--prompts` prompts (LoraTrainer.evalLogOdds,
 * groups of prompts claimed by every thread) at each `--train-threads` count, beside the one-chain pass on one
 * thread that it replaced, with a check that every count gives the same bits.
 *
 * Stage 2: `--stage2 1` also times the joint stage-2 step (jointEpoch: the pipeline's DCNv2 CRM, untrained,
 * as config/ml-1m-cpu.json; the LoRA branch on the top k blocks; α = β = 1, γ = `--stage2-gamma` with the
 * default pairs and projections of width `--align-dim`), one step of `--train-samples` rows per epoch, at
 * each `--train-threads` count, alternated `--rounds` times like the stage-3 step. With threads > 1, or a
 * batch above the one-thread tape budget (lora-train.ts tapeBytes), the step is the split one (joint-epochs.ts
 * splitJointStep: the CRM's tape here, the LoRA's samples one tape each, on every thread).
 * CPU seconds are the process's, worker threads included.
 *
 * Prints JSON.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tfc from '@tensorflow/tfjs-core';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { samplePool } from '../ml/corella/sampling.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import { warmFrozenParallel } from '../ml/llm/tf/frozen-parallel.js';
import { FrozenPrefixCache } from '../ml/llm/tf/frozen-prefix.js';
import { LlamaTf } from '../ml/llm/tf/llama-forward.js';
import { LoraAdapter, type LoraHostWeights } from '../ml/llm/tf/lora.js';
import { chainLogOdds } from '../ml/llm/tf/lora-eval.js';
import { modelBlocks } from '../ml/llm/tf/lora-loss.js';
import { LoraTrainer } from '../ml/llm/tf/lora-train.js';
import { LoraBranch } from '../ml/llm/tf/lora-branch.js';
import { AlignmentProjections, defaultPairs } from '../ml/corella/alignment.js';
import { resolveJointConfig } from '../ml/corella/joint-config.js';
import { jointEpoch, stage2Step } from '../ml/corella/joint-epochs.js';
import { createCrm, defaultCrmConfig } from '../ml/crm/index.js';
import { groupPrompts } from '../ml/llm/tf/prompt-trie.js';
import { initTf } from '../ml/tf/backend.js';
import type { EncodedSplit, FeatureMap } from '../ml/data/types.js';
import { openPaperPrompts } from './paper-prompts.js';
import { defaultBenchModel } from './default-model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const modelPath = resolve(arg('model', defaultBenchModel()));
const data = arg('data', '../shared/datasets/ml-1m-u2999');
const nPrompts = Number(arg('prompts', '64'));
const block = Number(arg('block', '8'));
const ks = arg('k', '2,4').split(',').map(Number);
const trainSamples = Number(arg('train-samples', '8'));
const steps = Number(arg('steps', '3'));
const threads = Number(arg('threads', '2'));
const modes = arg('modes', 'per-prompt,batched,batched-host').split(',');
const parallel = arg('parallel', '1') === '1';
const trainThreads = arg('train-threads', '1,2').split(',').map(Number);
const rounds = Number(arg('rounds', '2'));
const timeFrozen = arg('frozen', '1') === '1';
const profile = arg('profile', '0') === '1';
const timeStage2 = arg('stage2', '0') === '1';
const stage2Gamma = Number(arg('stage2-gamma', '0.1'));
const alignDim = Number(arg('align-dim', '32'));
const timeEval = arg('eval', '0') === '1';
const log = (m: string): void => void process.stderr.write(`[bench/lora-speed] ${m}\n`);

interface Timed {
  cpuS: number;
  wallS: number;
  load: [number, number];
}

async function timed(fn: () => unknown): Promise<Timed> {
  const l0 = loadavg()[0];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const c = process.cpuUsage(c0);
  return {
    cpuS: (c.user + c.system) / 1e6,
    wallS: (performance.now() - t0) / 1000,
    load: [l0, loadavg()[0]],
  };
}

function per(t: Timed, n: number) {
  return { cpuSPer: t.cpuS / n, wallSPer: t.wallS / n, load: t.load };
}

async function main(): Promise<void> {
  const tf = await initTf(undefined, log);
  const storeDir = mkdtempSync(join(tmpdir(), 'corella-bench-lora-speed-'));
  try {
    const store = new FileArtifactStore(storeDir);
    const manifest = await ingestDataset({ source: 'movielens-1m', dir: resolve(data) }, store);
    const ds = await loadDataset(store, manifest);
    const test = ds.splits.test;
    const { llm, builder } = await openPaperPrompts({
      model: modelPath,
      threads: 1,
      contextSize: 1024,
      maxHistory: 6,
      block,
    });
    // The pipeline's order: user blocks, by time (history blocks share prefixes).
    const rows = Array.from(samplePool(test, nPrompts, 11, block)).sort(
      (a, b) =>
        test.userRows[a] - test.userRows[b] ||
        test.timestamps[a] - test.timestamps[b] ||
        test.sampleIds[a] - test.sampleIds[b],
    );
    const prompts = rows.map((r) => Array.from(builder.buildForRow(test, ds.items, r).tokens));
    const labels = rows.map((r) => test.labels[r]);
    const answer: [number, number] = [llm.yesToken, llm.noToken];
    await llm.dispose();
    const model = await LlamaTf.load(modelPath);
    const tokens = prompts.reduce((a, p) => a + p.length, 0);
    log(`${prompts.length} prompts, ${(tokens / prompts.length).toFixed(0)} tokens on average`);

    const frozen: Record<string, unknown>[] = [];
    for (const k of timeFrozen ? ks : []) {
      const first = model.hp.nLayer - k;
      // Warm-up (kernel setup, JIT) on two prompts, outside the timings.
      new FrozenPrefixCache(model, first, 0).computeBatch(prompts.slice(0, 2));
      let refOuts: Float32Array[] | undefined;
      for (const mode of modes) {
        const c = new FrozenPrefixCache(model, first, 0);
        let outs: Float32Array[] = [];
        const t = await timed(() => {
          if (mode === 'per-prompt') outs = prompts.map((p) => c.compute(p).input);
          else
            outs = groupPrompts(prompts, 768).flatMap((g) =>
              c
                .computeBatch(
                  g.map((i) => prompts[i]),
                  { host: mode === 'batched-host' },
                )
                .map((e) => e.input),
            );
        });
        // Largest deviation from the first mode's outputs (per-prompt by default), relative to the largest
        // |value| (the residual stream of SmolLM2 reaches 2e4 in a few dims).
        refOuts ??= outs;
        let maxAbs = 0;
        let scale = 0;
        prompts.forEach((_, i) => {
          for (let j = 0; j < refOuts![i].length; j++) {
            maxAbs = Math.max(maxAbs, Math.abs(outs[i][j] - refOuts![i][j]));
            scale = Math.max(scale, Math.abs(refOuts![i][j]));
          }
        });
        const row = {
          k,
          mode,
          threads: 1,
          prompts: prompts.length,
          evaluatedTokens: c.stats.evaluatedTokens,
          ...per(t, prompts.length),
          maxAbsDiffVsFirstMode: maxAbs,
          relDiff: maxAbs / scale,
        };
        log(JSON.stringify(row));
        frozen.push(row);
        c.dispose();
      }
      if (parallel) {
        for (const batchNodes of [0, 768]) {
          const c = new FrozenPrefixCache(model, first, 2 ** 31);
          let firstEntry = 0;
          const t0 = performance.now();
          const t = await timed(() =>
            warmFrozenParallel(c, prompts, {
              modelPath,
              threads,
              batchNodes,
              onProgress: (d) => {
                if (d === 1) firstEntry = (performance.now() - t0) / 1000;
              },
            }),
          );
          const row = {
            k,
            mode: batchNodes === 0 ? 'per-prompt' : 'batched',
            threads,
            prompts: prompts.length,
            ...per(t, prompts.length),
            // Worker start: tsx, tfjs and the model's dequantization, once per run.
            firstEntrySeconds: firstEntry,
          };
          log(JSON.stringify(row));
          frozen.push(row);
          c.dispose();
        }
      }
    }

    const training: Record<string, unknown>[] = [];
    const evaluation: Record<string, unknown>[] = [];
    const profiles: Record<string, unknown>[] = [];
    const batch = prompts.slice(0, trainSamples).map((t, i) => ({ tokens: t, label: labels[i] }));
    for (const k of ks) {
      const adapter = LoraAdapter.create(model.hp, { layers: k, rank: 8, alpha: 16 });
      const shared = new FrozenPrefixCache(model, model.hp.nLayer - k, 2 ** 30);
      await shared.warm(batch.map((s) => s.tokens));
      const start = adapter.toHostSync();
      const trainers = new Map<number, { trainer: LoraTrainer; startSeconds: number }>();
      for (const threads of trainThreads) {
        const t0 = performance.now();
        const trainer = new LoraTrainer(model, adapter, {
          answerTokens: answer,
          learningRate: 1e-3,
          frozen: shared,
          threads,
        });
        trainer.step(batch); // warm-up: worker start, kernel setup, Adam's slots
        trainers.set(threads, { trainer, startSeconds: (performance.now() - t0) / 1000 });
      }
      for (let round = 0; round < rounds; round++) {
        for (const threads of trainThreads) {
          const { trainer, startSeconds } = trainers.get(threads)!;
          // Every count trains from the same weights: the step's cost does not depend on them, but a
          // diverging LoRA would make the comparison less clean.
          adapter.load(start);
          const t = await timed(() => {
            for (let i = 0; i < steps; i++) trainer.step(batch);
          });
          const row = {
            k,
            rank: 8,
            targets: ['q', 'v'],
            threads,
            round,
            samples: batch.length,
            steps,
            ...per(t, steps * batch.length),
            startSeconds,
            // Samples computed so far by the trainer's thread and by each worker (claimed one by one).
            samplesByThread: [...trainer.samplesByThread],
          };
          log(JSON.stringify(row));
          training.push(row);
        }
      }
      if (timeEval) {
        await shared.warm(prompts);
        evaluation.push(...(await evalTimings(model, adapter, start, shared, answer, prompts, trainers, k)));
      }
      if (profile)
        profiles.push({ k, ...(await profileStep(trainers.get(trainThreads[0])!.trainer, batch)) });
      for (const { trainer } of trainers.values()) {
        await trainer.close();
        trainer.dispose();
      }
      shared.dispose();
      adapter.dispose();
    }
    const stage2 = timeStage2
      ? await stage2Timings({ model, test, rows, prompts, answer, featureMap: ds.featureMap })
      : [];
    model.dispose();
    console.log(
      JSON.stringify(
        {
          bench: 'lora-speed',
          model: modelPath,
          data,
          tfjs: tf,
          promptTokensMean: tokens / prompts.length,
          frozen,
          training,
          evaluation,
          stage2,
          profiles,
          note: 'cpuSPer: user+system CPU seconds of the process (worker threads included) per prompt or training sample; 2 cores shared with other jobs',
        },
        null,
        2,
      ),
    );
  } finally {
    rmSync(storeDir, { recursive: true, force: true });
  }
}

/**
 * The evaluation pass over every prompt (LoraTrainer.evalLogOdds: groups of EVAL_GROUP prompts, each
 * reusing shared prefixes, claimed by the trainer's threads) at each `--train-threads` count, beside the
 * pass it replaced (one chain over all prompts on this thread), alternated `--rounds` times, from the same
 * weights. `sameBits`: every thread count gave the log-odds of the first, bit for bit.
 */
async function evalTimings(
  model: LlamaTf,
  adapter: LoraAdapter,
  start: LoraHostWeights,
  shared: FrozenPrefixCache,
  answer: [number, number],
  prompts: number[][],
  trainers: Map<number, { trainer: LoraTrainer }>,
  k: number,
): Promise<Record<string, unknown>[]> {
  const answerRows = model.outputRows(answer);
  const blocks = modelBlocks(model, adapter.firstLayer, answerRows);
  const out: Record<string, unknown>[] = [];
  let reference: string | undefined;
  const hex = (z: Float32Array) => Buffer.from(z.buffer, z.byteOffset, z.byteLength).toString('hex');
  adapter.load(start);
  // Random B, as after training: with B = 0 every count scores the base model.
  adapter.pairs.forEach((p, i) =>
    tfc.tidy(() => p.b.assign(tfc.randomNormal(p.b.shape, 0, 0.02, 'float32', 7 + i))),
  );
  for (let round = 0; round < rounds; round++) {
    const chain = await timed(() =>
      chainLogOdds(blocks, adapter.layerLora(), prompts, (i) => shared.input(prompts[i])),
    );
    const row0 = {
      k,
      mode: 'one-chain',
      threads: 1,
      round,
      prompts: prompts.length,
      ...per(chain, prompts.length),
    };
    log(JSON.stringify(row0));
    out.push(row0);
    for (const threads of trainThreads) {
      const { trainer } = trainers.get(threads)!;
      let z: Float32Array = new Float32Array(0);
      const t = await timed(() => (z = trainer.evalLogOdds(prompts)));
      reference ??= hex(z);
      const row = {
        k,
        mode: 'groups',
        threads,
        round,
        prompts: prompts.length,
        ...per(t, prompts.length),
        sameBits: hex(z) === reference,
      };
      log(JSON.stringify(row));
      out.push(row);
    }
  }
  answerRows.dispose();
  return out;
}

/**
 * The joint stage-2 step at each `--train-threads` count (see the header): same CRM, same starting LoRA,
 * same rows; each count has its own branch (its threads), projections and optimisers.
 */
async function stage2Timings(a: {
  model: LlamaTf;
  test: EncodedSplit;
  rows: number[];
  prompts: number[][];
  answer: [number, number];
  featureMap: FeatureMap;
}): Promise<Record<string, unknown>[]> {
  const { model } = a;
  const n = trainSamples;
  const rows = Int32Array.from(a.rows.slice(0, n));
  const prompts = a.prompts.slice(0, n);
  const crm = createCrm(
    { ...defaultCrmConfig('dcnv2', { embeddingDim: 16, crossLayers: 3, mlp: [256, 128] }), seed: 42 },
    a.featureMap,
  );
  const cfg = resolveJointConfig({
    gamma: stage2Gamma,
    stage2: { samples: n, epochs: 1, batchSize: n },
    alignment: { sharedDim: alignDim },
  });
  const out: Record<string, unknown>[] = [];
  for (const k of ks) {
    const shared = new FrozenPrefixCache(model, model.hp.nLayer - k, 2 ** 30);
    await shared.warm(prompts);
    const start = LoraAdapter.create(model.hp, { layers: k, rank: 8, alpha: 16 });
    const weights = start.toHostSync();
    start.dispose();
    const runs = new Map<number, ReturnType<typeof open> & { startSeconds: number }>();
    const open = (threads: number) => {
      const adapter = LoraAdapter.create(model.hp, { layers: k, rank: 8, alpha: 16 });
      const branch = new LoraBranch<'stage2'>({
        model,
        adapter,
        answerTokens: a.answer,
        prompts: { stage2: prompts },
        frozen: shared,
        threads,
      });
      const pairs = defaultPairs(crm.activationShapes, branch.activationShapes);
      const proj = AlignmentProjections.create(
        { pairs, sharedDim: alignDim, seed: 2 },
        crm.activationShapes,
        branch.activationShapes,
      );
      return { branch, proj, pairs, step: stage2Step(cfg, crm, branch, proj, pairs.length) };
    };
    for (const threads of trainThreads) {
      const t0 = performance.now();
      const r = open(threads);
      r.branch.waitForWorkers();
      // Warm-up: kernel setup, Adam's slots.
      await jointEpoch({ cfg, crm, ...r, train: a.test, rows, epoch: 0 });
      runs.set(threads, { ...r, startSeconds: (performance.now() - t0) / 1000 });
    }
    for (let round = 0; round < rounds; round++) {
      for (const threads of trainThreads) {
        const r = runs.get(threads)!;
        r.branch.adapter.load(weights);
        let loss = NaN;
        const s0 = r.branch.threadSeconds;
        const t = await timed(async () => {
          for (let e = 0; e < steps; e++)
            loss = (await jointEpoch({ cfg, crm, ...r, train: a.test, rows, epoch: e })).total;
        });
        const row = {
          k,
          rank: 8,
          targets: ['q', 'v'],
          threads,
          round,
          samples: n,
          steps,
          gamma: cfg.gamma,
          pairs: r.pairs.map((p) => `${p.crm}↔${p.llm}`),
          ...per(t, steps * n),
          startSeconds: r.startSeconds,
          lastLoss: loss,
          samplesByThread: [...r.branch.samplesByThread],
          // Per step: this thread computing its share of the LLM samples, then waiting for the workers.
          ownSecondsPerStep: (r.branch.threadSeconds.own - s0.own) / steps,
          waitSecondsPerStep: (r.branch.threadSeconds.wait - s0.wait) / steps,
        };
        log(`stage2 ${JSON.stringify(row)}`);
        out.push(row);
      }
    }
    for (const r of runs.values()) {
      r.step.optCrm.dispose();
      r.step.optOther.dispose();
      r.proj.dispose();
      r.branch.dispose();
    }
    shared.dispose();
  }
  crm.dispose();
  return out;
}

/**
 * One profiled step: tfjs kernel time by op kind (what each kernel's shapes say it belongs to), the step's
 * wall time without the profiler, and the cost of reading the frozen outputs. The rest of the wall time is
 * tfjs's engine and tape (JS between the kernels).
 */
async function profileStep(trainer: LoraTrainer, batch: { tokens: number[]; label: number }[]) {
  const hp = trainer.model.hp;
  const rank = trainer.adapter.config.rank;
  const t0 = performance.now();
  trainer.step(batch);
  const stepMs = performance.now() - t0;
  const prof = await tfc.profile(() => void trainer.step(batch));
  const layout = new Set([
    'Transpose',
    'Reshape',
    'Slice',
    'Concat',
    'PadV2',
    'Identity',
    'Cast',
    'Pack',
    'Unpack',
  ]);
  const kind = (name: string, ins: number[][], out: number[]): string => {
    if (name === 'BatchMatMul' || name === '_FusedMatMul') {
      if (ins[0].length === 3) return 'matMul: attention (q·kᵀ, ·v)';
      if (ins.some((s) => s.includes(rank))) return 'matMul: LoRA low-rank';
      if (ins.some((s) => s[0] === hp.headDim && s[1] === hp.headDim)) return 'matMul: RoPE rotation';
      return 'matMul: projections (q, k, v, o, gate, up, down)';
    }
    if (layout.has(name)) return 'layout: transpose, reshape, slice, pad, identity, cast';
    if (name === 'Softmax' || (out.length === 3 && out[2] !== hp.headDim))
      return 'attention: scale, causal mask, softmax';
    if (out.includes(hp.nFf)) return 'SwiGLU (element-wise)';
    if (out.length === 3) return 'RoPE (element-wise)';
    if (out.length === 2 && (out[1] === 1 || out[1] === hp.nEmbd || out[1] === hp.nHeadKv * hp.headDim))
      return 'RMSNorm, residual adds, LoRA scale (element-wise)';
    return 'loss, Adam, scalars';
  };
  const by = new Map<string, { ms: number; kernels: number }>();
  let kernelMs = 0;
  for (const kk of prof.kernels) {
    const ms = typeof kk.kernelTimeMs === 'number' ? kk.kernelTimeMs : 0;
    kernelMs += ms;
    const key = kind(kk.name, kk.inputShapes as number[][], (kk.outputShapes[0] ?? []) as number[]);
    const e = by.get(key) ?? { ms: 0, kernels: 0 };
    e.ms += ms;
    e.kernels++;
    by.set(key, e);
  }
  const r0 = performance.now();
  for (const s of batch) trainer.frozen.input(s.tokens).dispose();
  const frozenReadMs = performance.now() - r0;
  return {
    samples: batch.length,
    stepMsUnprofiled: stepMs,
    profiledKernelMs: kernelMs,
    kernels: prof.kernels.length,
    frozenReadMs,
    byKind: [...by]
      .sort((a, b) => b[1].ms - a[1].ms)
      .map(([k, v]) => ({ kind: k, ms: v.ms, share: v.ms / kernelMs, kernels: v.kernels })),
    loadAverage: loadavg()[0],
  };
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
