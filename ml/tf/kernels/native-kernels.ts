import {
  BatchMatMul,
  Identity,
  _FusedMatMul,
  getBackend,
  getKernel,
  registerKernel,
  unregisterKernel,
} from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { NativeAddon } from '../native.js';
import { EMBEDDING_BAG, EMBEDDING_BAG_GRAD } from './embedding-bag.js';

/**
 * Kernels for the wasm backend computed by the native addon (native/corella_native.c, OpenBLAS) on the
 * tensors' own wasm-heap memory: the addon receives Float32Array views of the heap, so nothing is copied.
 *
 * - BatchMatMul and _FusedMatMul: XNNPACK inside the wasm module reaches ~20 GFLOP/s on the CRM's
 *   1024×128·128×128 products and needs materialised transposes for the backward pass; sgemm runs them
 *   at several times that and takes transposed operands as they are. What the addon does not cover
 *   (non-float32, batch broadcasting other than one side whole, bias of another shape, activations other
 *   than linear/relu, prelu weights) goes to the stock wasm kernel.
 * - Our embedding bag and its gradient (the JS loops of embedding-bag.ts, in C).
 * - CorellaCrossLayer / CorellaCrossLayerGrad / CorellaDenseGrad: a DCNv2 cross layer and the backward
 *   pass of a dense layer, each one kernel (ml/tf/cross.ts and ml/tf/dense.ts use them when registered).
 * - CorellaCrossStack / CorellaCrossStackGrad: a stack of full-rank cross layers as one tape op, whose
 *   backward sums x0's gradient in one buffer (ml/crm/cross-stack.ts); CorellaBceWithLogits: the CRM loss
 *   and its gradient in one pass (ml/crm/loss.ts); CorellaDenseStack / CorellaDenseStackGrad: the MLP and
 *   output layer as one tape op (ml/crm/dense-stack.ts). Both stacks carry a block of rows through every
 *   layer in one pool region.
 * - Identity shares its input's memory (reference-counted) instead of copying it, as the cpu backend's
 *   Identity does: tfjs clones every tensor a gradient saves, ~8 MB of copies per CRM training step on
 *   wasm (≈10% of the step). tfjs tensors are immutable; the only in-place writers are our optimizer and
 *   embedding updates (ml/crm), which run after the backward pass and already meet shared clones on cpu.
 */

export const CROSS_LAYER = 'CorellaCrossLayer';
export const CROSS_LAYER_GRAD = 'CorellaCrossLayerGrad';
export const DENSE_GRAD = 'CorellaDenseGrad';
export const CROSS_STACK = 'CorellaCrossStack';
export const CROSS_STACK_GRAD = 'CorellaCrossStackGrad';
export const BCE_WITH_LOGITS = 'CorellaBceWithLogits';
export const DENSE_STACK = 'CorellaDenseStack';
export const DENSE_STACK_GRAD = 'CorellaDenseStackGrad';

interface WasmBackend {
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array;
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
}

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
  activation?: string;
}

/** Kernels registered on wasm before ours (undefined: none), to restore them. */
const originals = new Map<string, KernelConfig | undefined>();
let active: NativeAddon | undefined;

function batchOf(shape: number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length - 2; i++) n *= shape[i];
  return n;
}

/** Batch dims of the output when one side broadcasts whole (or both agree); undefined otherwise. */
function outputBatchDims(a: number[], b: number[]): number[] | undefined {
  const da = a.slice(0, -2);
  const db = b.slice(0, -2);
  const na = batchOf(a);
  const nb = batchOf(b);
  if (na === 1 && nb === 1) return da.length >= db.length ? da : db;
  if (nb === 1) return da;
  if (na === 1) return db;
  if (da.length === db.length && da.every((d, i) => d === db[i])) return da;
  return undefined;
}

function heap(backend: unknown) {
  const w = backend as WasmBackend;
  return {
    f32: (t: TensorInfo) => w.typedArrayFromHeap(t) as Float32Array,
    i32: (t: TensorInfo) => w.typedArrayFromHeap(t) as Int32Array,
    out: (shape: number[]) => w.makeOutput(shape, 'float32'),
  };
}

function matMulKernel(addon: NativeAddon, kernelName: string): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const { a, b, bias, preluActivationWeights } = inputs as Record<string, TensorInfo | undefined>;
    const { transposeA, transposeB, activation = 'linear' } = attrs as unknown as MatMulAttrs;
    const fallback = () => originals.get(kernelName)!.kernelFunc(args) as TensorInfo;
    if (!a || !b || a.dtype !== 'float32' || b.dtype !== 'float32') return fallback();
    if (a.shape.length < 2 || b.shape.length < 2) return fallback();
    if (preluActivationWeights || (activation !== 'linear' && activation !== 'relu')) return fallback();
    const m = transposeA ? a.shape.at(-1)! : a.shape.at(-2)!;
    const k = transposeA ? a.shape.at(-2)! : a.shape.at(-1)!;
    const kb = transposeB ? b.shape.at(-1)! : b.shape.at(-2)!;
    const n = transposeB ? b.shape.at(-2)! : b.shape.at(-1)!;
    if (k !== kb) return fallback();
    if (
      bias &&
      (bias.dtype !== 'float32' || bias.shape.length !== 1 || (bias.shape[0] !== n && bias.shape[0] !== 1))
    )
      return fallback();
    const batchDims = outputBatchDims(a.shape, b.shape);
    if (!batchDims) return fallback();
    const h = heap(backend);
    const out = h.out([...batchDims, m, n]);
    // Views after makeOutput: allocating may grow the heap, which detaches views taken before.
    const na = batchOf(a.shape);
    const nb = batchOf(b.shape);
    addon.matmul(
      h.f32(a),
      h.f32(b),
      h.f32(out),
      Math.max(na, nb),
      m,
      n,
      k,
      transposeA,
      transposeB,
      na === 1 ? 0 : m * k,
      nb === 1 ? 0 : k * n,
      bias ? h.f32(bias) : null,
      activation === 'relu' ? 1 : 0,
    );
    return out;
  };
}

function embeddingBagKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { table, rows, weights } = inputs as Record<string, TensorInfo>;
    const { bagSize } = attrs as unknown as { bagSize: number };
    const dim = table.shape[1];
    const h = heap(backend);
    const out = h.out([rows.shape[0] / bagSize, dim]);
    addon.embeddingBag(h.f32(table), h.i32(rows), h.f32(weights), h.f32(out), dim, bagSize);
    return out;
  };
}

function embeddingBagGradKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { dy, rows, weights } = inputs as Record<string, TensorInfo>;
    const { bagSize, numRows } = attrs as unknown as { bagSize: number; numRows: number };
    const dim = dy.shape[1];
    const h = heap(backend);
    const out = h.out([numRows, dim]);
    addon.embeddingBagGrad(h.f32(dy), h.i32(rows), h.f32(weights), h.f32(out), dim, bagSize);
    return out;
  };
}

/** inputs x0, x [m, n], w [n, n], b [n] → [y, z]: z = x·w + b, y = x0 ⊙ z + x. */
function crossKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend }) => {
    const { x0, x, w, b } = inputs as Record<string, TensorInfo>;
    const [m, n] = x.shape;
    const h = heap(backend);
    const y = h.out([m, n]);
    const z = h.out([m, n]);
    addon.crossForward(h.f32(x0), h.f32(x), h.f32(w), h.f32(b), h.f32(y), h.f32(z), m, n);
    return [y, z];
  };
}

/** inputs dy, x0, x, w, z → [dx0, dx, dw, db]. */
function crossGradKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend }) => {
    const { dy, x0, x, w, z } = inputs as Record<string, TensorInfo>;
    const [m, n] = x.shape;
    const h = heap(backend);
    const dx0 = h.out([m, n]);
    const dx = h.out([m, n]);
    const dw = h.out([n, n]);
    const db = h.out([n]);
    addon.crossBackward(
      h.f32(dy),
      h.f32(x0),
      h.f32(x),
      h.f32(w),
      h.f32(z),
      h.f32(dx0),
      h.f32(dx),
      h.f32(dw),
      h.f32(db),
      m,
      n,
    );
    return [dx0, dx, dw, db];
  };
}

/**
 * inputs x0, w0, b0, …, w{L-1}, b{L-1}; attr layers L → [y, z0, …, z{L-1}, x1, …, x{L-1}]: L cross layers
 * in one kernel, x_{l+1} = x0 ⊙ (x_l·w_l + b_l) + x_l with x_0 = x0, returning what the backward needs.
 */
function crossStackKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { layers } = attrs as unknown as { layers: number };
    const t = inputs as Record<string, TensorInfo>;
    const [m, n] = t.x0.shape;
    const h = heap(backend);
    const ys = Array.from({ length: layers }, () => h.out([m, n]));
    const zs = Array.from({ length: layers }, () => h.out([m, n]));
    // One call: the addon carries each block of rows through every layer while it is in cache.
    addon.crossStackForward(
      h.f32(t.x0),
      Array.from({ length: layers }, (_, l) => h.f32(t[`w${l}`])),
      Array.from({ length: layers }, (_, l) => h.f32(t[`b${l}`])),
      ys.map((y) => h.f32(y)),
      zs.map((z) => h.f32(z)),
      m,
      n,
    );
    return [ys[layers - 1], ...zs, ...ys.slice(0, -1)];
  };
}

/**
 * inputs dy, x0, w_l, z_l (l < L), x_l (1 ≤ l < L); attr layers → [dx0, dw0, db0, …]. x0's gradient is
 * summed in one output by the kernel instead of one tfjs Add per layer (4 wasm Adds over [B, 128] at
 * three layers, ~0.3 ms a step on the main thread); the sum has the tape's order, so it is bit-identical.
 */
function crossStackGradKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { layers } = attrs as unknown as { layers: number };
    const t = inputs as Record<string, TensorInfo>;
    const [m, n] = t.x0.shape;
    const h = heap(backend);
    const dx0 = h.out([m, n]);
    const dws = Array.from({ length: layers }, () => h.out([n, n]));
    const dbs = Array.from({ length: layers }, () => h.out([n]));
    addon.crossStackBackward(
      h.f32(t.dy),
      h.f32(t.x0),
      Array.from({ length: layers }, (_, l) => h.f32(t[`w${l}`])),
      Array.from({ length: layers }, (_, l) => h.f32(t[`z${l}`])),
      Array.from({ length: layers - 1 }, (_, l) => h.f32(t[`x${l + 1}`])),
      h.f32(dx0),
      dws.map((d) => h.f32(d)),
      dbs.map((d) => h.f32(d)),
      m,
      n,
    );
    return [dx0, ...dws.flatMap((dw, l) => [dw, dbs[l]])];
  };
}

/**
 * inputs x [m, k0], w_l [k_l, n_l], b_l [n_l]; attrs layers L, relu (bit l: relu on layer l) →
 * [y_{L-1}, y_0, …, y_{L-2}]: a dense stack (the MLP and the output layer) as one kernel.
 */
function denseStackKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { layers, relu } = attrs as unknown as { layers: number; relu: number };
    const t = inputs as Record<string, TensorInfo>;
    const [m, k0] = t.x.shape;
    const h = heap(backend);
    const ys = Array.from({ length: layers }, (_, l) => h.out([m, t[`b${l}`].shape[0]]));
    addon.denseStackForward(
      h.f32(t.x),
      Array.from({ length: layers }, (_, l) => h.f32(t[`w${l}`])),
      Array.from({ length: layers }, (_, l) => h.f32(t[`b${l}`])),
      ys.map((y) => h.f32(y)),
      m,
      k0,
      relu,
    );
    return [ys[layers - 1], ...ys.slice(0, -1)];
  };
}

/** inputs dy, x, w_l, y_l (l < L); attrs layers, relu → [dx, dw0, db0, …]. */
function denseStackGradKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { layers, relu } = attrs as unknown as { layers: number; relu: number };
    const t = inputs as Record<string, TensorInfo>;
    const [m, k0] = t.x.shape;
    const h = heap(backend);
    const dx = h.out([m, k0]);
    const dws = Array.from({ length: layers }, (_, l) => h.out(t[`w${l}`].shape));
    const dbs = Array.from({ length: layers }, (_, l) => h.out([t[`w${l}`].shape[1]]));
    addon.denseStackBackward(
      h.f32(t.dy),
      h.f32(t.x),
      Array.from({ length: layers }, (_, l) => h.f32(t[`w${l}`])),
      Array.from({ length: layers }, (_, l) => h.f32(t[`y${l}`])),
      h.f32(dx),
      dws.map((d) => h.f32(d)),
      dbs.map((d) => h.f32(d)),
      m,
      k0,
      relu,
    );
    return [dx, ...dws.flatMap((dw, l) => [dw, dbs[l]])];
  };
}

/**
 * inputs z, y [n] → [loss (scalar, the mean), g [n] = (σ(z) − y)/n]: the loss and its gradient in one
 * pass, so the backward is only g·dy.
 */
function bceKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend }) => {
    const { z, y } = inputs as Record<string, TensorInfo>;
    const n = z.shape[0];
    const h = heap(backend);
    const loss = h.out([]);
    const g = h.out([n]);
    const sum = addon.bceWithLogits(h.f32(z), h.f32(y), h.f32(g), 1 / n);
    h.f32(loss)[0] = sum / n;
    return [loss, g];
  };
}

/** inputs dy, x [m, k], w [k, n], y; attrs relu, withBias → [dx, dw] or [dx, dw, db]. */
function denseGradKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { dy, x, w, y } = inputs as Record<string, TensorInfo>;
    const { relu, withBias } = attrs as unknown as { relu: boolean; withBias: boolean };
    const [m, k] = x.shape;
    const n = w.shape[1];
    const h = heap(backend);
    const dx = h.out([m, k]);
    const dw = h.out([k, n]);
    const db = withBias ? h.out([n]) : undefined;
    addon.denseBackward(
      h.f32(dy),
      h.f32(x),
      h.f32(w),
      h.f32(y),
      h.f32(dx),
      h.f32(dw),
      db ? h.f32(db) : null,
      m,
      k,
      n,
      relu,
    );
    return db ? [dx, dw, db] : [dx, dw];
  };
}

const sharingIdentity: KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as { x: TensorInfo };
  (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
};

function replace(name: string, kernelFunc: KernelFunc): void {
  if (!originals.has(name)) originals.set(name, getKernel(name, 'wasm'));
  if (getKernel(name, 'wasm')) unregisterKernel(name, 'wasm');
  registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
}

/**
 * Registers the native kernels on wasm. Call after the wasm backend is initialised (the stock matmul
 * kernels' setup must have run: they remain the fallback) and after our JS embedding-bag kernels.
 * Idempotent.
 */
export function registerNativeKernels(addon: NativeAddon): void {
  for (const name of [BatchMatMul, _FusedMatMul]) {
    if (!originals.has(name) && !getKernel(name, 'wasm'))
      throw new Error(`the wasm backend has no ${name} kernel to fall back to`);
    replace(name, matMulKernel(addon, name));
  }
  replace(EMBEDDING_BAG, embeddingBagKernel(addon));
  replace(EMBEDDING_BAG_GRAD, embeddingBagGradKernel(addon));
  replace(CROSS_LAYER, crossKernel(addon));
  replace(CROSS_LAYER_GRAD, crossGradKernel(addon));
  replace(DENSE_GRAD, denseGradKernel(addon));
  replace(CROSS_STACK, crossStackKernel(addon));
  replace(CROSS_STACK_GRAD, crossStackGradKernel(addon));
  replace(BCE_WITH_LOGITS, bceKernel(addon));
  replace(DENSE_STACK, denseStackKernel(addon));
  replace(DENSE_STACK_GRAD, denseStackGradKernel(addon));
  replace(Identity, sharingIdentity);
  active = addon;
}

/** Puts back what was registered on wasm before (tests compare the native kernels against it). */
export function restoreNativeKernels(): void {
  for (const [name, orig] of originals) {
    if (getKernel(name, 'wasm')) unregisterKernel(name, 'wasm');
    if (orig) registerKernel(orig);
  }
  originals.clear();
  active = undefined;
}

/** Whether the native kernels are registered on wasm (matrix products then take transposed operands at full speed). */
export function nativeKernelsActive(): boolean {
  return active !== undefined;
}

/**
 * The addon while its kernels serve the current backend (wasm), for host-side loops (optimizer, gradient
 * scatter) that run next to them; undefined elsewhere.
 */
export function activeNativeAddon(): NativeAddon | undefined {
  return active && getBackend() === 'wasm' ? active : undefined;
}
