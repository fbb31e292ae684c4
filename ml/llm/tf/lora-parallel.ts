import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { CorellaError } from '../../errors.js';
import type { TfBackendName } from '../../tf/backend.js';
import type { LlamaTf } from './llama-forward.js';
import type { Projection } from './llama-weights.js';
import type { LoraAdapter, LoraHostWeights } from './lora.js';
import type { JointTerms } from './lora-loss.js';
import type {
  HostLayer,
  JobSample,
  LoraWorkerInit,
  LoraWorkerJob,
  LoraWorkerMessage,
  SampleGrads,
} from './lora-worker.js';

/** A sample of a batch on the host: the first adapted block's input [tokens, nEmbd], label and weight. */
export interface HostSample {
  input: Float32Array;
  tokens: number;
  label: number;
  weight: number;
  /** A joint step's per-sample data (see LoraWorkerJob.joint). */
  joint?: JobSample['joint'];
}

/** How long a step waits for a worker's gradients (or its start) before it gives up: a dead worker. */
const WAIT_MS = 15 * 60_000;

interface Slot {
  worker: Worker;
  port: MessagePort;
  counter: Int32Array;
  /** Messages read from `port` so far. */
  read: number;
  ready: boolean;
  exited: boolean;
}

/**
 * The worker threads of a data-parallel LoRA step (LoraTrainer with threads > 1). tfjs-wasm has no threads
 * in Node, so, as for the CRM's parallel stepper and the frozen pass, each extra core is a worker thread; it
 * holds the adapted blocks (sent once, from the trainer's model: the same weights, no second dequantization
 * of the GGUF) and computes the gradient of its part of each batch.
 *
 * A step stays synchronous (callers run it in plain loops): the trainer posts the jobs, computes its own
 * part, then blocks in Atomics.wait until each worker has posted its result on a MessagePort that it reads
 * with receiveMessageOnPort. Results are taken in worker order, so the sum is the same whichever finishes
 * first.
 */
export class LoraWorkers {
  private readonly slots: Slot[];
  private seq = 0;
  private closed = false;
  private readonly claim = new Int32Array(new SharedArrayBuffer(4));
  private inputs = new SharedArrayBuffer(0);
  /** Samples computed so far: [0] by the calling thread, [i] by worker i (benchmarks, tests). */
  readonly computed: number[];
  /** Evaluation groups computed so far, counted as `computed`. */
  readonly evaluated: number[];
  /**
   * Seconds this thread spent in run() and evaluate() computing its own items, and then waiting for the workers' last
   * answers (benchmarks: a long wait means the workers were slower or started late).
   */
  readonly seconds = { own: 0, wait: 0 };

  constructor(
    model: LlamaTf,
    adapter: LoraAdapter,
    answerRows: Float32Array,
    labelSmoothing: number,
    backend: TfBackendName,
    count: number,
  ) {
    const hp = model.hp;
    const layers: HostLayer[] = [];
    for (let l = adapter.firstLayer; l < hp.nLayer; l++) {
      const w = model.weights.layers[l];
      const proj = {} as Record<Projection, Float32Array>;
      for (const [p, t] of Object.entries(w.proj) as [Projection, { dataSync(): unknown }][])
        proj[p] = t.dataSync() as Float32Array;
      layers.push({
        attnNorm: w.attnNorm.dataSync() as Float32Array,
        ffnNorm: w.ffnNorm.dataSync() as Float32Array,
        proj,
      });
    }
    const outputNorm = model.weights.outputNorm.dataSync() as Float32Array;
    const entry = new URL(`./lora-worker.${import.meta.url.endsWith('.js') ? 'js' : 'ts'}`, import.meta.url)
      .href;
    this.computed = new Array<number>(count + 1).fill(0);
    this.evaluated = new Array<number>(count + 1).fill(0);
    this.slots = Array.from({ length: count }, () => {
      const { port1, port2 } = new MessageChannel();
      const signal = new SharedArrayBuffer(4);
      const init: LoraWorkerInit = {
        entry,
        backend,
        hp,
        lora: adapter.userConfig(),
        layers,
        outputNorm,
        answerRows,
        labelSmoothing,
        port: port2,
        signal,
        claim: this.claim.buffer as SharedArrayBuffer,
      };
      // The CRM's boot file is generic: it registers tsx in the worker, then imports `entry`.
      const worker = new Worker(new URL('../../crm/worker-boot.mjs', import.meta.url), {
        workerData: init,
        transferList: [port2],
      });
      const slot: Slot = {
        worker,
        port: port1,
        counter: new Int32Array(signal),
        read: 0,
        ready: false,
        exited: false,
      };
      worker.on('exit', () => (slot.exited = true));
      // A start-up failure is also posted on the port (and read by the next step); this keeps an uncaught
      // error event from crashing the process in between.
      worker.on('error', () => undefined);
      return slot;
    });
  }

  get size(): number {
    return this.slots.length;
  }

  /** Workers whose thread has not exited yet (as far as this thread's event loop has seen). */
  get alive(): number {
    return this.slots.filter((s) => !s.exited).length;
  }

  /**
   * One batch on this thread and every worker: each claims the next unclaimed sample (an atomic counter)
   * until none is left, so a worker that the machine's load keeps from running costs no more than the
   * samples it took. `own` computes a sample here. Returns every sample's result, in sample order.
   */
  run(
    weights: LoraHostWeights,
    samples: readonly HostSample[],
    own: (s: HostSample) => Omit<SampleGrads, 'index'>,
    joint?: JointTerms,
  ): SampleGrads[] {
    const { buffer, offsets } = this.share(samples.map((s) => s.input));
    const meta: JobSample[] = samples.map((s, i) => ({
      offset: offsets[i],
      tokens: s.tokens,
      label: s.label,
      weight: s.weight,
      joint: s.joint,
    }));
    return this.dispatch(
      { weights, inputs: buffer, samples: meta, joint },
      samples.length,
      (i) => ({ index: i, ...own(samples[i]) }),
      (m) => (m.type === 'grads' ? m.results : undefined),
      this.computed,
      'LoRA training sample',
    );
  }

  /**
   * One evaluation round: the groups of `prompts` (lora-eval.ts), claimed one by one by this thread and the
   * workers as run() claims samples; `inputs[i]` is prompt i's first adapted block input, and `own`
   * computes a group here. Returns every group's log-odds, in group order.
   */
  evaluate(
    weights: LoraHostWeights,
    prompts: readonly (readonly number[])[],
    inputs: readonly Float32Array[],
    groups: [number, number][],
    own: (group: number) => Float32Array,
  ): Float32Array[] {
    const { buffer, offsets } = this.share(inputs);
    const round = { prompts: prompts.slice(), offsets, groups };
    return this.dispatch(
      { weights, inputs: buffer, samples: [], eval: round },
      groups.length,
      (g) => ({ index: g, logOdds: own(g) }),
      (m) => (m.type === 'logOdds' ? m.results : undefined),
      this.evaluated,
      'LoRA evaluation group',
    ).map((r) => r.logOdds);
  }

  /** `parts` copied one after another into the shared input buffer, with each one's offset in floats. */
  private share(parts: readonly Float32Array[]): { buffer: SharedArrayBuffer; offsets: number[] } {
    const floats = parts.reduce((a, p) => a + p.length, 0);
    // Grown, never shrunk: a new buffer only when a batch needs more than any before.
    if (this.inputs.byteLength < floats * 4) this.inputs = new SharedArrayBuffer(floats * 4);
    const shared = new Float32Array(this.inputs);
    const offsets: number[] = [];
    let offset = 0;
    for (const p of parts) {
      shared.set(p, offset);
      offsets.push(offset);
      offset += p.length;
    }
    return { buffer: this.inputs, offsets };
  }

  /**
   * Posts `job` to every worker, then claims its `count` items on this thread (`own`) until none is left,
   * and gathers the workers' results (`take` reads them from a worker's answer; `done[w]` counts the items
   * each thread computed). Results come back in item order, whichever thread computed them.
   */
  private dispatch<R extends { index: number }>(
    job: Omit<LoraWorkerJob, 'seq'>,
    count: number,
    own: (i: number) => R,
    take: (m: LoraWorkerMessage) => R[] | undefined,
    done: number[],
    what: string,
  ): R[] {
    if (this.closed) throw new CorellaError('BAD_CONFIG', 'the LoRA trainer was disposed (field threads)');
    const seq = ++this.seq;
    Atomics.store(this.claim, 0, 0);
    for (const slot of this.slots) slot.worker.postMessage({ ...job, seq });
    const results = new Array<R | undefined>(count);
    let failure: unknown;
    const t0 = performance.now();
    try {
      for (let i = Atomics.add(this.claim, 0, 1); i < count; i = Atomics.add(this.claim, 0, 1)) {
        results[i] = own(i);
        done[0]++;
      }
    } catch (e) {
      // Stop the workers claiming more, but still read their answers below: left unread, they would be
      // taken for the next batch's.
      Atomics.store(this.claim, 0, count);
      failure = e;
    }
    const t1 = performance.now();
    const answers = this.slots.map((slot) => {
      try {
        while (!slot.ready) {
          const m = this.next(slot);
          if (m.type === 'ready') slot.ready = true;
          else this.fail(m);
        }
        return this.next(slot);
      } catch (e) {
        failure ??= e;
        return undefined;
      }
    });
    this.seconds.own += (t1 - t0) / 1000;
    this.seconds.wait += (performance.now() - t1) / 1000;
    if (failure !== undefined) throw failure;
    answers.forEach((m, w) => {
      const got = m && 'seq' in m && m.seq === seq ? take(m) : undefined;
      if (!got) this.fail(m ?? { type: 'error', message: 'no answer' });
      for (const r of got) results[r.index] = r;
      done[w + 1] += got.length;
    });
    return results.map((r, i) => {
      if (!r) throw new CorellaError('BAD_CONFIG', `${what} ${i} was computed by no thread`);
      return r;
    });
  }

  /**
   * Blocks until every worker has started (run() does not wait before it starts claiming: while the workers
   * load, this thread computes the batch alone).
   */
  waitReady(): void {
    for (const slot of this.slots) {
      while (!slot.ready) {
        const m = this.next(slot);
        if (m.type === 'ready') slot.ready = true;
        else this.fail(m);
      }
    }
  }

  private fail(m: LoraWorkerMessage): never {
    throw new CorellaError(
      'BAD_CONFIG',
      m.type === 'error'
        ? `LoRA training worker failed: ${m.message}`
        : `LoRA training worker answered out of turn (${m.type})`,
    );
  }

  /** The slot's next message, waiting for it. */
  private next(slot: Slot): LoraWorkerMessage {
    const deadline = Date.now() + WAIT_MS;
    while (Atomics.load(slot.counter, 0) === slot.read) {
      if (Date.now() > deadline)
        throw new CorellaError(
          'BAD_CONFIG',
          `LoRA training worker sent nothing for ${WAIT_MS / 1000} s (it died or hangs)`,
        );
      Atomics.wait(slot.counter, 0, slot.read, 1000);
    }
    // The counter is raised after postMessage returned, so the message is queued; a worker may raise it
    // before this thread sees the queue entry only in theory, hence the short retries.
    for (let tries = 0; ; tries++) {
      const r = receiveMessageOnPort(slot.port) as { message: LoraWorkerMessage } | undefined;
      if (r) {
        slot.read++;
        return r.message;
      }
      if (tries > 1000) throw new CorellaError('BAD_CONFIG', 'LoRA training worker message lost');
      Atomics.wait(slot.counter, 0, Atomics.load(slot.counter, 0) + 1, 1);
    }
  }

  /** Terminates every worker; resolves when they have exited. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(async (s) => {
        s.port.close();
        await s.worker.terminate();
        s.exited = true;
      }),
    );
  }
}
