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
 *   crossBackward(dy, x0, x, w, z, dx0, dx, dw, db, m, n)
 *     its gradients: dz = dy ⊙ x0, dx0 = dy ⊙ z, dx = dy + dz·wᵀ, dw = xᵀ·dz, db = Σ_rows dz.
 *   denseBackward(dy, x, w, y, dx, dw, db, m, k, n, relu)
 *     gradients of y = act(x·w + b) for x [m, k], w [k, n]: dz = relu ? dy ⊙ (y > 0) : dy,
 *     dx = dz·wᵀ, dw = xᵀ·dz, db = Σ_rows dz (db may be null).
 *   adam(w, g, m, v, lrT, beta1, beta2, eps)
 *     the Adam step over whole arrays: m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², w −= lrT·m/(√v + ε).
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
 *   setThreads(n), threads(), info()
 */
#include <node_api.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The CBLAS and OpenBLAS entry points we use, declared here so the build needs the shared library only
 * (Debian's cblas.h lives in an alternatives-managed folder that differs between BLAS flavours). */
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
extern void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a,
                        int lda, const float *b, int ldb, float beta, float *c, int ldc);
extern void openblas_set_num_threads(int n);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);

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

/* dz = dy ⊙ x0, dx0 = dy ⊙ z */
__attribute__((noinline)) static void cross_grads(float *restrict dz, float *restrict dx0, const float *restrict dy,
                                                  const float *restrict x0, const float *restrict z, size_t n) {
  for (size_t j = 0; j < n; j++) {
    dz[j] = dy[j] * x0[j];
    dx0[j] = dy[j] * z[j];
  }
}

/* o += w · t over dim floats */
__attribute__((noinline)) static void axpy(float *restrict o, const float *restrict t, float w, size_t dim) {
  for (size_t d = 0; d < dim; d++) o[d] += w * t[d];
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
  const int lda = ta ? (int)m : (int)k;
  const int ldb = tb ? (int)k : (int)n;
  for (int64_t i = 0; i < batch; i++) {
    float *c = out + i * m * n;
    float beta = 0.0f;
    if (bias != NULL) {
      if (biaslen == 1) {
        for (int64_t j = 0; j < m * n; j++) c[j] = bias[0];
      } else {
        for (int64_t r = 0; r < m; r++) memcpy(c + r * n, bias, (size_t)n * sizeof(float));
      }
      beta = 1.0f;
    }
    if (k == 0) {
      if (bias == NULL) memset(c, 0, (size_t)(m * n) * sizeof(float));
    } else if (m > 0 && n > 0) {
      cblas_sgemm(RowMajor, ta ? Trans : NoTrans, tb ? Trans : NoTrans, (int)m, (int)n, (int)k, 1.0f,
                  a + i * as, lda, b + i * bs, ldb, beta, c, (int)n);
    }
    if (act == 1) relu_inplace(c, (size_t)(m * n));
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
  memset(out, 0, olen * sizeof(float));
  const size_t bags = rlen / (size_t)bag;
  for (size_t b = 0; b < bags; b++) {
    float *o = out + b * (size_t)dim;
    for (int64_t p = 0; p < bag; p++) {
      const size_t k = b * (size_t)bag + (size_t)p;
      const float wk = weights[k];
      if (wk == 0.0f) continue;
      axpy(o, table + (size_t)rows[k] * (size_t)dim, wk, (size_t)dim);
    }
  }
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
  memset(out, 0, olen * sizeof(float));
  const size_t bags = rlen / (size_t)bag;
  for (size_t b = 0; b < bags; b++) {
    const float *g = dy + b * (size_t)dim;
    for (int64_t p = 0; p < bag; p++) {
      const size_t k = b * (size_t)bag + (size_t)p;
      const float wk = weights[k];
      if (wk == 0.0f) continue;
      axpy(out + (size_t)rows[k] * (size_t)dim, g, wk, (size_t)dim);
    }
  }
  return NULL;
}

/* Σ over the m rows of an [m, n] matrix into db[n]. */
__attribute__((noinline)) static void column_sums(const float *restrict x, int64_t m, int64_t n,
                                                 float *restrict db) {
  memset(db, 0, (size_t)n * sizeof(float));
  for (int64_t r = 0; r < m; r++) {
    const float *row = x + r * n;
    for (int64_t j = 0; j < n; j++) db[j] += row[j];
  }
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
  for (int64_t r = 0; r < m; r++) memcpy(z + r * n, b, (size_t)n * sizeof(float));
  cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)m, (int)n, (int)n, 1.0f, x, (int)n, w, (int)n, 1.0f, z, (int)n);
  cross_combine(y, x0, z, x, mn);
  return NULL;
}

static napi_value js_cross_backward(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 11) return range_error(env, "corella_native.crossBackward: expected 11 arguments");
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
  float *dz = scratch_floats(env, mn);
  if (dz == NULL) return NULL;
  cross_grads(dz, dx0, dy, x0, z, mn);
  memcpy(dx, dy, mn * sizeof(float));
  cblas_sgemm(RowMajor, NoTrans, Trans, (int)m, (int)n, (int)n, 1.0f, dz, (int)n, w, (int)n, 1.0f, dx, (int)n);
  cblas_sgemm(RowMajor, Trans, NoTrans, (int)n, (int)n, (int)m, 1.0f, x, (int)n, dz, (int)n, 0.0f, dw, (int)n);
  column_sums(dz, m, n, db);
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
  const float *dz = dy;
  if (relu) {
    float *s = scratch_floats(env, mn);
    if (s == NULL) return NULL;
    relu_mask(s, dy, y, mn);
    dz = s;
  }
  cblas_sgemm(RowMajor, NoTrans, Trans, (int)m, (int)k, (int)n, 1.0f, dz, (int)n, w, (int)n, 0.0f, dx, (int)k);
  cblas_sgemm(RowMajor, Trans, NoTrans, (int)k, (int)n, (int)m, 1.0f, x, (int)k, dz, (int)n, 0.0f, dw, (int)n);
  if (db != NULL) column_sums(dz, m, n, db);
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
  adam_span(w, g, m, v, lw, lr, b1, b2, eps);
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
  for (int64_t k = 0; k < count; k++) {
    const size_t base = (size_t)rows[k] * (size_t)dim;
    adam_span(w + base, g + base, m + base, v + base, (size_t)dim, lr, b1, b2, eps);
  }
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
  for (int64_t b = 0; b < bags; b++) {
    for (int64_t q = 0; q < bag; q++) {
      const size_t k = (size_t)(b * bag + q);
      const float f = (float)scale * (weights != NULL ? weights[k] : 1.0f);
      if (f == 0.0f) continue;
      axpy(g + (size_t)rows[k] * (size_t)dim, dx0 + b * width + col + q * qstride, f, (size_t)dim);
    }
  }
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

__attribute__((noinline)) static double l2_span(float *restrict g, const float *restrict x, size_t n, float f) {
  double sq = 0.0;
  for (size_t j = 0; j < n; j++) {
    const float v = x[j];
    sq += (double)v * (double)v;
    g[j] += f * v;
  }
  return sq;
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
  double sq = 0.0;
  for (int64_t b = 0; b < bags; b++) sq += l2_span(g + b * width, x + b * width, (size_t)cols, (float)factor);
  napi_value v;
  CHECK(env, napi_create_double(env, sq, &v));
  return v;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t t;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !i64_arg(env, argv[0], &t)) return NULL;
  if (t < 1 || t > 64) {
    napi_throw_range_error(env, "CORELLA_NATIVE", "corella_native.setThreads: expected 1..64");
    return NULL;
  }
  openblas_set_num_threads((int)t);
  return NULL;
}

static napi_value js_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  CHECK(env, napi_create_int32(env, openblas_get_num_threads(), &v));
  return v;
}

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  char buf[512];
  snprintf(buf, sizeof buf, "%s; core %s", openblas_get_config(), openblas_get_corename());
  napi_value v;
  CHECK(env, napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v));
  return v;
}

static void free_scratch(void *arg) {
  (void)arg;
  free(scratch);
  scratch = NULL;
  scratch_len = 0;
}

NAPI_MODULE_INIT() {
  if (napi_add_env_cleanup_hook(env, free_scratch, NULL) != napi_ok) return NULL;
  napi_property_descriptor props[] = {
      {"matmul", NULL, js_matmul, NULL, NULL, NULL, napi_default_method, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"threads", NULL, js_threads, NULL, NULL, NULL, napi_default_method, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_default_method, NULL},
      {"embeddingBag", NULL, js_embedding_bag, NULL, NULL, NULL, napi_default_method, NULL},
      {"embeddingBagGrad", NULL, js_embedding_bag_grad, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossForward", NULL, js_cross_forward, NULL, NULL, NULL, napi_default_method, NULL},
      {"crossBackward", NULL, js_cross_backward, NULL, NULL, NULL, napi_default_method, NULL},
      {"denseBackward", NULL, js_dense_backward, NULL, NULL, NULL, napi_default_method, NULL},
      {"adam", NULL, js_adam, NULL, NULL, NULL, napi_default_method, NULL},
      {"adamRows", NULL, js_adam_rows, NULL, NULL, NULL, napi_default_method, NULL},
      {"scatterAdd", NULL, js_scatter_add, NULL, NULL, NULL, napi_default_method, NULL},
      {"markRows", NULL, js_mark_rows, NULL, NULL, NULL, napi_default_method, NULL},
      {"l2Grad", NULL, js_l2_grad, NULL, NULL, NULL, napi_default_method, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
