import * as tf from '@tensorflow/tfjs-core';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { initTf, type TfBackendName } from '../../tf/backend.js';
import type { LlamaHparams } from './llama-config.js';
import type { LayerWeights, Projection } from './llama-weights.js';
import { weightedBceSum, type AdaptedBlocks } from './lora-loss.js';
import { LoraAdapter, type LoraConfig, type LoraHostWeights } from './lora.js';

/** Host copies of one adapted block (GGUF layout, [out, in] row-major). */
export interface HostLayer {
  attnNorm: Float32Array;
  ffnNorm: Float32Array;
  proj: Record<Projection, Float32Array>;
}

export interface LoraWorkerInit {
  entry: string;
  backend: TfBackendName;
  hp: LlamaHparams;
  lora: LoraConfig;
  /** Blocks firstLayer..nLayer−1, in order. */
  layers: HostLayer[];
  outputNorm: Float32Array;
  answerRows: Float32Array;
  labelSmoothing: number;
  /** Where results go: the trainer reads it synchronously (receiveMessageOnPort) while it waits. */
  port: MessagePort;
  /** int32 [1]: incremented after each message on `port`, so the trainer can Atomics.wait for it. */
  signal: SharedArrayBuffer;
}

/** One part of a batch: the samples' first-adapted-block inputs ([T, nEmbd] each) and the current LoRA. */
export interface LoraWorkerJob {
  seq: number;
  weights: LoraHostWeights;
  samples: { input: Float32Array; tokens: number; label: number; weight: number }[];
}

export type LoraWorkerMessage =
  | { type: 'ready' }
  /** sum: Σ w·BCE of the part; grads: its gradient per LoRA variable, in adapter.variables() order. */
  | { type: 'grads'; seq: number; sum: number; grads: Float32Array[] }
  | { type: 'error'; message: string };

// Entry of a LoRA training worker thread (lora-parallel.ts): it holds the adapted blocks and its own copy of
// the LoRA variables, and for each job loads the trainer's current weights and returns the gradient of its
// part's loss sum. The optimizer stays on the trainer's thread.
const init = workerData as LoraWorkerInit;
const counter = new Int32Array(init.signal);
const send = (m: LoraWorkerMessage, transfer: ArrayBuffer[] = []) => {
  init.port.postMessage(m, transfer);
  Atomics.add(counter, 0, 1);
  Atomics.notify(counter, 0);
};
try {
  await initTf(init.backend, () => undefined);
  const { hp } = init;
  const first = hp.nLayer - init.layers.length;
  const kv = hp.nHeadKv * hp.headDim;
  const q = hp.nHead * hp.headDim;
  const shapes: Record<Projection, [number, number]> = {
    q: [q, hp.nEmbd],
    k: [kv, hp.nEmbd],
    v: [kv, hp.nEmbd],
    o: [hp.nEmbd, q],
    gate: [hp.nFf, hp.nEmbd],
    up: [hp.nFf, hp.nEmbd],
    down: [hp.nEmbd, hp.nFf],
  };
  const layers: (LayerWeights | undefined)[] = new Array<LayerWeights | undefined>(hp.nLayer);
  init.layers.forEach((h, i) => {
    const proj = {} as Record<Projection, tf.Tensor2D>;
    for (const p of Object.keys(shapes) as Projection[]) proj[p] = tf.tensor2d(h.proj[p], shapes[p]);
    layers[first + i] = { attnNorm: tf.tensor1d(h.attnNorm), ffnNorm: tf.tensor1d(h.ffnNorm), proj };
  });
  const blocks: AdaptedBlocks = {
    hp,
    firstLayer: first,
    layers,
    outputNorm: tf.tensor1d(init.outputNorm),
    answerRows: tf.tensor2d(init.answerRows, [2, hp.nEmbd]),
  };
  const adapter = LoraAdapter.create(hp, init.lora);
  const vars = adapter.variables();
  const lora = adapter.layerLora();
  parentPort!.on('message', (job: LoraWorkerJob) => {
    try {
      adapter.load(job.weights);
      const inputs = job.samples.map((s) => tf.tensor2d(s.input, [s.tokens, hp.nEmbd]));
      try {
        const samples = job.samples.map((s, i) => ({ input: inputs[i], label: s.label, weight: s.weight }));
        const { value, grads } = tf.variableGrads(
          () => weightedBceSum(blocks, samples, lora, init.labelSmoothing),
          vars,
        );
        const out = vars.map((v) => (grads[v.name].dataSync() as Float32Array).slice());
        const sum = value.dataSync()[0];
        tf.dispose([value, ...Object.values(grads)]);
        send(
          { type: 'grads', seq: job.seq, sum, grads: out },
          out.map((g) => g.buffer as ArrayBuffer),
        );
      } finally {
        tf.dispose(inputs);
      }
    } catch (e) {
      send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    }
  });
  send({ type: 'ready' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
}
