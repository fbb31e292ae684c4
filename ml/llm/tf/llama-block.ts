import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
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

/** Each rotated pair's two dims, flat: adjacent (2i, 2i+1) for "normal", the halves (i, i + nRot/2) for "neox". */
export function ropePairs(hp: LlamaHparams): Int32Array {
  const half = hp.nRot / 2;
  const out = new Int32Array(2 * half);
  for (let i = 0; i < half; i++) {
    out[2 * i] = hp.ropeOrdering === 'normal' ? 2 * i : i;
    out[2 * i + 1] = hp.ropeOrdering === 'normal' ? 2 * i + 1 : i + half;
  }
  return out;
}

/**
 * Angles as ggml computes them, in float32: θ_scale = base^(−2/nRot), θ_i = pos·θ_scale^i by repeated
 * multiplication. Mimicking the float32 recurrence (rather than computing in float64) keeps our angles
 * equal to llama.cpp's, which the tight logit equivalence on the tiny model relies on. Returns [T, headDim]
 * cos (1 beyond nRot) and sin (0 beyond nRot).
 */
export function ropeAngles(
  hp: LlamaHparams,
  positions: readonly number[],
): { cos: Float32Array; sin: Float32Array } {
  const { headDim, nRot } = hp;
  const half = nRot / 2;
  const T = positions.length;
  const cos = new Float32Array(T * headDim).fill(1);
  const sin = new Float32Array(T * headDim);
  const thetaScale = Math.fround(Math.pow(hp.ropeFreqBase, -2 / nRot));
  const pairs = ropePairs(hp);
  for (let t = 0; t < T; t++) {
    let theta = Math.fround(positions[t]);
    for (let i = 0; i < half; i++) {
      const c = Math.cos(theta);
      const s = Math.sin(theta);
      const d0 = pairs[2 * i];
      const d1 = pairs[2 * i + 1];
      cos[t * headDim + d0] = c;
      cos[t * headDim + d1] = c;
      sin[t * headDim + d0] = s;
      sin[t * headDim + d1] = s;
      theta = Math.fround(theta * thetaScale);
    }
  }
  return { cos, sin };
}

export function ropeTables(hp: LlamaHparams, positions: number[]): RopeTables {
  const { headDim } = hp;
  const T = positions.length;
  const { cos, sin } = ropeAngles(hp, positions);
  const pairs = ropePairs(hp);
  const rot = new Float32Array(headDim * headDim);
  for (let i = 0; i < pairs.length; i += 2) {
    const d0 = pairs[i];
    const d1 = pairs[i + 1];
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

/**
 * Additive mask [repeat·rows, keys]: query row r (position rows[r]) sees keys 0..rows[r], the pattern
 * stacked `repeat` times for the heads of a key/value group. Filled here rather than by tf.tile, which on
 * wasm cost more than the block's attention products (4 ms a block on 150 × 440 scores).
 */
export function causalMask(rows: number[], keys: number, repeat: number): tf.Tensor2D {
  const R = rows.length;
  const m = new Float32Array(repeat * R * keys);
  for (let r = 0; r < R; r++) for (let j = rows[r] + 1; j < keys; j++) m[r * keys + j] = -1e30;
  for (let g = 1; g < repeat; g++) m.copyWithin(g * R * keys, 0, R * keys);
  return tf.tensor2d(m, [repeat * R, keys]);
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
  /**
   * The rows are a prompt trie's nodes (prompt-trie.ts), not one sequence: attention runs per segment, its
   * query rows against its own keys. The segments cover the rows in order. Not with past or lastOnly.
   */
  segments?: AttentionSegment[];
}

/** Query rows start..start + rows − 1 of a block's input, attending to the rows `keys` only. */
export interface AttentionSegment {
  start: number;
  rows: number;
  /** int32 [K]: the rows whose keys and values these queries see, in position order. */
  keys: tf.Tensor1D;
  /** [group·rows, K] additive mask (`causalMask` of the queries' positions among the keys). */
  mask: tf.Tensor2D;
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
  if (opts.segments) {
    let next = 0;
    for (const sg of opts.segments) {
      if (sg.start !== next || sg.mask.shape[0] !== group * sg.rows || sg.mask.shape[1] !== sg.keys.shape[0])
        throw new CorellaError(
          'BAD_CONFIG',
          `attention segment at row ${sg.start} does not fit (field segments)`,
          {
            details: { field: 'segments' },
          },
        );
      next += sg.rows;
    }
    if (next !== T || opts.past || opts.lastOnly)
      throw new CorellaError(
        'BAD_CONFIG',
        `attention segments cover ${next} of ${T} rows${opts.past || opts.lastOnly ? ', with past or lastOnly' : ''} (field segments)`,
        { details: { field: 'segments' } },
      );
  }

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
  const attend = (qs: tf.Tensor3D, ks: tf.Tensor3D, vs: tf.Tensor3D, mask: tf.Tensor2D) =>
    tf.matMul(tf.softmax(tf.add(tf.mul(tf.matMul(qs, ks, false, true), 1 / Math.sqrt(headDim)), mask)), vs);
  let att: tf.Tensor; // [nHeadKv, group·R, d]
  if (opts.segments) {
    const q4 = tf.reshape(q, [nHeadKv, group, R, headDim]);
    const parts = opts.segments.map((sg) => {
      const qs = tf.reshape(tf.slice(q4, [0, 0, sg.start, 0], [-1, -1, sg.rows, -1]), [
        nHeadKv,
        group * sg.rows,
        headDim,
      ]) as tf.Tensor3D;
      const out = attend(
        qs,
        tf.gather(k, sg.keys, 1) as tf.Tensor3D,
        tf.gather(v, sg.keys, 1) as tf.Tensor3D,
        sg.mask,
      );
      return tf.reshape(out, [nHeadKv, group, sg.rows, headDim]);
    });
    att = tf.reshape(parts.length === 1 ? parts[0] : tf.concat(parts, 2), [nHeadKv, group * R, headDim]);
  } else {
    const keys = past + T;
    const mask = causalMask(
      rows.map((r) => past + r),
      keys,
      group,
    );
    att = attend(q as tf.Tensor3D, k, v, mask);
  }
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
