import { parentPort, workerData } from 'node:worker_threads';
import { initTf } from '../../tf/backend.js';
import { FrozenPrefixCache } from './frozen-prefix.js';
import { LlamaTf } from './llama-forward.js';

export interface FrozenWorkerInit {
  entry: string;
  modelPath: string;
  firstLayer: number;
  keepLayers: number[];
  prompts: number[][];
  /** Lengths of the consecutive groups of `prompts` that run as one batched pass each. */
  groups: number[];
  /** false: prompt by prompt with the previous prompt's prefix reused (FrozenPrefixCache.compute). */
  batched: boolean;
}

export type FrozenWorkerMessage =
  | { type: 'entry'; index: number; input: ArrayBuffer; lastHidden: [number, ArrayBuffer][] }
  | { type: 'done' }
  | { type: 'error'; message: string };

// Entry of a frozen-pass worker thread (ml/llm/tf/frozen-parallel.ts): its own model, its run of prompts in
// order (batched per group, or one by one with prefix reuse), each entry sent back as soon as it is computed
// and then forgotten here.
const init = workerData as FrozenWorkerInit;
const port = parentPort!;
const send = (m: FrozenWorkerMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
try {
  await initTf(undefined, () => undefined);
  const model = await LlamaTf.load(init.modelPath);
  // maxBytes 0: the cache keeps no entry, only the prefix state that makes the next compute() cheap.
  const cache = new FrozenPrefixCache(model, init.firstLayer, 0, init.keepLayers);
  // Batched over the groups the main thread cut (FrozenPrefixCache.computeBatch), as the one-thread warm().
  const groups: number[][] = [];
  let next = 0;
  for (const size of init.groups) {
    groups.push(Array.from({ length: size }, (_, j) => next + j));
    next += size;
  }
  for (const g of groups) {
    const es = init.batched
      ? cache.computeBatch(g.map((i) => init.prompts[i]))
      : g.map((i) => cache.compute(init.prompts[i]));
    g.forEach((index, j) => {
      const e = es[j];
      // Fresh buffers (an entry's arrays may be views of one), transferred rather than copied.
      const input = e.input.slice().buffer;
      const lastHidden: [number, ArrayBuffer][] = [...e.lastHidden].map(([l, v]) => [l, v.slice().buffer]);
      send({ type: 'entry', index, input, lastHidden }, [input, ...lastHidden.map(([, b]) => b)]);
    });
  }
  cache.dispose();
  model.dispose();
  send({ type: 'done' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
}
