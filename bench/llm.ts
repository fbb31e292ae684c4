/**
 * LLM branch throughput and zero-shot quality on real MovieLens-1M samples (../shared/datasets/ml-1m-u2999).
 *
 *   npx tsx bench/llm.ts [--samples 2000] [--naive-samples 300] [--threads 2] [--model PATH]
 *                        [--history anchored|sliding|shared] [--block 8] [--max-history 30] [--context 2048]
 *                        [--template paper] [--hidden-samples 100] [--answers "Yes,No"] [--sequences 1]
 *
 * `--threads 1 --sequences 2 --hidden-samples N` is the pipeline's setting (config/ml-1m-cpu.json): with the
 * hidden state each sequence gets a context of its own, so that pass runs on two cores.
 *
 * Prints JSON: the raw prompt-processing rate on one long prompt, prompts/s and tokens/s with and without prefix
 * reuse, their ratio to the raw rate, and the zero-shot AUC of pYes. The naive path's rate does not depend on
 * how many samples it sees, so it runs on the first --naive-samples of the selection to save time.
 *
 * History modes:
 * - `anchored` (the pipeline's setting with llm.historyBlock): test rows drawn in user blocks of --block samples
 *   (ml/corella samplePool), each block's windows anchored so consecutive prompts extend one another;
 * - `sliding`: rows drawn one by one (samplePool with block 1), each with its own sliding window of the most
 *   recent --max-history items (consecutive prompts then share little more than the template head);
 * - `shared`: whole users, every target of a user gets the history of the user's first selected sample.
 * In the first two modes the prompts are exactly what the extractor builds (PromptBuilder.buildForRow).
 */
import { resolve } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { FileArtifactStore } from '../ml/artifacts/store.js';
import { ingestDataset, loadDataset } from '../ml/data/index.js';
import type { EncodedSplit, ItemTable } from '../ml/data/types.js';
import { resolveLlmConfig } from '../ml/llm/config.js';
import { loadLlm } from '../ml/llm/model.js';
import { PromptBuilder, templateByName } from '../ml/llm/prompts.js';
import { LlmScorer } from '../ml/llm/scorer.js';
import { auc } from '../ml/metrics/classification.js';
import { samplePool } from '../ml/corella/sampling.js';
import type { Token } from 'node-llama-cpp';
import { defaultBenchModel } from './default-model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const samples = Number(arg('samples', '2000'));
const naiveSamples = Number(arg('naive-samples', '300'));
const hiddenSamples = Number(arg('hidden-samples', '100'));
const threads = Number(arg('threads', '2'));
const sequences = Number(arg('sequences', '1'));
const modelPath = resolve(arg('model', defaultBenchModel()));
const historyMode = arg('history', 'anchored');
const block = historyMode === 'anchored' ? Number(arg('block', '8')) : 1;
const maxHistory = Number(arg('max-history', '30'));
const contextSize = Number(arg('context', '2048'));
const template = arg('template', 'paper');
const dataDir = resolve(arg('data', '../shared/datasets/ml-1m-u2999'));
// 'Yes,No' (the paper's tokens, default) or e.g. ' Yes, No' for BPE models that expect a space after "Answer:".
const [yesWord, noWord] = arg('answers', 'Yes,No').split(',');
const log = (m: string): void => void process.stderr.write(`[bench/llm] ${m}\n`);

interface Sample {
  row: number;
  user: number;
  label: number;
  history: { title: string; rating: number; genres: string }[];
  target: string;
}

/** Pipeline pools: samplePool rows in the extractor's order (user, then time). */
function poolRows(split: EncodedSplit, n: number): number[] {
  return Array.from(samplePool(split, n, 11, block)).sort(
    (a, b) =>
      split.userRows[a] - split.userRows[b] ||
      split.timestamps[a] - split.timestamps[b] ||
      split.sampleIds[a] - split.sampleIds[b],
  );
}

function historyOf(split: EncodedSplit, items: ItemTable, r: number): Sample['history'] {
  const L = split.historyLen;
  const h: Sample['history'] = [];
  for (let j = 0; j < L; j++) {
    const it = split.historyItemRows[r * L + j];
    const rating = split.historyRatings[r * L + j];
    if (it >= 0 && !Number.isNaN(rating))
      h.push({ title: items.titles[it], rating, genres: items.genres[it] ?? '' });
  }
  return h;
}

/** Whole users of the test split, in user then time order, until `n` samples. */
function selectSamples(split: EncodedSplit, items: ItemTable, n: number): Sample[] {
  const rows = Array.from({ length: split.size }, (_, i) => i).sort(
    (a, b) => split.userRows[a] - split.userRows[b] || split.timestamps[a] - split.timestamps[b],
  );
  const out: Sample[] = [];
  let shared: Sample['history'] = [];
  let prevUser = -1;
  for (const r of rows) {
    const user = split.userRows[r];
    if (user !== prevUser) {
      if (out.length >= n) break;
      shared = historyOf(split, items, r);
      prevUser = user;
    }
    out.push({
      row: r,
      user,
      label: split.labels[r],
      history: historyMode === 'shared' ? shared : historyOf(split, items, r),
      target: items.titles[split.targetItemRows[r]],
    });
  }
  return out.slice(0, n);
}

/** Wall seconds and this process's CPU seconds (all of llama.cpp's threads) of `fn`. */
async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number; cpuSeconds: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const c = process.cpuUsage(c0);
  return { value, seconds: (performance.now() - t0) / 1000, cpuSeconds: (c.user + c.system) / 1e6 };
}

async function main(): Promise<void> {
  const load0 = loadavg()[0];
  const store = new FileArtifactStore(resolve('.corella/bench-store'));
  log(`ingesting ${dataDir}`);
  const manifest = await ingestDataset({ source: 'movielens-1m', dir: dataDir }, store);
  const ds = await loadDataset(store, manifest);
  const test = ds.splits.test;
  const pool = historyMode === 'shared' ? undefined : poolRows(test, samples);
  const selected = pool
    ? pool.map((r) => ({
        row: r,
        user: test.userRows[r],
        label: test.labels[r],
        history: [],
        target: '',
      }))
    : selectSamples(test, ds.items, samples);
  log(
    `${selected.length} samples of ${new Set(selected.map((s) => s.user)).size} users (history: ${historyMode})`,
  );

  const cfg = resolveLlmConfig({
    model: modelPath,
    threads,
    sequences,
    contextSize,
    template,
    hidden: false,
    maxHistoryItems: maxHistory,
    answers: { yes: yesWord, no: noWord },
  });
  const llm = await loadLlm(cfg);
  const bos = llm.model.tokens.shouldPrependBosToken ? llm.model.tokens.bos : null;
  const builder = new PromptBuilder(
    { tokenize: (t, s, o) => llm.model.tokenize(t, s, o), bos },
    templateByName(template),
    {
      contextSize,
      maxHistoryItems: maxHistory,
      historyBlock: block,
      targetReserveTokens: cfg.targetReserveTokens,
    },
  );
  const prompts: Token[][] = pool
    ? pool.map((r) => builder.buildForRow(test, ds.items, r).tokens)
    : selected.map((s) => builder.build(s.history, s.target).tokens);
  const meanPromptTokens = prompts.reduce((a, p) => a + p.length, 0) / prompts.length;

  const scorer = await LlmScorer.create(llm, cfg);
  // Warm-up (first evaluation allocates compute buffers).
  await scorer.score(prompts.slice(0, 2), { reusePrefix: false });

  // Raw prompt processing: one long prompt of a user's many history items, evaluated from scratch.
  const longBuilder = new PromptBuilder(
    { tokenize: (t, s, o) => llm.model.tokenize(t, s, o), bos },
    templateByName(template),
    {
      contextSize,
      targetReserveTokens: cfg.targetReserveTokens,
    },
  );
  const longHistory = selectSamples(test, ds.items, 40)
    .flatMap((s) => s.history)
    .slice(0, 400);
  const longPrompt = longBuilder.build(longHistory, ds.items.titles[test.targetItemRows[0]]).tokens;
  let rawBest = 0;
  for (let i = 0; i < 3; i++) {
    const { seconds } = await timed(() => scorer.score([longPrompt], { reusePrefix: false }));
    rawBest = Math.max(rawBest, longPrompt.length / seconds);
  }
  log(`raw: ${rawBest.toFixed(0)} tokens/s on ${longPrompt.length} tokens`);

  const naiveN = Math.min(naiveSamples, prompts.length);
  const naivePrompts = prompts.slice(0, naiveN);
  const naiveTokens = naivePrompts.reduce((a, p) => a + p.length, 0);
  const naive = await timed(() => scorer.score(naivePrompts, { reusePrefix: false }));
  log(`naive: ${(naiveN / naive.seconds).toFixed(2)} prompts/s`);

  const allTokens = prompts.reduce((a, p) => a + p.length, 0);
  const before = scorer.stats.evaluatedTokens;
  const reuse = await timed(() => scorer.score(prompts, { reusePrefix: true }));
  const reuseEvaluated = scorer.stats.evaluatedTokens - before;
  log(`reuse: ${(prompts.length / reuse.seconds).toFixed(2)} prompts/s`);

  let maxDiff = 0;
  let sumDiff = 0;
  let maxLogOddsDiff = 0;
  for (let i = 0; i < naiveN; i++) {
    const d = Math.abs(naive.value[i].pYes - reuse.value[i].pYes);
    maxDiff = Math.max(maxDiff, d);
    sumDiff += d;
    maxLogOddsDiff = Math.max(maxLogOddsDiff, Math.abs(naive.value[i].logOdds - reuse.value[i].logOdds));
  }
  const labels = selected.map((s) => s.label);
  const pYes = reuse.value.map((s) => s.pYes);
  await scorer.dispose();

  // With the hidden state (read from the same pass unless the model pools embeddings), on the first prompts.
  let hiddenRun: Record<string, number> | undefined;
  if (hiddenSamples > 0) {
    const hcfg = { ...cfg, hidden: true };
    const hs = await LlmScorer.create(llm, hcfg);
    const hp = prompts.slice(0, Math.min(hiddenSamples, prompts.length));
    const h = await timed(() => hs.score(hp, { reusePrefix: true }));
    hiddenRun = {
      samples: hp.length,
      sequences: hcfg.sequences,
      promptsPerSec: hp.length / h.seconds,
      cpuSecondsPerPrompt: h.cpuSeconds / hp.length,
      effectiveTokensPerSec: hp.reduce((a, p) => a + p.length, 0) / h.seconds,
      hiddenDim: hs.hiddenDim,
    };
    await hs.dispose();
  }
  await llm.dispose();

  const naiveTps = naiveTokens / naive.seconds;
  const reuseTps = allTokens / reuse.seconds;
  const result = {
    bench: 'llm',
    model: { path: modelPath, sha256: llm.modelSha256, hiddenDim: llm.hiddenDim },
    threads,
    sequences,
    contextSize,
    template,
    answers: [yesWord, noWord],
    historyMode,
    historyBlock: block,
    maxHistoryItems: maxHistory,
    samples: prompts.length,
    users: new Set(selected.map((s) => s.user)).size,
    meanPromptTokens,
    raw: { promptTokens: longPrompt.length, tokensPerSec: rawBest },
    naive: {
      samples: naiveN,
      seconds: naive.seconds,
      promptsPerSec: naiveN / naive.seconds,
      tokensPerSec: naiveTps,
      ratioToRaw: naiveTps / rawBest,
    },
    reuse: {
      samples: prompts.length,
      seconds: reuse.seconds,
      promptsPerSec: prompts.length / reuse.seconds,
      cpuSecondsPerPrompt: reuse.cpuSeconds / prompts.length,
      effectiveTokensPerSec: reuseTps,
      evaluatedTokens: reuseEvaluated,
      promptTokens: allTokens,
      evaluatedTokensPerSec: reuseEvaluated / reuse.seconds,
      ratioToRaw: reuseTps / rawBest,
    },
    speedupReuseOverNaive: prompts.length / reuse.seconds / (naiveN / naive.seconds),
    reuseVsNaive: {
      maxAbsPYesDiff: maxDiff,
      meanAbsPYesDiff: sumDiff / naiveN,
      maxAbsLogOddsDiff: maxLogOddsDiff,
    },
    zeroShotAuc: auc(labels, pYes),
    positiveRate: labels.reduce((a, b) => a + b, 0) / labels.length,
    hiddenPass: hiddenRun,
    targets: { reuseOverNaiveAtLeast: 2, reuseRatioToRawAtLeast: 0.8 },
    machine: { cores: availableParallelism(), loadAvg1mAtStart: load0, loadAvg1mAtEnd: loadavg()[0] },
    note: 'CPU shared with other engineers: numbers are noisy',
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
