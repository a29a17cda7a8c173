/* cuda/forward-deepseek2.h — deepseek2 (MLA + MoE) on the GPU.
 *
 * forward.c owns the model upload, the memory plan, the contexts and the
 * step; for a deepseek2 model it calls these for what differs: the layers'
 * weights, the latent KV cache and the decoder layers. Nothing outside
 * engine/cuda/ includes this.
 *
 * On the device a layer keeps its projections as the matvec kernels read
 * them, the per-head absorbed matrices W_UK^T and W_UV stacked head after
 * head (each head one "expert" of bln_kernels_matvec_sel), and the routed
 * experts stacked expert after expert, gate and up interleaved per expert
 * when their types allow (one selection matvec computes both). The cache
 * holds kv_lora_rank + qk_rope_dim values per token and layer (F16 by
 * default, F32 with 32-bit KV). A step of up to BLN_CUDA_MATVEC_MAX_TOK
 * tokens is kernels only (captured in the context's CUDA graph, the router's
 * choices never leave the device); a longer prompt runs as consecutive
 * steps of that many tokens.
 */
#pragma once

#include "forward-private.h"

G_BEGIN_DECLS

/* FALSE with BLN_ERROR_UNSUPPORTED (saying which shape) when the kernels
 * cannot run deepseek2 model @m: latent rank over BLN_MLA_MAX_RANK, a cache
 * row over BLN_MLA_MAX_ROW, an odd rope width, more than
 * BLN_MOE_MAX_EXPERTS experts, or routing that cannot fill its top k. */
gboolean bln_cuda_ds2_check (const BlnModel *m, GError **error);

/* Uploads the layers of @m into @cm (cm->ds2, the tensors and buffers owned
 * by @cm). FALSE with @error; @cm is then freed by the caller. */
gboolean bln_cuda_ds2_upload (BlnModel *m, BlnCudaModel *cm, GError **error);

/* Frees cm->ds2's own arrays (the device memory belongs to @cm). */
void bln_cuda_ds2_model_free (struct _BlnCudaDs2Model *dm);

/* bln_cuda_plan for a deepseek2 model (@m already checked). */
gboolean bln_cuda_ds2_plan (const BlnModel *m, int n_ctx, int kv_bits, BlnCudaPlan *plan,
                            GError **error);

/* The shared scratch of a deepseek2 context (x, h, logits, the cuBLAS
 * products' F16 operands and the attention scores; the layers' own scratch
 * comes with bln_cuda_ds2_ctx_init) for prefill chunks of @chunk tokens and
 * a cache of @kv_elem bytes per value. */
void bln_cuda_ds2_scratch_plan (const BlnModel *m, int n_ctx, size_t kv_elem, int chunk,
                                ScratchPlan *sp);

/* Makes c->ds2 (latent cache, scratch, constant index tables) for context
 * @c, whose stream and shared scratch exist. FALSE with @error; the caller
 * then frees @c (bln_cuda_ctx_free frees c->ds2). */
gboolean bln_cuda_ds2_ctx_init (BlnCudaCtx *c, GError **error);

/* Frees c->ds2. NULL is ignored. */
void bln_cuda_ds2_ctx_free (struct _BlnCudaDs2Ctx *d);

/* The decoder layers of a step of n <= BLN_CUDA_MATVEC_MAX_TOK tokens at
 * position *c->d_pos (c->x holds their embeddings): kernels only. */
gboolean bln_cuda_ds2_decode_layers (BlnCudaCtx *c, int n, GError **error);

/* The decoder layers of a prefill chunk of n tokens at position @pos0. */
gboolean bln_cuda_ds2_prefill_layers (BlnCudaCtx *c, int n, int pos0, GError **error);

G_END_DECLS
