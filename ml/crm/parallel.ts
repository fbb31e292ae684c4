import { Worker } from 'node:worker_threads';
import type { EncodedSplit, FeatureMap } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { TfBackendName } from '../tf/backend.js';
import type { Adam } from './adam.js';
import { disposeCrmBatch, hostRows } from './batch.js';
import type { CrmNet } from './model.js';
import type { FromWorker, ToWorker, WorkerInit } from './parallel-protocol.js';
import { type StepProfile, timed } from './step-profile.js';
import { NativeStep, nativeStepSupported } from './native-step.js';
import { SparseEmbeddingStepper, batchGradients, denseVariables } from './train-step.js';

/** What the trainer drives: one optimisation step over the given rows of the training split. */
export interface Stepper {
  step(rows: Int32Array, step: number): Promise<number>;
  /** When set, each step adds its phases' wall times here (benchmarks). */
  profile?: StepProfile;
  close(): Promise<void>;
}

/** Single-threaded: the whole batch on this thread. */
export class LocalStepper implements Stepper {
  private readonly inner: SparseEmbeddingStepper;
  /** The tape-free step (native-step.ts) where the model and backend allow it, unless `tape` asks not to. */
  private readonly native?: NativeStep;
  profile?: StepProfile;

  constructor(
    private readonly model: CrmNet,
    adam: Adam,
    private readonly split: EncodedSplit,
    opts: { tape?: boolean } = {},
  ) {
    this.inner = new SparseEmbeddingStepper(model, adam);
    if (!opts.tape && nativeStepSupported(model)) this.native = new NativeStep(model, this.inner.dense);
  }

  /** Whether steps run without the tfjs tape. */
  get tapeFree(): boolean {
    return this.native !== undefined;
  }

  step(rows: Int32Array, step: number): Promise<number> {
    this.model.setDropoutStep(step);
    const p = this.profile;
    const native = this.native;
    if (native) {
      // The pool's workers stay awake from the step's first region to its last (see NativeStep.hold).
      native.hold(true);
      try {
        const batch = timed(p, 'makeBatch', () => native.hostBatch(this.split, rows));
        const g = timed(p, 'gradients', () => native.gradients(batch));
        const part = { host: batch.host, size: rows.length, dx0: g.dx0, width: g.width, scale: 1 };
        timed(p, 'apply', () => this.inner.apply([part], g.dense));
        if (p) p.steps++;
        return Promise.resolve(g.loss);
      } finally {
        native.hold(false);
      }
    }
    const batch = timed(p, 'makeBatch', () => this.model.makeBatch(this.split, rows));
    try {
      // inner.step's two halves, timed apart: the tape (forward, backward, read-back) and the update.
      // Views of the gradients in the heap (no read-back copies): nothing between here and apply()
      // allocates tfjs memory.
      const g = timed(p, 'gradients', () =>
        batchGradients(this.model, this.inner.dense, batch, { views: true }),
      );
      const part = { host: batch.prepared.host, size: rows.length, dx0: g.dx0, width: g.width, scale: 1 };
      try {
        timed(p, 'apply', () => this.inner.apply([part], g.dense));
      } finally {
        g.release();
      }
      if (p) p.steps++;
      return Promise.resolve(g.loss);
    } finally {
      timed(p, 'dispose', () => disposeCrmBatch(batch));
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Data-parallel over two threads: wasm has no threads in Node, so a second tfjs instance in a worker
 * computes the gradients of the second half of each batch while this thread does the first half; this
 * thread then combines them (weighted by half size, i.e. the gradient of the full-batch mean loss) and
 * applies Adam. Deterministic: the split into halves and every computation are fixed by (seed, step).
 * Dropout masks differ from a single-threaded run (each half draws its own); batch norm is not supported.
 */
export class ParallelStepper implements Stepper {
  private readonly inner: SparseEmbeddingStepper;
  private readonly weights: Float32Array;
  private readonly grads: Float32Array;
  private readonly touched: Int32Array;
  private readonly denseSizes: number[];
  private readonly denseTotal: number;
  profile?: StepProfile;
  private pending: { resolve: (m: FromWorker) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly model: CrmNet,
    adam: Adam,
    private readonly split: EncodedSplit,
    private readonly worker: Worker,
    buffers: { weights: SharedArrayBuffer; grads: SharedArrayBuffer; touched: SharedArrayBuffer },
    denseSizes: number[],
  ) {
    this.inner = new SparseEmbeddingStepper(model, adam);
    this.weights = new Float32Array(buffers.weights);
    this.grads = new Float32Array(buffers.grads);
    this.touched = new Int32Array(buffers.touched);
    this.denseSizes = denseSizes;
    this.denseTotal = denseSizes.reduce((a, b) => a + b, 0);
    worker.on('message', (m: FromWorker) => this.settle(m));
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new Error(`CRM gradient worker exited with code ${code}`)));
  }

  static async start(
    model: CrmNet,
    adam: Adam,
    split: EncodedSplit,
    featureMap: FeatureMap,
    backend: TfBackendName,
    maxBatch: number,
  ): Promise<ParallelStepper> {
    if (model.config.batchNorm)
      throw new CorellaError('BAD_CONFIG', 'two-thread CRM training does not support batch norm');
    const dense = denseVariables(model);
    const denseSizes = dense.map((d) => d.variable.size);
    const denseTotal = denseSizes.reduce((a, b) => a + b, 0);
    const table = model.embeddingTable;
    const buffers = {
      weights: new SharedArrayBuffer((denseTotal + table.size) * 4),
      grads: new SharedArrayBuffer((denseTotal + Math.ceil(maxBatch / 2) * model.inputWidth) * 4),
      touched: new SharedArrayBuffer((model.layout.rows + 1) * 4),
    };
    const w = new Float32Array(buffers.weights);
    let off = 0;
    for (const d of dense) {
      w.set(d.variable.dataSync() as Float32Array, off);
      off += d.variable.size;
    }
    w.set(table.dataSync() as Float32Array, denseTotal);
    const init: WorkerInit = {
      // .js when this file runs compiled from dist/, .ts from the sources.
      entry: new URL(`./parallel-worker.${import.meta.url.endsWith('.js') ? 'js' : 'ts'}`, import.meta.url)
        .href,
      backend,
      config: model.config,
      featureMap,
      split,
      ...buffers,
      denseSizes,
    };
    const worker = new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: init });
    const stepper = new ParallelStepper(model, adam, split, worker, buffers, denseSizes);
    const first = await stepper.next();
    if (first.type !== 'ready')
      throw new Error(`CRM gradient worker: unexpected first message ${first.type}`);
    return stepper;
  }

  private settle(m: FromWorker): void {
    const p = this.pending;
    this.pending = undefined;
    if (!p) return;
    if (m.type === 'error') p.reject(new Error(`CRM gradient worker: ${m.message}`));
    else p.resolve(m);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(e);
  }

  private next(): Promise<FromWorker> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  }

  async step(rows: Int32Array, step: number): Promise<number> {
    const p = this.profile;
    const n = rows.length;
    const nA = Math.ceil(n / 2);
    const rowsA = rows.slice(0, nA);
    const rowsB = rows.slice(nA);
    const reply = rowsB.length > 0 ? this.next() : undefined;
    const posted = performance.now();
    if (rowsB.length > 0) {
      this.worker.postMessage({
        type: 'step',
        rows: rowsB,
        dropoutStep: 2 * step + 1,
        profile: p !== undefined,
      } satisfies ToWorker);
    }
    this.model.setDropoutStep(2 * step);
    const batchA = timed(p, 'makeBatch', () => this.model.makeBatch(this.split, rowsA));
    let gA;
    try {
      gA = timed(p, 'gradients', () => batchGradients(this.model, this.inner.dense, batchA));
    } finally {
      timed(p, 'dispose', () => disposeCrmBatch(batchA));
    }
    const hostA = timed(p, 'hostRows', () => hostRows(this.split, rowsA, this.model.layout));
    const parts = [{ host: hostA, size: nA, dx0: gA.dx0, width: gA.width, scale: nA / n }];
    let loss = gA.loss;
    let denseGrads = gA.dense;
    if (reply) {
      const waitStart = performance.now();
      const m = await reply;
      if (p) {
        p.add('waitWorker', performance.now() - waitStart);
        p.add('workerRoundTrip', performance.now() - posted);
        if (m.type === 'done' && m.profile)
          for (const [k, v] of Object.entries(m.profile)) p.add(`worker.${k}`, v);
      }
      if (m.type !== 'done') throw new Error(`CRM gradient worker: unexpected message ${m.type}`);
      const nB = n - nA;
      const wA = nA / n;
      const wB = nB / n;
      const combineStart = performance.now();
      let off = 0;
      denseGrads = gA.dense.map((g, i) => {
        const out = new Float32Array(g.length);
        for (let j = 0; j < g.length; j++) out[j] = wA * g[j] + wB * this.grads[off + j];
        off += this.denseSizes[i];
        return out;
      });
      parts.push({
        host: hostRows(this.split, rowsB, this.model.layout),
        size: nB,
        dx0: this.grads.slice(this.denseTotal, this.denseTotal + nB * m.width),
        width: m.width,
        scale: wB,
      });
      p?.add('combine', performance.now() - combineStart);
      loss = wA * gA.loss + wB * m.loss;
    }
    const newWeights = timed(p, 'apply', () => this.inner.apply(parts, denseGrads));
    timed(p, 'publish', () => this.publish(newWeights));
    if (p) p.steps++;
    return loss;
  }

  /** Writes the new dense weights and the changed embedding rows where the worker reads them. */
  private publish(dense: Float32Array[]): void {
    let off = 0;
    dense.forEach((w) => {
      this.weights.set(w, off);
      off += w.length;
    });
    const D = this.model.config.embeddingDim;
    const rows = this.inner.touchedRowValues();
    const count = this.inner.touchedCount;
    for (let k = 0; k < count; k++) {
      const r = this.inner.touched[k];
      this.weights.set(rows.subarray(k * D, (k + 1) * D), this.denseTotal + r * D);
      this.touched[1 + k] = r;
    }
    this.touched[0] = count;
  }

  async close(): Promise<void> {
    this.failure ??= new Error('closed');
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
