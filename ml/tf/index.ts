export { initTf, ensureTf, currentTfBackend, parseBackendChoice } from './backend.js';
export type { TfBackendChoice, TfBackendName, TfInitResult } from './backend.js';
export { dense } from './dense.js';
export type { DenseActivation } from './dense.js';
export {
  registerUnsortedSegmentSum,
  restoreUnsortedSegmentSum,
  segmentSumInto,
} from './kernels/unsorted-segment-sum.js';
export { embeddingBag, embeddingBagReference, registerEmbeddingBag } from './kernels/embedding-bag.js';
