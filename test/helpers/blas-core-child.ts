/**
 * Runs the addon's row-cut products at 1 and 2 pool threads and prints, as JSON, which outputs differ in any
 * bit. The test starts it under a chosen OpenBLAS kernel (OPENBLAS_CORETYPE, read when OpenBLAS loads, so it
 * has to be set before this process starts).
 * Usage: node --import tsx blas-core-child.ts
 */
import { loadNative } from '../../ml/tf/native.js';
import { crossInputs } from './native-fixtures.js';

const addon = loadNative().addon;
if (!addon) throw new Error('the native addon is not built');

// The CRM's bench shape: a 1024-row batch, 128 wide, as one cross layer and one dense layer see it.
const m = 1024;
const n = 128;
const { x0, x, w, b, dy } = crossInputs(m, n, 1);

function outputs(threads: number): Record<string, Float32Array> {
  addon!.setThreads(threads);
  const mm = new Float32Array(m * n);
  addon!.matmul(x, w, mm, 1, m, n, n, false, false, 0, 0, b, 1);
  const y = new Float32Array(m * n);
  const z = new Float32Array(m * n);
  addon!.crossForward(x0, x, w, b, y, z, m, n);
  const dx0 = new Float32Array(m * n);
  const dx = new Float32Array(m * n);
  const dw = new Float32Array(n * n);
  const db = new Float32Array(n);
  addon!.crossBackward(dy, x0, x, w, z, dx0, dx, dw, db, m, n);
  return { matmul: mm, crossForward: y, crossBackwardDx: dx, crossBackwardDw: dw, crossBackwardDb: db };
}

const one = outputs(1);
const two = outputs(2);
const differ = Object.keys(one).filter(
  (k) => Buffer.compare(Buffer.from(one[k].buffer), Buffer.from(two[k].buffer)) !== 0,
);
process.stdout.write(`${JSON.stringify({ differ, checked: Object.keys(one) })}\n`);
