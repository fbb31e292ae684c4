import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorellaError } from '../errors.js';

/** The Node-API addon built from native/corella_native.c by scripts/build-native.mjs. */
export interface NativeAddon {
  /**
   * out[i] = act(op(a[i])·op(b[i]) + bias) for i < batch, op = transpose when the flag is set; strides are
   * element offsets between batch entries (0 = broadcast); bias null, length n or 1; act 0 linear, 1 relu.
   */
  matmul(
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    batch: number,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    aStride: number,
    bStride: number,
    bias: Float32Array | null,
    activation: 0 | 1,
  ): void;
  embeddingBag(
    table: Float32Array,
    rows: Int32Array,
    weights: Float32Array,
    out: Float32Array,
    dim: number,
    bagSize: number,
  ): void;
  embeddingBagGrad(
    dy: Float32Array,
    rows: Int32Array,
    weights: Float32Array,
    out: Float32Array,
    dim: number,
    bagSize: number,
  ): void;
  /** z = x·w + b, y = x0 ⊙ z + x for [m, n] inputs. */
  crossForward(
    x0: Float32Array,
    x: Float32Array,
    w: Float32Array,
    b: Float32Array,
    y: Float32Array,
    z: Float32Array,
    m: number,
    n: number,
  ): void;
  /**
   * dz = dy ⊙ x0; dx0 = dy ⊙ z; dx = dy + dz·wᵀ; dw = xᵀ·dz; db = Σ_rows dz. flags (default 0): bit 1
   * accumulates dx0 += dy ⊙ z, bit 2 then adds dx0 += dx (the first layer of a stack, whose x is x0), so
   * a cross stack sums x0's gradient in one buffer with the tape's rounding and order.
   */
  crossBackward(
    dy: Float32Array,
    x0: Float32Array,
    x: Float32Array,
    w: Float32Array,
    z: Float32Array,
    dx0: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    db: Float32Array,
    m: number,
    n: number,
    flags?: number,
  ): void;
  /** Gradients of y = act(x·w + b), x [m, k], w [k, n]: dx, dw and (when given) db. */
  denseBackward(
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    y: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    db: Float32Array | null,
    m: number,
    k: number,
    n: number,
    relu: boolean,
  ): void;
  /** In-place Adam over whole arrays (float64 arithmetic, as ml/crm/adam.ts). */
  adam(
    w: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    lrT: number,
    beta1: number,
    beta2: number,
    eps: number,
  ): void;
  /**
   * adam on each of 1..16 arrays in one pool region (the bits of one adam call per array). Optional: older
   * addons lack it.
   */
  adamMany?(
    ws: Float32Array[],
    gs: Float32Array[],
    ms: Float32Array[],
    vs: Float32Array[],
    lrT: number,
    beta1: number,
    beta2: number,
    eps: number,
  ): void;
  /** Lazy Adam on rows[0..count) of [V, dim] arrays. */
  adamRows(
    w: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    rows: Int32Array,
    count: number,
    dim: number,
    lrT: number,
    beta1: number,
    beta2: number,
    eps: number,
  ): void;
  /**
   * The embedding table's lazy Adam step from dx0 [bags, width]: the rows the batch touched (written to
   * touched in order of first appearance, as markRows lists them; the count is returned) each get the
   * sum of their entries' dx0 slices × scale·weight, in entry order, and their Adam step, on the pool.
   * Categorical entry (b, f) reads dx0 at b·width + f·dim, sequence s entry (b, q) at b·width + (nCat+s)·dim.
   * The bits of markRows + scatterAdd + adamRows at any thread count. Optional: older addons lack it.
   */
  embeddingAdam?(
    w: Float32Array,
    m: Float32Array,
    v: Float32Array,
    dx0: Float32Array,
    categoricalRows: Int32Array,
    sequenceRows: Int32Array[],
    sequenceWeights: Float32Array[],
    bags: number,
    width: number,
    dim: number,
    scale: number,
    lrT: number,
    beta1: number,
    beta2: number,
    eps: number,
    touched: Int32Array,
  ): number;
  /** g[rows[k]] += scale·weights[k]·dx0[b·width + col + q·qStride], k = b·bagSize + q (weights null = 1). */
  scatterAdd(
    g: Float32Array,
    dx0: Float32Array,
    rows: Int32Array,
    weights: Float32Array | null,
    bags: number,
    bagSize: number,
    col: number,
    qStride: number,
    width: number,
    dim: number,
    scale: number,
  ): void;
  /** Appends unmarked row ids (weight ≠ 0; weights null = all) to touched from count on; returns the new count. */
  markRows(
    rows: Int32Array,
    weights: Float32Array | null,
    mark: Uint8Array,
    touched: Int32Array,
    count: number,
  ): number;
  /** dx0 += factor·x0 over the first cols columns of bags rows of width; returns Σ x0² there. */
  l2Grad(
    dx0: Float32Array,
    x0: Float32Array,
    bags: number,
    width: number,
    cols: number,
    factor: number,
  ): number;
  /**
   * Binary cross-entropy on logits: returns Σ_i max(z,0) − z·y + log1p(e^−|z|) (in double) and writes
   * g = (σ(z) − y)·scale; z, y and g have one length.
   */
  bceWithLogits(z: Float32Array, y: Float32Array, g: Float32Array, scale: number): number;
  /**
   * L dense layers y_l = act_l(y_{l-1}·w_l + b_l) from y_{-1} = x [m, k0] (bit l of relu: a relu on layer
   * l), every layer of a block of rows in one pool region. Bit-identical to the layers one by one.
   */
  denseStackForward(
    x: Float32Array,
    ws: Float32Array[],
    bs: Float32Array[],
    ys: Float32Array[],
    m: number,
    k0: number,
    relu: number,
  ): void;
  /** The stack's gradients from dy = dL/dy_{L-1}: dx [m, k0], and dw_l, db_l of every layer. */
  denseStackBackward(
    dy: Float32Array,
    x: Float32Array,
    ws: Float32Array[],
    ys: Float32Array[],
    dx: Float32Array,
    dws: Float32Array[],
    dbs: Float32Array[],
    m: number,
    k0: number,
    relu: number,
  ): void;
  /** L cross layers z_l = x_l·w_l + b_l, x_{l+1} = ys[l] = x0 ⊙ z_l + x_l, a block of rows at a time. */
  crossStackForward(
    x0: Float32Array,
    ws: Float32Array[],
    bs: Float32Array[],
    ys: Float32Array[],
    zs: Float32Array[],
    m: number,
    n: number,
  ): void;
  /**
   * Their gradients from dy = dL/dx_L: dx0 (x0's, summed over every use, in the tape's order), dw_l, db_l;
   * xs = x_1 … x_{L-1} (L − 1 entries). Bit-identical to crossBackward layer by layer with the stack's flags.
   * With l2Cols and l2Factor it then does l2Grad(dx0, x0, m, n, l2Cols, l2Factor) inside its row region and
   * returns that Σ x0², the same bits (older addons ignore them and return undefined).
   */
  crossStackBackward(
    dy: Float32Array,
    x0: Float32Array,
    ws: Float32Array[],
    zs: Float32Array[],
    xs: Float32Array[],
    dx0: Float32Array,
    dws: Float32Array[],
    dbs: Float32Array[],
    m: number,
    n: number,
    l2Cols?: number,
    l2Factor?: number,
  ): number | undefined;
  /**
   * Threads (1..64, the caller included) that every kernel may split its rows or parameters over: one
   * process-wide pool of blocking workers. Results are bit-identical at any setting.
   */
  setThreads(n: number): void;
  /**
   * Wakes the pool's workers and keeps them polling for at most `us` (0..1000) µs, before a short stretch
   * of serial work that a kernel's region follows, so they take part from its first chunk. Optional:
   * older addons lack it.
   */
  prewake?(us: number): void;
  /**
   * A training step begins (`us` > 0: for at most that many µs, 1..100000) or ends (0): while it lasts the
   * pool's workers poll 300 µs after each region (not 50) before they sleep, and a sleeping one is woken at
   * once. Returns whether a hold is in force
   * (false at one thread, for 0, or with CORELLA_POOL_HOLD=off). Scheduling only. Optional: older addons
   * lack it.
   */
  poolHold?(us: number): boolean;
  threads(): number;
  /** OpenBLAS's own threads: keep 1, the pool runs row blocks of the products (see native/corella_native.c). */
  setBlasThreads(n: number): void;
  blasThreads(): number;
  /**
   * Since load: regions handed to the pool, chunks its worker threads (not the caller) ran, and the wall
   * milliseconds callers spent inside the kernels (profiles: the rest of a step is JS and tfjs); newer
   * addons add whether a step hold is in force (poolHold) and the workers asleep now.
   */
  poolStats(): { regions: number; workerChunks: number; kernelMs: number; held?: boolean; sleepers?: number };
  /** The pool regions recorded since the last call, then tracing on or off (see PoolTrace). */
  poolTrace?(on: boolean): PoolTrace;
  info(): string;
}

/**
 * poolTrace's record: per pool region, its start and end (µs, monotonic), when the first worker joined (−1
 * none), its chunks, the chunks workers ran and the workers asleep when it began; `inline` counts the runs
 * that did not use the pool. What bench/crm-stack-profile.ts --whole-step reads.
 */
export interface PoolTrace {
  start: Float64Array;
  end: Float64Array;
  joined: Float64Array;
  chunks: Float64Array;
  workerChunks: Float64Array;
  sleepers: Float64Array;
  inline: number;
}

export interface NativeStatus {
  addon?: NativeAddon;
  /** Why the addon is not in use (missing build, disabled, failed to load). */
  reason?: string;
  path: string;
}

const ADDON_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'native',
  'build',
  'corella_native.node',
);

let status: NativeStatus | undefined;

/**
 * CORELLA_TF_NATIVE: unset/`auto` = use the addon when it was built, `0`/`off` = never, `1`/`on` = required
 * (a missing addon is then an error, not a silent fallback to the slower path).
 */
export function nativeMode(raw = process.env.CORELLA_TF_NATIVE): 'auto' | 'off' | 'on' {
  const v = (raw ?? '').trim().toLowerCase();
  if (v === '' || v === 'auto') return 'auto';
  if (v === '0' || v === 'off' || v === 'false') return 'off';
  if (v === '1' || v === 'on' || v === 'true') return 'on';
  throw new CorellaError(
    'BAD_CONFIG',
    `CORELLA_TF_NATIVE=${JSON.stringify(raw)} is not one of auto, on, off`,
  );
}

/**
 * A thread count from the environment. CORELLA_NATIVE_THREADS: the addon's pool threads at load (default 1;
 * the CRM trainer sets its own from crm.threads). CORELLA_BLAS_THREADS: OpenBLAS's threads (default 1: on
 * a shared machine its spinning pool only contends with ours; the bench measures 2 for comparison).
 */
function envThreads(name: 'CORELLA_NATIVE_THREADS' | 'CORELLA_BLAS_THREADS'): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new CorellaError('BAD_CONFIG', `${name}=${JSON.stringify(raw)} is not an integer 1..64`);
  }
  return n;
}

/**
 * CORELLA_POOL_WAIT: when a pool worker starts its 50 µs poll, `region` (the default: from its region's end)
 * or `chunk` (from its own last chunk, the older rule, kept for an A/B). The C side reads it when its first
 * worker starts and would take any other value as the default, so a misspelling is refused here, before the
 * addon loads, rather than measured as the other setting.
 */
export function poolWaitMode(raw = process.env.CORELLA_POOL_WAIT): 'region' | 'chunk' {
  return envChoice('CORELLA_POOL_WAIT', raw, ['region', 'chunk']);
}

/**
 * CORELLA_POOL_HOLD: whether a training step keeps the pool's workers polling 300 µs after each of its
 * regions (`step`, the default) or lets them sleep after their 50 µs poll as before (`off`, for an A/B). The C side
 * reads it when its first worker starts and takes anything but `off` as `step`, so a misspelling is refused
 * here, before the addon loads.
 */
export function poolHoldMode(raw = process.env.CORELLA_POOL_HOLD): 'step' | 'off' {
  return envChoice('CORELLA_POOL_HOLD', raw, ['step', 'off']);
}

/** An environment switch with a fixed set of values, the first the default (unset or empty). */
function envChoice<T extends string>(name: string, raw: string | undefined, values: readonly [T, ...T[]]): T {
  if (raw === undefined || raw === '') return values[0];
  if ((values as readonly string[]).includes(raw)) return raw as T;
  throw new CorellaError(
    'BAD_CONFIG',
    `${name}=${JSON.stringify(raw)} is not one of ${values.join(', ')} (field ${name})`,
    { details: { field: name } },
  );
}

/** Loads the addon once per thread; never throws for a missing build (see `reason`). */
export function loadNative(): NativeStatus {
  if (status) return status;
  const mode = nativeMode();
  poolWaitMode();
  poolHoldMode();
  if (mode === 'off') return (status = { reason: 'disabled by CORELLA_TF_NATIVE', path: ADDON_PATH });
  if (!existsSync(ADDON_PATH)) {
    status = {
      reason: `${ADDON_PATH} is not built (run node scripts/build-native.mjs; needs cc and libopenblas-dev)`,
      path: ADDON_PATH,
    };
  } else {
    try {
      const addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
      addon.setBlasThreads(envThreads('CORELLA_BLAS_THREADS'));
      addon.setThreads(envThreads('CORELLA_NATIVE_THREADS'));
      status = { addon, path: ADDON_PATH };
    } catch (e) {
      status = { reason: `loading ${ADDON_PATH} failed: ${(e as Error).message}`, path: ADDON_PATH };
    }
  }
  if (mode === 'on' && !status.addon) {
    throw new CorellaError(
      'BAD_CONFIG',
      `CORELLA_TF_NATIVE=on but the native kernels are unavailable: ${status.reason}`,
    );
  }
  return status;
}
