/**
 * What the LoRA branch's tfjs passes cost on SmolLM2-135M with the pipeline's prompts (issue 19, "Speed"):
 * the one-time frozen pass below the top k blocks and a LoRA training step of the top k blocks, in CPU
 * seconds (user + system of the whole process, worker threads included) and wall seconds, with the load
 * average beside each figure (the machine is shared: wall time under load says more about the load).
 *
 *   npx tsx bench/lora-speed.ts [--model .corella/models/SmolLM2-135M-Instruct.Q4_1.gguf]
 *     [--data ../shared/datasets/ml-1m-u2999] [--prompts 64] [--block 8] [--k 2,4] [--train-samples 8]
 *     [--steps 3] [--threads 2] [--modes per-prompt,batched,batched-host] [--parallel 1]
 *
 * Frozen-pass modes: `per-prompt` is FrozenPrefixCache.compute prompt by prompt with the previous prompt's
 * prefix reused (the pass before batching), `batched` one tfjs pass per prompt-trie group (the default of
 * warm() and the workers), `batched-host` the same groups on host arrays with the native sgemm
 * (host-frozen.ts; needs the addon). `--parallel 1` also times warmFrozenParallel on `--threads` workers for per-prompt and
 * batched (there wall time includes each worker loading and dequantizing its model).
 *
 * Prints JSON.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { samplePool } from '../ml/corella/sampling.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import { warmFrozenParallel } from '../ml/llm/tf/frozen-parallel.js';
import { FrozenPrefixCache } from '../ml/llm/tf/frozen-prefix.js';
import { LlamaTf } from '../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../ml/llm/tf/lora.js';
import { LoraTrainer } from '../ml/llm/tf/lora-train.js';
import { groupPrompts } from '../ml/llm/tf/prompt-trie.js';
import { initTf } from '../ml/tf/backend.js';
import { openPaperPrompts } from './paper-prompts.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const modelPath = resolve(arg('model', '.corella/models/SmolLM2-135M-Instruct.Q4_1.gguf'));
const data = arg('data', '../shared/datasets/ml-1m-u2999');
const nPrompts = Number(arg('prompts', '64'));
const block = Number(arg('block', '8'));
const ks = arg('k', '2,4').split(',').map(Number);
const trainSamples = Number(arg('train-samples', '8'));
const steps = Number(arg('steps', '3'));
const threads = Number(arg('threads', '2'));
const modes = arg('modes', 'per-prompt,batched,batched-host').split(',');
const parallel = arg('parallel', '1') === '1';
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
    for (const k of ks) {
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
    const batch = prompts.slice(0, trainSamples).map((t, i) => ({ tokens: t, label: labels[i] }));
    for (const k of ks) {
      const adapter = LoraAdapter.create(model.hp, { layers: k, rank: 8, alpha: 16 });
      const trainer = new LoraTrainer(model, adapter, { answerTokens: answer, learningRate: 1e-3 });
      await trainer.frozen.warm(batch.map((s) => s.tokens));
      trainer.step(batch); // warm-up: kernel setup, Adam's slots
      const t = await timed(() => {
        for (let i = 0; i < steps; i++) trainer.step(batch);
      });
      const row = {
        k,
        rank: 8,
        targets: ['q', 'v'],
        samples: batch.length,
        steps,
        ...per(t, steps * batch.length),
      };
      log(JSON.stringify(row));
      training.push(row);
      trainer.dispose();
      adapter.dispose();
    }
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

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
