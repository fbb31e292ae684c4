/*
 * The intra-op pool of corella_native.c, for kernels that live in other files of the same addon
 * (native/crm_infer.c). One pool per process: a second file must hand its work to this one, or two pools
 * would fight over the same cores.
 */
#ifndef CORELLA_POOL_H
#define CORELLA_POOL_H

#include <node_api.h>
#include <stdint.h>

typedef void (*corella_chunk_fn)(void *ctx, int64_t chunk);

/* Runs fn(ctx, c) for c < chunks on the pool (or inline when it is busy, has one thread, or chunks exceed
 * corella_pool_max_chunks()); every chunk is done when it returns. */
void corella_pool_run(corella_chunk_fn fn, void *ctx, int64_t chunks);
/* Threads a region may use, the caller included. */
int corella_pool_threads(void);
/* The most chunks one region may have (pool_run runs more inline, on the caller alone). */
int64_t corella_pool_max_chunks(void);
/* Whether OpenBLAS runs on more than one thread (then kernels call sgemm from the caller only). */
int corella_blas_splits(void);
/* Monotonic nanoseconds, and adding a kernel's wall time to poolStats().kernelMs. */
int64_t corella_now_ns(void);
void corella_add_kernel_ns(int64_t ns);

/* Defined in crm_infer.c: adds its functions to the addon's exports. */
napi_status crm_infer_init(napi_env env, napi_value exports);

#endif
