/* kernels/sample-compact.h — compact sampling records (sample-compact.cu).
 *
 * Reduces each of n rows of device logits to what bln_sampler_sample_compact()
 * (engine/sampler.h, BlnCompactRow) needs to draw the CPU sampler's token
 * without the row: the K largest non-NaN raw logits with their ids in the
 * sampler's total order (larger logit first, smaller id on a tie; -0 equals
 * +0), the (K+1)-th value, the raw max and log-sum-exp, the
 * temperature-scaled max and sum over the tokens outside the penalty
 * history, and the raw logits at the history ids. One launch for all rows
 * (one block per row); nothing synchronises. docs/GPU-SAMPLING.md says how
 * the host uses the record.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest K (entries per row) the kernel takes; K is a power of two. */
#define BLN_KERNELS_COMPACT_MAX_K 1024

/* Per-row results besides the K entries (48 bytes). */
typedef struct {
  double raw_max;     /* largest non-NaN logit; -inf when none */
  double raw_lse;     /* log-sum-exp of the logits (double sum of exp (l - max)); raw_max
                       * when that is not finite; NaN when the row has a NaN (as the
                       * CPU sampler's sum gives: its logprobs are then -inf) */
  double t_max;       /* largest usable l / T (clamped to FLT_MAX) over the tokens not
                       * in the row's history; -inf when none or T <= 0 */
  double t_sum;       /* sum of exp (l / T - t_max) over those tokens; 0 when none */
  float next;         /* the (K+1)-th largest non-NaN logit; -inf when n_valid <= K */
  int32_t n_valid;    /* non-NaN logits in the row */
  int32_t k;          /* entries written: min (K, n_valid) */
  int32_t pad;
} BlnCompactStats;

/* Bytes of device scratch for @n_rows rows of @n_vocab (a bitmap of the
 * history per row). */
size_t bln_kernels_compact_scratch_bytes (int n_rows, int n_vocab);

/* For r in 0..n_rows: row r is @d_logits + r * @row_stride (n_vocab floats,
 * not modified); @d_temp[r] its temperature (<= 0 or NaN: greedy, no scaled
 * sums); its history ids are @d_hist_ids[d_hist_off[r] .. d_hist_off[r+1])
 * (distinct ids; @d_hist_off has n_rows + 1 entries, may be NULL when no row
 * has a history). Writes @d_ids / @d_vals [r * K .. r * K + k), @d_stats[r]
 * and @d_hist_vals[d_hist_off[r] ..] (the raw logits at the history ids,
 * NaN for an id out of range). @d_scratch: bln_kernels_compact_scratch_bytes
 * bytes. @K: a power of two in 1..BLN_KERNELS_COMPACT_MAX_K. Returns
 * cudaErrorInvalidValue for bad arguments, else the launch's error; never
 * synchronises. */
cudaError_t bln_kernels_compact (const float *d_logits, size_t row_stride, int n_rows,
                                 int n_vocab, int K, const float *d_temp,
                                 const int32_t *d_hist_off, const int32_t *d_hist_ids,
                                 int32_t *d_ids, float *d_vals, BlnCompactStats *d_stats,
                                 float *d_hist_vals, void *d_scratch, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
