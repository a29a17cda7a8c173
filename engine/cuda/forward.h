/* cuda/forward.h — the forward pass on the GPU.
 *
 * A BlnCudaModel is a model's weights on the device: uploaded once, when the
 * first CUDA context of the model is made, and freed with the model. A
 * BlnCudaCtx is one sequence's device state: KV cache, scratch, a stream and
 * a cuBLAS handle. model.c calls these through bln_context_new_with_options()
 * and bln_context_eval(); nothing else needs them.
 *
 * The step for a batch of n tokens: embeddings (dequantised on the host from
 * the mapped file, one row per token, and copied over), then per layer RMSNorm,
 * the projections (n <= 8: the fused dequantise-and-multiply matvec kernels;
 * more: the weights expanded to F16 into scratch and multiplied on tensor cores
 * by cuBLAS), rotary embedding and KV store, attention (few tokens:
 * flash-decoding over the cache; many: scores and mixing on cuBLAS with a masked
 * softmax between them, in query blocks sized to a scratch budget), SwiGLU and
 * the residual adds; finally the output norm and projection of the rows whose
 * logits are wanted. Prompts longer than the prefill chunk (2,048 tokens, less
 * when memory is short) run chunk by chunk.
 *
 * Runs llama, qwen2 and deepseek2 models; deepseek2's layers (MLA over a
 * latent cache, MoE with the router on the GPU) are forward-deepseek2.c's.
 * A shape the kernels cannot take is BLN_ERROR_UNSUPPORTED (the caller falls
 * back to the CPU).
 */
#pragma once

#include <glib.h>
#include "model-private.h"

G_BEGIN_DECLS

typedef struct _BlnCudaModel BlnCudaModel;
typedef struct _BlnCudaCtx BlnCudaCtx;

/* What a model needs on the GPU for a context of n_ctx tokens. */
typedef struct {
  size_t weight_bytes;     /* weights as uploaded */
  size_t kv_bytes;         /* the KV cache */
  size_t scratch_bytes;    /* activations, dequantisation and attention scratch */
  size_t free_bytes;       /* free device memory when asked (0: no usable GPU) */
  gboolean fits;           /* all of it plus the reserve fits in free_bytes */
  int prefill_chunk;       /* tokens per prefill chunk the scratch is sized for */
} BlnCudaPlan;

/* Computes the memory plan of @model for a context of @n_ctx tokens with a
 * KV cache of @kv_bits (16 or 32) bits per value, without allocating
 * anything. FALSE with @error for an architecture the GPU path does not run;
 * otherwise TRUE with @plan filled (plan->fits says whether it fits). Cheap;
 * the GUI may call it before loading. */
gboolean bln_cuda_plan (const BlnModel *model, int n_ctx, int kv_bits, BlnCudaPlan *plan,
                        GError **error);

/* Makes a context's device state (uploading the model's weights first if
 * this is the model's first CUDA context). See bln_context_new_with_options. */
BlnCudaCtx *bln_cuda_ctx_new (BlnModel *model, int n_ctx, const BlnContextOptions *opts,
                              GError **error);
void bln_cuda_ctx_free (BlnCudaCtx *c);

/* bln_context_eval for a context on the GPU (arguments already checked). */
gboolean bln_cuda_ctx_eval (BlnContext *ctx, const int32_t *ids, int n, float *logits,
                            gboolean all_logits, GError **error);

/* bln_context_eval_sample for a context on the GPU (arguments checked):
 * the last row's logits stay on the device and the GPU sampler picks the
 * token (engine/cuda/sample.h). */
gboolean bln_cuda_ctx_eval_sample (BlnContext *ctx, const int32_t *ids, int n,
                                   BlnSampler *sampler, int32_t *id_out, BlnLogprob *top,
                                   int n_top, GError **error);

/* Frees the device weights. NULL is ignored. */
void bln_cuda_model_free (BlnCudaModel *cm);

G_END_DECLS
