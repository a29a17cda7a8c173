/* kernels/flash.h — causal attention of a prefill chunk in one kernel
 * (flash.cu), on the F16 tensor cores.
 *
 * Token t of the chunk sits at position pos0 + t and attends to positions
 * 0 .. pos0 + t of the cache. Query head h reads KV head h / (H / Hkv).
 * Scores, the running maximum and sum, and the output are float32; the
 * probabilities are rounded to F16 for the second product, as the cuBLAS
 * path rounds them (forward.c, attn_prefill). No score matrix is written:
 * each block keeps its queries' state in registers over the key tiles.
 */
#pragma once

#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether bln_kernels_flash_prefill serves these heads on the current
 * device: head dims dk == dv, one of 16, 64, 128; H a multiple of Hkv;
 * compute capability 8.0 or newer. */
int bln_kernels_flash_prefill_supports (int H, int Hkv, int dk, int dv);

/* out[t][h][0..d) = softmax_j (scale · q[t][h] · k[j][h']) · v[j][h'] over
 * j <= pos0 + t, for t < n, with h' = h / (H / Hkv). q: F16 [n][H][d] (the
 * rotated queries), k, v: F16 caches [position][Hkv][d] holding at least
 * pos0 + n rows, out: float [n][H][d]. cudaErrorInvalidValue for arguments
 * the kernel does not serve (see _supports) or null pointers. */
cudaError_t bln_kernels_flash_prefill (const void *q, int n, int pos0, int H, int Hkv, int d,
                                       float scale, const void *k, const void *v, float *out,
                                       cudaStream_t stream);

/* The same over a paged pool (kernels/paged.h) for n consecutive tokens of
 * one sequence at positions pos0 ..: float queries, row t (head h) at q + t
 * * q_ld + h * d (rounded to F16 as they are read; q_ld even), keys and
 * values at the rows bln_paged_row (d_tab, n_layer, layer, block_size, p)
 * of the F16 pools (Hkv * d elements a row), d_tab the sequence's block
 * table on the device. */
cudaError_t bln_kernels_flash_prefill_paged (const float *q, int q_ld, int n, int pos0, int H,
                                             int Hkv, int d, float scale, const void *k_pool,
                                             const void *v_pool, const int32_t *d_tab,
                                             int n_layer, int layer, int block_size, float *out,
                                             cudaStream_t stream);

#ifdef __cplusplus
}
#endif
