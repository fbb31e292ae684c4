import { registerKernel, unregisterKernel, getKernel, UnsortedSegmentSum } from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo, UnsortedSegmentSumAttrs } from '@tensorflow/tfjs-core';

/**
 * Sums rows of `x` (viewed as [n, inner]) into `numSegments` rows by segment id; ids outside
 * [0, numSegments) are dropped, as in TensorFlow. One linear pass, so the embedding gradient costs
 * O(batch × dim) instead of the stock cpu kernel's O(numSegments × batch) tensor-per-segment loop.
 */
export function segmentSumInto(
  x: ArrayLike<number>,
  segmentIds: ArrayLike<number>,
  numSegments: number,
  inner: number,
  out: Float32Array | Int32Array,
): void {
  const n = segmentIds.length;
  for (let i = 0; i < n; i++) {
    const s = segmentIds[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j] += x[src + j];
  }
}

function outputShape(
  x: TensorInfo,
  segmentIds: TensorInfo,
  numSegments: number,
): { shape: number[]; inner: number } {
  const idRank = segmentIds.shape.length;
  for (let d = 0; d < idRank; d++) {
    if (x.shape[d] !== segmentIds.shape[d]) {
      throw new Error(
        `UnsortedSegmentSum: segmentIds shape ${segmentIds.shape} is not a prefix of x shape ${x.shape}`,
      );
    }
  }
  const innerShape = x.shape.slice(idRank);
  const inner = innerShape.reduce((a, b) => a * b, 1);
  return { shape: [numSegments, ...innerShape], inner };
}

/** The subset of a backend our kernels use; typed loosely because the backends' classes are not exported as types we can share. */
interface WasmLikeBackend {
  typedArrayFromHeap(t: TensorInfo): ArrayLike<number>;
  makeOutput(shape: number[], dtype: 'float32' | 'int32'): TensorInfo;
}
interface CpuLikeBackend {
  data: { get(dataId: object): { values: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: 'float32' | 'int32', values: Float32Array | Int32Array): TensorInfo;
}

const wasmKernel: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const { numSegments } = attrs as unknown as UnsortedSegmentSumAttrs;
  const b = backend as unknown as WasmLikeBackend;
  const { shape, inner } = outputShape(x, segmentIds, numSegments);
  const out = b.makeOutput(shape, x.dtype === 'int32' ? 'int32' : 'float32');
  const outArr = b.typedArrayFromHeap(out) as Float32Array | Int32Array;
  // makeOutput hands back uninitialised heap memory.
  outArr.fill(0);
  segmentSumInto(b.typedArrayFromHeap(x), b.typedArrayFromHeap(segmentIds), numSegments, inner, outArr);
  return out;
};

const cpuKernel: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const { numSegments } = attrs as unknown as UnsortedSegmentSumAttrs;
  const b = backend as unknown as CpuLikeBackend;
  const { shape, inner } = outputShape(x, segmentIds, numSegments);
  const isInt = x.dtype === 'int32';
  const out = isInt ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  segmentSumInto(b.data.get(x.dataId).values, b.data.get(segmentIds.dataId).values, numSegments, inner, out);
  return b.makeTensorInfo(shape, isInt ? 'int32' : 'float32', out);
};

/** What was registered for a backend before we replaced it, so tests can compare against the reference. */
const previous = new Map<string, KernelConfig | undefined>();

/** Registers our UnsortedSegmentSum for `backendName` ('wasm' or 'cpu'); idempotent. */
export function registerUnsortedSegmentSum(backendName: 'wasm' | 'cpu'): void {
  if (!previous.has(backendName)) previous.set(backendName, getKernel(UnsortedSegmentSum, backendName));
  if (getKernel(UnsortedSegmentSum, backendName)) unregisterKernel(UnsortedSegmentSum, backendName);
  registerKernel({
    kernelName: UnsortedSegmentSum,
    backendName,
    kernelFunc: backendName === 'wasm' ? wasmKernel : cpuKernel,
  });
}

/** Puts back the kernel that was registered before ours (none on wasm); for reference comparisons in tests. */
export function restoreUnsortedSegmentSum(backendName: 'wasm' | 'cpu'): void {
  if (!previous.has(backendName)) return;
  if (getKernel(UnsortedSegmentSum, backendName)) unregisterKernel(UnsortedSegmentSum, backendName);
  const prev = previous.get(backendName);
  previous.delete(backendName);
  if (prev) registerKernel(prev);
}
