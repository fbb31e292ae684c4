import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { CorellaError } from '../errors.js';
import { registerAllGradients } from './gradients.js';
import { loadNative } from './native.js';
import { registerEmbeddingBag } from './kernels/embedding-bag.js';
import { registerNativeKernels } from './kernels/native-kernels.js';
import { registerUnsortedSegmentSum } from './kernels/unsorted-segment-sum.js';

export type TfBackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export type TfBackendChoice = TfBackendName | 'auto';

export interface TfInitResult {
  /** The backend in use, in our naming (tfjs calls both native ones 'tensorflow'). */
  backend: TfBackendName;
  /** Why each earlier candidate was skipped, in order; empty when the first one worked. */
  reasons: string[];
  /**
   * wasm only: 'openblas' when matrix products run in the native addon (native/), else 'none' with the
   * reason in nativeReason. The backend name stays 'wasm' either way: every other op is wasm's.
   */
  accelerator?: 'openblas' | 'none';
  nativeReason?: string;
}

const CHOICES: readonly TfBackendChoice[] = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
const ORDER: readonly TfBackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

let current: TfInitResult | undefined;

export function parseBackendChoice(raw: string | undefined): TfBackendChoice {
  const v = (raw ?? '').trim().toLowerCase();
  if (v === '') return 'auto';
  if ((CHOICES as readonly string[]).includes(v)) return v as TfBackendChoice;
  throw new CorellaError(
    'BAD_CONFIG',
    `CORELLA_TF_BACKEND=${JSON.stringify(raw)} is not one of ${CHOICES.join(', ')}`,
  );
}

function message(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0] : String(e);
}

/** Imports by a computed name so TypeScript does not require the optional native packages to be installed. */
async function importOptional(name: string): Promise<unknown> {
  return import(name);
}

async function tryNative(pkg: string, wantGpu: boolean): Promise<void> {
  await importOptional(pkg);
  // Both native packages register the backend as 'tensorflow'.
  if (!(await tf.setBackend('tensorflow')))
    throw new Error(`${pkg} loaded but the 'tensorflow' backend failed to initialise`);
  await tf.ready();
  if (wantGpu) {
    const backend = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
    if (backend.isUsingGpuDevice === false) throw new Error(`${pkg} loaded but found no usable GPU device`);
  }
}

function wasmDistDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/';
}

async function tryWasm(): Promise<Pick<TfInitResult, 'accelerator' | 'nativeReason'>> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // In Node the emscripten loader reads the .wasm files from disk; point it at the installed ones.
  wasm.setWasmPaths(wasmDistDir());
  registerUnsortedSegmentSum('wasm');
  registerEmbeddingBag('wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to initialise');
  await tf.ready();
  // After initialisation: the stock matmul kernels' setup has run, so they can serve as the fallback.
  const native = loadNative();
  if (!native.addon) return { accelerator: 'none', nativeReason: native.reason };
  registerNativeKernels(native.addon);
  return { accelerator: 'openblas' };
}

async function tryCpu(): Promise<void> {
  await import('@tensorflow/tfjs-backend-cpu');
  registerUnsortedSegmentSum('cpu');
  registerEmbeddingBag('cpu');
  if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend failed to initialise');
  await tf.ready();
}

async function tryBackend(name: TfBackendName): Promise<Pick<TfInitResult, 'accelerator' | 'nativeReason'>> {
  switch (name) {
    case 'tensorflow-gpu':
      await tryNative('@tensorflow/tfjs-node-gpu', true);
      return {};
    case 'tensorflow':
      await tryNative('@tensorflow/tfjs-node', false);
      return {};
    case 'wasm':
      return tryWasm();
    case 'cpu':
      await tryCpu();
      return {};
  }
}

/**
 * Selects the tfjs backend: the preferred one (or CORELLA_TF_BACKEND), else the first that works of
 * tensorflow-gpu → tensorflow → wasm → cpu. Asking explicitly for a backend that cannot start is an
 * error rather than a silent fallback, so a run never ends up 1000× slower than its operator expects.
 */
export async function initTf(
  preferred?: TfBackendChoice,
  log: (msg: string) => void = (m) => console.error(m),
): Promise<TfInitResult> {
  const choice = preferred ?? parseBackendChoice(process.env.CORELLA_TF_BACKEND);
  if (!(CHOICES as readonly string[]).includes(choice)) {
    throw new CorellaError(
      'BAD_CONFIG',
      `unknown tfjs backend ${JSON.stringify(choice)}; expected one of ${CHOICES.join(', ')}`,
    );
  }
  if (current && (choice === 'auto' || choice === current.backend)) return current;
  await registerAllGradients();

  const candidates = choice === 'auto' ? ORDER : [choice];
  const reasons: string[] = [];
  for (const name of candidates) {
    try {
      const extra = await tryBackend(name);
      current = { backend: name, reasons, ...extra };
      const accel = extra.accelerator
        ? `, matmul: ${extra.accelerator}${extra.nativeReason ? ` (${extra.nativeReason})` : ''}`
        : '';
      log(
        `[corella] tfjs backend: ${name}${accel}${reasons.length ? ` (skipped: ${reasons.join('; ')})` : ''}`,
      );
      return current;
    } catch (e) {
      reasons.push(`${name}: ${message(e)}`);
    }
  }
  if (choice === 'tensorflow-gpu') {
    throw new CorellaError(
      'GPU_UNAVAILABLE',
      `the tensorflow-gpu backend was requested but cannot start: ${reasons.join('; ')}`,
      {
        details: { reasons },
      },
    );
  }
  throw new CorellaError(
    'BAD_CONFIG',
    `the ${choice} tfjs backend was requested but cannot start: ${reasons.join('; ')}`,
    {
      details: { reasons },
    },
  );
}

/** The backend chosen by the last successful initTf, if any. */
export function currentTfBackend(): TfInitResult | undefined {
  return current;
}

/** The current backend, initialising the default choice (CORELLA_TF_BACKEND or automatic) on first use. */
export async function ensureTf(): Promise<TfInitResult> {
  return current ?? initTf();
}
