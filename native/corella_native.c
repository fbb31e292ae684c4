/*
 * corella_native: single-precision matrix products for the CRM, run by OpenBLAS on memory that tfjs owns.
 *
 * tfjs's wasm backend keeps every tensor in the WebAssembly heap, which JS sees as one ArrayBuffer; the
 * kernels in ml/tf/kernels/native-matmul.ts pass Float32Array views of that heap here, so a product runs
 * on the tensors in place (no copy in or out). Node-API only: the addon does not depend on one Node ABI.
 *
 * Exports:
 *   matmul(a, b, out, batch, m, n, k, transA, transB, aStride, bStride, bias, activation)
 *     out[i] = act(op(a[i]) · op(b[i]) + bias) for i < batch; aStride/bStride are the element offsets
 *     between batch entries (0 broadcasts one matrix). bias: null, length n (added to every row) or
 *     length 1. activation: 0 linear, 1 relu.
 *   embeddingBag(table, rows, weights, out, dim, bagSize)
 *     out[b] = Σ_p weights[b·L+p]·table[rows[b·L+p]] (L = bagSize); out is overwritten.
 *   embeddingBagGrad(dy, rows, weights, out, dim, bagSize)
 *     out (a [V, dim] table gradient) = the weighted scatter-add of dy; overwritten.
 *   crossForward(x0, x, w, b, y, z, m, n)
 *     DCNv2 cross layer on [m, n] inputs: z = x·w + b, y = x0 ⊙ z + x.
 *   crossBackward(dy, x0, x, w, z, dx0, dx, dw, db, m, n[, flags])
 *     its gradients: dz = dy ⊙ x0, dx0 = dy ⊙ z, dx = dy + dz·wᵀ, dw = xᵀ·dz, db = Σ_rows dz.
 *     flags (default 0) let a stack of cross layers sum x0's gradient in one buffer instead of one tfjs
 *     Add per contribution: bit 1 accumulates, dx0 += dy ⊙ z; bit 2 (the first layer, whose x is x0)
 *     then adds dx as well, dx0 += dx. Each is one rounding of the same sum the tape's Adds formed, in
 *     the same order, so the result is bit-identical to the unfused step.
 *   denseBackward(dy, x, w, y, dx, dw, db, m, k, n, relu)
 *     gradients of y = act(x·w + b) for x [m, k], w [k, n]: dz = relu ? dy ⊙ (y > 0) : dy,
 *     dx = dz·wᵀ, dw = xᵀ·dz, db = Σ_rows dz (db may be null).
 *   adam(w, g, m, v, lrT, beta1, beta2, eps)
 *     the Adam step over whole arrays: m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², w −= lrT·m/(√v + ε).
 *   adamMany(ws, gs, ms, vs, lrT, beta1, beta2, eps)
 *     adam on each of 1..16 arrays ws[i] (gs[i], ms[i], vs[i] the same lengths), in one pool region.
 *   adamRows(w, g, m, v, rows, count, dim, lrT, beta1, beta2, eps)
 *     the same on rows rows[0..count) of [V, dim] arrays only (lazy Adam).
 *   scatterAdd(g, dx0, rows, weights, bags, bagSize, col, qStride, width, dim, scale)
 *     g[rows[k]] += scale · weights[k] · dx0[b·width + col + q·qStride] for k = b·bagSize + q (weights
 *     null = 1): the gradient of embedding lookups onto their table rows.
 *   markRows(rows, weights, mark, touched, count) -> count
 *     appends each row id not yet marked (positions of weight 0 skipped; weights null = all) to touched
 *     at [count, ...) and marks it; returns the new count.
 *   l2Grad(dx0, x0, bags, width, cols, factor) -> Σ x0²
 *     over the first cols columns of each of bags rows: dx0 += factor · x0, returning the sum of squares.
 *   bceWithLogits(z, y, g, scale) -> Σ loss
 *     binary cross-entropy on logits over n = z.length samples: returns Σ max(z,0) − z·y + log1p(e^−|z|)
 *     (double) and writes g = (σ(z) − y)·scale, the gradient of the mean when scale = 1/n. One kernel for
 *     what was ~14 tfjs ops on the main thread (forward and backward).
 *   setThreads(n), threads()
 *     the threads (1..64, the caller included) that every kernel above may split its work over: the
 *     process-wide pool below. 1 = no pool. Results are bit-identical at any setting.
 *   setBlasThreads(n), blasThreads()
 *     OpenBLAS's own threads. Keep 1 (the pool runs row blocks of the products): above 1 the kernels
 *     call sgemm whole and OpenBLAS splits it, with its spinning pool beside ours.
 *   poolStats() -> { regions, workerChunks, kernelMs, held, sleepers }
 *     counters since load: regions handed to the pool, chunks that its workers (not the caller) ran, and
 *     the wall milliseconds callers spent inside the kernels above; held: a step hold is in force now;
 *     sleepers: workers asleep now.
 *   poolHold(us) -> boolean
 *     a training step begins (us > 0: for at most us µs, ≤ 100000) or ends (0): while it lasts the pool's
 *     workers poll 300 µs after each region, not 50. false when nothing is held (one thread, us 0, or
 *     CORELLA_POOL_HOLD=off, read when the first worker starts). Scheduling only: the same bits.
 *   poolTrace(on) -> { start, end, joined, chunks, workerChunks, sleepers, inline }
 *     the regions since the last call (µs; joined = when the first worker began, −1 none), then tracing
 *     on or off: regions per step, the gaps between them and late workers (bench/crm-stack-profile.ts).
 *   info()
 */
/* POSIX threads and signal masks under -std=c11. */
#define _POSIX_C_SOURCE 200809L
#include <node_api.h>
#include "pool.h"
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The CBLAS and OpenBLAS entry points we use, declared here so the build needs the shared library only
 * (Debian's cblas.h lives in an alternatives-managed folder that differs between BLAS flavours). */
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
extern void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a,
                        int lda, const float *b, int ldb, float beta, float *c, int ldc);
extern void openblas_set_num_threads(int n);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);

/* ---------------------------------------------------------------------------------------------------------
 * The intra-op thread pool.
 *
 * One process-wide pool of blocked worker threads that a kernel hands its work to in numbered chunks
 * (batch-row or parameter ranges). Why it is built this way:
 * - Blocking, not spinning: idle workers sleep on a condition variable and the caller sleeps until the
 *   last chunk is done. On a shared machine a spinning pool (OpenBLAS's server threads, GNU OpenMP's
 *   barriers) burns the very core the other half of the work needs, and collapses under load. The only
 *   polling is bounded to 50 µs (the caller for chunks in flight, a worker for the next region of the
 *   same kernel), which saved 0.5-1 ms a step of sleeps and wake-ups and no CPU.
 * - Chunks are claimed one by one (an atomic tag per chunk), and the caller works on them too: each
 *   thread takes its own contiguous share first (the same rows stay on the same core from layer to
 *   layer), then steals from the far end, so a worker that is not scheduled in time costs nothing but
 *   its share instead of holding the region up.
 * - Results are bit-identical at any thread count: element-wise passes and Adam touch each element alone,
 *   scatters give each row to one chunk that adds in entry order, reductions run per column (per row)
 *   in row order whatever the cut, and sgemm on a block of output rows returns exactly the bits of the
 *   whole product (OpenBLAS keeps the order of the inner sum; test/ml/tf/native-kernels.test.ts checks
 *   every kernel and ten training steps at 1 and 2 threads).
 * - One region at a time: the data-parallel stepper's worker thread runs kernels at the same time as the
 *   main thread; whoever finds the pool busy runs its chunks inline rather than oversubscribing the cores.
 * - Matrix products run inside the chunks on one OpenBLAS thread (sgemm on a row block returns the same
 *   bits as on the whole matrix, and OpenBLAS's own pool would spin between calls); only when OpenBLAS
 *   has more than one thread (setBlasThreads) does a kernel call sgemm whole and split the element-wise
 *   parts around it.
 */
typedef void (*chunk_fn)(void *ctx, int64_t chunk);

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* How long the caller polls for the workers' last chunks before it sleeps (see pool_run), and a worker
 * for the next region after its last chunk (see pool_worker). */
#ifndef CALLER_POLL_NS
#define CALLER_POLL_NS 50000
#endif
#ifndef WORKER_POLL_NS
#define WORKER_POLL_NS 50000
#endif
/* A worker's poll after a region while a training step holds the pool (poolHold): longer than the step's
 * serial stretches (30-150 µs), still bounded, so a caller that lost its core leaves the worker asleep
 * rather than spinning through the preemption (a spin for the whole step slowed loaded runs). */
#ifndef HOLD_POLL_NS
#define HOLD_POLL_NS 300000
#endif

#define POOL_MAX 64
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
/* Held by the thread whose region the pool is running. */
static pthread_mutex_t pool_region = PTHREAD_MUTEX_INITIALIZER;
/* Threads a region may use, the caller included (1 = no pool). */
static _Atomic int pool_threads = 1;
static int pool_started = 0; /* worker threads created (under pool_lock) */
/* The current job, under pool_lock: workers read it whole when they see a new generation. */
static uint64_t pool_gen = 0;
/* pool_gen, readable without the lock: a worker that just finished polls it briefly (see pool_worker). */
static _Atomic uint64_t pool_gen_seen = 0;
static chunk_fn job_fn = NULL;
static void *job_ctx = NULL;
static int64_t job_chunks = 0;
/* The generation that last claimed each chunk: chunk c of job g is free while its entry is below g. A
 * worker that wakes late finds every chunk of its (finished) job at g or above, so it never runs a chunk
 * of a job it did not read. */
#define POOL_MAX_CHUNKS 64
static _Atomic uint64_t chunk_claim[POOL_MAX_CHUNKS];
static _Atomic int64_t job_done = 0;
/* For poolStats(): regions handed to the pool and chunks its workers (not the caller) ran. */
static _Atomic int64_t stat_regions = 0;
static _Atomic int64_t stat_worker_chunks = 0;
/* Wall time the calling threads spent inside the kernels (profiles: the rest of a step is JS and tfjs). */
static _Atomic int64_t stat_kernel_ns = 0;

/* poolTrace(): when on, each region's start and end (ns), its chunks, the chunks the workers ran and how many
 * workers were asleep when it began, for a profile of where a step's synchronisation goes (regions per step,
 * the gaps between them, regions that began with a sleeping worker). Off: one relaxed load a region. */
#define TRACE_MAX 8192
static _Atomic int trace_on = 0;
static int64_t trace_n = 0; /* under pool_region */
static int64_t trace_inline = 0; /* pool_run calls that ran inline (one chunk, or a busy pool) */
static int64_t trace_start[TRACE_MAX], trace_end[TRACE_MAX];
static int64_t trace_joined[TRACE_MAX];
static int32_t trace_chunks[TRACE_MAX], trace_worker[TRACE_MAX], trace_sleepers[TRACE_MAX];
static _Atomic int64_t trace_join = 0;

static bool claim_chunk(int64_t c, uint64_t gen) {
  uint64_t v = atomic_load(&chunk_claim[c]);
  return v < gen && atomic_compare_exchange_strong(&chunk_claim[c], &v, gen);
}

static void run_chunk(chunk_fn fn, void *ctx, int64_t c, int64_t chunks, int self) {
  fn(ctx, c);
  /* Counted before the chunk is marked done, so the caller's trace sees every worker chunk of its region. */
  if (self != 0) atomic_fetch_add(&stat_worker_chunks, 1);
  if (atomic_fetch_add(&job_done, 1) + 1 == chunks) {
    pthread_mutex_lock(&pool_lock);
    pthread_cond_signal(&pool_done);
    pthread_mutex_unlock(&pool_lock);
  }
}

/* Runs chunks of job `gen` as thread `self` of `threads` until none is left; returns how many it ran.
 * First its own contiguous share (the same rows land on the same thread region after region, so a layer
 * reads what the previous one left in this core's cache), then, from the far end, whatever the others
 * have not started: a thread that is late loses its share, it does not hold the region up. */
static int64_t run_chunks(uint64_t gen, int self, int threads, chunk_fn fn, void *ctx, int64_t chunks) {
  int64_t ran = 0;
  /* The trace's wake-up latency: when the first worker joined this region (0 = none yet). */
  if (self != 0 && atomic_load_explicit(&trace_on, memory_order_relaxed)) {
    int64_t zero = 0;
    atomic_compare_exchange_strong(&trace_join, &zero, now_ns());
  }
  for (int64_t c = chunks * self / threads; c < chunks * (self + 1) / threads; c++)
    if (claim_chunk(c, gen)) {
      run_chunk(fn, ctx, c, chunks, self);
      ran++;
    }
  for (int64_t c = chunks - 1; c >= 0; c--)
    if (claim_chunk(c, gen)) {
      run_chunk(fn, ctx, c, chunks, self);
      ran++;
    }
  return ran;
}

/* Until when the workers should poll for the next region rather than sleep (see pool_prewake). */
static _Atomic int64_t pool_prewake_until = 0;
/* Workers asleep on pool_wake (changed under pool_lock). */
static _Atomic int pool_sleepers = 0;

/* Until when a step is in progress (poolHold): the workers poll HOLD_POLL_NS after each of its regions
 * instead of WORKER_POLL_NS. 0 = no step. */
static _Atomic int64_t pool_hold_until = 0;
/* Whether poolHold holds at all, from CORELLA_POOL_HOLD (step, the default, or off) at the pool's start. */
static int pool_hold_enabled = 1;

/* Polls until a region newer than `seen` starts, or `until` and a prewake have passed and either
 * `hold_end` has or the step hold has ended (so a step's end cuts its workers' longer poll short). */
static void pool_poll(uint64_t seen, int64_t until, int64_t hold_end) {
  for (int64_t t = now_ns(); atomic_load(&pool_gen_seen) == seen; t = now_ns()) {
    if (t >= until && t >= atomic_load(&pool_prewake_until) &&
        (t >= hold_end || t >= atomic_load(&pool_hold_until)))
      break;
    cpu_relax();
  }
}

/* Whether a worker waits for its region's end before its 50 µs poll (see pool_worker); from CORELLA_POOL_WAIT
 * (region, the default, or chunk) when the first worker starts. */
static int pool_wait_region = 1;

static void *pool_worker(void *arg) {
  const int index = (int)(intptr_t)arg; /* 1.. : the caller is thread 0 */
  uint64_t seen = 0;
  pthread_mutex_lock(&pool_lock);
  for (;;) {
    if (pool_gen == seen && WORKER_POLL_NS > 0) {
      /* A kernel's regions often follow each other within microseconds (a backward pass has two): poll
       * for the next one briefly before sleeping, then sleep however long the JS side takes. Inside a
       * training step (poolHold) the next region follows the step's serial stretches and JS, up to
       * ~150 µs: the whole-step trace found the worker asleep at the Adam region's start in most steps,
       * and a wake-up costs 40-50 µs on this VM. */
      const int64_t t = now_ns();
      pthread_mutex_unlock(&pool_lock);
      pool_poll(seen, t + WORKER_POLL_NS, t + HOLD_POLL_NS);
      pthread_mutex_lock(&pool_lock);
    }
    while (pool_gen == seen) {
      atomic_fetch_add(&pool_sleepers, 1);
      pthread_cond_wait(&pool_wake, &pool_lock);
      atomic_fetch_sub(&pool_sleepers, 1);
      const int64_t t = now_ns();
      if (pool_gen == seen && (t < atomic_load(&pool_prewake_until) || t < atomic_load(&pool_hold_until))) {
        /* Woken by pool_prewake (a region is coming within microseconds) or by a step's start. */
        pthread_mutex_unlock(&pool_lock);
        pool_poll(seen, 0, t + HOLD_POLL_NS);
        pthread_mutex_lock(&pool_lock);
      }
    }
    seen = pool_gen;
    if (index >= atomic_load(&pool_threads)) continue; /* the pool was shrunk: sit this one out */
    const chunk_fn fn = job_fn;
    void *const ctx = job_ctx;
    const int64_t chunks = job_chunks;
    const int threads = atomic_load(&pool_threads);
    pthread_mutex_unlock(&pool_lock);
    run_chunks(seen, index, threads, fn, ctx, chunks);
    /* Its poll counts from the region's end, not from its own last chunk: the caller may still be on a
     * 100-200 µs chunk of a backward pass when the worker runs out, and a worker polling 50 µs from then
     * slept through the gap and woke 40-50 µs into the next region (the whole-step trace showed the dense
     * backward's second region begun with the worker asleep in most steps). The spin lasts at most the
     * caller's last chunk, capped at 1 ms for a caller that lost its core. CORELLA_POOL_WAIT=chunk restores
     * the poll from the worker's own last chunk, for an A/B. */
    if (pool_wait_region) {
      const int64_t cap = now_ns() + 1000000;
      while (atomic_load(&job_done) < chunks && atomic_load(&pool_gen_seen) == seen && now_ns() < cap) cpu_relax();
    }
    pthread_mutex_lock(&pool_lock);
  }
  return NULL;
}

/* Before a serial stretch of known, short length (at most `ns`) that a region follows: wakes the
 * workers now and keeps them polling until the region starts or `ns` pass, so they join it from its
 * first chunk. A worker polls at most 50 µs after a region before it sleeps, and a sleeping worker
 * woke only after the caller had done most of the next region's chunks: embeddingAdam's linking pass
 * (~55 µs) left its Adam region to the caller. The bound keeps the spin as short as the stretch. */
static void pool_prewake(int64_t ns) {
  if (atomic_load(&pool_threads) <= 1) return;
  atomic_store(&pool_prewake_until, now_ns() + ns);
  /* Polling workers see the new deadline themselves; only sleeping ones need the (costly: 40-50 µs on
   * this VM) wake-up. One that falls asleep just now misses this prewake, and the region wakes it. */
  if (atomic_load(&pool_sleepers) == 0) return;
  pthread_mutex_lock(&pool_lock);
  pthread_cond_broadcast(&pool_wake);
  pthread_mutex_unlock(&pool_lock);
}

/* From the start of a training step to its end (at most `ns`; 0 ends it): the workers poll HOLD_POLL_NS
 * after each region rather than 50 µs, and any that sleep now are woken (the batch's assembly comes
 * first). A step's serial stretches (BCE, the Adam bookkeeping in JS, the embedding update's linking
 * pass) are 30-150 µs each: longer than a worker's 50 µs, far shorter than a sleep and a wake-up are
 * worth. The bound only matters for a step that never ends (an exception between begin and end).
 * Returns whether a hold is now in force (not with one thread, nor with CORELLA_POOL_HOLD=off). */
static int pool_hold(int64_t ns) {
  if (ns <= 0) {
    atomic_store(&pool_hold_until, 0);
    return 0;
  }
  if (atomic_load(&pool_threads) <= 1 || !pool_hold_enabled) return 0;
  pthread_mutex_lock(&pool_lock);
  atomic_store(&pool_hold_until, now_ns() + ns);
  if (atomic_load(&pool_sleepers) > 0) pthread_cond_broadcast(&pool_wake);
  pthread_mutex_unlock(&pool_lock);
  return 1;
}

/* Sets the threads a region uses (caller included), starting workers as needed; 0 on success. */
static int pool_resize(int threads) {
  pthread_mutex_lock(&pool_lock);
  int err = 0;
  if (pool_started == 0) {
    const char *wait = getenv("CORELLA_POOL_WAIT");
    pool_wait_region = !(wait != NULL && strcmp(wait, "chunk") == 0);
    const char *hold = getenv("CORELLA_POOL_HOLD");
    pool_hold_enabled = !(hold != NULL && strcmp(hold, "off") == 0);
  }
  while (pool_started < threads - 1) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Workers take no signals: Node's handlers belong to its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t t;
    err = pthread_create(&t, &attr, pool_worker, (void *)(intptr_t)(pool_started + 1));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) break;
    pool_started++;
  }
  atomic_store(&pool_threads, pool_started + 1 < threads ? pool_started + 1 : threads);
  pthread_mutex_unlock(&pool_lock);
  return err;
}

/* Runs fn(ctx, c) for c < chunks, on the pool when it is free and has threads, else inline. Every chunk
 * is done when it returns. */
static void pool_run(chunk_fn fn, void *ctx, int64_t chunks) {
  if (chunks <= 0) return;
  const int threads = atomic_load(&pool_threads);
  if (chunks == 1 || chunks > POOL_MAX_CHUNKS || threads <= 1 || pthread_mutex_trylock(&pool_region) != 0) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed)) trace_inline++;
    for (int64_t c = 0; c < chunks; c++) fn(ctx, c);
    return;
  }
  atomic_fetch_add(&stat_regions, 1);
  const int64_t tr = atomic_load_explicit(&trace_on, memory_order_relaxed) && trace_n < TRACE_MAX ? trace_n++ : -1;
  int64_t worker0 = 0;
  if (tr >= 0) {
    trace_start[tr] = now_ns();
    trace_chunks[tr] = (int32_t)chunks;
    trace_sleepers[tr] = atomic_load(&pool_sleepers);
    worker0 = atomic_load(&stat_worker_chunks);
    atomic_store(&trace_join, 0);
  }
  pthread_mutex_lock(&pool_lock);
  const uint64_t gen = ++pool_gen;
  atomic_store(&pool_gen_seen, gen);
  job_fn = fn;
  job_ctx = ctx;
  job_chunks = chunks;
  atomic_store(&job_done, 0);
  pthread_cond_broadcast(&pool_wake);
  pthread_mutex_unlock(&pool_lock);
  run_chunks(gen, 0, threads, fn, ctx, chunks);
  /* The chunks left are running on workers that are awake: poll for them a few microseconds (a sleep and
   * a wake-up cost some 10 µs of syscalls and context switches a region) before sleeping on the condvar.
   * Only the caller polls, only while its region is unfinished, and only briefly: a worker that has lost
   * its core leaves the caller asleep, not spinning. */
  const int64_t poll_until = now_ns() + CALLER_POLL_NS;
  while (atomic_load(&job_done) < chunks && now_ns() < poll_until) cpu_relax();
  pthread_mutex_lock(&pool_lock);
  while (atomic_load(&job_done) < chunks) pthread_cond_wait(&pool_done, &pool_lock);
  pthread_mutex_unlock(&pool_lock);
  if (tr >= 0) {
    trace_end[tr] = now_ns();
    trace_worker[tr] = (int32_t)(atomic_load(&stat_worker_chunks) - worker0);
    trace_joined[tr] = atomic_load(&trace_join);
  }
  pthread_mutex_unlock(&pool_region);
}

/* How an element pass cuts n items (parameters, bag entries) into chunks of at least `grain`: at most
 * n/grain chunks, capped, 1 below 2·grain, and 1 when the pool has one thread. Element passes give the same
 * bits however they are cut; products are cut by gemm_row_blocks, fixed by their shape. */
#define MAX_CHUNKS 16
static int64_t chunks_for(int64_t n, int64_t grain) {
  if (atomic_load(&pool_threads) <= 1) return 1;
  int64_t c = n / grain;
  if (c < 1) c = 1;
  return c > MAX_CHUNKS ? MAX_CHUNKS : c;
}

/* [begin, end) of chunk c of n items cut into `chunks`. */
static inline void chunk_range(int64_t n, int64_t chunks, int64_t c, int64_t *begin, int64_t *end) {
  *begin = n * c / chunks;
  *end = n * (c + 1) / chunks;
}

static int64_t at_most_threads(int64_t chunks) {
  const int64_t t = atomic_load(&pool_threads);
  return chunks < t ? chunks : t;
}

/* OpenBLAS splits products itself (setBlasThreads > 1): kernels then call sgemm whole from the caller. */
static int blas_splits(void) { return openblas_get_num_threads() > 1; }

#define CHECK(env, call)                                                                          \
  do {                                                                                              \
    if ((call) != napi_ok) {                                                                        \
      napi_throw_error((env), "CORELLA_NATIVE", "corella_native: N-API call failed: " #call);       \
      return NULL;                                                                                  \
    }                                                                                               \
  } while (0)

/* A Float32Array argument: its data pointer and length. Anything else is a type error. */
static int f32_arg(napi_env env, napi_value v, const char *name, float **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    char msg[96];
    snprintf(msg, sizeof msg, "corella_native: %s must be a Float32Array", name);
    napi_throw_type_error(env, "CORELLA_NATIVE", msg);
    return 0;
  }
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok || type != napi_float32_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "corella_native: %s must be a Float32Array", name);
    napi_throw_type_error(env, "CORELLA_NATIVE", msg);
    return 0;
  }
  *data = (float *)ptr;
  return 1;
}

static int i64_arg(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native: expected a number");
    return 0;
  }
  return 1;
}

static int bool_arg(napi_env env, napi_value v, bool *out) {
  if (napi_get_value_bool(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native: expected a boolean");
    return 0;
  }
  return 1;
}

/* Elementwise passes. Each is its own non-inlined function over restrict pointers: inlined into the
 * N-API wrappers GCC gave up on vectorising them, and a scalar relu with its unpredictable branch cost
 * as much as the sgemm before it. */
__attribute__((noinline)) static void relu_inplace(float *restrict c, size_t n) {
  for (size_t j = 0; j < n; j++) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
}

/* out = dy where y > 0, else 0 (the relu gradient). */
__attribute__((noinline)) static void relu_mask(float *restrict out, const float *restrict dy,
                                                const float *restrict y, size_t n) {
  for (size_t j = 0; j < n; j++) {
    const float d = dy[j];
    out[j] = y[j] > 0.0f ? d : 0.0f;
  }
}

/* y = x0 ⊙ z + x */
__attribute__((noinline)) static void cross_combine(float *restrict y, const float *restrict x0,
                                                    const float *restrict z, const float *restrict x, size_t n) {
  for (size_t j = 0; j < n; j++) y[j] = x0[j] * z[j] + x[j];
}

/* dz = dy ⊙ x0, dx0 = dy ⊙ z (or, accumulating, dx0 += dy ⊙ z: the product rounds first, as the tape's
 * Add of a separate dx0 did; -ffp-contract=off keeps it from becoming an fma) */
__attribute__((noinline)) static void cross_grads(float *restrict dz, float *restrict dx0, const float *restrict dy,
                                                  const float *restrict x0, const float *restrict z, size_t n) {
  for (size_t j = 0; j < n; j++) {
    dz[j] = dy[j] * x0[j];
    dx0[j] = dy[j] * z[j];
  }
}

__attribute__((noinline)) static void cross_grads_acc(float *restrict dz, float *restrict dx0,
                                                      const float *restrict dy, const float *restrict x0,
                                                      const float *restrict z, size_t n) {
  for (size_t j = 0; j < n; j++) {
    dz[j] = dy[j] * x0[j];
    dx0[j] += dy[j] * z[j];
  }
}

/* o += t */
__attribute__((noinline)) static void add_into(float *restrict o, const float *restrict t, size_t n) {
  for (size_t j = 0; j < n; j++) o[j] += t[j];
}

/* o += w · t over dim floats */
__attribute__((noinline)) static void axpy(float *restrict o, const float *restrict t, float w, size_t dim) {
  for (size_t d = 0; d < dim; d++) o[d] += w * t[d];
}

/* Rows that a chunk of a row-split product gets at least: row blocks of 256 run sgemm within ~3% of the
 * whole 1024-row product (measured for the CRM's shapes), and splitting pays from 512 rows: a 128-wide
 * cross layer forward at 2 threads against 1 took 108 -> 61 µs at 512 rows, 222 -> 113 at 1024, but
 * 64 -> 76 µs at 256 rows cut in 128-row blocks. Smaller products stay on one thread. */
#define GEMM_ROW_GRAIN 256
/* Output rows of xᵀ·dz (weight gradients: the reduction runs over the batch) a chunk gets at least. */
#define GEMM_K_GRAIN 64
/* Multiply-adds per entry above which the entries of a batched product are spread over the pool. */
#define MATMUL_SPLIT_WORK (256 * 128 * 128)

/* Row blocks of a product cut by its rows (o = x·w, and dz·wᵀ): fixed by the rows alone, never by the
 * pool's threads or the product's size, so every kernel makes the same sgemm calls at any thread count, and
 * a fused stack makes its layers' calls. ≥ 256 rows each (1 block below 512), at most MAX_CHUNKS.
 * Why not the thread count: OpenBLAS's Haswell sgemm kernel, which it runs on AMD EPYC (AVX-512 or not),
 * gives a row other bits in a 1024-row call than in a 256-row one (13,661 of 131,072 entries of a
 * 1024×128×128 product differ from its four 256-row blocks), where its SkylakeX and Sandybridge kernels
 * give the same. Cut by the thread count, 1 and 2 threads trained different models on such a machine. */
static int64_t gemm_row_blocks(int64_t m) {
  if (m < 2 * GEMM_ROW_GRAIN) return 1;
  const int64_t c = m / GEMM_ROW_GRAIN;
  return c > MAX_CHUNKS ? MAX_CHUNKS : c;
}

/* Output-row blocks of a weight gradient xᵀ·dz ([k, n]; the reduction runs over the batch rows) once its
 * product is cut by rows at all: two from k = 128 (a weight gradient cut in two runs at 150-160 GFLOP/s a
 * block, in four at 120-150), fixed for the same reason as gemm_row_blocks. */
static int64_t gemm_k_blocks(int64_t k) { return k >= 2 * GEMM_K_GRAIN ? 2 : 1; }

/* Whether a row-cut product is worth the pool's threads; below it its blocks run in turn on the caller. */
static bool gemm_parallel(int64_t work) { return work >= MATMUL_SPLIT_WORK; }

/* Runs a row-cut kernel's blocks: on the pool, or (a small product) in turn here. */
static void run_blocks(chunk_fn fn, void *ctx, int64_t blocks, bool parallel) {
  if (parallel) {
    pool_run(fn, ctx, blocks);
  } else {
    for (int64_t c = 0; c < blocks; c++) fn(ctx, c);
  }
}

typedef struct {
  const float *a, *b;
  float *out;
  const float *bias;
  size_t biaslen;
  int64_t m, n, k, as, bs;
  bool ta, tb;
  int act;
  int64_t row_chunks, batch;
} MatmulJob;

/* Rows [r0, r1) of entry i: bias, product, activation. */
static void matmul_block(const MatmulJob *j, int64_t i, int64_t r0, int64_t r1) {
  const int64_t m = j->m, n = j->n, k = j->k, rows = r1 - r0;
  if (rows <= 0) return;
  float *c = j->out + i * m * n + r0 * n;
  float beta = 0.0f;
  if (j->bias != NULL) {
    if (j->biaslen == 1) {
      for (int64_t q = 0; q < rows * n; q++) c[q] = j->bias[0];
    } else {
      for (int64_t r = 0; r < rows; r++) memcpy(c + r * n, j->bias, (size_t)n * sizeof(float));
    }
    beta = 1.0f;
  }
  if (k == 0) {
    if (j->bias == NULL) memset(c, 0, (size_t)(rows * n) * sizeof(float));
  } else if (n > 0) {
    /* Row r of op(A) is row r of A, or column r of a transposed A (stored [k, m]). */
    const float *a = j->a + i * j->as + (j->ta ? r0 : r0 * k);
    cblas_sgemm(RowMajor, j->ta ? Trans : NoTrans, j->tb ? Trans : NoTrans, (int)rows, (int)n, (int)k, 1.0f, a,
                j->ta ? (int)m : (int)k, j->b + i * j->bs, j->tb ? (int)k : (int)n, beta, c, (int)n);
  }
  if (j->act == 1) relu_inplace(c, (size_t)(rows * n));
}

static void matmul_rows_chunk(void *ctx, int64_t c) {
  const MatmulJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->row_chunks, c, &r0, &r1);
  matmul_block(j, 0, r0, r1);
}

/* Entries [i0, i1) of a batched product (row_chunks: how many chunks the entries were cut into). */
static void matmul_entry_chunk(void *ctx, int64_t c) {
  const MatmulJob *j = ctx;
  int64_t i0, i1;
  chunk_range(j->batch, j->row_chunks, c, &i0, &i1);
  for (int64_t i = i0; i < i1; i++) matmul_block(j, i, 0, j->m);
}

static napi_value js_matmul(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 13) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native.matmul: expected 13 arguments");
    return NULL;
  }
  float *a, *b, *out, *bias = NULL;
  size_t alen, blen, olen, biaslen = 0;
  int64_t batch, m, n, k, as, bs, act;
  bool ta, tb;
  if (!f32_arg(env, argv[0], "a", &a, &alen) || !f32_arg(env, argv[1], "b", &b, &blen) ||
      !f32_arg(env, argv[2], "out", &out, &olen) || !i64_arg(env, argv[3], &batch) ||
      !i64_arg(env, argv[4], &m) || !i64_arg(env, argv[5], &n) || !i64_arg(env, argv[6], &k) ||
      !bool_arg(env, argv[7], &ta) || !bool_arg(env, argv[8], &tb) || !i64_arg(env, argv[9], &as) ||
      !i64_arg(env, argv[10], &bs))
    return NULL;
  napi_valuetype bt;
  CHECK(env, napi_typeof(env, argv[11], &bt));
  if (bt != napi_null && bt != napi_undefined && !f32_arg(env, argv[11], "bias", &bias, &biaslen)) return NULL;
  if (!i64_arg(env, argv[12], &act)) return NULL;

  /* Bounds: every index the products touch must lie inside the views, or we would read/write the heap
   * outside the tensors. */
  if (batch < 1 || m < 0 || n < 0 || k < 0 || as < 0 || bs < 0 || m * n * batch > (int64_t)olen ||
      (batch - 1) * as + m * k > (int64_t)alen || (batch - 1) * bs + k * n > (int64_t)blen ||
      (bias != NULL && biaslen != (size_t)n && biaslen != 1) || act < 0 || act > 1 || m > INT32_MAX ||
      n > INT32_MAX || k > INT32_MAX) {
    napi_throw_range_error(env, "CORELLA_NATIVE", "corella_native.matmul: shapes do not fit the buffers");
    return NULL;
  }
  MatmulJob j = {a, b, out, bias, biaslen, m, n, k, as, bs, ta, tb, (int)act, 0, batch};
  /* Whole products per chunk when there are several, else row blocks of the one product. */
  if (batch > 1) {
    j.row_chunks = m * n * k >= MATMUL_SPLIT_WORK ? chunks_for(batch, 1) : 1;
    pool_run(matmul_entry_chunk, &j, j.row_chunks);
  } else if (blas_splits()) {
    matmul_block(&j, 0, 0, m);
  } else {
    j.row_chunks = gemm_row_blocks(m);
    run_blocks(matmul_rows_chunk, &j, j.row_chunks, gemm_parallel(m * n * k));
  }
  return NULL;
}

/* Per-thread scratch for intermediates that no tensor holds (dz), grown on demand; freed when the thread's
 * Node environment (main thread or worker) shuts down. */
static _Thread_local float *scratch = NULL;
static _Thread_local size_t scratch_len = 0;

static float *scratch_floats(napi_env env, size_t n) {
  if (n > scratch_len) {
    float *p = (float *)realloc(scratch, n * sizeof(float));
    if (p == NULL) {
      napi_throw_error(env, "CORELLA_NATIVE", "corella_native: out of memory");
      return NULL;
    }
    scratch = p;
    scratch_len = n;
  }
  return scratch;
}

static int i32_arg(napi_env env, napi_value v, const char *name, int32_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok || type != napi_int32_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "corella_native: %s must be an Int32Array", name);
    napi_throw_type_error(env, "CORELLA_NATIVE", msg);
    return 0;
  }
  *data = (int32_t *)ptr;
  return 1;
}

static napi_value range_error(napi_env env, const char *what) {
  napi_throw_range_error(env, "CORELLA_NATIVE", what);
  return NULL;
}

/* Floats of work (element-wise passes, Adam) a chunk gets at least. Measured (hot cache, 2 threads
 * against 1): Adam over 16k floats 22 -> 13 µs, over 4k 5.8 -> 4.4 µs; 8k keeps a chunk at ~10 µs of
 * work, and splits the CRM's 16k- and 32k-float weight matrices. */
#define ELEMENT_GRAIN 8192

typedef struct {
  const float *table;
  const int32_t *rows;
  const float *weights;
  float *out;
  int64_t dim, bag, bags, chunks;
} BagJob;

/* Bags [b0, b1): out rows are written by their own bag only. */
static void bag_chunk(void *ctx, int64_t c) {
  const BagJob *j = ctx;
  int64_t b0, b1;
  chunk_range(j->bags, j->chunks, c, &b0, &b1);
  const size_t dim = (size_t)j->dim;
  memset(j->out + (size_t)b0 * dim, 0, (size_t)(b1 - b0) * dim * sizeof(float));
  for (int64_t b = b0; b < b1; b++) {
    float *o = j->out + (size_t)b * dim;
    for (int64_t p = 0; p < j->bag; p++) {
      const size_t k = (size_t)(b * j->bag + p);
      const float wk = j->weights[k];
      if (wk == 0.0f) continue;
      axpy(o, j->table + (size_t)j->rows[k] * dim, wk, dim);
    }
  }
}

/* A scatter-add onto table rows, split by row-id range: each chunk scans every entry and adds only those
 * whose row is in its range, so each row still receives its additions in entry order (bit-identical)
 * and no two chunks write the same row. Entries are (b, q) for b < bags, q < bag: entry k = b·bag + q
 * reads src + b·width + col + q·qstride, times scale·weights[k] (weights null = 1). */
typedef struct {
  float *g;
  const float *src;
  const int32_t *rows;
  const float *weights;
  int64_t bags, bag, col, qstride, width, dim, vrows, chunks;
  float scale;
  bool clear; /* zero the chunk's rows first (a fresh gradient rather than an accumulation) */
} ScatterJob;

static void scatter_chunk(void *ctx, int64_t c) {
  const ScatterJob *j = ctx;
  int64_t v0, v1;
  chunk_range(j->vrows, j->chunks, c, &v0, &v1);
  const size_t dim = (size_t)j->dim;
  if (j->clear) memset(j->g + (size_t)v0 * dim, 0, (size_t)(v1 - v0) * dim * sizeof(float));
  for (int64_t b = 0; b < j->bags; b++) {
    for (int64_t q = 0; q < j->bag; q++) {
      const size_t k = (size_t)(b * j->bag + q);
      const int32_t r = j->rows[k];
      if (r < v0 || r >= v1) continue;
      const float f = j->scale * (j->weights != NULL ? j->weights[k] : 1.0f);
      if (f == 0.0f) continue;
      axpy(j->g + (size_t)r * dim, j->src + b * j->width + j->col + q * j->qstride, f, dim);
    }
  }
}

/* Work (floats) below which the scatters and l2Grad stay on one thread. Every scatter chunk scans all
 * entries, and at the CRM's batch (8192 entries × 16, 131k floats; l2Grad 131k) a 2-thread split
 * measured slower in a training step (scatterAdd 0.13-0.15 -> 0.17-0.22 ms a step, l2Grad 0.09 -> 0.12). */
#define SMALL_PASS_WORK (512 * 1024)

/* Chunks for a scatter of n entries onto vrows rows: one per thread at most, at least 64 rows each. */
static int64_t scatter_chunks(int64_t entries, int64_t dim, int64_t vrows) {
  if (entries * dim < SMALL_PASS_WORK) return 1;
  int64_t c = at_most_threads(chunks_for(entries * dim, ELEMENT_GRAIN));
  const int64_t by_rows = vrows / 64 < 1 ? 1 : vrows / 64;
  return c < by_rows ? c : by_rows;
}

static napi_value js_embedding_bag(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return range_error(env, "corella_native.embeddingBag: expected 6 arguments");
  float *table, *weights, *out;
  int32_t *rows;
  size_t tlen, rlen, wlen, olen;
  int64_t dim, bag;
  if (!f32_arg(env, argv[0], "table", &table, &tlen) || !i32_arg(env, argv[1], "rows", &rows, &rlen) ||
      !f32_arg(env, argv[2], "weights", &weights, &wlen) || !f32_arg(env, argv[3], "out", &out, &olen) ||
      !i64_arg(env, argv[4], &dim) || !i64_arg(env, argv[5], &bag))
    return NULL;
  if (dim < 1 || bag < 1 || rlen % (size_t)bag != 0 || wlen != rlen || olen != rlen / (size_t)bag * (size_t)dim)
    return range_error(env, "corella_native.embeddingBag: shapes do not fit the buffers");
  const size_t vrows = tlen / (size_t)dim;
  for (size_t i = 0; i < rlen; i++)
    if (rows[i] < 0 || (size_t)rows[i] >= vrows)
      return range_error(env, "corella_native.embeddingBag: row id outside the table");
  BagJob j = {table, rows, weights, out, dim, bag, (int64_t)(rlen / (size_t)bag), 0};
  j.chunks = chunks_for(j.bags * bag * dim, ELEMENT_GRAIN);
  pool_run(bag_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_embedding_bag_grad(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return range_error(env, "corella_native.embeddingBagGrad: expected 6 arguments");
  float *dy, *weights, *out;
  int32_t *rows;
  size_t dlen, rlen, wlen, olen;
  int64_t dim, bag;
  if (!f32_arg(env, argv[0], "dy", &dy, &dlen) || !i32_arg(env, argv[1], "rows", &rows, &rlen) ||
      !f32_arg(env, argv[2], "weights", &weights, &wlen) || !f32_arg(env, argv[3], "out", &out, &olen) ||
      !i64_arg(env, argv[4], &dim) || !i64_arg(env, argv[5], &bag))
    return NULL;
  if (dim < 1 || bag < 1 || rlen % (size_t)bag != 0 || wlen != rlen || dlen != rlen / (size_t)bag * (size_t)dim)
    return range_error(env, "corella_native.embeddingBagGrad: shapes do not fit the buffers");
  const size_t vrows = olen / (size_t)dim;
  for (size_t i = 0; i < rlen; i++)
    if (rows[i] < 0 || (size_t)rows[i] >= vrows)
      return range_error(env, "corella_native.embeddingBagGrad: row id outside the table");
  const int64_t bags = (int64_t)(rlen / (size_t)bag);
  /* Bag b's gradient dy[b] goes to each of its rows: entry (b, q) reads dy + b·dim (qstride 0). */
  /* Floats past the last whole row (none for a [V, dim] table) are zero, as the whole-table memset left them. */
  memset(out + vrows * (size_t)dim, 0, (olen - vrows * (size_t)dim) * sizeof(float));
  ScatterJob j = {out, dy, rows, weights, bags, bag, 0, 0, dim, dim, (int64_t)vrows, 0, 1.0f, true};
  j.chunks = scatter_chunks(bags * bag, dim, (int64_t)vrows);
  pool_run(scatter_chunk, &j, j.chunks);
  return NULL;
}

/* Σ over the m rows of an [m, n] matrix into db[n]. */
/* Σ over the m rows of an [m, n] matrix into db[c0..c1), each column summed in row order. */
__attribute__((noinline)) static void column_sums(const float *restrict x, int64_t m, int64_t n, int64_t c0,
                                                 int64_t c1, float *restrict db) {
  memset(db + c0, 0, (size_t)(c1 - c0) * sizeof(float));
  for (int64_t r = 0; r < m; r++) {
    const float *row = x + r * n;
    for (int64_t j = c0; j < c1; j++) db[j] += row[j];
  }
}

/* A cross or dense layer's job. phase -1 runs every step of the forward or first backward region on a
 * chunk's rows; 0 and 2 are the parts before and after the product when OpenBLAS runs it whole. */
typedef struct {
  const float *x0, *x, *w, *b, *dy, *yin;
  float *y, *z, *dz, *dx0, *dx, *dw, *db;
  int64_t m, k, n, chunks, kchunks, dchunks;
  int phase;
  bool relu;
  /* cross backward only: CROSS_ACCUMULATE_DX0 and CROSS_FOLD_DX (see crossBackward above) */
  int flags;
} CrossJob;

#define CROSS_ACCUMULATE_DX0 1
#define CROSS_FOLD_DX 2

static void cross_forward_chunk(void *ctx, int64_t c) {
  const CrossJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t n = j->n, rows = r1 - r0;
  if (rows <= 0) return;
  float *z = j->z + r0 * n;
  if (j->phase <= 0)
    for (int64_t r = 0; r < rows; r++) memcpy(z + r * n, j->b, (size_t)n * sizeof(float));
  if (j->phase < 0)
    cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)rows, (int)n, (int)n, 1.0f, j->x + r0 * n, (int)n, j->w, (int)n,
                1.0f, z, (int)n);
  if (j->phase != 0) cross_combine(j->y + r0 * n, j->x0 + r0 * n, z, j->x + r0 * n, (size_t)(rows * n));
}

/* Row chunks of a backward pass's first region: dz (and dx0) element-wise, then dx = [dy +] dz·wᵀ. For a
 * cross layer (x0 set) dz = dy ⊙ x0, dx0 = dy ⊙ z, dx = dy + dz·wᵀ; for a dense layer dz = relu ?
 * dy ⊙ (y > 0) : dy, dx = dz·wᵀ (w is [k, n]). */
static void backward_rows_chunk(void *ctx, int64_t c) {
  const CrossJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t n = j->n, k = j->k, rows = r1 - r0;
  if (rows <= 0) return;
  const size_t span = (size_t)(rows * n);
  const bool cross = j->x0 != NULL;
  const float *dz = j->dy + r0 * n;
  if (j->phase == 2) {
    /* after OpenBLAS ran dx whole: fold it into dx0 */
    add_into(j->dx0 + r0 * n, j->dx + r0 * n, span);
    return;
  }
  if (j->phase <= 0) {
    if (cross) {
      if (j->flags & CROSS_ACCUMULATE_DX0)
        cross_grads_acc(j->dz + r0 * n, j->dx0 + r0 * n, j->dy + r0 * n, j->x0 + r0 * n, j->z + r0 * n, span);
      else
        cross_grads(j->dz + r0 * n, j->dx0 + r0 * n, j->dy + r0 * n, j->x0 + r0 * n, j->z + r0 * n, span);
      memcpy(j->dx + r0 * n, j->dy + r0 * n, span * sizeof(float));
    } else if (j->relu) {
      relu_mask(j->dz + r0 * n, j->dy + r0 * n, j->yin + r0 * n, span);
    }
  }
  if (cross || j->relu) dz = j->dz + r0 * n;
  if (j->phase < 0)
    cblas_sgemm(RowMajor, NoTrans, Trans, (int)rows, (int)k, (int)n, 1.0f, dz, (int)n, j->w, (int)n,
                cross ? 1.0f : 0.0f, j->dx + r0 * k, (int)k);
  /* this chunk's rows of dx are final here, so the fold costs no extra region */
  if (j->phase < 0 && cross && (j->flags & CROSS_FOLD_DX)) add_into(j->dx0 + r0 * n, j->dx + r0 * n, span);
}

/* The weight-gradient region: chunks [0, kchunks) compute rows of dw = xᵀ·dz ([k, n], the reduction over
 * the batch rows, which a row block leaves in the same order), the next dchunks the column sums
 * db = Σ_rows dz over a range of columns, each column summed in row order. */
static void backward_weights_chunk(void *ctx, int64_t c) {
  const CrossJob *j = ctx;
  const float *dz = (j->x0 != NULL || j->relu) ? j->dz : j->dy;
  const int64_t m = j->m, n = j->n, k = j->k;
  if (c < j->kchunks) {
    int64_t k0, k1;
    chunk_range(k, j->kchunks, c, &k0, &k1);
    if (k1 > k0)
      cblas_sgemm(RowMajor, Trans, NoTrans, (int)(k1 - k0), (int)n, (int)m, 1.0f, j->x + k0, (int)k, dz, (int)n, 0.0f,
                  j->dw + k0 * n, (int)n);
    return;
  }
  int64_t c0, c1;
  chunk_range(n, j->dchunks, c - j->kchunks, &c0, &c1);
  column_sums(dz, m, n, c0, c1, j->db);
}

/* Both backward regions (dw whole from the caller when OpenBLAS splits products). */
static void run_backward(CrossJob *j) {
  const int64_t m = j->m, n = j->n, k = j->k;
  const float *dz = (j->x0 != NULL || j->relu) ? j->dz : j->dy;
  if (blas_splits()) {
    j->phase = 0;
    j->chunks = chunks_for(m * n, ELEMENT_GRAIN) < m ? chunks_for(m * n, ELEMENT_GRAIN) : m;
    pool_run(backward_rows_chunk, j, j->chunks);
    cblas_sgemm(RowMajor, NoTrans, Trans, (int)m, (int)k, (int)n, 1.0f, dz, (int)n, j->w, (int)n,
                j->x0 != NULL ? 1.0f : 0.0f, j->dx, (int)k);
    if (j->x0 != NULL && (j->flags & CROSS_FOLD_DX)) {
      j->phase = 2;
      pool_run(backward_rows_chunk, j, j->chunks);
    }
    cblas_sgemm(RowMajor, Trans, NoTrans, (int)k, (int)n, (int)m, 1.0f, j->x, (int)k, dz, (int)n, 0.0f, j->dw, (int)n);
    j->kchunks = 0;
  } else {
    j->phase = -1;
    j->chunks = gemm_row_blocks(m);
    run_blocks(backward_rows_chunk, j, j->chunks, gemm_parallel(m * n * k));
    /* Only when the product is large enough to run on the pool: a small one keeps dw in one call. */
    j->kchunks = gemm_parallel(m * n * k) && j->chunks > 1 ? gemm_k_blocks(k) : 1;
  }
  /* With OpenBLAS's threads, j->chunks is the element passes' cut; db's columns are summed alike either way. */
  const bool split = j->chunks > 1 && (blas_splits() || gemm_parallel(m * n * k));
  j->dchunks = j->db == NULL ? 0 : (split && n >= 64 ? 2 : 1);
  run_blocks(backward_weights_chunk, j, j->kchunks + j->dchunks, split);
}

static napi_value js_cross_forward(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) return range_error(env, "corella_native.crossForward: expected 8 arguments");
  float *x0, *x, *w, *b, *y, *z;
  size_t l0, lx, lw, lb, ly, lz;
  int64_t m, n;
  if (!f32_arg(env, argv[0], "x0", &x0, &l0) || !f32_arg(env, argv[1], "x", &x, &lx) ||
      !f32_arg(env, argv[2], "w", &w, &lw) || !f32_arg(env, argv[3], "b", &b, &lb) ||
      !f32_arg(env, argv[4], "y", &y, &ly) || !f32_arg(env, argv[5], "z", &z, &lz) ||
      !i64_arg(env, argv[6], &m) || !i64_arg(env, argv[7], &n))
    return NULL;
  const size_t mn = (size_t)(m * n);
  if (m < 1 || n < 1 || n > INT32_MAX || m > INT32_MAX || l0 != mn || lx != mn || ly != mn || lz != mn ||
      lw != (size_t)(n * n) || lb != (size_t)n)
    return range_error(env, "corella_native.crossForward: shapes do not fit the buffers");
  CrossJob j = {.x0 = x0, .x = x, .w = w, .b = b, .y = y, .z = z, .m = m, .n = n};
  if (blas_splits()) {
    j.phase = 0;
    j.chunks = chunks_for(m * n, ELEMENT_GRAIN) < m ? chunks_for(m * n, ELEMENT_GRAIN) : m;
    pool_run(cross_forward_chunk, &j, j.chunks);
    cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)m, (int)n, (int)n, 1.0f, x, (int)n, w, (int)n, 1.0f, z, (int)n);
    j.phase = 2;
    pool_run(cross_forward_chunk, &j, j.chunks);
  } else {
    j.phase = -1;
    j.chunks = gemm_row_blocks(m);
    run_blocks(cross_forward_chunk, &j, j.chunks, gemm_parallel(m * n * n));
  }
  return NULL;
}

static napi_value js_cross_backward(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 11) return range_error(env, "corella_native.crossBackward: expected 11 or 12 arguments");
  float *dy, *x0, *x, *w, *z, *dx0, *dx, *dw, *db;
  size_t ldy, l0, lx, lw, lz, ld0, ldx, ldw, ldb;
  int64_t m, n;
  if (!f32_arg(env, argv[0], "dy", &dy, &ldy) || !f32_arg(env, argv[1], "x0", &x0, &l0) ||
      !f32_arg(env, argv[2], "x", &x, &lx) || !f32_arg(env, argv[3], "w", &w, &lw) ||
      !f32_arg(env, argv[4], "z", &z, &lz) || !f32_arg(env, argv[5], "dx0", &dx0, &ld0) ||
      !f32_arg(env, argv[6], "dx", &dx, &ldx) || !f32_arg(env, argv[7], "dw", &dw, &ldw) ||
      !f32_arg(env, argv[8], "db", &db, &ldb) || !i64_arg(env, argv[9], &m) || !i64_arg(env, argv[10], &n))
    return NULL;
  const size_t mn = (size_t)(m * n);
  if (m < 1 || n < 1 || n > INT32_MAX || m > INT32_MAX || ldy != mn || l0 != mn || lx != mn || lz != mn ||
      ld0 != mn || ldx != mn || lw != (size_t)(n * n) || ldw != (size_t)(n * n) || ldb != (size_t)n)
    return range_error(env, "corella_native.crossBackward: shapes do not fit the buffers");
  int64_t flags = 0;
  if (argc >= 12) {
    napi_valuetype t;
    CHECK(env, napi_typeof(env, argv[11], &t));
    if (t != napi_undefined && !i64_arg(env, argv[11], &flags)) return NULL;
  }
  if (flags < 0 || flags > (CROSS_ACCUMULATE_DX0 | CROSS_FOLD_DX))
    return range_error(env, "corella_native.crossBackward: flags must be 0..3");
  /* the fold reads dx after writing dx0: they must not be one buffer */
  if ((flags & CROSS_FOLD_DX) && dx == dx0)
    return range_error(env, "corella_native.crossBackward: dx and dx0 must differ to fold dx");
  float *dz = scratch_floats(env, mn);
  if (dz == NULL) return NULL;
  CrossJob j = {.x0 = x0, .x = x, .w = w, .dy = dy, .z = z, .dz = dz, .dx0 = dx0, .dx = dx, .dw = dw, .db = db,
                .m = m, .k = n, .n = n, .flags = (int)flags};
  run_backward(&j);
  return NULL;
}

static napi_value js_dense_backward(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 11) return range_error(env, "corella_native.denseBackward: expected 11 arguments");
  float *dy, *x, *w, *y, *dx, *dw, *db = NULL;
  size_t ldy, lx, lw, ly, ldx, ldw, ldb = 0;
  int64_t m, k, n;
  bool relu;
  if (!f32_arg(env, argv[0], "dy", &dy, &ldy) || !f32_arg(env, argv[1], "x", &x, &lx) ||
      !f32_arg(env, argv[2], "w", &w, &lw) || !f32_arg(env, argv[3], "y", &y, &ly) ||
      !f32_arg(env, argv[4], "dx", &dx, &ldx) || !f32_arg(env, argv[5], "dw", &dw, &ldw))
    return NULL;
  napi_valuetype bt;
  CHECK(env, napi_typeof(env, argv[6], &bt));
  if (bt != napi_null && bt != napi_undefined && !f32_arg(env, argv[6], "db", &db, &ldb)) return NULL;
  if (!i64_arg(env, argv[7], &m) || !i64_arg(env, argv[8], &k) || !i64_arg(env, argv[9], &n) ||
      !bool_arg(env, argv[10], &relu))
    return NULL;
  const size_t mn = (size_t)(m * n);
  if (m < 1 || n < 1 || k < 1 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || ldy != mn || ly != mn ||
      lx != (size_t)(m * k) || ldx != (size_t)(m * k) || lw != (size_t)(k * n) || ldw != (size_t)(k * n) ||
      (db != NULL && ldb != (size_t)n))
    return range_error(env, "corella_native.denseBackward: shapes do not fit the buffers");
  float *dz = NULL;
  if (relu && (dz = scratch_floats(env, mn)) == NULL) return NULL;
  CrossJob j = {.x = x, .w = w, .dy = dy, .yin = y, .dz = dz, .dx = dx, .dw = dw, .db = db, .m = m, .k = k, .n = n,
                .relu = relu};
  run_backward(&j);
  return NULL;
}

static int f64_arg(napi_env env, napi_value v, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native: expected a number");
    return 0;
  }
  return 1;
}

/* The exact arithmetic of the JS loop it replaces (ml/crm/adam.ts): float64 throughout, the moments
 * rounded to float32 only where they are stored, so both paths give bit-identical weights. */
__attribute__((noinline)) static void adam_span(float *restrict w, const float *restrict g, float *restrict m,
                                                float *restrict v, size_t n, double lr, double b1, double b2,
                                                double eps) {
  for (size_t i = 0; i < n; i++) {
    const double gi = g[i];
    const double mi = b1 * m[i] + (1.0 - b1) * gi;
    const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
    m[i] = (float)mi;
    v[i] = (float)vi;
    w[i] = (float)(w[i] - (lr * mi) / (sqrt(vi) + eps));
  }
}

/* Adam over n spans of `dim` floats: spans i at i·dim (rows null) or at rows[i]·dim. Each parameter's update
 * reads only itself, so any cut is bit-identical. */
typedef struct {
  float *w;
  const float *g;
  float *m, *v;
  const int32_t *rows;
  int64_t n, dim;
  double lr, b1, b2, eps;
  int64_t chunks;
} AdamJob;

static void adam_chunk(void *ctx, int64_t c) {
  const AdamJob *j = ctx;
  int64_t i0, i1;
  chunk_range(j->n, j->chunks, c, &i0, &i1);
  const size_t dim = (size_t)j->dim;
  if (j->rows == NULL) {
    adam_span(j->w + i0 * dim, j->g + i0 * dim, j->m + i0 * dim, j->v + i0 * dim, (size_t)(i1 - i0) * dim, j->lr,
              j->b1, j->b2, j->eps);
    return;
  }
  for (int64_t i = i0; i < i1; i++) {
    const size_t base = (size_t)j->rows[i] * dim;
    adam_span(j->w + base, j->g + base, j->m + base, j->v + base, dim, j->lr, j->b1, j->b2, j->eps);
  }
}

static napi_value js_adam(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) return range_error(env, "corella_native.adam: expected 8 arguments");
  float *w, *g, *m, *v;
  size_t lw, lg, lm, lv;
  double lr, b1, b2, eps;
  if (!f32_arg(env, argv[0], "w", &w, &lw) || !f32_arg(env, argv[1], "g", &g, &lg) ||
      !f32_arg(env, argv[2], "m", &m, &lm) || !f32_arg(env, argv[3], "v", &v, &lv) ||
      !f64_arg(env, argv[4], &lr) || !f64_arg(env, argv[5], &b1) || !f64_arg(env, argv[6], &b2) ||
      !f64_arg(env, argv[7], &eps))
    return NULL;
  if (lg != lw || lm != lw || lv != lw) return range_error(env, "corella_native.adam: arrays differ in length");
  AdamJob j = {w, g, m, v, NULL, (int64_t)lw, 1, lr, b1, b2, eps, chunks_for((int64_t)lw, ELEMENT_GRAIN)};
  pool_run(adam_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_adam_rows(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 11) return range_error(env, "corella_native.adamRows: expected 11 arguments");
  float *w, *g, *m, *v;
  int32_t *rows;
  size_t lw, lg, lm, lv, lr_;
  int64_t count, dim;
  double lr, b1, b2, eps;
  if (!f32_arg(env, argv[0], "w", &w, &lw) || !f32_arg(env, argv[1], "g", &g, &lg) ||
      !f32_arg(env, argv[2], "m", &m, &lm) || !f32_arg(env, argv[3], "v", &v, &lv) ||
      !i32_arg(env, argv[4], "rows", &rows, &lr_) || !i64_arg(env, argv[5], &count) ||
      !i64_arg(env, argv[6], &dim) || !f64_arg(env, argv[7], &lr) || !f64_arg(env, argv[8], &b1) ||
      !f64_arg(env, argv[9], &b2) || !f64_arg(env, argv[10], &eps))
    return NULL;
  if (lg != lw || lm != lw || lv != lw || dim < 1 || count < 0 || (size_t)count > lr_)
    return range_error(env, "corella_native.adamRows: shapes do not fit the buffers");
  const size_t vrows = lw / (size_t)dim;
  for (int64_t k = 0; k < count; k++)
    if (rows[k] < 0 || (size_t)rows[k] >= vrows) return range_error(env, "corella_native.adamRows: row id outside the table");
  /* Chunks of the list run at the same time: a row listed twice would race with itself. */
  uint8_t *seen = calloc(vrows > 0 ? vrows : 1, 1);
  if (seen == NULL) return range_error(env, "corella_native.adamRows: out of memory");
  for (int64_t k = 0; k < count; k++) {
    if (seen[rows[k]]) {
      free(seen);
      return range_error(env, "corella_native.adamRows: a row id is listed twice");
    }
    seen[rows[k]] = 1;
  }
  free(seen);
  /* Rows are distinct (markRows lists each once), so chunks of the list never share a row. */
  AdamJob j = {w, g, m, v, rows, count, dim, lr, b1, b2, eps, chunks_for(count * dim, ELEMENT_GRAIN)};
  pool_run(adam_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_scatter_add(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 11) return range_error(env, "corella_native.scatterAdd: expected 11 arguments");
  float *g, *dx0, *weights = NULL;
  int32_t *rows;
  size_t lg, ld, lr_, lwt = 0;
  int64_t bags, bag, col, qstride, width, dim;
  double scale;
  if (!f32_arg(env, argv[0], "g", &g, &lg) || !f32_arg(env, argv[1], "dx0", &dx0, &ld) ||
      !i32_arg(env, argv[2], "rows", &rows, &lr_))
    return NULL;
  napi_valuetype wt;
  CHECK(env, napi_typeof(env, argv[3], &wt));
  if (wt != napi_null && wt != napi_undefined && !f32_arg(env, argv[3], "weights", &weights, &lwt)) return NULL;
  if (!i64_arg(env, argv[4], &bags) || !i64_arg(env, argv[5], &bag) || !i64_arg(env, argv[6], &col) ||
      !i64_arg(env, argv[7], &qstride) || !i64_arg(env, argv[8], &width) || !i64_arg(env, argv[9], &dim) ||
      !f64_arg(env, argv[10], &scale))
    return NULL;
  if (bags < 0 || bag < 1 || col < 0 || qstride < 0 || dim < 1 || width < col + (bag - 1) * qstride + dim ||
      (size_t)(bags * bag) > lr_ || (weights != NULL && lwt < lr_) || (size_t)(bags * width) > ld)
    return range_error(env, "corella_native.scatterAdd: shapes do not fit the buffers");
  const size_t vrows = lg / (size_t)dim;
  const size_t n = (size_t)(bags * bag);
  for (size_t k = 0; k < n; k++)
    if (rows[k] < 0 || (size_t)rows[k] >= vrows) return range_error(env, "corella_native.scatterAdd: row id outside the table");
  ScatterJob j = {g, dx0, rows, weights, bags, bag, col, qstride, width, dim, (int64_t)vrows, 0, (float)scale, false};
  j.chunks = scatter_chunks(bags * bag, dim, (int64_t)vrows);
  pool_run(scatter_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_mark_rows(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return range_error(env, "corella_native.markRows: expected 5 arguments");
  int32_t *rows, *touched;
  float *weights = NULL;
  size_t lr_, lwt = 0, lt, lm;
  int64_t count;
  bool is_ta = false;
  napi_typedarray_type type;
  void *mptr = NULL;
  if (!i32_arg(env, argv[0], "rows", &rows, &lr_)) return NULL;
  napi_valuetype wt;
  CHECK(env, napi_typeof(env, argv[1], &wt));
  if (wt != napi_null && wt != napi_undefined && !f32_arg(env, argv[1], "weights", &weights, &lwt)) return NULL;
  if (napi_is_typedarray(env, argv[2], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[2], &type, &lm, &mptr, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native: mark must be a Uint8Array");
    return NULL;
  }
  uint8_t *mark = (uint8_t *)mptr;
  if (!i32_arg(env, argv[3], "touched", &touched, &lt) || !i64_arg(env, argv[4], &count)) return NULL;
  if ((weights != NULL && lwt < lr_) || count < 0 || (size_t)count > lt || lt < lm)
    return range_error(env, "corella_native.markRows: shapes do not fit the buffers");
  for (size_t k = 0; k < lr_; k++)
    if (rows[k] < 0 || (size_t)rows[k] >= lm) return range_error(env, "corella_native.markRows: row id outside the table");
  for (size_t k = 0; k < lr_; k++) {
    if (weights != NULL && weights[k] == 0.0f) continue;
    const int32_t r = rows[k];
    if (mark[r] == 0) {
      if ((size_t)count >= lt) return range_error(env, "corella_native.markRows: touched is full");
      mark[r] = 1;
      touched[count++] = r;
    }
  }
  napi_value v;
  CHECK(env, napi_create_int64(env, count, &v));
  return v;
}

typedef struct {
  float *g;
  const float *x;
  double *row_sq;
  int64_t bags, width, cols;
  float factor;
  int64_t chunks;
} L2Job;

/* A row's Σ x² in eight lanes (column j into lane j mod 8, each lane in column order, the lanes added
 * pairwise, the tail after them), and g += f·x. One running double sum was a chain of dependent adds,
 * ~0.1 ms for the CRM's 1024 × 128 on one core, serial in every step; eight lanes vectorise. The order is
 * fixed by the row's width alone, so the sum is the same at any thread count (and on the tape step,
 * which calls this kernel too); only the loss's last bits differ from the one-chain sum. */
__attribute__((noinline)) static double l2_span8(float *restrict g, const float *restrict x, size_t n, float f) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) {
      const float v = x[j + l];
      lane[l] += (double)v * (double)v;
      g[j + l] += f * v;
    }
  double sq = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; j < n; j++) {
    const float v = x[j];
    sq += (double)v * (double)v;
    g[j] += f * v;
  }
  return sq;
}

static void l2_chunk(void *ctx, int64_t c) {
  const L2Job *j = ctx;
  int64_t b0, b1;
  chunk_range(j->bags, j->chunks, c, &b0, &b1);
  for (int64_t b = b0; b < b1; b++)
    j->row_sq[b] = l2_span8(j->g + b * j->width, j->x + b * j->width, (size_t)j->cols, j->factor);
}

typedef struct {
  const float *z, *y;
  float *g;
  double *loss;
  double scale;
  int64_t n, chunks;
} BceJob;

/* Per sample, in double: the loss term into loss[i] (summed in sample order by the caller, so the result
 * is the same at any thread count) and the gradient rounded once to float. */
static void bce_chunk(void *ctx, int64_t c) {
  const BceJob *j = ctx;
  int64_t i0, i1;
  chunk_range(j->n, j->chunks, c, &i0, &i1);
  for (int64_t i = i0; i < i1; i++) {
    const double z = j->z[i], y = j->y[i];
    const double e = exp(-fabs(z));
    j->loss[i] = (z > 0 ? z : 0) - z * y + log1p(e);
    /* σ(z) from e = e^−|z| without overflow: 1/(1+e) for z ≥ 0, e/(1+e) below */
    const double s = z >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    j->g[i] = (float)((s - y) * j->scale);
  }
}

static napi_value js_bce_with_logits(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) return range_error(env, "corella_native.bceWithLogits: expected 4 arguments");
  float *z, *y, *g;
  size_t lz, ly, lg;
  double scale;
  if (!f32_arg(env, argv[0], "z", &z, &lz) || !f32_arg(env, argv[1], "y", &y, &ly) ||
      !f32_arg(env, argv[2], "g", &g, &lg) || !f64_arg(env, argv[3], &scale))
    return NULL;
  if (ly != lz || lg != lz) return range_error(env, "corella_native.bceWithLogits: z, y and g differ in length");
  double *loss = lz > 0 ? malloc(lz * sizeof(double)) : NULL;
  if (lz > 0 && loss == NULL) {
    napi_throw_error(env, "CORELLA_NATIVE", "corella_native: out of memory");
    return NULL;
  }
  const int64_t n = (int64_t)lz;
  BceJob j = {z, y, g, loss, scale, n, n < SMALL_PASS_WORK ? 1 : at_most_threads(chunks_for(n, ELEMENT_GRAIN))};
  if (n > 0) pool_run(bce_chunk, &j, j.chunks);
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) sum += loss[i];
  free(loss);
  napi_value v;
  CHECK(env, napi_create_double(env, sum, &v));
  return v;
}

static napi_value js_l2_grad(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return range_error(env, "corella_native.l2Grad: expected 6 arguments");
  float *g, *x;
  size_t lg, lx;
  int64_t bags, width, cols;
  double factor;
  if (!f32_arg(env, argv[0], "dx0", &g, &lg) || !f32_arg(env, argv[1], "x0", &x, &lx) ||
      !i64_arg(env, argv[2], &bags) || !i64_arg(env, argv[3], &width) || !i64_arg(env, argv[4], &cols) ||
      !f64_arg(env, argv[5], &factor))
    return NULL;
  if (bags < 0 || cols < 0 || cols > width || (size_t)(bags * width) > lg || (size_t)(bags * width) > lx)
    return range_error(env, "corella_native.l2Grad: shapes do not fit the buffers");
  double *row_sq = bags > 0 ? malloc((size_t)bags * sizeof(double)) : NULL;
  if (bags > 0 && row_sq == NULL) {
    napi_throw_error(env, "CORELLA_NATIVE", "corella_native: out of memory");
    return NULL;
  }
  L2Job j = {g, x, row_sq, bags, width, cols, (float)factor,
             bags * cols < SMALL_PASS_WORK ? 1 : at_most_threads(chunks_for(bags * cols, ELEMENT_GRAIN))};
  /* In a training step this serial pass (~55 µs) is followed, after a little JS, by the Adam regions. */
  if (j.chunks == 1 && bags * cols >= 64 * 1024) pool_prewake(150000);
  pool_run(l2_chunk, &j, j.chunks);
  /* Row sums added in row order, as the one-thread loop did. */
  double sq = 0.0;
  for (int64_t b = 0; b < bags; b++) sq += row_sq[b];
  free(row_sq);
  napi_value v;
  CHECK(env, napi_create_double(env, sq, &v));
  return v;
}

/* ---------------------------------------------------------------------------------------------------------
 * Fused stacks: every layer of a row block in one pool region.
 *
 * Layer by layer, each kernel is its own region over the whole batch: a 1024-row step writes ~10 MB of
 * activations, so by the time the next layer (or the backward pass) reads a block of rows it has left
 * the 2 MiB L2, and the passes are bound by the bandwidth that the two cores share. Rows are independent
 * in every part of a forward pass, and in the backward's dz and dx chain, so one region can carry a block
 * of rows through all layers while it is cache-hot; only the weight gradients (a reduction over the
 * batch) need a second region. The arithmetic of every element is the per-layer kernels' (the same
 * sgemm calls on row blocks, bias fills, masks and sums in the same order), so a stack gives the bits of
 * its layers one by one, at any thread count (test/ml/tf/native-kernels.test.ts).
 */
#define STACK_MAX 16

/* Per-thread buffers for a stack's intermediates (each layer's dz, the carried dx), apart from `scratch`. */
static _Thread_local float *stack_scratch = NULL;
static _Thread_local size_t stack_scratch_len = 0;

static float *stack_floats(napi_env env, size_t n) {
  if (n > stack_scratch_len) {
    float *p = (float *)realloc(stack_scratch, n * sizeof(float));
    if (p == NULL) {
      napi_throw_error(env, "CORELLA_NATIVE", "corella_native: out of memory");
      return NULL;
    }
    stack_scratch = p;
    stack_scratch_len = n;
  }
  return stack_scratch;
}

/* The length of a JS array argument in min..max, or false (no exception: the caller throws its own message). */
static bool array_len(napi_env env, napi_value v, uint32_t min, uint32_t max, uint32_t *n) {
  bool is_array = false;
  return napi_is_array(env, v, &is_array) == napi_ok && is_array && napi_get_array_length(env, v, n) == napi_ok &&
         *n >= min && *n <= max;
}

/* Element i of a JS array, and its name in errors ("what[i]"). */
static bool array_element(napi_env env, napi_value v, uint32_t i, const char *what, char name[32], napi_value *e) {
  snprintf(name, 32, "%.12s[%u]", what, i);
  return napi_get_element(env, v, i, e) == napi_ok;
}

/* A JS array of 1..STACK_MAX Float32Arrays (`what` names it in errors); returns the count, 0 on error. */
static int64_t f32_list_min(napi_env env, napi_value v, const char *what, float **data, size_t *lens, uint32_t min) {
  uint32_t n = 0;
  char msg[128];
  if (!array_len(env, v, min, STACK_MAX, &n)) {
    snprintf(msg, sizeof msg, "corella_native: %s must be an array of %u..%d Float32Arrays", what, min, STACK_MAX);
    napi_throw_type_error(env, "CORELLA_NATIVE", msg);
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    char name[32];
    if (!array_element(env, v, i, what, name, &e) || !f32_arg(env, e, name, &data[i], &lens[i])) return -1;
  }
  return n;
}

static uint32_t f32_list(napi_env env, napi_value v, const char *what, float **data, size_t *lens) {
  const int64_t n = f32_list_min(env, v, what, data, lens, 1);
  return n < 0 ? 0 : (uint32_t)n;
}

/* ---------------------------------------------------------------------------------------------------------
 * adamMany(ws, gs, ms, vs, lrT, beta1, beta2, eps): adam on each of up to 16 arrays, in one pool region.
 *
 * A step's dense update was 12 adam calls: the 5 big ones a region each (a wake-up and a barrier each, the
 * worker often asleep after the serial stretch before them) and the 7 biases inline on the caller alone.
 * Here the arrays' elements are one index space cut into chunks, so every array is split and there is one
 * barrier. Each parameter's update reads only itself (adam_span), so the bits are those of the 12 calls.
 */
typedef struct {
  float *w[STACK_MAX];
  const float *g[STACK_MAX];
  float *m[STACK_MAX], *v[STACK_MAX];
  int64_t offset[STACK_MAX + 1]; /* array a holds elements [offset[a], offset[a+1]) of the index space */
  int64_t arrays, chunks;
  double lr, b1, b2, eps;
} AdamManyJob;

static void adam_many_chunk(void *ctx, int64_t c) {
  const AdamManyJob *j = ctx;
  int64_t i0, i1;
  chunk_range(j->offset[j->arrays], j->chunks, c, &i0, &i1);
  for (int64_t a = 0; a < j->arrays && i0 < i1; a++) {
    const int64_t lo = j->offset[a], hi = j->offset[a + 1];
    if (i0 >= hi) continue;
    const int64_t e = i1 < hi ? i1 : hi;
    const size_t k = (size_t)(i0 - lo);
    adam_span(j->w[a] + k, j->g[a] + k, j->m[a] + k, j->v[a] + k, (size_t)(e - i0), j->lr, j->b1, j->b2, j->eps);
    i0 = e;
  }
}

static napi_value js_adam_many(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) return range_error(env, "corella_native.adamMany: expected 8 arguments");
  AdamManyJob j;
  size_t lw[STACK_MAX], lg[STACK_MAX], lm[STACK_MAX], lv[STACK_MAX];
  const uint32_t n = f32_list(env, argv[0], "ws", j.w, lw);
  if (n == 0) return NULL;
  if (f32_list(env, argv[1], "gs", (float **)j.g, lg) != n || f32_list(env, argv[2], "ms", j.m, lm) != n ||
      f32_list(env, argv[3], "vs", j.v, lv) != n) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending ? NULL : range_error(env, "corella_native.adamMany: ws, gs, ms and vs differ in length");
  }
  if (!f64_arg(env, argv[4], &j.lr) || !f64_arg(env, argv[5], &j.b1) || !f64_arg(env, argv[6], &j.b2) ||
      !f64_arg(env, argv[7], &j.eps))
    return NULL;
  j.arrays = n;
  j.offset[0] = 0;
  for (uint32_t a = 0; a < n; a++) {
    if (lg[a] != lw[a] || lm[a] != lw[a] || lv[a] != lw[a]) {
      char msg[128];
      snprintf(msg, sizeof msg, "corella_native.adamMany: gs[%u], ms[%u] or vs[%u] differs in length from ws[%u]", a,
               a, a, a);
      return range_error(env, msg);
    }
    j.offset[a + 1] = j.offset[a] + (int64_t)lw[a];
  }
  j.chunks = chunks_for(j.offset[n], ELEMENT_GRAIN);
  pool_run(adam_many_chunk, &j, j.chunks);
  return NULL;
}

/* ---------------------------------------------------------------------------------------------------------
 * The embedding table's whole update in one call: which rows the batch touched, each row's gradient
 * (the scatter of dx0 onto it) and its lazy Adam step.
 *
 * Separately these were markRows and scatterAdd (both on one thread: every scatter chunk scanned all
 * entries, which measured slower split), a [V, dim] gradient buffer that the scatter wrote and adamRows
 * re-read from random rows, and a JS loop zeroing those rows again, ~0.35 ms of a 4.6 ms two-thread step
 * that a second core could hardly help with. Here one serial pass links each touched row's entries in
 * entry order (a row's first entry makes it the next touched row, as markRows lists them); then chunks of
 * the touched rows run on the pool, each row summing its entries into 16..dim floats on the stack and
 * taking its Adam step at once. A row belongs to one chunk and adds its entries in the order the scatter
 * did, from zero (0 + x is x, and -0 + x too), so the weights are the bits of markRows + scatterAdd +
 * adamRows at any thread count and any cut.
 *
 * Entries: the categorical group (bags × nCat ids, weight 1, entry (b, f) reads dx0 at b·width + f·dim),
 * then sequence group s (bags × len_s ids and weights, entry (b, q) reads dx0 at b·width + (nCat+s)·dim:
 * a pooled bag's gradient goes to each of its rows). An entry with weight 0 (padding) neither touches
 * its row nor adds; one whose factor scale·weight is 0 touches but adds nothing, as before.
 */
#define EMB_MAX_GROUPS (STACK_MAX + 1)
#define EMB_MAX_DIM 1024

/* Rows ahead whose w, m and v a chunk prefetches: touched rows are scattered over the table, and a row's
 * three cache lines are otherwise three misses in a row. */
#define EMB_PREFETCH 4

typedef struct {
  float *w, *m, *v;
  const float *dx0;
  const int64_t *src;    /* entry offsets into dx0, grouped by touched row: row s's are [start[s], start[s+1]) */
  const float *fac;      /* their factors scale · weight */
  const int32_t *start;
  const int32_t *touched;
  const int32_t *order;  /* touched rows by chunk: chunk c takes order[cstart[c] .. cstart[c+1]) */
  int64_t cstart[MAX_CHUNKS + 1];
  int64_t dim, chunks;
  double lr, b1, b2, eps;
} EmbAdamJob;

static void emb_adam_chunk(void *ctx, int64_t c) {
  const EmbAdamJob *j = ctx;
  const size_t dim = (size_t)j->dim;
  float acc[EMB_MAX_DIM];
  const int64_t i0 = j->cstart[c], i1 = j->cstart[c + 1];
  for (int64_t i = i0; i < i1; i++) {
    if (i + EMB_PREFETCH < i1) {
      const size_t ahead = (size_t)j->touched[j->order[i + EMB_PREFETCH]] * dim;
      __builtin_prefetch(j->w + ahead, 1);
      __builtin_prefetch(j->m + ahead, 1);
      __builtin_prefetch(j->v + ahead, 1);
    }
    const int32_t s = j->order[i];
    memset(acc, 0, dim * sizeof(float));
    for (int32_t e = j->start[s]; e < j->start[s + 1]; e++)
      if (j->fac[e] != 0.0f) axpy(acc, j->dx0 + j->src[e], j->fac[e], dim);
    const size_t base = (size_t)j->touched[s] * dim;
    adam_span(j->w + base, acc, j->m + base, j->v + base, dim, j->lr, j->b1, j->b2, j->eps);
  }
}

/* Per-thread scratch of embeddingAdam, grown on demand: slot_of[V] is -1 between calls. */
static _Thread_local int32_t *emb_slot_of = NULL;
static _Thread_local size_t emb_slot_len = 0;
static _Thread_local void *emb_entries = NULL;
static _Thread_local size_t emb_entries_len = 0;

/* A JS array of 0..EMB_MAX_GROUPS Int32Arrays; returns the count, -1 on error (thrown). */
static int64_t i32_list(napi_env env, napi_value v, const char *what, int32_t **data, size_t *lens) {
  uint32_t n = 0;
  char msg[128];
  if (!array_len(env, v, 0, EMB_MAX_GROUPS - 1, &n)) {
    snprintf(msg, sizeof msg, "corella_native: %s must be an array of at most %d Int32Arrays", what,
             EMB_MAX_GROUPS - 1);
    napi_throw_type_error(env, "CORELLA_NATIVE", msg);
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    char name[32];
    if (!array_element(env, v, i, what, name, &e) || !i32_arg(env, e, name, &data[i], &lens[i])) return -1;
  }
  return n;
}

static napi_value js_embedding_adam(napi_env env, napi_callback_info info) {
  size_t argc = 16;
  napi_value argv[16];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 16) return range_error(env, "corella_native.embeddingAdam: expected 16 arguments");
  float *w, *m, *v, *dx0;
  int32_t *cat, *touched;
  size_t lw, lm, lv, ld, lc, lt;
  int32_t *seq[EMB_MAX_GROUPS];
  float *seqw[STACK_MAX];
  size_t lseq[EMB_MAX_GROUPS], lseqw[STACK_MAX];
  int64_t bags, width, dim;
  double scale, lr, b1, b2, eps;
  if (!f32_arg(env, argv[0], "w", &w, &lw) || !f32_arg(env, argv[1], "m", &m, &lm) ||
      !f32_arg(env, argv[2], "v", &v, &lv) || !f32_arg(env, argv[3], "dx0", &dx0, &ld) ||
      !i32_arg(env, argv[4], "categoricalRows", &cat, &lc))
    return NULL;
  const int64_t ns = i32_list(env, argv[5], "sequenceRows", seq, lseq);
  if (ns < 0) return NULL;
  const int64_t nsw = f32_list_min(env, argv[6], "sequenceWeights", seqw, lseqw, 0);
  if (nsw < 0) return NULL;
  if (!i64_arg(env, argv[7], &bags) || !i64_arg(env, argv[8], &width) || !i64_arg(env, argv[9], &dim) ||
      !f64_arg(env, argv[10], &scale) || !f64_arg(env, argv[11], &lr) || !f64_arg(env, argv[12], &b1) ||
      !f64_arg(env, argv[13], &b2) || !f64_arg(env, argv[14], &eps) ||
      !i32_arg(env, argv[15], "touched", &touched, &lt))
    return NULL;
  if (lm != lw || lv != lw) return range_error(env, "corella_native.embeddingAdam: w, m and v differ in length");
  if (dim < 1 || dim > EMB_MAX_DIM) return range_error(env, "corella_native.embeddingAdam: dim must be in 1..1024");
  if (bags < 1) return range_error(env, "corella_native.embeddingAdam: bags must be at least 1");
  if (lc % (size_t)bags != 0)
    return range_error(env, "corella_native.embeddingAdam: categoricalRows is not bags × fields long");
  if (nsw != ns) return range_error(env, "corella_native.embeddingAdam: sequenceRows and sequenceWeights differ in count");
  const int64_t ncat = (int64_t)(lc / (size_t)bags);
  if (width < (ncat + ns) * dim || (size_t)(bags * width) != ld)
    return range_error(env, "corella_native.embeddingAdam: dx0 is not bags × width with room for every field");
  int64_t entries = (int64_t)lc;
  for (int64_t s = 0; s < ns; s++) {
    if (lseq[s] % (size_t)bags != 0 || lseqw[s] != lseq[s])
      return range_error(env, "corella_native.embeddingAdam: a sequence's rows or weights are not bags × len long");
    entries += (int64_t)lseq[s];
  }
  if (entries > INT32_MAX) return range_error(env, "corella_native.embeddingAdam: too many entries");
  const size_t vrows = lw / (size_t)dim;
  if (lt < vrows) return range_error(env, "corella_native.embeddingAdam: touched is shorter than the table's rows");
  for (size_t k = 0; k < lc; k++)
    if (cat[k] < 0 || (size_t)cat[k] >= vrows)
      return range_error(env, "corella_native.embeddingAdam: categoricalRows has a row id outside the table");
  for (int64_t s = 0; s < ns; s++)
    for (size_t k = 0; k < lseq[s]; k++)
      if (seq[s][k] < 0 || (size_t)seq[s][k] >= vrows)
        return range_error(env, "corella_native.embeddingAdam: sequenceRows has a row id outside the table");

  /* Scratch: slot_of (per table row); per entry its row's slot, offset and factor, in entry order and then
   * grouped by row; per touched row its entry count, start and chunk. */
  if (vrows > 0 && emb_slot_len < vrows) {
    int32_t *p = realloc(emb_slot_of, vrows * sizeof(int32_t));
    if (p == NULL) return range_error(env, "corella_native.embeddingAdam: out of memory");
    for (size_t r = emb_slot_len; r < vrows; r++) p[r] = -1;
    emb_slot_of = p;
    emb_slot_len = vrows;
  }
  const size_t need = (size_t)entries * (2 * sizeof(int64_t) + 2 * sizeof(float) + sizeof(int32_t)) +
                      ((size_t)entries + 1) * 3 * sizeof(int32_t);
  if (emb_entries_len < need) {
    void *p = realloc(emb_entries, need);
    if (p == NULL) return range_error(env, "corella_native.embeddingAdam: out of memory");
    emb_entries = p;
    emb_entries_len = need;
  }
  int64_t *esrc = emb_entries, *src = esrc + entries;
  float *efac = (float *)(src + entries), *fac = efac + entries;
  int32_t *eslot = (int32_t *)(fac + entries), *start = eslot + entries, *fill = start + entries + 1,
          *order = fill + entries + 1;
  int32_t *slot_of = emb_slot_of;

  /* The Adam region follows this serial pass (~55 µs on a step's cold caches) */
  pool_prewake(150000);
  /* One pass in entry order: touched rows in order of first appearance (as markRows lists them), and
   * each entry's row, offset and factor. */
  const float fscale = (float)scale;
  int64_t count = 0, e = 0;
  for (int64_t g = -1; g < ns; g++) {
    const int32_t *rows = g < 0 ? cat : seq[g];
    const float *wts = g < 0 ? NULL : seqw[g];
    const int64_t n = g < 0 ? (int64_t)lc : (int64_t)lseq[g];
    const int64_t bag = n / bags;
    const int64_t col = g < 0 ? 0 : (ncat + g) * dim, qstride = g < 0 ? dim : 0;
    /* b and q by nested loops, not k / bag and k % bag: 64-bit divisions cost more than the rest */
    for (int64_t b = 0, k = 0; b < bags; b++)
      for (int64_t q = 0; q < bag; q++, k++) {
        const float wk = wts != NULL ? wts[k] : 1.0f;
        if (wk == 0.0f) continue;
        const int32_t r = rows[k];
        int32_t sl = slot_of[r];
        if (sl < 0) {
          sl = slot_of[r] = (int32_t)count;
          touched[count] = r;
          fill[count] = 0;
          count++;
        }
        fill[sl]++;
        eslot[e] = sl;
        esrc[e] = b * width + col + q * qstride;
        /* the scatter's factor: (float)scale times the weight, rounded once */
        efac[e] = fscale * wk;
        e++;
      }
  }
  /* Entries grouped by row, each row's in entry order (the order the scatter added them in). */
  start[0] = 0;
  for (int64_t sl = 0; sl < count; sl++) {
    start[sl + 1] = start[sl] + fill[sl];
    fill[sl] = start[sl];
  }
  for (int64_t k = 0; k < e; k++) {
    const int32_t p = fill[eslot[k]]++;
    src[p] = esrc[k];
    fac[p] = efac[k];
  }
  /* Chunks own ranges of table rows (neighbouring rows share cache lines, and a row written by two cores
   * at once would bounce between them); fill is free again and holds each row's chunk. */
  EmbAdamJob j = {w, m, v, dx0, src, fac, start, touched, order, {0}, dim, 0, lr, b1, b2, eps};
  const int64_t chunks = chunks_for(2 * count * dim, ELEMENT_GRAIN);
  j.chunks = chunks;
  int64_t bound[MAX_CHUNKS + 1], cnt[MAX_CHUNKS + 1] = {0};
  for (int64_t c = 0; c <= chunks; c++) bound[c] = (int64_t)vrows * c / chunks;
  for (int64_t sl = 0; sl < count; sl++) {
    const int32_t r = touched[sl];
    slot_of[r] = -1;
    int64_t c = (int64_t)((double)r * (double)chunks / (double)vrows);
    if (c >= chunks) c = chunks - 1;
    while (r >= bound[c + 1]) c++;
    while (r < bound[c]) c--;
    fill[sl] = (int32_t)c;
    cnt[c + 1]++;
  }
  for (int64_t c = 0; c < chunks; c++) j.cstart[c + 1] = j.cstart[c] + cnt[c + 1];
  for (int64_t c = 0; c < chunks; c++) cnt[c] = j.cstart[c];
  for (int64_t sl = 0; sl < count; sl++) order[cnt[fill[sl]]++] = (int32_t)sl;
  pool_run(emb_adam_chunk, &j, j.chunks);
  napi_value out;
  CHECK(env, napi_create_int64(env, count, &out));
  return out;
}

/* out = d where y > 0, else 0, in place (a relu layer's dz from the dx its upper layer wrote). */
__attribute__((noinline)) static void relu_mask_inplace(float *restrict d, const float *restrict y, size_t n) {
  for (size_t j = 0; j < n; j++) d[j] = y[j] > 0.0f ? d[j] : 0.0f;
}

typedef struct {
  int layers;
  const float *x; /* dense: the input [m, k0]; cross: x0 [m, n] */
  const float *dy;
  const float *w[STACK_MAX], *b[STACK_MAX];
  float *y[STACK_MAX]; /* dense: each layer's output; cross: x_{l+1} */
  float *z[STACK_MAX]; /* cross: each layer's x_l·w_l + b_l */
  float *dz[STACK_MAX];
  float *dw[STACK_MAX], *db[STACK_MAX];
  float *dx;            /* dense: dL/dx; cross: dL/dx0 */
  float *carry[2];      /* cross backward: dx_l of a row block, layer to layer */
  int64_t k[STACK_MAX]; /* layer l's input width */
  int64_t n[STACK_MAX]; /* layer l's output width */
  int64_t m, chunks;
  unsigned relu; /* dense: bit l = layer l has a relu */
  /* the weight-gradient region: entry e is chunk part[e] of parts[e] of layer layer_of[e] (dw, or db when
   * is_db[e]) */
  int entries;
  int layer_of[POOL_MAX_CHUNKS], part[POOL_MAX_CHUNKS], parts[POOL_MAX_CHUNKS];
  bool is_db[POOL_MAX_CHUNKS];
  /* fused weights (see block_weights): row block c's x_lᵀ·dz_l at pw[l] + c·k·n and Σ dz_l at pb[l] + c·n */
  bool fused;
  float *pw[STACK_MAX], *pb[STACK_MAX];
  int64_t reduce_floats, reduce_chunks;
  /* cross backward with the l2 term fused (see js_cross_stack_backward): dx0 += l2_factor · x0 over the
   * first l2_cols columns of each row, Σ x0² of row r into l2_sq[r]; l2_sq NULL = none */
  double *l2_sq;
  int64_t l2_cols;
  float l2_factor;
} StackJob;

/* Whether the stacks' backward takes the weight gradients inside the row region (block_weights and
 * reduce_weights_chunk) rather than in a second region over the whole batch (stackWeightsFused from JS).
 * Off by default: on the loaded machine it saved 6-15% of the stacks' time in the best rounds of
 * bench/crm-stack-profile.ts but nothing measurable in a whole step, and its block-order sum changes
 * the weight gradients' last bits, which on ml-1m-u2999 moved early stopping to another epoch (test AUC
 * 0.7667 against 0.7700; docs/crm-speed.md). Kept so that the quiet machine can measure it. */
static _Atomic int stack_fused_weights = 0;
static void plan_weights(StackJob *j);
static void stack_weights_chunk(void *ctx, int64_t c);

/* Row block c's share of layer l's weight gradients, while its dz_l and x_l are in this core's cache.
 * The second region it replaces re-read every x_l and dz_l of the batch (~3 MB a stack at 1024 rows)
 * after the row region had pushed them out of L2, each thread walking rows the other had written. With
 * one block it writes dw and db themselves: the same sgemm and column sums as that region at one thread. */
static void block_weights(const StackJob *j, int l, int64_t c, int64_t r0, int64_t rows) {
  const int64_t k = j->k[l], n = j->n[l];
  const float *x = (l == 0 ? j->x : j->y[l - 1]) + r0 * k;
  const float *dz = j->dz[l] + r0 * n;
  float *dw = j->chunks == 1 ? j->dw[l] : j->pw[l] + c * k * n;
  float *db = j->chunks == 1 ? j->db[l] : j->pb[l] + c * n;
  cblas_sgemm(RowMajor, Trans, NoTrans, (int)k, (int)n, (int)rows, 1.0f, x, (int)k, dz, (int)n, 0.0f, dw, (int)n);
  if (j->db[l] != NULL) column_sums(dz, rows, n, 0, n, db);
}

/* dw and db as the blocks' partials summed in block order, ((p0 + p1) + p2) + …, whichever thread ran a
 * block and however this region is cut: the same bits at any thread count. The chunks cut the
 * concatenation of every layer's dw then db. */
static void reduce_weights_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  int64_t a, b;
  chunk_range(j->reduce_floats, j->reduce_chunks, c, &a, &b);
  int64_t base = 0;
  for (int l = 0; l < j->layers && base < b; l++)
    for (int part = 0; part < 2; part++) {
      const int64_t len = part == 0 ? j->k[l] * j->n[l] : (j->db[l] != NULL ? j->n[l] : 0);
      const int64_t lo = a > base ? a - base : 0, hi = b < base + len ? b - base : len;
      if (hi > lo) {
        float *dst = (part == 0 ? j->dw[l] : j->db[l]) + lo;
        const float *src = (part == 0 ? j->pw[l] : j->pb[l]) + lo;
        memcpy(dst, src, (size_t)(hi - lo) * sizeof(float));
        for (int64_t q = 1; q < j->chunks; q++) add_into(dst, src + q * len, (size_t)(hi - lo));
      }
      base += len;
    }
}

/* Floats the fused weights' partials need (none with one row block), and the reduction's cut. */
static size_t plan_fused(StackJob *j) {
  j->fused = atomic_load(&stack_fused_weights) != 0;
  if (!j->fused) return 0;
  int64_t total = 0;
  for (int l = 0; l < j->layers; l++) total += j->k[l] * j->n[l] + (j->db[l] != NULL ? j->n[l] : 0);
  j->reduce_floats = total;
  j->reduce_chunks = chunks_for(total, 8192);
  return j->chunks == 1 ? 0 : (size_t)(j->chunks * total);
}

/* Points pw and pb into s (plan_fused's floats); the partial of block c sits c·len after the layer's. */
static void place_partials(StackJob *j, float *s) {
  for (int l = 0; l < j->layers; l++) {
    j->pw[l] = s;
    s += j->chunks * j->k[l] * j->n[l];
    j->pb[l] = s;
    if (j->db[l] != NULL) s += j->chunks * j->n[l];
  }
}

/* The weight gradients after the row region: the partials' sum, or the whole-batch region. */
static void finish_weights(StackJob *j) {
  if (!j->fused) {
    plan_weights(j);
    pool_run(stack_weights_chunk, j, j->entries);
  } else if (j->chunks > 1) {
    pool_run(reduce_weights_chunk, j, j->reduce_chunks);
  }
}

static void dense_stack_forward_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t rows = r1 - r0;
  if (rows <= 0) return;
  const float *in = j->x;
  for (int l = 0; l < j->layers; l++) {
    const int64_t k = j->k[l], n = j->n[l];
    float *out = j->y[l] + r0 * n;
    for (int64_t r = 0; r < rows; r++) memcpy(out + r * n, j->b[l], (size_t)n * sizeof(float));
    cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)rows, (int)n, (int)k, 1.0f, in + r0 * k, (int)k, j->w[l], (int)n,
                1.0f, out, (int)n);
    if (j->relu & (1u << l)) relu_inplace(out, (size_t)(rows * n));
    in = j->y[l];
  }
}

/* From the top layer down on a block of rows: dz_l (the relu mask of the dx the layer above wrote), then
 * dz_l·w_lᵀ, which is the next layer's dx (or, at the bottom, dL/dx). */
static void dense_stack_backward_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t rows = r1 - r0;
  if (rows <= 0) return;
  for (int l = j->layers - 1; l >= 0; l--) {
    const int64_t k = j->k[l], n = j->n[l];
    const size_t span = (size_t)(rows * n);
    const bool relu = (j->relu & (1u << l)) != 0;
    if (l == j->layers - 1) {
      if (relu) relu_mask(j->dz[l] + r0 * n, j->dy + r0 * n, j->y[l] + r0 * n, span);
    } else if (relu) {
      relu_mask_inplace(j->dz[l] + r0 * n, j->y[l] + r0 * n, span);
    }
    if (j->fused) block_weights(j, l, c, r0, rows);
    float *target = l == 0 ? j->dx : j->dz[l - 1];
    cblas_sgemm(RowMajor, NoTrans, Trans, (int)rows, (int)k, (int)n, 1.0f, j->dz[l] + r0 * n, (int)n, j->w[l], (int)n,
                0.0f, target + r0 * k, (int)k);
  }
}

/* The weight-gradient region of either stack: dw_l = x_lᵀ·dz_l by blocks of its output rows, and
 * db_l = Σ_rows dz_l by column ranges, as the per-layer kernels cut them. */
static void stack_weights_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  const int l = j->layer_of[c];
  const int64_t m = j->m, k = j->k[l], n = j->n[l];
  int64_t a, b;
  if (j->is_db[c]) {
    chunk_range(n, j->parts[c], j->part[c], &a, &b);
    column_sums(j->dz[l], m, n, a, b, j->db[l]);
    return;
  }
  /* x_l: dense, the layer's input; cross, x0 for the first layer, else x_l = y_{l-1} */
  const float *x = l == 0 ? j->x : j->y[l - 1];
  chunk_range(k, j->parts[c], j->part[c], &a, &b);
  if (b > a)
    cblas_sgemm(RowMajor, Trans, NoTrans, (int)(b - a), (int)n, (int)m, 1.0f, x + a, (int)k, j->dz[l], (int)n, 0.0f,
                j->dw[l] + a * n, (int)n);
}

/* Lists the weight-gradient chunks: per layer the cut run_backward makes for one layer alone, or (a deep
 * stack on a wide pool, past the pool's chunk limit) one dw chunk and one db chunk a layer. */
static void plan_weights_cut(StackJob *j, bool may_split, bool count_only) {
  int e = 0;
  for (int l = 0; l < j->layers; l++) {
    const int64_t m = j->m, k = j->k[l], n = j->n[l];
    const bool split = may_split && gemm_parallel(m * n * k) && gemm_row_blocks(m) > 1;
    const int kc = split ? (int)gemm_k_blocks(k) : 1;
    const int dc = j->db[l] == NULL ? 0 : (split && n >= 64 ? 2 : 1);
    if (count_only) {
      e += kc + dc;
      continue;
    }
    for (int p = 0; p < kc; p++, e++) {
      j->layer_of[e] = l;
      j->part[e] = p;
      j->parts[e] = kc;
      j->is_db[e] = false;
    }
    for (int p = 0; p < dc; p++, e++) {
      j->layer_of[e] = l;
      j->part[e] = p;
      j->parts[e] = dc;
      j->is_db[e] = true;
    }
  }
  j->entries = e;
}

static void plan_weights(StackJob *j) {
  plan_weights_cut(j, true, true);
  plan_weights_cut(j, j->entries <= POOL_MAX_CHUNKS, false);
}

/* Layer widths of a dense stack from its weights and biases; 0 when they do not chain. */
static int dense_stack_shapes(StackJob *j, int layers, int64_t k0, size_t *lw, size_t *lb) {
  int64_t k = k0;
  for (int l = 0; l < layers; l++) {
    const int64_t n = (int64_t)lb[l];
    if (n < 1 || n > INT32_MAX || lw[l] != (size_t)(k * n)) return 0;
    j->k[l] = k;
    j->n[l] = n;
    k = n;
  }
  return 1;
}

static napi_value js_dense_stack_forward(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) return range_error(env, "corella_native.denseStackForward: expected 7 arguments");
  StackJob j = {0};
  float *x, *w[STACK_MAX], *b[STACK_MAX], *y[STACK_MAX];
  size_t lx, lw[STACK_MAX], lb[STACK_MAX], ly[STACK_MAX];
  int64_t m, k0, relu;
  if (!f32_arg(env, argv[0], "x", &x, &lx)) return NULL;
  const uint32_t L = f32_list(env, argv[1], "ws", w, lw);
  if (L == 0 || f32_list(env, argv[2], "bs", b, lb) != L || f32_list(env, argv[3], "ys", y, ly) != L) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending ? NULL : range_error(env, "corella_native.denseStackForward: ws, bs and ys differ in length");
  }
  if (!i64_arg(env, argv[4], &m) || !i64_arg(env, argv[5], &k0) || !i64_arg(env, argv[6], &relu)) return NULL;
  if (m < 1 || m > INT32_MAX || k0 < 1 || k0 > INT32_MAX || lx != (size_t)(m * k0) ||
      !dense_stack_shapes(&j, (int)L, k0, lw, lb))
    return range_error(env, "corella_native.denseStackForward: shapes do not fit the buffers");
  for (uint32_t l = 0; l < L; l++)
    if (ly[l] != (size_t)(m * j.n[l]))
      return range_error(env, "corella_native.denseStackForward: shapes do not fit the buffers");
  if (relu < 0 || relu >= (1 << L)) return range_error(env, "corella_native.denseStackForward: relu mask outside the layers");
  j.layers = (int)L;
  j.x = x;
  j.m = m;
  j.relu = (unsigned)relu;
  for (uint32_t l = 0; l < L; l++) {
    j.w[l] = w[l];
    j.b[l] = b[l];
    j.y[l] = y[l];
  }
  j.chunks = gemm_row_blocks(m);
  pool_run(dense_stack_forward_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_dense_stack_backward(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 10) return range_error(env, "corella_native.denseStackBackward: expected 10 arguments");
  StackJob j = {0};
  float *dy, *x, *dx, *w[STACK_MAX], *y[STACK_MAX], *dw[STACK_MAX], *db[STACK_MAX];
  size_t ldy, lx, ldx, lw[STACK_MAX], ly[STACK_MAX], ldw[STACK_MAX], ldb[STACK_MAX];
  int64_t m, k0, relu;
  if (!f32_arg(env, argv[0], "dy", &dy, &ldy) || !f32_arg(env, argv[1], "x", &x, &lx)) return NULL;
  const uint32_t L = f32_list(env, argv[2], "ws", w, lw);
  if (L == 0 || f32_list(env, argv[3], "ys", y, ly) != L || !f32_arg(env, argv[4], "dx", &dx, &ldx) ||
      f32_list(env, argv[5], "dws", dw, ldw) != L || f32_list(env, argv[6], "dbs", db, ldb) != L) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending ? NULL : range_error(env, "corella_native.denseStackBackward: ws, ys, dws and dbs differ in length");
  }
  if (!i64_arg(env, argv[7], &m) || !i64_arg(env, argv[8], &k0) || !i64_arg(env, argv[9], &relu)) return NULL;
  if (m < 1 || m > INT32_MAX || k0 < 1 || k0 > INT32_MAX || lx != (size_t)(m * k0) || ldx != lx ||
      !dense_stack_shapes(&j, (int)L, k0, lw, ldb))
    return range_error(env, "corella_native.denseStackBackward: shapes do not fit the buffers");
  size_t dz_floats = 0;
  for (uint32_t l = 0; l < L; l++) {
    if (ly[l] != (size_t)(m * j.n[l]) || ldw[l] != lw[l])
      return range_error(env, "corella_native.denseStackBackward: shapes do not fit the buffers");
    dz_floats += (size_t)(m * j.n[l]);
  }
  if (ldy != (size_t)(m * j.n[L - 1]))
    return range_error(env, "corella_native.denseStackBackward: shapes do not fit the buffers");
  if (relu < 0 || relu >= (1 << L)) return range_error(env, "corella_native.denseStackBackward: relu mask outside the layers");
  j.layers = (int)L;
  j.chunks = gemm_row_blocks(m);
  for (uint32_t l = 0; l < L; l++) j.db[l] = db[l];
  const size_t partials = plan_fused(&j);
  float *s = stack_floats(env, dz_floats + partials);
  if (s == NULL) return NULL;
  place_partials(&j, s + dz_floats);
  j.x = x;
  j.dy = dy;
  j.dx = dx;
  j.m = m;
  j.relu = (unsigned)relu;
  for (uint32_t l = 0; l < L; l++) {
    j.w[l] = w[l];
    j.y[l] = y[l];
    j.dw[l] = dw[l];
    j.dz[l] = s;
    s += m * j.n[l];
  }
  /* a linear top layer's dz is dy itself */
  if (!(j.relu & (1u << (L - 1)))) j.dz[L - 1] = (float *)dy;
  pool_run(dense_stack_backward_chunk, &j, j.chunks);
  finish_weights(&j);
  return NULL;
}

static void cross_stack_forward_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t rows = r1 - r0, n = j->n[0];
  if (rows <= 0) return;
  const size_t span = (size_t)(rows * n);
  for (int l = 0; l < j->layers; l++) {
    const float *x = (l == 0 ? j->x : j->y[l - 1]) + r0 * n;
    float *z = j->z[l] + r0 * n;
    for (int64_t r = 0; r < rows; r++) memcpy(z + r * n, j->b[l], (size_t)n * sizeof(float));
    cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)rows, (int)n, (int)n, 1.0f, x, (int)n, j->w[l], (int)n, 1.0f, z,
                (int)n);
    cross_combine(j->y[l] + r0 * n, j->x + r0 * n, z, x, span);
  }
}

/* From the top layer down on a block of rows, as crossBackward with the stack's flags does it layer by
 * layer: dz_l = dy_l ⊙ x0; dx0 (+)= dy_l ⊙ z_l; dx_l = dy_l + dz_l·w_lᵀ (carried to the layer below);
 * at the bottom dx0 += dx_0. */
static void cross_stack_backward_chunk(void *ctx, int64_t c) {
  const StackJob *j = ctx;
  int64_t r0, r1;
  chunk_range(j->m, j->chunks, c, &r0, &r1);
  const int64_t rows = r1 - r0, n = j->n[0];
  if (rows <= 0) return;
  const size_t span = (size_t)(rows * n), off = (size_t)(r0 * n);
  const int L = j->layers;
  for (int l = L - 1; l >= 0; l--) {
    const float *dy = l == L - 1 ? j->dy + off : j->carry[(l + 1) % 2] + off;
    float *dx = j->carry[l % 2] + off;
    if (l < L - 1)
      cross_grads_acc(j->dz[l] + off, j->dx + off, dy, j->x + off, j->z[l] + off, span);
    else
      cross_grads(j->dz[l] + off, j->dx + off, dy, j->x + off, j->z[l] + off, span);
    if (j->fused) block_weights(j, l, c, r0, rows);
    memcpy(dx, dy, span * sizeof(float));
    cblas_sgemm(RowMajor, NoTrans, Trans, (int)rows, (int)n, (int)n, 1.0f, j->dz[l] + off, (int)n, j->w[l], (int)n,
                1.0f, dx, (int)n);
    if (l == 0) add_into(j->dx + off, dx, span);
  }
  /* The rows' dx0 is final here: the l2 term in the same region, on the rows this core just wrote (the
   * same per-row arithmetic as l2Grad, so the same bits, without its serial pass of ~55 µs). */
  if (j->l2_sq != NULL)
    for (int64_t r = r0; r < r1; r++)
      j->l2_sq[r] = l2_span8(j->dx + r * n, j->x + r * n, (size_t)j->l2_cols, j->l2_factor);
}

static napi_value js_cross_stack_forward(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) return range_error(env, "corella_native.crossStackForward: expected 7 arguments");
  StackJob j = {0};
  float *x0, *w[STACK_MAX], *b[STACK_MAX], *y[STACK_MAX], *z[STACK_MAX];
  size_t l0, lw[STACK_MAX], lb[STACK_MAX], ly[STACK_MAX], lz[STACK_MAX];
  int64_t m, n;
  if (!f32_arg(env, argv[0], "x0", &x0, &l0)) return NULL;
  const uint32_t L = f32_list(env, argv[1], "ws", w, lw);
  if (L == 0 || f32_list(env, argv[2], "bs", b, lb) != L || f32_list(env, argv[3], "ys", y, ly) != L ||
      f32_list(env, argv[4], "zs", z, lz) != L) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending ? NULL : range_error(env, "corella_native.crossStackForward: ws, bs, ys and zs differ in length");
  }
  if (!i64_arg(env, argv[5], &m) || !i64_arg(env, argv[6], &n)) return NULL;
  const size_t mn = (size_t)(m * n);
  if (m < 1 || n < 1 || m > INT32_MAX || n > INT32_MAX || l0 != mn)
    return range_error(env, "corella_native.crossStackForward: shapes do not fit the buffers");
  for (uint32_t l = 0; l < L; l++) {
    if (lw[l] != (size_t)(n * n) || lb[l] != (size_t)n || ly[l] != mn || lz[l] != mn)
      return range_error(env, "corella_native.crossStackForward: shapes do not fit the buffers");
    j.w[l] = w[l];
    j.b[l] = b[l];
    j.y[l] = y[l];
    j.z[l] = z[l];
    j.k[l] = j.n[l] = n;
  }
  j.layers = (int)L;
  j.x = x0;
  j.m = m;
  j.chunks = gemm_row_blocks(m);
  pool_run(cross_stack_forward_chunk, &j, j.chunks);
  return NULL;
}

static napi_value js_cross_stack_backward(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 10) return range_error(env, "corella_native.crossStackBackward: expected 10 or 12 arguments");
  StackJob j = {0};
  float *dy, *x0, *dx0, *w[STACK_MAX], *z[STACK_MAX], *xs[STACK_MAX], *dw[STACK_MAX], *db[STACK_MAX];
  size_t ldy, l0, ld0, lw[STACK_MAX], lz[STACK_MAX], lxs[STACK_MAX], ldw[STACK_MAX], ldb[STACK_MAX];
  int64_t m, n;
  if (!f32_arg(env, argv[0], "dy", &dy, &ldy) || !f32_arg(env, argv[1], "x0", &x0, &l0)) return NULL;
  const uint32_t L = f32_list(env, argv[2], "ws", w, lw);
  if (L == 0) return NULL;
  const int64_t nz = f32_list(env, argv[3], "zs", z, lz);
  if (nz < 0) return NULL;
  const int64_t nx = f32_list_min(env, argv[4], "xs", xs, lxs, 0);
  if (nx < 0 || !f32_arg(env, argv[5], "dx0", &dx0, &ld0)) return NULL;
  const int64_t ndw = f32_list(env, argv[6], "dws", dw, ldw);
  if (ndw == 0) return NULL;
  const int64_t ndb = f32_list(env, argv[7], "dbs", db, ldb);
  if (ndb == 0) return NULL;
  if (nz != L || nx != L - 1 || ndw != L || ndb != L)
    return range_error(env, "corella_native.crossStackBackward: expected L ws, zs, dws, dbs and L - 1 xs");
  if (!i64_arg(env, argv[8], &m) || !i64_arg(env, argv[9], &n)) return NULL;
  const size_t mn = (size_t)(m * n);
  if (m < 1 || n < 1 || m > INT32_MAX || n > INT32_MAX || ldy != mn || l0 != mn || ld0 != mn)
    return range_error(env, "corella_native.crossStackBackward: shapes do not fit the buffers");
  for (uint32_t l = 0; l < L; l++)
    if (lw[l] != (size_t)(n * n) || lz[l] != mn || ldw[l] != (size_t)(n * n) || ldb[l] != (size_t)n ||
        (l + 1 < L && lxs[l] != mn))
      return range_error(env, "corella_native.crossStackBackward: shapes do not fit the buffers");
  /* l2Cols, l2Factor (optional): l2Grad(dx0, x0, m, n, l2Cols, l2Factor) fused into the row region; the call
   * then returns its Σ x0². */
  int64_t l2_cols = -1;
  double l2_factor = 0.0;
  if (argc >= 11) { /* an l2Cols with no l2Factor is a type error below, not ignored */
    napi_valuetype t;
    CHECK(env, napi_typeof(env, argv[10], &t));
    if (t != napi_undefined) {
      if (!i64_arg(env, argv[10], &l2_cols) || !f64_arg(env, argv[11], &l2_factor)) return NULL;
      if (l2_cols < 0 || l2_cols > n)
        return range_error(env, "corella_native.crossStackBackward: l2Cols must be in 0..n");
    }
  }
  double *l2_sq = NULL;
  if (l2_cols >= 0) {
    l2_sq = malloc((size_t)m * sizeof(double));
    if (l2_sq == NULL) {
      napi_throw_error(env, "CORELLA_NATIVE", "corella_native: out of memory");
      return NULL;
    }
  }
  j.l2_sq = l2_sq;
  j.l2_cols = l2_cols;
  j.l2_factor = (float)l2_factor;
  j.layers = (int)L;
  j.chunks = gemm_row_blocks(m);
  for (uint32_t l = 0; l < L; l++) {
    j.k[l] = j.n[l] = n;
    j.db[l] = db[l];
  }
  const size_t partials = plan_fused(&j);
  float *s = stack_floats(env, (L + 2) * mn + partials);
  if (s == NULL) {
    free(l2_sq);
    return NULL;
  }
  place_partials(&j, s + (L + 2) * mn);
  j.x = x0;
  j.dy = dy;
  j.dx = dx0;
  j.m = m;
  j.carry[0] = s + L * mn;
  j.carry[1] = s + (L + 1) * mn;
  for (uint32_t l = 0; l < L; l++) {
    j.w[l] = w[l];
    j.z[l] = z[l];
    if (l + 1 < L) j.y[l] = xs[l];
    j.dw[l] = dw[l];
    j.db[l] = db[l];
    j.dz[l] = s + l * mn;
  }
  pool_run(cross_stack_backward_chunk, &j, j.chunks);
  finish_weights(&j);
  if (l2_sq == NULL) return NULL;
  /* Row sums added in row order, as l2Grad does. */
  double sq = 0.0;
  for (int64_t r = 0; r < m; r++) sq += l2_sq[r];
  free(l2_sq);
  napi_value v;
  CHECK(env, napi_create_double(env, sq, &v));
  return v;
}

/* stackWeightsFused([on]): whether the stacks' backward fuses the weight gradients into its row region
 * (sets it when given); returns the setting. Off by default (see stack_fused_weights). */
static napi_value js_stack_weights_fused(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) {
    napi_valuetype t;
    CHECK(env, napi_typeof(env, argv[0], &t));
    if (t != napi_undefined) {
      bool on;
      if (!bool_arg(env, argv[0], &on)) return NULL;
      atomic_store(&stack_fused_weights, on ? 1 : 0);
    }
  }
  napi_value out;
  CHECK(env, napi_get_boolean(env, atomic_load(&stack_fused_weights) != 0, &out));
  return out;
}

/* The single microsecond argument of prewake and poolHold, in 0..max; 0 (with an exception pending unless it is
 * missing) when it is missing, not a number or out of range. */
static int us_arg(napi_env env, napi_callback_info info, int64_t max, const char *range_msg, int64_t *us) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "CORELLA_NATIVE", "corella_native: N-API call failed: napi_get_cb_info");
    return 0;
  }
  *us = 0;
  if (argc < 1 || !i64_arg(env, argv[0], us)) return 0;
  if (*us < 0 || *us > max) {
    range_error(env, range_msg);
    return 0;
  }
  return 1;
}

/* prewake(us): pool_prewake from JS, before JS work that a region follows (the next batch's assembly,
 * then the embedding bag). */
static napi_value js_prewake(napi_env env, napi_callback_info info) {
  int64_t us;
  if (!us_arg(env, info, 1000, "corella_native.prewake: us must be in 0..1000", &us)) return NULL;
  pool_prewake(us * 1000);
  return NULL;
}

/* poolHold(us) -> boolean: pool_hold from JS, at a training step's start (us > 0, at most 100000) and end
 * (0). */
static napi_value js_pool_hold(napi_env env, napi_callback_info info) {
  int64_t us;
  if (!us_arg(env, info, 100000, "corella_native.poolHold: us must be in 0..100000", &us)) return NULL;
  napi_value v;
  CHECK(env, napi_get_boolean(env, pool_hold(us * 1000) != 0, &v));
  return v;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t t;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !i64_arg(env, argv[0], &t)) return NULL;
  if (t < 1 || t > POOL_MAX) {
    napi_throw_range_error(env, "CORELLA_NATIVE", "corella_native.setThreads: expected 1..64");
    return NULL;
  }
  if (pool_resize((int)t) != 0) {
    napi_throw_error(env, "CORELLA_NATIVE", "corella_native.setThreads: could not start a worker thread");
    return NULL;
  }
  return NULL;
}

static napi_value js_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  CHECK(env, napi_create_int32(env, atomic_load(&pool_threads), &v));
  return v;
}

static napi_value js_set_blas_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t t;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !i64_arg(env, argv[0], &t)) return NULL;
  if (t < 1 || t > 64) {
    napi_throw_range_error(env, "CORELLA_NATIVE", "corella_native.setBlasThreads: expected 1..64");
    return NULL;
  }
  openblas_set_num_threads((int)t);
  return NULL;
}

static napi_value js_blas_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  CHECK(env, napi_create_int32(env, openblas_get_num_threads(), &v));
  return v;
}

static napi_value js_pool_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, r, w, t;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_int64(env, atomic_load(&stat_regions), &r));
  CHECK(env, napi_create_int64(env, atomic_load(&stat_worker_chunks), &w));
  CHECK(env, napi_create_double(env, (double)atomic_load(&stat_kernel_ns) / 1e6, &t));
  CHECK(env, napi_set_named_property(env, o, "regions", r));
  CHECK(env, napi_set_named_property(env, o, "workerChunks", w));
  CHECK(env, napi_set_named_property(env, o, "kernelMs", t));
  /* Whether a step hold (poolHold) is in force now. */
  CHECK(env, napi_get_boolean(env, now_ns() < atomic_load(&pool_hold_until), &t));
  CHECK(env, napi_set_named_property(env, o, "held", t));
  /* Workers asleep now (not polling, not in a region). */
  CHECK(env, napi_create_int32(env, atomic_load(&pool_sleepers), &t));
  CHECK(env, napi_set_named_property(env, o, "sleepers", t));
  return o;
}

/* A Float64Array of n values from get(i). */
static napi_value f64_array(napi_env env, int64_t n, double (*get)(int64_t)) {
  napi_value buf, arr;
  void *data;
  CHECK(env, napi_create_arraybuffer(env, (size_t)n * sizeof(double), &data, &buf));
  for (int64_t i = 0; i < n; i++) ((double *)data)[i] = get(i);
  CHECK(env, napi_create_typedarray(env, napi_float64_array, (size_t)n, buf, 0, &arr));
  return arr;
}
static double tr_start(int64_t i) { return (double)trace_start[i] / 1e3; }
static double tr_end(int64_t i) { return (double)trace_end[i] / 1e3; }
static double tr_joined(int64_t i) { return trace_joined[i] == 0 ? -1 : (double)trace_joined[i] / 1e3; }
static double tr_chunks(int64_t i) { return trace_chunks[i]; }
static double tr_worker(int64_t i) { return trace_worker[i]; }
static double tr_sleepers(int64_t i) { return trace_sleepers[i]; }

/* poolTrace(on) -> { start, end, joined, chunks, workerChunks, sleepers, inline }: the regions recorded
 * since the last call (times in µs of the monotonic clock; joined −1 when no worker took part), then
 * tracing on or off from now, with an empty record. At most 8192 regions are kept (the rest are not
 * recorded). Call it only between kernels: the record is the region lock's. */
static napi_value js_pool_trace(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool on = false;
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) {
    napi_throw_type_error(env, "CORELLA_NATIVE", "corella_native.poolTrace: on must be a boolean");
    return NULL;
  }
  pthread_mutex_lock(&pool_region);
  const int64_t n = trace_n;
  napi_value o, v;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_set_named_property(env, o, "start", f64_array(env, n, tr_start)));
  CHECK(env, napi_set_named_property(env, o, "end", f64_array(env, n, tr_end)));
  CHECK(env, napi_set_named_property(env, o, "joined", f64_array(env, n, tr_joined)));
  CHECK(env, napi_set_named_property(env, o, "chunks", f64_array(env, n, tr_chunks)));
  CHECK(env, napi_set_named_property(env, o, "workerChunks", f64_array(env, n, tr_worker)));
  CHECK(env, napi_set_named_property(env, o, "sleepers", f64_array(env, n, tr_sleepers)));
  CHECK(env, napi_create_int64(env, trace_inline, &v));
  CHECK(env, napi_set_named_property(env, o, "inline", v));
  trace_n = 0;
  trace_inline = 0;
  atomic_store(&trace_on, on ? 1 : 0);
  pthread_mutex_unlock(&pool_region);
  return o;
}

/* name##_timed: the kernel, adding its wall time to stat_kernel_ns. */
#define TIMED(name)                                                     \
  static napi_value name##_timed(napi_env env, napi_callback_info info) { \
    const int64_t t0 = now_ns();                                        \
    napi_value v = name(env, info);                                     \
    atomic_fetch_add(&stat_kernel_ns, now_ns() - t0);                   \
    return v;                                                           \
  }
TIMED(js_matmul)
TIMED(js_embedding_bag)
TIMED(js_embedding_bag_grad)
TIMED(js_cross_forward)
TIMED(js_cross_backward)
TIMED(js_dense_backward)
TIMED(js_adam)
TIMED(js_adam_many)
TIMED(js_embedding_adam)
TIMED(js_adam_rows)
TIMED(js_scatter_add)
TIMED(js_mark_rows)
TIMED(js_l2_grad)
TIMED(js_bce_with_logits)
TIMED(js_dense_stack_forward)
TIMED(js_dense_stack_backward)
TIMED(js_cross_stack_forward)
TIMED(js_cross_stack_backward)

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  char buf[512];
  snprintf(buf, sizeof buf, "%s; core %s; pool %d threads, OpenBLAS %d", openblas_get_config(), openblas_get_corename(),
           atomic_load(&pool_threads), openblas_get_num_threads());
  napi_value v;
  CHECK(env, napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v));
  return v;
}

static void free_scratch(void *arg) {
  (void)arg;
  free(scratch);
  scratch = NULL;
  scratch_len = 0;
  free(stack_scratch);
  stack_scratch = NULL;
  stack_scratch_len = 0;
  free(emb_slot_of);
  emb_slot_of = NULL;
  emb_slot_len = 0;
  free(emb_entries);
  emb_entries = NULL;
  emb_entries_len = 0;
}

/* The pool for the kernels of the addon's other files (native/pool.h). */
void corella_pool_run(corella_chunk_fn fn, void *ctx, int64_t chunks) { pool_run(fn, ctx, chunks); }
int corella_pool_threads(void) { return atomic_load(&pool_threads); }
int64_t corella_pool_max_chunks(void) { return POOL_MAX_CHUNKS; }
int corella_blas_splits(void) { return blas_splits(); }
int64_t corella_now_ns(void) { return now_ns(); }
void corella_add_kernel_ns(int64_t ns) { atomic_fetch_add(&stat_kernel_ns, ns); }

NAPI_MODULE_INIT() {
  if (napi_add_env_cleanup_hook(env, free_scratch, NULL) != napi_ok) return NULL;
  napi_property_descriptor props[] = {
      {"matmul", NULL, js_matmul_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"threads", NULL, js_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"prewake", NULL, js_prewake, NULL, NULL, NULL, napi_default_method, NULL},
      {"poolHold", NULL, js_pool_hold, NULL, NULL, NULL, napi_default_method, NULL},
      {"stackWeightsFused", NULL, js_stack_weights_fused, NULL, NULL, NULL, napi_default_method, NULL},
      {"setBlasThreads", NULL, js_set_blas_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"blasThreads", NULL, js_blas_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"poolStats", NULL, js_pool_stats, NULL, NULL, NULL, napi_default_method, NULL},
      {"poolTrace", NULL, js_pool_trace, NULL, NULL, NULL, napi_default_method, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_default_method, NULL},
      {"embeddingBag", NULL, js_embedding_bag_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"embeddingBagGrad", NULL, js_embedding_bag_grad_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossForward", NULL, js_cross_forward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossBackward", NULL, js_cross_backward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"denseBackward", NULL, js_dense_backward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"adam", NULL, js_adam_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"adamMany", NULL, js_adam_many_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"embeddingAdam", NULL, js_embedding_adam_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"adamRows", NULL, js_adam_rows_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"scatterAdd", NULL, js_scatter_add_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"markRows", NULL, js_mark_rows_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"l2Grad", NULL, js_l2_grad_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"bceWithLogits", NULL, js_bce_with_logits_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"denseStackForward", NULL, js_dense_stack_forward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"denseStackBackward", NULL, js_dense_stack_backward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossStackForward", NULL, js_cross_stack_forward_timed, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossStackBackward", NULL, js_cross_stack_backward_timed, NULL, NULL, NULL, napi_default_method, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  if (crm_infer_init(env, exports) != napi_ok) return NULL;
  return exports;
}
