/* kernels/mla.h — the C entry points of the multi-head latent attention
 * kernels (mla.cu), for deepseek2 models on the GPU.
 *
 * MLA caches, per token and layer, one row of W = r + dr values: the
 * normalised latent c (r = kv_lora_rank values) and the rotated positional
 * key k_pe (dr = qk_rope_dim values), float32 or float16 (kv_f16). Attention
 * runs in latent space ("absorbed"): with q_lat = W_UK^T q_nope for each head,
 *   score_j = (q_lat · c_j + q_pe · k_pe_j) * scale,
 *   o_lat = Σ_j softmax(score)_j c_j,
 * and the caller maps o_lat back through W_UV. Engine/arch-deepseek2.c is the
 * CPU reference of the same computation.
 *
 * Each launcher checks its arguments, launches on @stream and returns
 * cudaGetLastError() (cudaErrorInvalidValue for bad arguments); none
 * synchronises or aborts. Positions are read on the device (*d_pos), so a
 * captured CUDA graph serves every decode step.
 */
#pragma once

#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest latent width (kv_lora_rank) and cache row (r + dr) the
 * kernels take; DeepSeek-V2/V3 use 512 and 576. */
#define BLN_MLA_MAX_RANK 512
#define BLN_MLA_MAX_ROW 640

/* The latent store and the query split, for n_tok tokens at positions
 * *d_pos + t. Token t's compressed row kva + t * kva_ld holds r latent values
 * then dr positional-key values; its query q + t * q_ld holds H heads of
 * (nope + dr) values (nope unrotated, then dr to rotate). Writes
 *   cache[pos][0, r)     = RMSNorm(latent) * norm_w   (epsilon @eps, the sum
 *                          of squares in double, as on the CPU)
 *   cache[pos][r, r+dr)  = the positional key rotated by pos
 *   q_nope[(t H + h) nope + i]        = the head's first nope query values
 *   q_cat[(t H + h) W + r + i]        = the head's rotated last dr values
 * @cache is the layer's [n_ctx][W] array (float16 when kv_f16). Rotation:
 * pairs (i, i + dr/2) when neox, else (2i, 2i + 1); angle pos * inv_freq[i];
 * cos and sin scaled by @attn_factor (YaRN). dr even, r <= BLN_MLA_MAX_RANK,
 * r + dr <= BLN_MLA_MAX_ROW. */
cudaError_t bln_mla_store (const float *kva, int kva_ld, const float *q, int q_ld, int n_tok,
                           const int *d_pos, int H, int r, int dr, int nope,
                           const float *norm_w, float eps, const float *inv_freq,
                           float attn_factor, int neox, void *cache, int kv_f16, float *q_nope,
                           float *q_cat, cudaStream_t stream);

/* bln_mla_store, which also leaves q_nope rounded in the matvec kernels'
 * 8-bit scratch when nope is a multiple of 32 and the rows fit (*@rounded
 * says whether: the W_UK^T matvec may then pass
 * BLN_KERNELS_MATVEC_XQ_READY). */
cudaError_t bln_mla_store_round (const float *kva, int kva_ld, const float *q, int q_ld,
                                 int n_tok, const int *d_pos, int H, int r, int dr, int nope,
                                 const float *norm_w, float eps, const float *inv_freq,
                                 float attn_factor, int neox, void *cache, int kv_f16,
                                 float *q_nope, float *q_cat, int *rounded, cudaStream_t stream);

/* Bytes of scratch bln_mla_decode needs for up to @n_tok tokens. */
size_t bln_mla_decode_scratch (int n_tok, int H, int r);

/* Absorbed attention of n_tok queries (n_tok <= 8): q_cat holds [n_tok][H]
 * rows of W = r + dr floats (q_lat then q_pe); token t at position *d_pos + t
 * sees cache rows 0 .. *d_pos + t. Writes out[(t H + h) r + i] = the softmax
 * (scores times @scale) weighted sum of the latents. The sequence is split
 * (flash-decoding: one block per group of 8 heads, token and split, each
 * with an online softmax over tiles staged in shared memory), then a combine
 * kernel merges the splits. @scratch holds bln_mla_decode_scratch() bytes. */
cudaError_t bln_mla_decode (const float *q_cat, int n_tok, const int *d_pos, int H, int r,
                            int dr, float scale, const void *cache, int kv_f16, void *scratch,
                            float *out, cudaStream_t stream);

/* bln_mla_decode, which also leaves its output rounded in the matvec
 * kernels' 8-bit scratch when r is a multiple of 32 (*@rounded says
 * whether: the W_UV matvec may then pass BLN_KERNELS_MATVEC_XQ_READY). */
cudaError_t bln_mla_decode_round (const float *q_cat, int n_tok, const int *d_pos, int H, int r,
                                  int dr, float scale, const void *cache, int kv_f16,
                                  void *scratch, float *out, int *rounded, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
