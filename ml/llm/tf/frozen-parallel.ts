import { Worker } from 'node:worker_threads';
import { CorellaError } from '../../errors.js';
import { throwIfAborted } from '../../progress.js';
import { DEFAULT_BATCH_NODES, type FrozenEntry, type FrozenPrefixCache } from './frozen-prefix.js';
import { groupPrompts } from './prompt-trie.js';
import type { FrozenOutputStore } from './frozen-store.js';
import type { FrozenWorkerInit, FrozenWorkerMessage } from './frozen-worker.js';

export interface ParallelFrozenOptions {
  /** The GGUF the cache's model was loaded from: each worker loads its own copy (wasm memory is per thread). */
  modelPath: string;
  /** Worker threads (default 2: the machine's two cores; the main thread only collects). */
  threads?: number;
  store?: FrozenOutputStore;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  /** Trie nodes per batched pass in each worker (default DEFAULT_BATCH_NODES; 0: prompt by prompt). */
  batchNodes?: number;
}

/**
 * The one-time frozen pass on several threads. tfjs-wasm has no threads in Node, so like the CRM's parallel
 * stepper (ml/crm/parallel.ts) each extra core is a worker thread with its own model. Prompts missing from
 * the cache and the store are cut into `threads` contiguous runs: history blocks stay together, so each
 * worker keeps the prefix reuse of FrozenPrefixCache, and a cut costs one prompt's shared prefix. Entries
 * come back as transferred buffers; the main thread inserts them into `cache` and writes them to the store.
 */
export async function warmFrozenParallel(
  cache: FrozenPrefixCache,
  prompts: readonly (readonly number[])[],
  opts: ParallelFrozenOptions,
): Promise<{ fromStore: number; computed: number }> {
  const threads = opts.threads ?? 2;
  if (!Number.isInteger(threads) || threads < 1)
    throw new CorellaError(
      'BAD_CONFIG',
      `frozen pass threads ${threads} is not a positive integer (field threads)`,
      {
        details: { field: 'threads' },
      },
    );
  let fromStore = 0;
  const todo: (readonly number[])[] = [];
  const seen = new Set<string>();
  for (const tokens of prompts) {
    throwIfAborted(opts.signal);
    const key = cacheKey(tokens);
    if (cache.has(tokens) || seen.has(key)) continue;
    const stored = await opts.store?.get(tokens);
    if (stored) {
      cache.insert(tokens, stored);
      fromStore++;
    } else {
      todo.push(tokens);
      seen.add(key);
    }
  }
  const total = prompts.length;
  let done = total - todo.length;
  opts.onProgress?.(done, total);
  if (todo.length === 0) return { fromStore, computed: 0 };

  // The groups of the one-thread warm(), dealt out whole as contiguous runs: each group's trie, and so its
  // outputs bit for bit, are the same on any number of threads.
  const batch = opts.batchNodes ?? DEFAULT_BATCH_NODES;
  const groups = batch > 0 ? groupPrompts(todo, batch) : todo.map((_, i) => [i]);
  const n = Math.min(threads, groups.length);
  const cuts = Array.from({ length: n + 1 }, (_, w) => {
    // The first group that starts at or after w/n of the prompts.
    const target = (w * todo.length) / n;
    const g = groups.findIndex((grp) => grp[0] >= target);
    return w === n || g < 0 ? groups.length : g;
  });
  const runGroups = Array.from({ length: n }, (_, w) => groups.slice(cuts[w], cuts[w + 1])).filter(
    (r) => r.length > 0,
  );
  const runs = runGroups.map((r) => r.flat().map((i) => todo[i]));
  const writes: Promise<void>[] = [];
  const workers: Worker[] = [];
  const onAbort = () => workers.forEach((w) => void w.terminate());
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.all(
      runs.map(
        (run) =>
          new Promise<void>((resolve, reject) => {
            const init: FrozenWorkerInit = {
              entry: new URL(
                `./frozen-worker.${import.meta.url.endsWith('.js') ? 'js' : 'ts'}`,
                import.meta.url,
              ).href,
              modelPath: opts.modelPath,
              firstLayer: cache.firstLayer,
              keepLayers: cache.keepLayers,
              prompts: run.map((t) => Array.from(t)),
              groups: groupSizes(runGroups[runs.indexOf(run)]),
              batched: batch > 0,
            };
            // The CRM's boot file is generic: it registers tsx in the worker, then imports `entry`.
            const worker = new Worker(new URL('../../crm/worker-boot.mjs', import.meta.url), {
              workerData: init,
            });
            workers.push(worker);
            worker.on('message', (m: FrozenWorkerMessage) => {
              if (m.type === 'error') return reject(new Error(`frozen-pass worker: ${m.message}`));
              if (m.type === 'done') return resolve();
              const tokens = run[m.index];
              const e: FrozenEntry = {
                input: new Float32Array(m.input),
                lastHidden: new Map(m.lastHidden.map(([l, b]) => [l, new Float32Array(b)])),
              };
              cache.insert(tokens, e);
              if (opts.store) writes.push(opts.store.put(tokens, e));
              opts.onProgress?.(++done, total);
            });
            worker.on('error', reject);
            worker.on('exit', (code) => {
              if (opts.signal?.aborted)
                reject(opts.signal.reason instanceof Error ? opts.signal.reason : new Error('cancelled'));
              else if (code !== 0) reject(new Error(`frozen-pass worker exited with code ${code}`));
              else resolve();
            });
          }),
      ),
    );
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    await Promise.all(workers.map((w) => w.terminate()));
    await Promise.all(writes);
  }
  return { fromStore, computed: todo.length };
}

/** Group lengths of a run (its prompts are the groups' prompts in order). */
function groupSizes(groups: number[][]): number[] {
  return groups.map((g) => g.length);
}

function cacheKey(tokens: readonly number[]): string {
  return tokens.join(',');
}
