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
}

export type FrozenWorkerMessage =
  | { type: 'entry'; index: number; input: ArrayBuffer; lastHidden: [number, ArrayBuffer][] }
  | { type: 'done' }
  | { type: 'error'; message: string };

// Entry of a frozen-pass worker thread (ml/llm/tf/frozen-parallel.ts): its own model, its run of prompts in
// order (prefix reuse), each entry sent back as soon as it is computed and then forgotten here.
const init = workerData as FrozenWorkerInit;
const port = parentPort!;
const send = (m: FrozenWorkerMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
try {
  await initTf(undefined, () => undefined);
  const model = await LlamaTf.load(init.modelPath);
  // maxBytes 0: the cache keeps only the newest entry, and the prefix state that makes the next one cheap.
  const cache = new FrozenPrefixCache(model, init.firstLayer, 0, init.keepLayers);
  init.prompts.forEach((tokens, index) => {
    const e = cache.compute(tokens);
    const input = e.input.slice().buffer;
    const lastHidden: [number, ArrayBuffer][] = [...e.lastHidden].map(([l, v]) => [l, v.slice().buffer]);
    send({ type: 'entry', index, input, lastHidden }, [input, ...lastHidden.map(([, b]) => b)]);
  });
  cache.dispose();
  model.dispose();
  send({ type: 'done' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
}
