/* cpu/cpu.h — the CPU backend's compute primitives.
 *
 * A thread pool that runs one function on N threads, and the operations the
 * model code needs on quantised weights: matrix × activations (the bulk of
 * the work), row gathering (embeddings), with SIMD kernels chosen at run time
 * (AVX2/FMA/F16C, AVX-512 where present, a portable scalar path otherwise).
 * Quantised weights are multiplied the way llama.cpp does it: activations are
 * quantised to Q8_0 / Q8_1 / Q8_K blocks and dotted with integer SIMD; F32,
 * F16 and BF16 weights are dotted in float with FMA.
 */
#pragma once

#include <glib.h>
#include "../tensor.h"

G_BEGIN_DECLS

typedef struct _BlnPool BlnPool;

/* A pool of @n_threads workers (the caller's thread counts as one; 0 means
 * the number of online CPUs). Returns NULL with @error on failure. */
BlnPool *bln_pool_new (int n_threads, GError **error);
void bln_pool_free (BlnPool *pool);
int bln_pool_n_threads (const BlnPool *pool);

/* Runs fn (ctx, ith, nth) on every thread, ith = 0..nth-1, and returns when
 * all are done. Calls from one thread at a time. */
typedef void (*BlnPoolFn) (void *ctx, int ith, int nth);
void bln_pool_run (BlnPool *pool, BlnPoolFn fn, void *ctx);

/* y[t * n_out + r] = sum_k W[r][k] * x[t * n_in + k] for t < n_tok, where
 * W = @w has ne[0] = n_in, ne[1] = n_out. Any type bln_type_info() marks
 * can_load. FALSE (with @error) for an unsupported type. */
gboolean bln_cpu_matmul (BlnPool *pool, const BlnTensor *w,
                         const float *x, int n_tok, float *y, GError **error);

/* Dequantises rows @ids[0..n) of @w into @out (n × ne[0] floats). FALSE for
 * an id out of range. */
gboolean bln_cpu_get_rows (const BlnTensor *w, const int32_t *ids, int n, float *out,
                           GError **error);

/* Float helpers for the model code. All take plain float arrays of @n
 * values; outputs may alias inputs where noted. None can fail. */

/* y = x / sqrt (mean (x^2) + eps) * w (w may be NULL: no weight). The sum of
 * squares is accumulated in double. y may alias x. */
void bln_cpu_rmsnorm (float *y, const float *x, const float *w, int64_t n, float eps);

/* x = exp (x - max x) / sum, in place. n >= 1. */
void bln_cpu_softmax (float *x, int64_t n);

/* y = silu (gate) * up, silu (g) = g / (1 + exp (-g)) (SwiGLU). y may alias
 * gate or up. */
void bln_cpu_silu_mul (float *y, const float *gate, const float *up, int64_t n);

/* y = a + b. y may alias a or b. */
void bln_cpu_add (float *y, const float *a, const float *b, int64_t n);

/* The dot product of a and b, with the SIMD kernels when available. */
float bln_cpu_dot (const float *a, const float *b, int64_t n);

/* y += a * x, with the SIMD kernels when available. */
void bln_cpu_axpy (float *y, float a, const float *x, int64_t n);

/* x *= s, in place. */
void bln_cpu_scale (float *x, float s, int64_t n);

/* The SIMD level in use: "avx512", "avx2", or "scalar". Setting the
 * environment variable BALEEN_CPU_SIMD=scalar before the first call forces
 * the portable path (used by the tests to cross-check the kernels). */
const char *bln_cpu_simd_level (void);

G_END_DECLS
