/* kernels/ops.h — the C entry points of the forward-pass kernels (ops.cu).
 *
 * Element-wise and attention kernels for the decoder layers. Each launcher
 * checks its arguments, launches on @stream and returns cudaGetLastError()
 * (cudaErrorInvalidValue for bad arguments); none synchronises or aborts.
 * Activations are float32, row-major: row t of an [n][w] matrix starts at
 * t * w. The KV cache holds float32 or float16 values (kv_f16), row-major
 * [position][kv head][head dim], one such array per layer for K and for V.
 */
#pragma once

#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w for n_rows rows of d values.
 * y may equal x. */
cudaError_t bln_kernels_rmsnorm (const float *x, const float *w, float *y, int n_rows, int d,
                                 float eps, cudaStream_t stream);

/* bln_kernels_rmsnorm with the result also rounded to nearest as F16
 * (to_bf16 = 0) or BF16 (to_bf16 = 1) into y16 (dense [n_rows][d]): y16
 * holds, bit for bit, what bln_kernels_rmsnorm then bln_kernels_convert
 * would write (same reduction, same value, same rounding). The float rows
 * still go to y unless it is NULL (pass it when a consumer needs them); y
 * may equal x. For the cuBLAS products of prefill, whose activations are
 * F16 or BF16. */
cudaError_t bln_kernels_rmsnorm_f16 (const float *x, const float *w, float *y, void *y16,
                                     int n_rows, int d, float eps, int to_bf16,
                                     cudaStream_t stream);

/* x[i] += y[i] for i < n. */
cudaError_t bln_kernels_add (float *x, const float *y, size_t n, cudaStream_t stream);

/* y[t][i] += b[i] for n_rows rows of width values. */
cudaError_t bln_kernels_add_bias (float *y, const float *b, int n_rows, int width,
                                  cudaStream_t stream);

/* out[t][i] = silu(g[t * g_stride + i]) * u[t * u_stride + i] for n_rows rows
 * of ff values (out is dense, ff per row). With the gate and up projections
 * side by side in one [n][2 ff] matrix: g = gu, u = gu + ff, strides 2 ff.
 * out may not overlap g or u. */
cudaError_t bln_kernels_silu_mul (const float *g, int g_stride, const float *u, int u_stride,
                                  float *out, int n_rows, int ff, cudaStream_t stream);

/* bln_kernels_silu_mul with the products rounded to nearest as F16
 * (to_bf16 = 0) or BF16 (to_bf16 = 1) into out (dense [n_rows][ff], 2 bytes
 * a value): bit for bit what bln_kernels_silu_mul then bln_kernels_convert
 * would write, without the float round trip. Same arguments and overlap
 * rule as bln_kernels_silu_mul. */
cudaError_t bln_kernels_silu_mul_f16 (const float *g, int g_stride, const float *u,
                                      int u_stride, void *out, int n_rows, int ff, int to_bf16,
                                      cudaStream_t stream);

/* Biases, rotary embedding and the KV store for n_tok tokens at positions
 * *d_pos, *d_pos + 1, ... (the position is read on the device, so a captured
 * CUDA graph serves every step): adds bq / bk / bv (each may be NULL) to q
 * ([H][dk] per token), k ([Hkv][dk]) and v ([Hkv][dv]) in place — token t's
 * rows start at q + t * ld, k + t * ld, v + t * ld (the three usually side by
 * side in one [n_tok][ld] matrix) —
 * rotates the first rope_dim values of every head of q and k — pairs (i, i +
 * r/2) when neox, (2i, 2i + 1) otherwise, angle pos * inv_freq[i], cos and
 * sin scaled by attn_factor — then writes k and v into the layer's caches at
 * rows pos.. (converted to F16 when kv_f16; both caches NULL: no store, for
 * the 8-bit cache's bln_kernels_kv_store_q8). When q_kv is not NULL it also
 * receives the rotated q in the cache's element type (the prefill attention
 * multiplies it with the cache by cuBLAS). */
cudaError_t bln_kernels_rope_store (float *q, float *k, float *v, const float *bq,
                                    const float *bk, const float *bv, int n_tok, int ld,
                                    const int *d_pos, int H, int Hkv, int dk, int dv,
                                    int rope_dim, int neox, const float *inv_freq,
                                    float attn_factor, void *k_cache, void *v_cache, int kv_f16,
                                    void *q_kv, cudaStream_t stream);

/* Bytes of scratch bln_kernels_attn_decode needs for up to n_tok tokens
 * (the split count does not depend on the context length). The scratch must
 * be zeroed once (cudaMemset) before its first use: it starts with the split
 * counters of the fused merge, which every launch leaves at 0 again, so a
 * captured graph can replay it. 0 for invalid arguments. */
size_t bln_kernels_attn_decode_scratch (int n_tok, int H, int Hkv, int dv);

/* Causal attention of n_tok queries (rows of q, [H][dk] each, q_ld floats
 * apart (0: H * dk), token t at
 * position *d_pos + t, seeing positions 0 .. *d_pos + t of the caches) with
 * grouped KV heads (H a multiple of Hkv), softmax scale @scale; the result
 * goes to out ([n_tok][H][dv]). Split over the sequence with an online
 * softmax (flash-decoding), one pass over K and V shared by the query heads
 * of a KV head; the split length follows the position read on the device.
 * When dk == dv is 64, 128 or 256, n_tok <= 16 and the caches are 16-byte
 * aligned, one launch does it all (16-byte loads, the last block of a
 * (token, head group) merges the splits); otherwise, or with the environment
 * variable BALEEN_CUDA_ATTN=v1, the first kernel pair (splits, then a merge
 * kernel) runs. @scratch holds bln_kernels_attn_decode_scratch() bytes for
 * at least n_tok tokens, zeroed before the first call (see there); calls
 * sharing a scratch must run in stream order. For few tokens (decode);
 * requires dk <= 256, dv <= 256. */
cudaError_t bln_kernels_attn_decode (const float *q, int q_ld, int n_tok, const int *d_pos, int H,
                                     int Hkv, int dk, int dv, float scale, const void *k_cache,
                                     const void *v_cache, int kv_f16, void *scratch, float *out,
                                     cudaStream_t stream);

/* The 8-bit KV cache: per layer, K values int8 [position][kv head][dk] and
 * their scales F16 [position][kv head][dk / 32], V likewise with dv — one
 * scale per 32 values (amax / 127), so an outlier channel (qwen2's K has
 * some) costs precision only in its own block of 32, at 1 + 2/32 bytes per
 * value (53% of F16). bln_kernels_kv_store_q8 quantises the rows of n_tok
 * tokens (k and v as for bln_kernels_rope_store, after it has rotated them:
 * token t's rows at k + t * ld, v + t * ld) into the caches at positions
 * *d_pos + t. dk and dv must be multiples of 32, at most 1024. */
cudaError_t bln_kernels_kv_store_q8 (const float *k, const float *v, int n_tok, int ld,
                                     const int *d_pos, int Hkv, int dk, int dv, void *k_cache,
                                     void *k_scale, void *v_cache, void *v_scale,
                                     cudaStream_t stream);

/* out[i] = values[i] * scales[i / 32] as F16 for n_rows rows of d values
 * (d a multiple of 32) of an 8-bit cache: the prefill attention runs on
 * cuBLAS over F16 copies. */
cudaError_t bln_kernels_kv_dequant_q8 (const void *values, const void *scales, size_t n_rows,
                                       int d, void *out, cudaStream_t stream);

/* bln_kernels_attn_decode, which when the one-launch kernel serves the
 * shape and n_tok <= BLN_KERNELS_MATVEC_MAX_TOK also leaves the output
 * rounded in the matvec kernels' 8-bit scratch (as bln_kernels_rmsnorm_quant
 * does), so that the output projection may pass
 * BLN_KERNELS_MATVEC_XQ_READY; *@rounded says whether it did (it is decided
 * on the host, the same for every replay of a captured graph). */
cudaError_t bln_kernels_attn_decode_round (const float *q, int q_ld, int n_tok, const int *d_pos,
                                           int H, int Hkv, int dk, int dv, float scale,
                                           const void *k_cache, const void *v_cache, int kv_f16,
                                           void *scratch, float *out, int *rounded,
                                           cudaStream_t stream);

/* Whether bln_kernels_attn_decode_rope serves this shape and these caches
 * (a host-side test, no CUDA call): the one-launch kernel's shapes (dk ==
 * dv, 64, 128 or 256; caches 16-byte aligned), H a multiple of Hkv, an even
 * rope_dim <= dk, and BALEEN_CUDA_ATTN not "v1". 1 or 0. */
int bln_kernels_attn_decode_rope_supports (int H, int Hkv, int dk, int dv, int rope_dim,
                                           const void *k_cache, const void *v_cache);

/* bln_kernels_rope_store followed by bln_kernels_attn_decode_round in one
 * launch, for one token at position *d_pos over an F16 (kv_f16) or F32
 * cache: the un-rotated q ([H][dk]), k ([Hkv][dk]) and v ([Hkv][dv]) rows
 * of the token, the biases (each may be NULL) and the RoPE parameters as
 * for bln_kernels_rope_store; @scale, @scratch, @out and @rounded as for
 * bln_kernels_attn_decode_round. Writes the rotated k and the biased v
 * into the caches at row *d_pos and the attention output (and, where
 * *rounded says so, its 8-bit rounding for the output matvec), all bit for
 * bit what the two calls write. Unlike bln_kernels_rope_store it leaves q,
 * k and v as they were (nothing rotated in place). cudaErrorInvalidValue
 * for bad arguments (as the two calls check them), cudaErrorNotSupported
 * where bln_kernels_attn_decode_rope_supports() says no: the caller then
 * makes the two calls. The 8-bit cache and several tokens are not served
 * here. */
cudaError_t bln_kernels_attn_decode_rope (const float *q, const float *k, const float *v,
                                          const float *bq, const float *bk, const float *bv,
                                          const int *d_pos, int H, int Hkv, int dk, int dv,
                                          int rope_dim, int neox, const float *inv_freq,
                                          float attn_factor, float scale, void *k_cache,
                                          void *v_cache, int kv_f16, void *scratch, float *out,
                                          int *rounded, cudaStream_t stream);

/* bln_kernels_attn_decode over an 8-bit cache (above): head dim d (64, 128
 * or 256) for K and V, n_tok <= 16, the value arrays 16-byte aligned; the
 * same scratch (bln_kernels_attn_decode_scratch (n_tok, H, Hkv, d) bytes,
 * zeroed before the first use). Always the one-launch kernel. */
cudaError_t bln_kernels_attn_decode_q8 (const float *q, int q_ld, int n_tok, const int *d_pos,
                                        int H, int Hkv, int d, float scale, const void *k_cache,
                                        const void *k_scale, const void *v_cache,
                                        const void *v_scale, void *scratch, float *out,
                                        cudaStream_t stream);

/* The softmax of the prefill attention: s holds H blocks of n rows of n_kv
 * float scores (row t = query pos0 + t); writes p (same shape, F16 when
 * p_f16, else F32) = softmax over the positions j <= pos0 + t of scale *
 * s[j], and 0 for the masked ones. */
cudaError_t bln_kernels_softmax_causal (const float *s, void *p, int p_f16, int H, int n,
                                        int n_kv, int pos0, float scale, cudaStream_t stream);

/* y[i] = x[i] converted to F16 (to_bf16 = 0) or BF16 (to_bf16 = 1). */
cudaError_t bln_kernels_convert (const float *x, void *y, size_t n, int to_bf16,
                                 cudaStream_t stream);

#ifdef __cplusplus
}
#endif
