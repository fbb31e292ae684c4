import * as tf from '@tensorflow/tfjs-core';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { initTf, type TfBackendName } from '../../tf/backend.js';
import type { LlamaHparams } from './llama-config.js';
import type { LayerWeights, Projection } from './llama-weights.js';
import {
  jointProjectionVariables,
  jointSampleGrads,
  sampleGrads,
  type AdaptedBlocks,
  type JointSampleData,
  type JointTerms,
} from './lora-loss.js';
import { chainLogOdds } from './lora-eval.js';
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
  /** int32 [1]: the next sample of the current batch to claim (Atomics.add), shared by every thread. */
  claim: SharedArrayBuffer;
}

/** A sample of a batch; its input ([tokens, nEmbd] float32) starts at `offset` floats into the job's buffer. */
export interface JobSample {
  offset: number;
  tokens: number;
  label: number;
  weight: number;
  /** A joint (stage-2) sample's CRM-side targets and frozen hidden rows (jobs with `joint` only). */
  joint?: Pick<JointSampleData, 'targets' | 'frozenRows'>;
}

/** A batch: the current LoRA and the first adapted block's input of every sample, in shared memory. */
export interface LoraWorkerJob {
  seq: number;
  weights: LoraHostWeights;
  inputs: SharedArrayBuffer;
  samples: JobSample[];
  /** Present for a joint (stage-2) step: each sample's loss is α·BCE + γ·its alignment term (lora-loss.ts). */
  joint?: JointTerms;
  /** Present for an evaluation round (no samples): its groups are claimed instead of samples. */
  eval?: EvalRound;
}

/**
 * Evaluation groups (lora-eval.ts): prompt i's token ids and its first adapted block input, at `offsets[i]`
 * floats into the job's buffer; each group is [start, end) of these prompts.
 */
export interface EvalRound {
  prompts: (readonly number[])[];
  offsets: number[];
  groups: [number, number][];
}

/** One evaluation group's log-odds, in prompt order. */
export interface GroupLogOdds {
  index: number;
  logOdds: Float32Array;
}

/** One sample's share of the batch loss: w·BCE and its gradient per LoRA variable (adapter.variables() order). */
export interface SampleGrads {
  index: number;
  sum: number;
  grads: Float32Array[];
  /** Joint steps: the sample's click logit and g_llm(h) per pair ([P·S]), for the CRM side of the step. */
  logit?: number;
  projected?: Float32Array;
}

export type LoraWorkerMessage =
  | { type: 'ready' }
  /** The samples this worker claimed of job `seq`. */
  | { type: 'grads'; seq: number; results: SampleGrads[] }
  /** The evaluation groups this worker claimed of job `seq`. */
  | { type: 'logOdds'; seq: number; results: GroupLogOdds[] }
  | { type: 'error'; message: string };

// Entry of a LoRA training worker thread (lora-parallel.ts): it holds the adapted blocks and its own copy of
// the LoRA variables. For each batch it loads the trainer's current weights, then claims samples one at a
// time (with the trainer's thread and the other workers) and returns each one's loss and gradient. The
// optimizer stays on the trainer's thread.
const init = workerData as LoraWorkerInit;
const counter = new Int32Array(init.signal);
const claim = new Int32Array(init.claim);
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
  const evaluate = (job: LoraWorkerJob, round: EvalRound) => {
    const results: GroupLogOdds[] = [];
    for (let g = Atomics.add(claim, 0, 1); g < round.groups.length; g = Atomics.add(claim, 0, 1)) {
      const [start, end] = round.groups[g];
      const prompts = round.prompts.slice(start, end);
      const input = (i: number) => {
        const T = prompts[i].length;
        return tf.tensor2d(new Float32Array(job.inputs, round.offsets[start + i] * 4, T * hp.nEmbd), [
          T,
          hp.nEmbd,
        ]);
      };
      results.push({ index: g, logOdds: chainLogOdds(blocks, lora, prompts, input) });
    }
    send(
      { type: 'logOdds', seq: job.seq, results },
      results.map((r) => r.logOdds.buffer as ArrayBuffer),
    );
  };
  parentPort!.on('message', (job: LoraWorkerJob) => {
    try {
      adapter.load(job.weights);
      if (job.eval) return evaluate(job, job.eval);
      const results: SampleGrads[] = [];
      // A joint step's g_llm weights are this batch's: fresh copies, freed when the batch is done.
      const projVars = job.joint ? jointProjectionVariables(job.joint, hp.nEmbd) : [];
      try {
        for (let i = Atomics.add(claim, 0, 1); i < job.samples.length; i = Atomics.add(claim, 0, 1)) {
          const s = job.samples[i];
          const input = new Float32Array(job.inputs, s.offset * 4, s.tokens * hp.nEmbd);
          results.push({
            index: i,
            ...(job.joint
              ? jointSampleGrads(blocks, vars, projVars, lora, job.joint, input, { ...s, ...s.joint! })
              : sampleGrads(blocks, vars, lora, init.labelSmoothing, input, s)),
          });
        }
      } finally {
        tf.dispose(projVars);
      }
      send(
        { type: 'grads', seq: job.seq, results },
        results.flatMap((r) => [
          ...r.grads.map((g) => g.buffer as ArrayBuffer),
          ...(r.projected ? [r.projected.buffer as ArrayBuffer] : []),
        ]),
      );
    } catch (e) {
      send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    }
  });
  send({ type: 'ready' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
}
