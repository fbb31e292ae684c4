import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Variable } from '@tensorflow/tfjs-core';
import type { TensorEntry } from './tensor-file.js';

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

/**
 * Adam with explicit, serialisable state (moments per named variable and the step count), so a
 * checkpoint restores the optimizer exactly. The learning rate can be changed between steps (decay on
 * plateau).
 */
export class Adam {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  step = 0;
  private readonly moments = new Map<string, { m: Variable; v: Variable }>();

  constructor(opts: AdamOptions) {
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.epsilon = opts.epsilon ?? 1e-7;
  }

  private slot(name: string, variable: Variable): { m: Variable; v: Variable } {
    let s = this.moments.get(name);
    if (!s) {
      s = { m: tf.variable(tf.zerosLike(variable), false), v: tf.variable(tf.zerosLike(variable), false) };
      this.moments.set(name, s);
    }
    return s;
  }

  /** One update of every variable that has a gradient. */
  apply(params: { name: string; variable: Variable; grad: Tensor }[]): void {
    this.step++;
    const t = this.step;
    const lrT = (this.lr * Math.sqrt(1 - this.beta2 ** t)) / (1 - this.beta1 ** t);
    tf.tidy(() => {
      for (const { name, variable, grad } of params) {
        const s = this.slot(name, variable);
        const m = tf.add(tf.mul(s.m, this.beta1), tf.mul(grad, 1 - this.beta1));
        const v = tf.add(tf.mul(s.v, this.beta2), tf.mul(tf.square(grad), 1 - this.beta2));
        s.m.assign(m);
        s.v.assign(v);
        variable.assign(tf.sub(variable, tf.div(tf.mul(m, lrT), tf.add(tf.sqrt(v), this.epsilon))));
      }
    });
  }

  exportState(): { step: number; lr: number; tensors: TensorEntry[] } {
    const tensors: TensorEntry[] = [];
    for (const [name, s] of this.moments) {
      tensors.push({ name: `adam/m/${name}`, shape: s.m.shape, data: s.m.dataSync() as Float32Array });
      tensors.push({ name: `adam/v/${name}`, shape: s.v.shape, data: s.v.dataSync() as Float32Array });
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
      if (!m || !v) continue;
      const s = this.slot(name, variable);
      s.m.assign(tf.tensor(m.data, m.shape));
      s.v.assign(tf.tensor(v.data, v.shape));
    }
  }

  dispose(): void {
    for (const s of this.moments.values()) {
      s.m.dispose();
      s.v.dispose();
    }
    this.moments.clear();
  }
}
