import * as tf from '@tensorflow/tfjs-core';
import type { LlamaHparams } from './llama-config.js';
import type { LayerWeights, Projection } from './llama-weights.js';

/** LoRA factors of one projection: ΔW = scale·B·A, A [r, in], B [out, r] (the GGUF adapter layout). */
export interface LoraFactors {
  a: tf.Tensor2D;
  b: tf.Tensor2D;
  scale: number;
}
export type LayerLora = Partial<Record<Projection, LoraFactors>>;

/** Keys and values of earlier positions, after RoPE: [nHeadKv, past, headDim] each. */
export interface PastKv {
  k: tf.Tensor3D;
  v: tf.Tensor3D;
}

/** x·Wᵀ (+ scale·(x·Aᵀ)·Bᵀ): the low-rank path never forms B·A, so its cost is r·(in + out) per row. */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, lora?: LoraFactors): tf.Tensor2D {
  const y = tf.matMul(x, w, false, true) as tf.Tensor2D;
  if (!lora) return y;
  const low = tf.matMul(tf.matMul(x, lora.a, false, true), lora.b, false, true);
  return tf.add(y, tf.mul(low, lora.scale)) as tf.Tensor2D;
}

/** llama.cpp's RMSNorm: x / sqrt(mean(x²) + eps), then the elementwise weight. */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

export interface RopeTables {
  /** [T, 1, headDim]: cos of each dim's angle (1 beyond nRot). */
  cos: tf.Tensor3D;
  /** [T, 1, headDim]: sin (0 beyond nRot). */
  sin: tf.Tensor3D;
  /** [headDim, headDim]: x·R puts each rotated pair's partner, signed, in place (−x₂, x₁). */
  rot: tf.Tensor2D;
}

/**
 * Angles as ggml computes them, in float32: θ_scale = base^(−2/nRot), θ_i = pos·θ_scale^i by repeated
 * multiplication. Mimicking the float32 recurrence (rather than computing in float64) keeps our angles
 * equal to llama.cpp's, which the tight logit equivalence on the tiny model relies on.
 */
export function ropeTables(hp: LlamaHparams, positions: number[]): RopeTables {
  const { headDim, nRot } = hp;
  const half = nRot / 2;
  const T = positions.length;
  const cos = new Float32Array(T * headDim).fill(1);
  const sin = new Float32Array(T * headDim);
  const thetaScale = Math.fround(Math.pow(hp.ropeFreqBase, -2 / nRot));
  // Pair i's two dims: adjacent (2i, 2i+1) for "normal", the halves (i, i + nRot/2) for "neox".
  const pair = (i: number): [number, number] =>
    hp.ropeOrdering === 'normal' ? [2 * i, 2 * i + 1] : [i, i + half];
  for (let t = 0; t < T; t++) {
    let theta = Math.fround(positions[t]);
    for (let i = 0; i < half; i++) {
      const c = Math.cos(theta);
      const s = Math.sin(theta);
      const [d0, d1] = pair(i);
      cos[t * headDim + d0] = c;
      cos[t * headDim + d1] = c;
      sin[t * headDim + d0] = s;
      sin[t * headDim + d1] = s;
      theta = Math.fround(theta * thetaScale);
    }
  }
  const rot = new Float32Array(headDim * headDim);
  for (let i = 0; i < half; i++) {
    const [d0, d1] = pair(i);
    rot[d1 * headDim + d0] = -1; // out[d0] = −x[d1]
    rot[d0 * headDim + d1] = 1; // out[d1] = x[d0]
  }
  return {
    cos: tf.tensor3d(cos, [T, 1, headDim]),
    sin: tf.tensor3d(sin, [T, 1, headDim]),
    rot: tf.tensor2d(rot, [headDim, headDim]),
  };
}

export function disposeRope(r: RopeTables): void {
  tf.dispose([r.cos, r.sin, r.rot]);
}

/** x [T, heads·headDim] → rotated [T, heads, headDim]. */
function applyRope(x: tf.Tensor2D, heads: number, headDim: number, rope: RopeTables): tf.Tensor3D {
  const T = x.shape[0];
  const x3 = tf.reshape(x, [T, heads, headDim]) as tf.Tensor3D;
  const swapped = tf.reshape(tf.matMul(tf.reshape(x, [T * heads, headDim]) as tf.Tensor2D, rope.rot), [
    T,
    heads,
    headDim,
  ]);
  return tf.add(tf.mul(x3, rope.cos), tf.mul(swapped, rope.sin)) as tf.Tensor3D;
}

/** Additive mask [rows, past + T]: query row i (position past + i) sees keys 0..past + i. */
function causalMask(rows: number[], keys: number): tf.Tensor2D {
  const m = new Float32Array(rows.length * keys);
  for (let r = 0; r < rows.length; r++) for (let j = rows[r] + 1; j < keys; j++) m[r * keys + j] = -1e30;
  return tf.tensor2d(m, [rows.length, keys]);
}

export interface BlockOptions {
  lora?: LayerLora;
  past?: PastKv;
  /**
   * Compute the block's output for the last position only (keys and values still cover every position).
   * The top layer of a scoring pass needs nothing else, which saves its query, output and MLP products on
   * all other tokens.
   */
  lastOnly?: boolean;
  /** Receives this block's keys and values for all positions (past included), for a later continuation. */
  onKv?: (kv: PastKv) => void;
}

/**
 * One llama block on x [T, nEmbd] at positions past..past+T−1 (rope tables for those positions):
 * pre-norm grouped-query attention with a causal mask, then a pre-norm SwiGLU MLP, each added to the
 * residual stream. Returns [T, nEmbd], or [1, nEmbd] with lastOnly.
 */
export function llamaBlock(
  hp: LlamaHparams,
  w: LayerWeights,
  x: tf.Tensor2D,
  rope: RopeTables,
  opts: BlockOptions = {},
): tf.Tensor2D {
  const { nHead, nHeadKv, headDim, rmsEps } = hp;
  const lora = opts.lora ?? {};
  const T = x.shape[0];
  const past = opts.past?.k.shape[1] ?? 0;
  const group = nHead / nHeadKv;

  const h = rmsNorm(x, w.attnNorm, rmsEps);
  const kNew = tf.transpose(applyRope(linear(h, w.proj.k, lora.k), nHeadKv, headDim, rope), [1, 0, 2]);
  const vNew = tf.transpose(tf.reshape(linear(h, w.proj.v, lora.v), [T, nHeadKv, headDim]), [1, 0, 2]);
  const k = (opts.past ? tf.concat([opts.past.k, kNew], 1) : kNew) as tf.Tensor3D;
  const v = (opts.past ? tf.concat([opts.past.v, vNew], 1) : vNew) as tf.Tensor3D;
  opts.onKv?.({ k: tf.keep(k), v: tf.keep(v) });

  const rows = opts.lastOnly ? [T - 1] : Array.from({ length: T }, (_, i) => i);
  const xq = opts.lastOnly ? (tf.slice(x, [T - 1, 0], [1, -1]) as tf.Tensor2D) : x;
  const hq = opts.lastOnly ? (tf.slice(h, [T - 1, 0], [1, -1]) as tf.Tensor2D) : h;
  const ropeQ: RopeTables = opts.lastOnly
    ? {
        cos: tf.slice(rope.cos, [T - 1, 0, 0], [1, -1, -1]),
        sin: tf.slice(rope.sin, [T - 1, 0, 0], [1, -1, -1]),
        rot: rope.rot,
      }
    : rope;
  const R = rows.length;
  // Heads of one key/value group are adjacent, so [nHead, R, d] reshapes to [nHeadKv, group·R, d] and each
  // group's queries meet their shared keys in one batched product, without copying keys per head.
  const q = tf.reshape(
    tf.transpose(applyRope(linear(hq, w.proj.q, lora.q), nHead, headDim, ropeQ), [1, 0, 2]),
    [nHeadKv, group * R, headDim],
  );
  const keys = past + T;
  const mask = tf.tile(
    causalMask(
      rows.map((r) => past + r),
      keys,
    ),
    [group, 1],
  );
  const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(headDim)), mask);
  const att = tf.matMul(tf.softmax(scores), v); // [nHeadKv, group·R, d]
  const merged = tf.reshape(tf.transpose(tf.reshape(att, [nHead, R, headDim]), [1, 0, 2]), [
    R,
    nHead * headDim,
  ]) as tf.Tensor2D;
  const x1 = tf.add(xq, linear(merged, w.proj.o, lora.o)) as tf.Tensor2D;

  const h2 = rmsNorm(x1, w.ffnNorm, rmsEps);
  const gate = linear(h2, w.proj.gate, lora.gate);
  const up = linear(h2, w.proj.up, lora.up);
  const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as tf.Tensor2D;
  return tf.add(x1, linear(act, w.proj.down, lora.down)) as tf.Tensor2D;
}
