/**
 * The TensorFlow.js llama forward pass (ml/llm/tf) on a real GGUF model against llama.cpp, and what LoRA
 * training on it costs. Not in CI (SmolLM2 is 100 MB and the run takes minutes).
 *
 *   npx tsx bench/lora-forward.ts [--model PATH.gguf (default: the model `corella up` takes)]
 *     [--data ../shared/datasets/ml-1m-u2999] [--samples 20] [--block 8] [--max-history 6]
 *     [--context 1024] [--k 2,4] [--rank 8] [--train-samples 8] [--steps 2] [--threads 1]
 *     [--learn-train 0] [--learn-eval 200] [--learn-epochs 3] [--learn-k 2] [--learn-lr 1e-3] [--learn-batch 8]
 *     [--learn-targets q,v]
 *
 * Prompts are the pipeline's (config/ml-1m-cpu.json: paper template, 6 history items, history blocks of 8,
 * test pool rows drawn in user blocks by samplePool, built by PromptBuilder.buildForRow).
 *
 * Prints JSON:
 * - equivalence: Yes/No log-odds and final hidden state of our forward vs llama.cpp as served (LlmScorer:
 *   F16 KV cache, quantized matmuls) and vs llama.cpp with an F32 KV cache (isolating the weight/activation
 *   quantization of the matmuls): max/mean |Δ|, Pearson correlation across prompts, hidden-state cosine;
 * - speed (seconds per sample, one thread): the one-time frozen pass below the top k blocks, with prefix
 *   reuse across a history block and from scratch, and a LoRA training step (forward + backward + Adam) of
 *   the top k blocks, for each k.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { readGgufFileInfo, type LlamaModel } from 'node-llama-cpp';
import { GgufFile } from '../ml/llm/tf/gguf-file.js';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Token } from 'node-llama-cpp';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { mixSeed, mulberry32, permutation } from '../ml/random.js';
import { samplePool } from '../ml/corella/sampling.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import { openPaperPrompts } from './paper-prompts.js';
import { LlmScorer } from '../ml/llm/scorer.js';
import { FrozenPrefixCache } from '../ml/llm/tf/frozen-prefix.js';
import { LlamaTf } from '../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../ml/llm/tf/lora.js';
import type { Projection } from '../ml/llm/tf/llama-weights.js';
import { LoraTrainer } from '../ml/llm/tf/lora-train.js';
import { initTf } from '../ml/tf/backend.js';
import { accuracy, auc, logLoss } from '../ml/metrics/classification.js';
import type { EncodedSplit } from '../ml/data/types.js';
import { defaultBenchModel } from './default-model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const modelPath = resolve(arg('model', defaultBenchModel()));
const data = arg('data', '../shared/datasets/ml-1m-u2999');
const samples = Number(arg('samples', '20'));
const block = Number(arg('block', '8'));
const maxHistory = Number(arg('max-history', '6'));
const contextSize = Number(arg('context', '1024'));
const ks = arg('k', '2,4').split(',').map(Number);
const rank = Number(arg('rank', '8'));
const trainSamples = Number(arg('train-samples', '8'));
const steps = Number(arg('steps', '2'));
const threads = Number(arg('threads', '1'));
// A first learning check (off by default): LoRA on --learn-train train rows, AUC on --learn-eval test rows.
const learnTrain = Number(arg('learn-train', '0'));
const learnEval = Number(arg('learn-eval', '200'));
const learnEpochs = Number(arg('learn-epochs', '3'));
const learnK = Number(arg('learn-k', '2'));
const learnLr = Number(arg('learn-lr', '1e-3'));
const learnBatch = Number(arg('learn-batch', '8'));
const learnTargets = arg('learn-targets', 'q,v').split(',') as Projection[];
const log = (m: string): void => void process.stderr.write(`[bench/lora-forward] ${m}\n`);

function seconds<T>(fn: () => T): { value: T; s: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, s: (performance.now() - t0) / 1000 };
}

function stats(a: number[], b: number[]) {
  const d = a.map((x, i) => Math.abs(x - b[i]));
  const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;
  const ma = mean(a);
  const mb = mean(b);
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) ** 2;
    sbb += (b[i] - mb) ** 2;
  }
  return { maxAbsDiff: Math.max(...d), meanAbsDiff: mean(d), pearson: sab / Math.sqrt(saa * sbb) };
}

function hiddenStats(ours: Float32Array[], ref: Float32Array[]) {
  let maxAbs = 0;
  let sumAbs = 0;
  let n = 0;
  const cos: number[] = [];
  const relL2: number[] = [];
  for (let i = 0; i < ours.length; i++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    let nd = 0;
    for (let j = 0; j < ref[i].length; j++) {
      const d = ours[i][j] - ref[i][j];
      maxAbs = Math.max(maxAbs, Math.abs(d));
      sumAbs += Math.abs(d);
      n++;
      dot += ours[i][j] * ref[i][j];
      na += ours[i][j] ** 2;
      nb += ref[i][j] ** 2;
      nd += d * d;
    }
    cos.push(dot / Math.sqrt(na * nb));
    relL2.push(Math.sqrt(nd / nb));
  }
  return {
    maxAbsDiff: maxAbs,
    meanAbsDiff: sumAbs / n,
    minCosine: Math.min(...cos),
    meanRelativeL2: relL2.reduce((s, x) => s + x, 0) / relL2.length,
  };
}

/**
 * A copy of the GGUF with every tensor dequantized to F32 by our reader: the metadata bytes verbatim, new
 * tensor infos (type F32, offsets recomputed) and the float32 data. llama.cpp running this file multiplies
 * exactly the weights our forward multiplies, so what remains between the two engines is the forward pass
 * itself, not the quantization.
 */
async function writeDequantizedCopy(src: string, dst: string): Promise<void> {
  const info = await readGgufFileInfo(src, { readTensorInfo: true, logWarnings: false });
  const g = await GgufFile.open(src);
  const alignment =
    typeof g.meta('general.alignment') === 'number' ? (g.meta('general.alignment') as number) : 32;
  const fin = await open(src, 'r');
  const head = Buffer.alloc(Number(info.metadataSize));
  await fin.read(head, 0, head.length, 0);
  await fin.close();
  const parts: Buffer[] = [head];
  let headerLen = head.length;
  let offset = 0;
  const names = [...g.tensors.keys()];
  for (const name of names) {
    const t = g.tensor(name);
    const nameBytes = Buffer.from(name, 'utf8');
    const b = Buffer.alloc(8 + nameBytes.length + 4 + 8 * t.dims.length + 4 + 8);
    let o = b.writeBigUInt64LE(BigInt(nameBytes.length), 0);
    o += nameBytes.copy(b, o);
    o = b.writeUInt32LE(t.dims.length, o);
    for (const d of t.dims) o = b.writeBigUInt64LE(BigInt(d), o);
    o = b.writeUInt32LE(0, o);
    b.writeBigUInt64LE(BigInt(offset), o);
    parts.push(b);
    headerLen += b.length;
    offset += Math.ceil((t.dims.reduce((x, y) => x * y, 1) * 4) / alignment) * alignment;
  }
  parts.push(Buffer.alloc((alignment - (headerLen % alignment)) % alignment));
  const out = await open(dst, 'w');
  try {
    await out.write(Buffer.concat(parts));
    for (const name of names) {
      const data = await g.readF32(name);
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      await out.write(
        Buffer.concat([bytes, Buffer.alloc((alignment - (bytes.length % alignment)) % alignment)]),
      );
    }
  } finally {
    await out.close();
  }
}

/** Yes/No log-odds and final hidden state from llama.cpp with an F32 KV cache (one pass per prompt). */
async function llamaCppF32Kv(
  model: LlamaModel,
  prompts: Token[][],
  yes: Token,
  no: Token,
): Promise<{ logOdds: number[]; hidden: Float32Array[] }> {
  const ctx = await model.createContext({
    contextSize,
    threads,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    _embeddings: true,
  } as Parameters<LlamaModel['createContext']>[0]);
  const logOdds: number[] = [];
  const hidden: Float32Array[] = [];
  try {
    const seq = ctx.getSequence();
    for (const p of prompts) {
      await seq.clearHistory();
      const res = await seq.controlledEvaluate([
        ...p.slice(0, -1),
        [
          p[p.length - 1],
          { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } },
        ],
      ]);
      const probs = res[res.length - 1]!.next.probabilities!;
      logOdds.push(Math.log(probs.get(yes)!) - Math.log(probs.get(no)!));
      // node-llama-cpp's private embedding read, as ml/llm/scorer.ts does (pinned 3.21.1).
      const inner = ctx as unknown as { _ctx: { getEmbedding(n: number): Float64Array | number[] } };
      hidden.push(Float32Array.from(inner._ctx.getEmbedding(p.length)));
    }
  } finally {
    await ctx.dispose();
  }
  return { logOdds, hidden };
}

async function main(): Promise<void> {
  const load0 = loadavg()[0];
  const tf = await initTf(undefined, log);
  const storeDir = mkdtempSync(join(tmpdir(), 'corella-bench-lora-'));
  try {
    const store = new FileArtifactStore(storeDir);
    log(`ingesting ${data}`);
    const manifest = await ingestDataset({ source: 'movielens-1m', dir: resolve(data) }, store);
    const ds = await loadDataset(store, manifest);
    const test = ds.splits.test;

    const { cfg, llm, builder } = await openPaperPrompts({
      model: modelPath,
      threads: threads,
      contextSize,
      maxHistory,
      block,
    });
    const poolSize = Math.max(samples, trainSamples * 2);
    const rows = Array.from(samplePool(test, poolSize, 11, block)).sort(
      (a, b) =>
        test.userRows[a] - test.userRows[b] ||
        test.timestamps[a] - test.timestamps[b] ||
        test.sampleIds[a] - test.sampleIds[b],
    );
    const prompts: Token[][] = rows.map((r) => builder.buildForRow(test, ds.items, r).tokens);
    const labels = rows.map((r) => test.labels[r]);
    const eqPrompts = prompts.slice(0, samples);
    const meanTokens = eqPrompts.reduce((a, p) => a + p.length, 0) / eqPrompts.length;
    log(`${prompts.length} prompts, ${meanTokens.toFixed(0)} tokens on average`);

    // llama.cpp as served.
    const scorer = await LlmScorer.create(llm, cfg);
    const served = await scorer.score(eqPrompts, { reusePrefix: false });
    await scorer.dispose();
    // llama.cpp with an F32 KV cache: what remains is the quantized matmuls.
    const f32kv = await llamaCppF32Kv(llm.model, eqPrompts, llm.yesToken, llm.noToken);
    // llama.cpp on our dequantized F32 copy, F32 KV cache: the same weights as ours.
    const f32Path = join(storeDir, 'dequantized-f32.gguf');
    await writeDequantizedCopy(modelPath, f32Path);
    const f32Model = await llm.llama.loadModel({ modelPath: f32Path, gpuLayers: 0 });
    const f32ref = await llamaCppF32Kv(f32Model, eqPrompts, llm.yesToken, llm.noToken);
    await f32Model.dispose();
    rmSync(f32Path, { force: true });

    const loaded = await (async () => {
      const t0 = performance.now();
      const m = await LlamaTf.load(modelPath);
      return { m, s: (performance.now() - t0) / 1000 };
    })();
    const model = loaded.m;
    log(`tfjs model loaded and dequantized in ${loaded.s.toFixed(1)} s`);
    const oursLogOdds: number[] = [];
    const oursHidden: Float32Array[] = [];
    const fwd = seconds(() => {
      for (const p of eqPrompts) {
        const r = model.forward(p, { logitTokens: [llm.yesToken, llm.noToken] });
        oursLogOdds.push(r.tokenLogits![0] - r.tokenLogits![1]);
        oursHidden.push(r.finalHidden);
      }
    });
    log(`full tfjs forward: ${(fwd.s / eqPrompts.length).toFixed(3)} s/prompt`);
    const servedLogOdds = served.map((s) => s.logOdds);
    const equivalence = {
      prompts: eqPrompts.length,
      meanPromptTokens: meanTokens,
      logOddsRange: [Math.min(...servedLogOdds), Math.max(...servedLogOdds)],
      vsServed: {
        logOdds: stats(oursLogOdds, servedLogOdds),
        hidden: hiddenStats(
          oursHidden,
          served.map((s) => s.hidden!),
        ),
      },
      vsF32KvCache: {
        logOdds: stats(oursLogOdds, f32kv.logOdds),
        hidden: hiddenStats(oursHidden, f32kv.hidden),
      },
      vsDequantizedF32Model: {
        logOdds: stats(oursLogOdds, f32ref.logOdds),
        hidden: hiddenStats(oursHidden, f32ref.hidden),
      },
      servedVsF32KvCache: { logOdds: stats(servedLogOdds, f32kv.logOdds) },
      tfjsFullForwardSecondsPerPrompt: fwd.s / eqPrompts.length,
    };
    log(JSON.stringify(equivalence));

    const speed: Record<string, unknown>[] = [];
    const trainBatch = prompts.slice(0, trainSamples).map((tokens, i) => ({ tokens, label: labels[i] }));
    const batchTokens = trainBatch.reduce((a, s) => a + s.tokens.length, 0);
    for (const k of ks) {
      const first = model.hp.nLayer - k;
      // One-time frozen pass, from scratch and with prefix reuse in history-block order.
      const scratch = new FrozenPrefixCache(model, first);
      const fromScratch = seconds(() => trainBatch.forEach((s) => scratch.computeFromScratch(s.tokens)));
      scratch.dispose();
      const adapter = LoraAdapter.create(model.hp, { layers: k, rank, alpha: 2 * rank });
      const trainer = new LoraTrainer(model, adapter, {
        answerTokens: [llm.yesToken, llm.noToken],
        learningRate: 1e-3,
      });
      const reuse = seconds(() => trainBatch.forEach((s) => trainer.frozen.input(s.tokens).dispose()));
      const reuseStats = { ...trainer.frozen.stats };
      // Warm-up step (kernel setup, optimizer slots), then timed steps on the cached frozen inputs.
      trainer.step(trainBatch);
      const losses: number[] = [];
      const train = seconds(() => {
        for (let i = 0; i < steps; i++) losses.push(trainer.step(trainBatch));
      });
      trainer.dispose();
      adapter.dispose();
      const row = {
        k,
        rank,
        targets: ['q', 'v'],
        trainSamples: trainBatch.length,
        meanTokens: batchTokens / trainBatch.length,
        frozenLayers: first,
        frozenPassSecondsPerSample: {
          fromScratch: fromScratch.s / trainBatch.length,
          prefixReuse: reuse.s / trainBatch.length,
        },
        frozenTokensEvaluated: reuseStats.evaluatedTokens,
        frozenPromptTokens: reuseStats.promptTokens,
        trainStepSecondsPerSample: train.s / (steps * trainBatch.length),
        losses,
      };
      log(JSON.stringify(row));
      speed.push(row);
    }
    // A first look at whether LoRA learns on this data (the real ablation is bench/lora.ts, next).
    let learning: Record<string, unknown> | undefined;
    if (learnTrain > 0) {
      const ordered = (split: EncodedSplit, n: number, seed: number) =>
        Array.from(samplePool(split, n, seed, block)).sort(
          (a, b) =>
            split.userRows[a] - split.userRows[b] ||
            split.timestamps[a] - split.timestamps[b] ||
            split.sampleIds[a] - split.sampleIds[b],
        );
      const train = ds.splits.train;
      const trRows = ordered(train, learnTrain, 21);
      const evRows = ordered(test, learnEval, 22);
      const trSet = trRows.map((r) => ({
        tokens: builder.buildForRow(train, ds.items, r).tokens,
        label: train.labels[r],
      }));
      const evSet = evRows.map((r) => ({
        tokens: builder.buildForRow(test, ds.items, r).tokens,
        label: test.labels[r],
      }));
      const adapter = LoraAdapter.create(model.hp, {
        layers: learnK,
        rank,
        alpha: 2 * rank,
        targets: learnTargets,
      });
      const trainer = new LoraTrainer(model, adapter, {
        answerTokens: [llm.yesToken, llm.noToken],
        learningRate: learnLr,
        cacheBytes: 4 * 2 ** 30,
      });
      // Frozen pass once, in history-block order (prefix reuse).
      const frozen = seconds(() =>
        [...trSet, ...evSet].forEach((s) => trainer.frozen.input(s.tokens).dispose()),
      );
      const evalNow = () => {
        const p = evSet.map((s) => trainer.pYes(s.tokens));
        const y = evSet.map((s) => s.label);
        return { auc: auc(y, p), logLoss: logLoss(y, p), acc: accuracy(y, p) };
      };
      const epochs: Record<string, unknown>[] = [{ epoch: 0, ...evalNow() }];
      log(`learning: zero-shot ${JSON.stringify(epochs[0])}, frozen pass ${frozen.s.toFixed(0)} s`);
      for (let e = 1; e <= learnEpochs; e++) {
        const order = permutation(mulberry32(mixSeed(7, e)), trSet.length);
        let lossSum = 0;
        let batches = 0;
        const t = seconds(() => {
          for (let i = 0; i < order.length; i += learnBatch) {
            lossSum += trainer.step(Array.from(order.subarray(i, i + learnBatch), (j) => trSet[j]));
            batches++;
          }
        });
        const row = { epoch: e, trainLoss: lossSum / batches, epochSeconds: t.s, ...evalNow() };
        log(`learning: ${JSON.stringify(row)}`);
        epochs.push(row);
      }
      learning = {
        k: learnK,
        targets: learnTargets,
        rank,
        alpha: 2 * rank,
        learningRate: learnLr,
        batch: learnBatch,
        trainRows: trSet.length,
        evalRows: evSet.length,
        trainPositiveRate: trSet.reduce((a, s) => a + s.label, 0) / trSet.length,
        frozenPassSeconds: frozen.s,
        frozenTokensEvaluated: trainer.frozen.stats.evaluatedTokens,
        epochs,
      };
      trainer.dispose();
      adapter.dispose();
    }
    model.dispose();
    await llm.dispose();

    console.log(
      JSON.stringify(
        {
          bench: 'lora-forward',
          model: { path: modelPath, sha256: llm.modelSha256, ...model.hp },
          data,
          tfjs: tf,
          nativeThreads: process.env.CORELLA_NATIVE_THREADS ?? '1',
          llamaThreads: threads,
          loadSeconds: loaded.s,
          equivalence,
          speed,
          learning,
          loadAverage: { start: load0, end: loadavg()[0] },
          note: 'taken on a 2-core machine shared with other jobs: timings are under load',
        },
        null,
        2,
      ),
    );
  } finally {
    rmSync(storeDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
