import * as tf from '@tensorflow/tfjs-core';
import type { Variable } from '@tensorflow/tfjs-core';
import { activeNativeAddon } from '../tf/kernels/native-kernels.js';
import { hasHostMemory, liveData } from '../tf/memory.js';
import type { TensorEntry } from './tensor-file.js';

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

/** The most arrays one adamMany call takes (STACK_MAX in native/corella_native.c). */
const ADAM_MANY_MAX = 16;

interface Slot {
  m: Float32Array;
  v: Float32Array;
}

/**
 * Adam in plain JS over the variables' own storage, with explicit serialisable state (moments per named
 * variable and the step count) so a checkpoint restores it exactly. Dense variables get the usual update;
 * embedding tables get lazy updates of the rows a batch touched (the LazyAdam rule: untouched rows keep
 * their moments and weights), so a step costs O(touched rows), not O(vocabulary).
 * Embedding rows are updated in place on wasm and cpu; everything else via a copy and assign.
 */
export class Adam {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  step = 0;
  private readonly slots = new Map<string, Slot>();

  constructor(opts: AdamOptions) {
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.epsilon = opts.epsilon ?? 1e-7;
  }

  private slot(name: string, size: number): Slot {
    let s = this.slots.get(name);
    if (!s) {
      s = { m: new Float32Array(size), v: new Float32Array(size) };
      this.slots.set(name, s);
    }
    return s;
  }

  /** The moments of `name` (created at zero), for kernels that update a variable and its moments in one call. */
  moments(name: string, size: number): { m: Float32Array; v: Float32Array } {
    return this.slot(name, size);
  }

  /** Starts a step; returns the bias-corrected learning rate used by its updates. */
  nextStep(): number {
    this.step++;
    return (this.lr * Math.sqrt(1 - this.beta2 ** this.step)) / (1 - this.beta1 ** this.step);
  }

  /** In place where the backend keeps tensors in JS-visible memory, else through a copy and assign. */
  private write(variable: Variable, fn: (w: Float32Array) => void): void {
    if (hasHostMemory()) {
      fn(liveData(variable));
      return;
    }
    const w = (variable.dataSync() as Float32Array).slice();
    fn(w);
    tf.tidy(() => variable.assign(tf.tensor(w, variable.shape, 'float32')));
  }

  /**
   * Dense update of `variable` with gradient `g` (same size); returns the new weights: on the native path
   * the variable's own storage (a heap view: read it before the next tfjs call), else a fresh array.
   */
  updateDense(name: string, variable: Variable, g: Float32Array, lrT: number): Float32Array {
    const s = this.slot(name, variable.size);
    const { beta1: b1, beta2: b2, epsilon: eps } = this;
    const { m, v } = s;
    const native = activeNativeAddon();
    if (native) {
      // In place: with the native kernels no XNNPACK operator caches packed copies of the weights.
      const live = liveData(variable);
      native.adam(live, g, m, v, lrT, b1, b2, eps);
      // No copy: the only reader (the data-parallel stepper's publish) copies it into shared memory next.
      return live;
    }
    const w = (variable.dataSync() as Float32Array).slice();
    for (let i = 0; i < w.length; i++) {
      const gi = g[i];
      const mi = (m[i] = b1 * m[i] + (1 - b1) * gi);
      const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi);
      w[i] -= (lrT * mi) / (Math.sqrt(vi) + eps);
    }
    // A fresh tensor, not an in-place write: on wasm XNNPACK caches packed matmul weights per tensor id,
    // so weights changed behind its back would keep being read from the stale packed copy.
    tf.tidy(() => variable.assign(tf.tensor(w, variable.shape, 'float32')));
    return w;
  }

  /**
   * updateDense on every variable, in order; returns their new weights. With the addon's adamMany (up to 16
   * variables) that is one native call and one pool region: 12 calls a step cost 5 regions, each a barrier
   * and often a wake-up, while the 7 small biases ran on one core. The same bits as the calls one by one.
   */
  updateDenseAll(
    vars: { name: string; variable: Variable }[],
    grads: Float32Array[],
    lrT: number,
  ): Float32Array[] {
    const native = activeNativeAddon();
    if (!native?.adamMany || vars.length === 0 || vars.length > ADAM_MANY_MAX)
      return vars.map(({ name, variable }, i) => this.updateDense(name, variable, grads[i], lrT));
    const ws = vars.map(({ variable }) => liveData(variable));
    const slots = vars.map(({ name, variable }) => this.slot(name, variable.size));
    native.adamMany(
      ws,
      grads,
      slots.map((s) => s.m),
      slots.map((s) => s.v),
      lrT,
      this.beta1,
      this.beta2,
      this.epsilon,
    );
    return ws;
  }

  /**
   * Lazy update of rows `rows[0..count)` of a [V, dim] table; `grads` holds their gradients at row·dim.
   * In place: the table only feeds our embedding-bag kernel, which reads it afresh on every call.
   */
  updateRows(
    name: string,
    variable: Variable,
    grads: Float32Array,
    rows: Int32Array,
    count: number,
    dim: number,
    lrT: number,
  ): void {
    const s = this.slot(name, variable.size);
    const { beta1: b1, beta2: b2, epsilon: eps } = this;
    const { m, v } = s;
    const native = activeNativeAddon();
    if (native) {
      native.adamRows(liveData(variable), grads, m, v, rows, count, dim, lrT, b1, b2, eps);
      return;
    }
    this.write(variable, (w) => {
      for (let k = 0; k < count; k++) {
        const base = rows[k] * dim;
        for (let i = base; i < base + dim; i++) {
          const gi = grads[i];
          const mi = (m[i] = b1 * m[i] + (1 - b1) * gi);
          const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi);
          w[i] -= (lrT * mi) / (Math.sqrt(vi) + eps);
        }
      }
    });
  }

  exportState(): { step: number; lr: number; tensors: TensorEntry[] } {
    const tensors: TensorEntry[] = [];
    for (const [name, s] of this.slots) {
      tensors.push({ name: `adam/m/${name}`, shape: [s.m.length], data: s.m });
      tensors.push({ name: `adam/v/${name}`, shape: [s.v.length], data: s.v });
    }
    return { step: this.step, lr: this.lr, tensors };
  }

  importState(
    state: { step: number; lr: number },
    tensors: Map<string, TensorEntry>,
    variables: { name: string; variable: Variable }[],
  ): void {
    this.step = state.step;
    this.lr = state.lr;
    for (const { name, variable } of variables) {
      const m = tensors.get(`adam/m/${name}`);
      const v = tensors.get(`adam/v/${name}`);
      if (!m || !v || m.data.length !== variable.size || v.data.length !== variable.size) continue;
      this.slots.set(name, { m: m.data.slice(), v: v.data.slice() });
    }
  }

  dispose(): void {
    this.slots.clear();
  }
}
