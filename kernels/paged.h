/* kernels/paged.h — kernels over a paged KV cache (paged.cu), for batched
 * decode of many sequences (engine/cuda/forward-batch.c).
 *
 * The pool. K and V rows live in two device arrays of one element type (F16
 * when kv_f16, else F32), cut into blocks of @block_size positions exactly
 * as the CPU pool of engine/kv-cache.c: a block holds every layer's rows for
 * its positions, so position p of layer l in a sequence whose block table is
 * tab[] is row
 *     (tab[p / block_size] * n_layer + l) * block_size + p % block_size
 * of the K array (Hkv * dk elements a row, [kv head][head dim]) and of the V
 * array (Hkv * dv elements a row).
 *
 * The batch. Token t (0 <= t < n_tok) sits at position d_pos[t] of its
 * sequence, whose block table starts at d_tab + d_tab_off[t] (the tables of
 * all sequences of a step are concatenated in one device array). Tokens of
 * one sequence need not be adjacent in the batch; each attends over the
 * positions 0 .. d_pos[t] of its own sequence, which must all be stored
 * (earlier steps, or bln_kernels_paged_rope_store of this batch, on the same
 * stream, before the attention).
 *
 * Launchers check their arguments (cudaErrorInvalidValue), launch on @stream
 * and return cudaGetLastError(); none synchronises or aborts. Indices read
 * on the device (positions, table entries) are trusted: the host built them.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The row of position @pos of layer @layer for block table @tab (see above).
 * Shared by the kernels and the host, so that tests can check the formula
 * against the CPU cache's bln_kv_row(). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline size_t
bln_paged_row (const int32_t *tab, int n_layer, int layer, int block_size, int pos)
{
  return ((size_t) tab[pos / block_size] * (size_t) n_layer + (size_t) layer)
           * (size_t) block_size
         + (size_t) (pos % block_size);
}

/* Positions per split of the paged attention for a step whose longest
 * sequence has @max_len positions, when @blocks_per_split blocks run for
 * each split: enough splits to put about two blocks on every SM of a large
 * GPU, each at least 64 positions and a multiple of 32. */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int
bln_paged_split_len (int max_len, int blocks_per_split)
{
  int want = (264 + blocks_per_split - 1) / (blocks_per_split > 0 ? blocks_per_split : 1);
  int split;

  if (want < 1)
    want = 1;
  split = (max_len + want - 1) / want;
  split = (split + 31) / 32 * 32;
  return split < 64 ? 64 : split;
}

/* Biases, rotary embedding and the paged KV store of @n_tok tokens: adds bq
 * / bk / bv (each may be NULL) to q ([H][dk] a token), k ([Hkv][dk]) and v
 * ([Hkv][dv]) in place, token t's rows at q + t * ld, k + t * ld, v + t * ld;
 * rotates the first rope_dim values of every head of q and k at angle
 * d_pos[t] * inv_freq[i] (pairs (i, i + rope_dim / 2) when neox, else (2i,
 * 2i + 1); cos and sin times attn_factor), exactly as
 * bln_kernels_rope_store (ops.h) does; then writes k and v to rows of layer
 * @layer of the pools (converted to F16 when kv_f16). dk, dv <= 256. */
cudaError_t bln_kernels_paged_rope_store (float *q, float *k, float *v, const float *bq,
                                          const float *bk, const float *bv, int n_tok, int ld,
                                          const int32_t *d_pos, const int32_t *d_tab_off,
                                          const int32_t *d_tab, int H, int Hkv, int dk, int dv,
                                          int rope_dim, int neox, const float *inv_freq,
                                          float attn_factor, void *k_pool, void *v_pool,
                                          int kv_f16, int n_layer, int layer, int block_size,
                                          cudaStream_t stream);

/* Bytes of scratch bln_kernels_paged_attn needs for @n_tok tokens whose
 * longest sequence has @max_len positions. */
size_t bln_kernels_paged_attn_scratch (int n_tok, int H, int Hkv, int dv, int max_len);

/* Causal attention of @n_tok queries over their own sequences in layer
 * @layer of the pools: token t's query heads (row t of @q, [H][dk], q_ld
 * floats apart; 0 means H * dk) see positions 0 .. d_pos[t] (with a sliding
 * @window > 0, only d_pos[t] - window + 1 .. d_pos[t]: table entries of
 * blocks wholly before that are never read), with KV head h
 * / (H / Hkv) for query head h (H a multiple of Hkv) and softmax scale
 * @scale. @max_len must be at least max (d_pos[t]) + 1 (it sizes the
 * splits; the sequence is cut into splits of bln_paged_split_len()
 * positions, each scored with an online softmax, then merged). The result
 * goes to out ([n_tok][H][dv]). @scratch holds @scratch_bytes bytes, at least
 * bln_kernels_paged_attn_scratch(). dk, dv <= 256; n_tok <= 65535. */
cudaError_t bln_kernels_paged_attn (const float *q, int q_ld, int n_tok, const int32_t *d_pos,
                                    const int32_t *d_tab_off, const int32_t *d_tab, int max_len,
                                    int H, int Hkv, int dk, int dv, float scale,
                                    const void *k_pool, const void *v_pool, int kv_f16,
                                    int n_layer, int layer, int block_size, int window,
                                    void *scratch, size_t scratch_bytes, float *out,
                                    cudaStream_t stream);

/* out[i][0..d) = x[d_rows[i] - row_base][0..d) for i < n_rows: the rows whose
 * logits are wanted, gathered before the output norm. @out must not overlap
 * @x. */
cudaError_t bln_kernels_gather_rows (const float *x, int d, const int32_t *d_rows, int row_base,
                                     int n_rows, float *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
