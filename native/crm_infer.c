/*
 * crm_infer: the whole DCNv2 inference forward (embedding lookups, cross stack, MLP, output layer, sigmoid)
 * in one native call, for ml/crm/fused-infer.ts.
 *
 * Why one call: inference needs no tape and no saved activations, but the tfjs path ran it as a chain of
 * kernels over the whole batch ([B, 128] and [B, 256] activations written to the wasm heap and read back by
 * the next op, about 4 MB at B = 1024), each a separate pool region with the main thread's tfjs dispatch in
 * between, where the second thread idles. Here each block of rows goes from its ids to its probabilities on
 * one thread, with its activations in that core's cache, and the blocks are shared by the pool, so every
 * thread works from the first op to the last.
 *
 * Exports:
 *   crmInfer(plan, weights, categorical, sequences, dense, splitSize, rows, start, count, out, logits)
 *     plan: Int32Array, the model's shape (layout below, built by ml/crm/fused-infer.ts);
 *     weights: Float32Array[] in the plan's order; categorical/sequences/dense: an EncodedSplit's columns
 *     (splitSize rows); samples i < count are split rows rows[i] (rows an Int32Array) or start + i (rows
 *     null); writes out[i] = σ(logit_i) and, when logits is a Float32Array, logits[i]. Every argument is
 *     checked before anything is written: a rejected call leaves out and logits as they were (the one late
 *     failure is a pool worker that cannot allocate its block buffer: an error after a partial write).
 *
 * The arithmetic is the tfjs path's, op for op, so the results agree to float rounding: an embedding row
 * (single lookups copied, sequences summed in position order with weight 1/count, as the embedding bag
 * kernel does), z = x·w + b as bias rows plus sgemm(beta = 1) like the native matmul and cross kernels,
 * y = x0 ⊙ z + x, relu(x·w + b), softmax/tanh for DCN-Mix, batch norm with the moving statistics,
 * the output product and 1/(1 + e^−z). The one difference: tfjs runs each product over the whole batch and
 * this file over blocks of INFER_BLOCK rows.
 *
 * Bit-identical at any thread count: the rows are always cut into the same blocks of INFER_BLOCK (the cut
 * does not depend on the pool's size), each block's work is one thread's in a fixed order, and no value is
 * reduced across blocks; which thread runs a block changes nothing.
 *
 * Plan (Int32Array): [0] PLAN_VERSION, [1] nCat, [2] nSeq, [3] nDense, [4] D, [5] W0 (the x0 width),
 * [6] cross layers, [7] structure (0 stacked, 1 parallel, 2 crossnet_only), [8] low rank (0 = full rank),
 * [9] experts, [10] MLP layers (0 for crossnet_only), [11] batch norm (0/1), [12] table rows,
 * then the MLP widths, the categorical offsets and vocabularies, the sequence offsets, vocabularies and
 * maximum lengths.
 * Weights: the table [rows, D]; per cross layer w [W0, W0], b [W0], or (low rank) gate [W0, E] and per
 * expert v [W0, r], c [r, r], u [r, W0], b [W0]; per MLP layer w [in, h], b [h] (+ gamma, beta, moving
 * mean, moving variance [h] with batch norm); the output w [top] and b [1], top = W0 (crossnet_only),
 * the last MLP width (stacked) or W0 + that width (parallel).
 */
#define _POSIX_C_SOURCE 200809L
#include <node_api.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pool.h"

enum { RowMajor = 101, NoTrans = 111 };
extern void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a,
                        int lda, const float *b, int ldb, float beta, float *c, int ldc);

#define PLAN_VERSION 1
#define PLAN_HEADER 13
/* Rows per block. Fixed (never derived from the thread count), so the bits do not depend on it. 128 rows
 * keep a block's activations (x0, two layer buffers, z: 4 × 64 KB at W0 = 128, and the MLP's) in L2 next
 * to the weights, and give a 1024-row batch 8 blocks to share. */
#ifndef INFER_BLOCK
#define INFER_BLOCK 256
#endif
#define MAX_LAYERS 64
#define MAX_FIELDS 4096
/* tfjs's batch-norm epsilon (ml/crm/model.ts BN_EPS). */
#define BN_EPS 1e-3f

typedef struct {
  int n_cat, n_seq, n_dense, d, w0, cross, structure, rank, experts, n_mlp, bn, table_rows;
  const int32_t *mlp, *cat_off, *cat_vocab, *seq_off, *seq_vocab, *seq_len;
  int max_h, top;
} Plan;

typedef struct {
  const float *w, *b;
  const float *gate;
  const float *const *ev, *const *ec, *const *eu, *const *eb; /* per expert, low rank */
} CrossW;

typedef struct {
  const float *w, *b, *gamma, *beta, *mean, *var;
} MlpW;

typedef struct {
  Plan p;
  const float *table;
  CrossW cross[MAX_LAYERS];
  MlpW mlp[MAX_LAYERS];
  const float *out_w, *out_b;
  /* low-rank expert pointers, cross·experts of each */
  const float **experts;
  const int32_t *categorical;
  const int32_t *const *sequences;
  const float *dense;
  const int32_t *rows;
  int64_t start, count, block0;
  float *out, *logits;
  size_t scratch_floats;
  _Atomic int failed;
} InferJob;

/* A block's activations, per thread, grown on demand. The pool's workers keep theirs for the process's
 * life; a calling thread's (main or worker_threads) is freed when its Node environment shuts down. */
static _Thread_local float *scratch = NULL;
static _Thread_local size_t scratch_len = 0;

static float *scratch_for(size_t n) {
  if (n > scratch_len) {
    float *p = realloc(scratch, n * sizeof(float));
    if (p == NULL) return NULL;
    scratch = p;
    scratch_len = n;
  }
  return scratch;
}

static void free_scratch(void *arg) {
  (void)arg;
  free(scratch);
  scratch = NULL;
  scratch_len = 0;
}

/* Separate non-inlined loops over restrict pointers, so GCC vectorises them (see corella_native.c). */
__attribute__((noinline)) static void combine(float *restrict y, const float *restrict x0, const float *restrict z,
                                              const float *restrict x, size_t n) {
  for (size_t j = 0; j < n; j++) y[j] = x0[j] * z[j] + x[j];
}

__attribute__((noinline)) static void relu_rows(float *restrict c, size_t n) {
  for (size_t j = 0; j < n; j++) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
}

__attribute__((noinline)) static void axpy(float *restrict o, const float *restrict t, float w, size_t dim) {
  for (size_t q = 0; q < dim; q++) o[q] += w * t[q];
}

static void fill_bias(float *c, const float *b, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) memcpy(c + r * n, b, (size_t)n * sizeof(float));
}

/* c [rows, n] = a [rows, k]·w [k, n] (+ b as bias rows, as the native matmul kernel adds it). */
static void product(const float *a, const float *w, const float *b, float *c, int64_t rows, int64_t k, int64_t n) {
  if (b != NULL) fill_bias(c, b, rows, n);
  cblas_sgemm(RowMajor, NoTrans, NoTrans, (int)rows, (int)n, (int)k, 1.0f, a, (int)k, w, (int)n,
              b != NULL ? 1.0f : 0.0f, c, (int)n);
}

/* x0 rows of block samples [i0, i0 + rows): categorical embeddings, pooled sequences, dense values, in the
 * order ml/crm/model.ts `embed` concatenates them. */
static void embed_block(const InferJob *j, int64_t i0, int64_t rows, float *x0) {
  const Plan *p = &j->p;
  const size_t d = (size_t)p->d, w0 = (size_t)p->w0;
  const int64_t size_cat = p->n_cat;
  for (int64_t r = 0; r < rows; r++) {
    const int64_t s = j->rows != NULL ? j->rows[i0 + r] : j->start + i0 + r;
    float *o = x0 + (size_t)r * w0;
    for (int f = 0; f < p->n_cat; f++) {
      const int32_t id = j->categorical[s * size_cat + f];
      const int64_t row = p->cat_off[f] + (id >= 0 && id < p->cat_vocab[f] ? id : 0);
      memcpy(o + (size_t)f * d, j->table + (size_t)row * d, d * sizeof(float));
    }
    float *q = o + (size_t)p->n_cat * d;
    for (int f = 0; f < p->n_seq; f++, q += d) {
      const int64_t len = p->seq_len[f];
      const int32_t *ids = j->sequences[f] + s * len;
      int64_t count = 0;
      for (int64_t t = 0; t < len; t++) count += ids[t] != 0;
      /* ml/crm/batch.ts hostRows: weight 1 on real positions, 1/count (a float32) when there are several */
      const float wt = count > 1 ? (float)(1.0 / (double)count) : 1.0f;
      memset(q, 0, d * sizeof(float));
      for (int64_t t = 0; t < len; t++) {
        const int32_t id = ids[t];
        if (id == 0) continue;
        const int64_t row = p->seq_off[f] + (id > 0 && id < p->seq_vocab[f] ? id : 0);
        axpy(q, j->table + (size_t)row * d, wt, d);
      }
    }
    if (p->n_dense > 0)
      memcpy(q, j->dense + s * p->n_dense, (size_t)p->n_dense * sizeof(float));
  }
}

/* One DCN-Mix layer: x_{l+1} = Σ_e softmax(x_l·G)_e · x0 ⊙ (tanh(tanh(x_l·V_e)·C_e)·U_e + b_e) + x_l, the
 * experts summed in order as model.ts's crossLayer adds them. */
static void mix_layer(const Plan *p, const CrossW *c, const float *x0, const float *x, float *y, int64_t rows,
                      float *gates, float *v, float *cc, float *t, float *mix) {
  const int64_t w0 = p->w0, r = p->rank, e_n = p->experts;
  product(x, c->gate, NULL, gates, rows, w0, e_n);
  for (int64_t i = 0; i < rows; i++) {
    float *g = gates + i * e_n;
    float m = g[0];
    for (int64_t e = 1; e < e_n; e++) m = g[e] > m ? g[e] : m;
    float sum = 0.0f;
    for (int64_t e = 0; e < e_n; e++) {
      g[e] = expf(g[e] - m);
      sum += g[e];
    }
    for (int64_t e = 0; e < e_n; e++) g[e] /= sum;
  }
  const size_t n = (size_t)(rows * w0);
  for (int64_t e = 0; e < e_n; e++) {
    product(x, c->ev[e], NULL, v, rows, w0, r);
    for (size_t q = 0; q < (size_t)(rows * r); q++) v[q] = tanhf(v[q]);
    product(v, c->ec[e], NULL, cc, rows, r, r);
    for (size_t q = 0; q < (size_t)(rows * r); q++) cc[q] = tanhf(cc[q]);
    product(cc, c->eu[e], c->eb[e], t, rows, r, w0);
    for (int64_t i = 0; i < rows; i++) {
      const float gi = gates[i * e_n + e];
      float *ti = t + i * w0;
      const float *x0i = x0 + i * w0;
      float *mi = mix + i * w0;
      if (e == 0)
        for (int64_t q = 0; q < w0; q++) mi[q] = (x0i[q] * ti[q]) * gi;
      else
        for (int64_t q = 0; q < w0; q++) mi[q] = mi[q] + (x0i[q] * ti[q]) * gi;
    }
  }
  for (size_t q = 0; q < n; q++) y[q] = mix[q] + x[q];
}

/* Block b of the job: its rows from ids to probabilities. */
static void infer_chunk(void *ctx, int64_t chunk) {
  InferJob *j = ctx;
  const Plan *p = &j->p;
  const int64_t b = j->block0 + chunk;
  const int64_t i0 = b * INFER_BLOCK;
  const int64_t rows = j->count - i0 < INFER_BLOCK ? j->count - i0 : INFER_BLOCK;
  if (rows <= 0) return;
  float *s = scratch_for(j->scratch_floats);
  if (s == NULL) {
    atomic_store(&j->failed, 1);
    return;
  }
  const int64_t w0 = p->w0, mh = p->max_h;
  float *x0 = s;
  float *xa = x0 + INFER_BLOCK * w0;
  float *xb = xa + INFER_BLOCK * w0;
  float *z = xb + INFER_BLOCK * w0;
  float *ha = z + INFER_BLOCK * w0;
  float *hb = ha + INFER_BLOCK * mh;
  float *top = hb + INFER_BLOCK * mh;
  float *logit = top + INFER_BLOCK * (w0 + mh);
  /* low rank only: gates, v, c, t (its [rows, W0] product) and mix */
  float *gates = logit + INFER_BLOCK;
  float *v = gates + INFER_BLOCK * p->experts;
  float *cc = v + INFER_BLOCK * p->rank;
  float *t = cc + INFER_BLOCK * p->rank;
  float *mix = t + (p->rank > 0 ? INFER_BLOCK * w0 : 0);

  embed_block(j, i0, rows, x0);
  const size_t n = (size_t)(rows * w0);
  const float *cross = x0;
  for (int l = 0; l < p->cross; l++) {
    float *y = (l % 2 == 0) ? xa : xb;
    const CrossW *c = &j->cross[l];
    if (p->rank == 0) {
      product(cross, c->w, c->b, z, rows, w0, w0);
      combine(y, x0, z, cross, n);
    } else {
      mix_layer(p, c, x0, cross, y, rows, gates, v, cc, t, mix);
    }
    cross = y;
  }
  const float *h = p->structure == 1 ? x0 : cross;
  int64_t hw = w0;
  for (int l = 0; l < p->n_mlp; l++) {
    const MlpW *m = &j->mlp[l];
    const int64_t width = p->mlp[l];
    float *o = (l % 2 == 0) ? ha : hb;
    product(h, m->w, m->b, o, rows, hw, width);
    if (p->bn) {
      /* ((z − mean) · rsqrt(var + ε)) · γ + β, as model.ts composes the tfjs ops */
      for (int64_t i = 0; i < rows; i++) {
        float *oi = o + i * width;
        for (int64_t q = 0; q < width; q++) {
          const float rs = 1.0f / sqrtf(m->var[q] + BN_EPS);
          oi[q] = ((oi[q] - m->mean[q]) * rs) * m->gamma[q] + m->beta[q];
        }
      }
    }
    relu_rows(o, (size_t)(rows * width));
    h = o;
    hw = width;
  }
  const float *in = h;
  if (p->structure == 1) {
    /* concat([cross, h], 1), then one product as the tfjs dense layer over the concatenation */
    for (int64_t i = 0; i < rows; i++) {
      memcpy(top + i * p->top, cross + i * w0, (size_t)w0 * sizeof(float));
      memcpy(top + i * p->top + w0, h + i * hw, (size_t)hw * sizeof(float));
    }
    in = top;
  } else if (p->structure == 2) {
    in = cross;
  }
  product(in, j->out_w, j->out_b, logit, rows, p->top, 1);
  for (int64_t i = 0; i < rows; i++) {
    const float zi = logit[i];
    j->out[i0 + i] = 1.0f / (1.0f + expf(-zi));
    if (j->logits != NULL) j->logits[i0 + i] = zi;
  }
}

/* ---------------------------------------------------------------------------------------------------------
 * Arguments. Every check runs before any write, so a rejected call changes nothing. */

static napi_value fail(napi_env env, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "corella_native.crmInfer: %s", what);
  napi_throw_range_error(env, "CORELLA_NATIVE", msg);
  return NULL;
}

static bool typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  if (napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok) return false;
  return type == want;
}

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

/* Reads the plan; NULL on success, else what is wrong. */
static const char *read_plan(const int32_t *a, size_t len, Plan *p) {
  if (len < PLAN_HEADER || a[0] != PLAN_VERSION) return "plan: not a version-1 plan";
  p->n_cat = a[1];
  p->n_seq = a[2];
  p->n_dense = a[3];
  p->d = a[4];
  p->w0 = a[5];
  p->cross = a[6];
  p->structure = a[7];
  p->rank = a[8];
  p->experts = a[9];
  p->n_mlp = a[10];
  p->bn = a[11];
  p->table_rows = a[12];
  if (p->n_cat < 0 || p->n_seq < 0 || p->n_dense < 0 || p->n_cat > MAX_FIELDS || p->n_seq > MAX_FIELDS ||
      p->n_dense > (1 << 20) || p->d < 1 || p->d > 4096 || p->cross < 0 || p->cross > MAX_LAYERS ||
      p->structure < 0 || p->structure > 2 || p->rank < 0 || p->rank > 65536 || p->n_mlp < 0 ||
      p->n_mlp > MAX_LAYERS || (p->bn != 0 && p->bn != 1) || p->table_rows < 0 ||
      (p->rank > 0 && (p->experts < 1 || p->experts > 1024)))
    return "plan: a count is out of range";
  if (p->rank == 0) p->experts = 0;
  if ((int64_t)p->w0 != (int64_t)(p->n_cat + p->n_seq) * p->d + p->n_dense || p->w0 < 1)
    return "plan: W0 is not (fields × D + dense)";
  if (p->structure != 2 && p->n_mlp == 0) return "plan: stacked and parallel need an MLP";
  if (p->structure == 2 && p->n_mlp != 0) return "plan: crossnet_only has no MLP";
  const size_t need = PLAN_HEADER + (size_t)p->n_mlp + 2 * (size_t)p->n_cat + 3 * (size_t)p->n_seq;
  if (len != need) return "plan: its length does not match its counts";
  p->mlp = a + PLAN_HEADER;
  p->cat_off = p->mlp + p->n_mlp;
  p->cat_vocab = p->cat_off + p->n_cat;
  p->seq_off = p->cat_vocab + p->n_cat;
  p->seq_vocab = p->seq_off + p->n_seq;
  p->seq_len = p->seq_vocab + p->n_seq;
  p->max_h = 1;
  for (int l = 0; l < p->n_mlp; l++) {
    if (p->mlp[l] < 1 || p->mlp[l] > (1 << 20)) return "plan: an MLP width is out of range";
    if (p->mlp[l] > p->max_h) p->max_h = p->mlp[l];
  }
  /* Every table row a lookup can reach (offset + vocabulary − 1; OOV ids read offset + 0) is in the table. */
  for (int f = 0; f < p->n_cat; f++)
    if (p->cat_vocab[f] < 1 || p->cat_off[f] < 0 || (int64_t)p->cat_off[f] + p->cat_vocab[f] > p->table_rows)
      return "plan: a categorical field's rows are outside the table";
  for (int f = 0; f < p->n_seq; f++)
    if (p->seq_vocab[f] < 1 || p->seq_off[f] < 0 || p->seq_len[f] < 1 ||
        (int64_t)p->seq_off[f] + p->seq_vocab[f] > p->table_rows)
      return "plan: a sequence field's rows are outside the table";
  const int64_t last = p->n_mlp > 0 ? p->mlp[p->n_mlp - 1] : 0;
  p->top = p->structure == 2 ? p->w0 : p->structure == 1 ? (int)(p->w0 + last) : (int)last;
  return NULL;
}

/* Takes the next weight of the list, which must have exactly n floats. */
typedef struct {
  napi_env env;
  napi_value list;
  uint32_t next, count;
  const char *error;
} WeightReader;

static const float *take(WeightReader *r, int64_t n) {
  if (r->error != NULL) return NULL;
  if (r->next >= r->count) {
    r->error = "weights: fewer arrays than the plan needs";
    return NULL;
  }
  napi_value v;
  void *data = NULL;
  size_t len = 0;
  if (napi_get_element(r->env, r->list, r->next++, &v) != napi_ok ||
      !typed(r->env, v, napi_float32_array, &data, &len)) {
    r->error = "weights: every entry must be a Float32Array";
    return NULL;
  }
  if ((int64_t)len != n) {
    r->error = "weights: an array's length does not match the plan";
    return NULL;
  }
  return data;
}

static napi_value js_crm_infer(napi_env env, napi_callback_info info) {
  const int64_t t0 = corella_now_ns();
  size_t argc = 11;
  napi_value argv[11];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 11)
    return fail(env, "expected 11 arguments");
  InferJob j;
  memset(&j, 0, sizeof j);
  void *data;
  size_t len;
  if (!typed(env, argv[0], napi_int32_array, &data, &len)) return fail(env, "plan must be an Int32Array");
  const char *bad = read_plan(data, len, &j.p);
  if (bad != NULL) return fail(env, bad);
  const Plan *p = &j.p;

  /* weights */
  bool is_array = false;
  WeightReader wr = {env, argv[1], 0, 0, NULL};
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &wr.count) != napi_ok)
    return fail(env, "weights must be an array of Float32Arrays");
  j.table = take(&wr, (int64_t)p->table_rows * p->d);
  const float **experts = NULL;
  if (p->rank > 0 && p->cross > 0) {
    experts = malloc((size_t)p->cross * (size_t)p->experts * 4 * sizeof(float *));
    if (experts == NULL) return fail(env, "out of memory");
  }
  for (int l = 0; l < p->cross; l++) {
    CrossW *c = &j.cross[l];
    if (p->rank == 0) {
      c->w = take(&wr, (int64_t)p->w0 * p->w0);
      c->b = take(&wr, p->w0);
    } else {
      const float **e = experts + (size_t)l * (size_t)p->experts * 4;
      c->ev = e;
      c->ec = e + p->experts;
      c->eu = e + 2 * p->experts;
      c->eb = e + 3 * p->experts;
      c->gate = take(&wr, (int64_t)p->w0 * p->experts);
      for (int x = 0; x < p->experts; x++) {
        e[x] = take(&wr, (int64_t)p->w0 * p->rank);
        e[p->experts + x] = take(&wr, (int64_t)p->rank * p->rank);
        e[2 * p->experts + x] = take(&wr, (int64_t)p->rank * p->w0);
        e[3 * p->experts + x] = take(&wr, p->w0);
      }
    }
  }
  /* the MLP reads x0 (parallel) or the cross output (stacked): both W0 wide */
  int64_t in = p->w0;
  for (int l = 0; l < p->n_mlp; l++) {
    MlpW *m = &j.mlp[l];
    const int64_t h = p->mlp[l];
    m->w = take(&wr, in * h);
    m->b = take(&wr, h);
    if (p->bn) {
      m->gamma = take(&wr, h);
      m->beta = take(&wr, h);
      m->mean = take(&wr, h);
      m->var = take(&wr, h);
    }
    in = h;
  }
  j.out_w = take(&wr, p->top);
  j.out_b = take(&wr, 1);
  if (wr.error == NULL && wr.next != wr.count) wr.error = "weights: more arrays than the plan needs";
  if (wr.error != NULL) {
    free(experts);
    return fail(env, wr.error);
  }

  /* inputs */
  int64_t size, start, count;
  bad = NULL;
  if (napi_get_value_int64(env, argv[5], &size) != napi_ok || napi_get_value_int64(env, argv[7], &start) != napi_ok ||
      napi_get_value_int64(env, argv[8], &count) != napi_ok)
    bad = "splitSize, start and count must be numbers";
  else if (size < 0 || count < 0 || start < 0)
    bad = "splitSize, start and count must not be negative";
  if (bad == NULL) {
    if (!typed(env, argv[2], napi_int32_array, &data, &len) || (int64_t)len != size * p->n_cat)
      bad = "categorical must be an Int32Array of splitSize × nCat ids";
    else
      j.categorical = data;
  }
  const int32_t **seqs = NULL;
  if (bad == NULL && p->n_seq > 0) {
    uint32_t n_seq = 0;
    seqs = malloc((size_t)p->n_seq * sizeof(int32_t *));
    if (seqs == NULL)
      bad = "out of memory";
    else if (napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array ||
             napi_get_array_length(env, argv[3], &n_seq) != napi_ok || n_seq != (uint32_t)p->n_seq)
      bad = "sequences must be an array of nSeq Int32Arrays";
    for (int f = 0; bad == NULL && f < p->n_seq; f++) {
      napi_value v;
      if (napi_get_element(env, argv[3], (uint32_t)f, &v) != napi_ok ||
          !typed(env, v, napi_int32_array, &data, &len) || (int64_t)len != size * p->seq_len[f])
        bad = "sequences: each must be an Int32Array of splitSize × maxLen ids";
      else
        seqs[f] = data;
    }
  }
  j.sequences = (const int32_t *const *)seqs;
  if (bad == NULL) {
    if (!typed(env, argv[4], napi_float32_array, &data, &len) || (int64_t)len != size * p->n_dense)
      bad = "dense must be a Float32Array of splitSize × nDense values";
    else
      j.dense = data;
  }
  if (bad == NULL) {
    if (is_nullish(env, argv[6])) {
      if (start + count > size) bad = "rows start..start+count are outside the split";
    } else if (!typed(env, argv[6], napi_int32_array, &data, &len) || (int64_t)len < count) {
      bad = "rows must be null or an Int32Array of at least count row ids";
    } else {
      j.rows = data;
      for (int64_t i = 0; i < count && bad == NULL; i++)
        if (j.rows[i] < 0 || j.rows[i] >= size) bad = "rows: a row id is outside the split";
    }
  }
  if (bad == NULL) {
    if (!typed(env, argv[9], napi_float32_array, &data, &len) || (int64_t)len < count)
      bad = "out must be a Float32Array of at least count values";
    else
      j.out = data;
  }
  if (bad == NULL && !is_nullish(env, argv[10])) {
    if (!typed(env, argv[10], napi_float32_array, &data, &len) || (int64_t)len < count)
      bad = "logits must be null or a Float32Array of at least count values";
    else
      j.logits = data;
  }
  if (bad != NULL) {
    free(experts);
    free(seqs);
    return fail(env, bad);
  }

  j.start = start;
  j.count = count;
  j.scratch_floats = (size_t)INFER_BLOCK * ((size_t)5 * p->w0 + 3 * (size_t)p->max_h + 1 + (size_t)p->experts +
                                            2 * (size_t)p->rank + (p->rank > 0 ? 2 * (size_t)p->w0 : 0));
  /* The caller's blocks' buffer before any write: only a worker thread's allocation can still fail late. */
  if (count > 0 && scratch_for(j.scratch_floats) == NULL) {
    free(experts);
    free(seqs);
    return fail(env, "out of memory");
  }
  const int64_t blocks = (count + INFER_BLOCK - 1) / INFER_BLOCK;
  /* One region per at most max-chunks blocks; with OpenBLAS on several threads of its own, the caller runs
   * every block and OpenBLAS splits each product (the same blocks, so the same bits). */
  const int64_t per_region = corella_blas_splits() ? 1 : corella_pool_max_chunks();
  for (int64_t b0 = 0; b0 < blocks; b0 += per_region) {
    j.block0 = b0;
    const int64_t n = blocks - b0 < per_region ? blocks - b0 : per_region;
    corella_pool_run(infer_chunk, &j, n);
  }
  free(experts);
  free(seqs);
  corella_add_kernel_ns(corella_now_ns() - t0);
  if (atomic_load(&j.failed)) {
    napi_throw_error(env, "CORELLA_NATIVE", "corella_native.crmInfer: out of memory");
    return NULL;
  }
  return NULL;
}

napi_status crm_infer_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"crmInfer", NULL, js_crm_infer, NULL, NULL, NULL, napi_default_method, NULL},
  };
  const napi_status st = napi_add_env_cleanup_hook(env, free_scratch, NULL);
  if (st != napi_ok) return st;
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
