import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { activeNativeAddon } from '../../tf/kernels/native-kernels.js';
import type { NativeAddon } from '../../tf/native.js';
import { ropeAngles, ropePairs } from './llama-block.js';
import type { LlamaHparams } from './llama-config.js';
import type { LlamaWeights, Projection } from './llama-weights.js';
import { trieSegment, type PromptTrie } from './prompt-trie.js';

/**
 * The frozen blocks of a prompt trie on plain Float32Arrays: every product is one sgemm call of the native
 * addon (ml/tf/native.ts), everything else a JS loop. The frozen pass needs no gradients, and in tfjs each
 * of a block's ~40 ops costs a wasm kernel call that, beside the products, dominated the pass: on a history
 * block of SmolLM2 prompts (550 trie nodes, 28 blocks) gathers of each prompt's keys took 1.5 s, multiplies,
 * adds and sigmoids 0.9 s, against 2.3 s of products. Here those are loops over the rows, and the
 * weights are read in place from the wasm heap (no copy, no transpose: sgemm takes [out, in] transposed).
 *
 * Same arithmetic as llamaBlock up to summation order (RMSNorm's mean and the softmax sum in float64,
 * sgemm's blocking), which the tests bound against the tfjs pass.
 */

interface WasmHeap {
  typedArrayFromHeap(t: TensorInfo): Float32Array;
}

/** The native addon and the wasm backend whose heap holds the weights, when both are in use. */
export function hostFrozenAvailable(): boolean {
  return activeNativeAddon() !== undefined;
}

/**
 * Views of the layer's matrices on the wasm heap. Taken again per block: a tfjs allocation elsewhere can
 * grow the heap, which detaches earlier views.
 */
function layerViews(weights: LlamaWeights, l: number): Record<Projection, Float32Array> {
  const heap = tf.backend() as unknown as WasmHeap;
  const p = weights.layers[l].proj;
  return {
    q: heap.typedArrayFromHeap(p.q),
    k: heap.typedArrayFromHeap(p.k),
    v: heap.typedArrayFromHeap(p.v),
    o: heap.typedArrayFromHeap(p.o),
    gate: heap.typedArrayFromHeap(p.gate),
    up: heap.typedArrayFromHeap(p.up),
    down: heap.typedArrayFromHeap(p.down),
  };
}

/** out [rows, n] = x [rows, k] · wᵀ, w [n, k] (the GGUF layout). */
function linear(
  addon: NativeAddon,
  x: Float32Array,
  w: Float32Array,
  rows: number,
  n: number,
  k: number,
): Float32Array {
  const out = new Float32Array(rows * n);
  addon.matmul(x, w, out, 1, rows, n, k, false, true, 0, 0, null, 0);
  return out;
}

/** x / sqrt(mean(x²) + eps) · w, per row. */
function rmsNorm(x: Float32Array, w: Float32Array, rows: number, E: number, eps: number): Float32Array {
  const out = new Float32Array(rows * E);
  for (let r = 0; r < rows; r++) {
    const o = r * E;
    let ss = 0;
    for (let j = 0; j < E; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(Math.fround(ss / E) + eps);
    for (let j = 0; j < E; j++) out[o + j] = x[o + j] * inv * w[j];
  }
  return out;
}

/** In place on x [rows, heads·d]: each rotated pair (d0, d1) → (x0·c − x1·s, x1·c + x0·s), as applyRope. */
function rope(
  x: Float32Array,
  rows: number,
  heads: number,
  d: number,
  cos: Float32Array,
  sin: Float32Array,
  pairs: Int32Array,
): void {
  for (let r = 0; r < rows; r++) {
    const t = r * d;
    for (let h = 0; h < heads; h++) {
      const o = (r * heads + h) * d;
      for (let i = 0; i < pairs.length; i += 2) {
        const d0 = pairs[i];
        const d1 = pairs[i + 1];
        const x0 = x[o + d0];
        const x1 = x[o + d1];
        x[o + d0] = x0 * cos[t + d0] - x1 * sin[t + d0];
        x[o + d1] = x1 * cos[t + d1] + x0 * sin[t + d1];
      }
    }
  }
}

interface Segment {
  /** First query row (trie node) and count; the queries sit at positions from..from + rows − 1. */
  start: number;
  rows: number;
  from: number;
  /** The prompt's path: the nodes whose keys the queries see, in position order. */
  path: Int32Array;
}

/**
 * Grouped-query attention of each segment's queries against its path's keys, into merged [N, nHead·d].
 * Per segment the queries of a key/value group's heads are one [group·rows, d] block, so scores and the
 * weighted values are two batched sgemm calls over the nHeadKv groups.
 */
function attention(
  addon: NativeAddon,
  hp: LlamaHparams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  segments: Segment[],
  N: number,
): Float32Array {
  const { nHead, nHeadKv, headDim: d } = hp;
  const group = nHead / nHeadKv;
  const Q = nHead * d;
  const KV = nHeadKv * d;
  const merged = new Float32Array(N * Q);
  const scale = Math.fround(1 / Math.sqrt(d));
  for (const sg of segments) {
    const T = sg.path.length;
    const R = sg.rows;
    const GR = group * R;
    const kb = new Float32Array(nHeadKv * T * d);
    const vb = new Float32Array(nHeadKv * T * d);
    for (let j = 0; j < T; j++) {
      const src = sg.path[j] * KV;
      for (let g = 0; g < nHeadKv; g++) {
        kb.set(k.subarray(src + g * d, src + (g + 1) * d), (g * T + j) * d);
        vb.set(v.subarray(src + g * d, src + (g + 1) * d), (g * T + j) * d);
      }
    }
    // [nHead, R, d] = [nHeadKv, group·R, d]: heads of one group are adjacent.
    const qb = new Float32Array(nHead * R * d);
    for (let r = 0; r < R; r++) {
      const src = (sg.start + r) * Q;
      for (let h = 0; h < nHead; h++) qb.set(q.subarray(src + h * d, src + (h + 1) * d), (h * R + r) * d);
    }
    const scores = new Float32Array(nHeadKv * GR * T);
    addon.matmul(qb, kb, scores, nHeadKv, GR, T, d, false, true, GR * d, T * d, null, 0);
    // Row (g, e, r) is query position from + r: it sees keys 0..from + r.
    for (let row = 0; row < nHeadKv * GR; row++) {
      const o = row * T;
      const seen = sg.from + (row % R) + 1;
      let max = -Infinity;
      for (let j = 0; j < seen; j++) {
        const s = Math.fround(scores[o + j] * scale);
        scores[o + j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < seen; j++) {
        const e = Math.exp(scores[o + j] - max);
        scores[o + j] = e;
        sum += scores[o + j];
      }
      const inv = 1 / sum;
      for (let j = 0; j < seen; j++) scores[o + j] *= inv;
      scores.fill(0, o + seen, o + T);
    }
    const att = new Float32Array(nHeadKv * GR * d);
    addon.matmul(scores, vb, att, nHeadKv, GR, d, T, false, false, GR * T, T * d, null, 0);
    for (let h = 0; h < nHead; h++)
      for (let r = 0; r < R; r++)
        merged.set(att.subarray((h * R + r) * d, (h * R + r + 1) * d), (sg.start + r) * Q + h * d);
  }
  return merged;
}

/**
 * Blocks 0..firstLayer−1 on the trie's nodes: the block input of firstLayer for every node [N, nEmbd], and
 * the nodes' outputs of the `keep` blocks, for the rows `keepNodes` ([keepNodes.length, nEmbd] each).
 * Needs hostFrozenAvailable().
 */
export function hostFrozenPass(
  weights: LlamaWeights,
  trie: PromptTrie,
  firstLayer: number,
  keep: ReadonlySet<number>,
  keepNodes: Int32Array,
): { out: Float32Array; kept: Map<number, Float32Array> } {
  const addon = activeNativeAddon();
  if (!addon) throw new Error('hostFrozenPass needs the native addon on the wasm backend');
  const hp = weights.hp;
  const { nEmbd: E, nHead, nHeadKv, headDim: d, nFf: F, rmsEps } = hp;
  const N = trie.tokens.length;
  const Q = nHead * d;
  const KV = nHeadKv * d;
  let x: Float32Array = new Float32Array(N * E);
  trie.tokens.forEach((t, i) => x.set(weights.tokenEmbd.subarray(t * E, (t + 1) * E), i * E));
  const { cos, sin } = ropeAngles(hp, trie.positions);
  const pairs = ropePairs(hp);
  const segments: Segment[] = [];
  trie.paths.forEach((path, i) => {
    const sg = trieSegment(trie, i);
    if (sg) segments.push({ start: sg.start, rows: path.length - sg.from, from: sg.from, path });
  });
  const kept = new Map<number, Float32Array>();
  for (let l = 0; l < firstLayer; l++) {
    const layer = weights.layers[l];
    const attnNorm = layer.attnNorm.dataSync() as Float32Array;
    const ffnNorm = layer.ffnNorm.dataSync() as Float32Array;
    const w = layerViews(weights, l);
    const h = rmsNorm(x, attnNorm, N, E, rmsEps);
    const q = linear(addon, h, w.q, N, Q, E);
    const k = linear(addon, h, w.k, N, KV, E);
    const v = linear(addon, h, w.v, N, KV, E);
    rope(q, N, nHead, d, cos, sin, pairs);
    rope(k, N, nHeadKv, d, cos, sin, pairs);
    const merged = attention(addon, hp, q, k, v, segments, N);
    const o = linear(addon, merged, w.o, N, E, Q);
    for (let i = 0; i < N * E; i++) o[i] += x[i];
    const x1 = o;
    const h2 = rmsNorm(x1, ffnNorm, N, E, rmsEps);
    const gate = linear(addon, h2, w.gate, N, F, E);
    const up = linear(addon, h2, w.up, N, F, E);
    for (let i = 0; i < N * F; i++) {
      const g = gate[i];
      gate[i] = ((g / (1 + Math.exp(-g))) as number) * up[i];
    }
    const down = linear(addon, gate, w.down, N, E, F);
    for (let i = 0; i < N * E; i++) down[i] += x1[i];
    x = down;
    if (keep.has(l)) {
      const rows = new Float32Array(keepNodes.length * E);
      keepNodes.forEach((n, i) => rows.set(x.subarray(n * E, (n + 1) * E), i * E));
      kept.set(l, rows);
    }
  }
  return { out: x, kept };
}
