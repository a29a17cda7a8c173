/* model.h — loading a model and running it on the CPU.
 *
 * A BlnModel is the immutable part: hyper-parameters, weights (borrowed from
 * a GGUF mapping or an HF safetensors directory, converted where needed), the
 * tokenizer and the chat template. A BlnContext is one sequence's mutable
 * state: its KV cache and scratch buffers. Several contexts may share one
 * model; a context is used from one thread at a time.
 *
 * Architectures are data plus one forward function each (arch-llama.c for
 * llama and qwen2, arch-deepseek2.c for DeepSeek-V2/V3 with MLA and MoE).
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "tensor.h"
#include "cpu/cpu.h"
#include "sampler.h"

G_BEGIN_DECLS

typedef enum {
  BLN_ARCH_LLAMA,
  BLN_ARCH_QWEN2,
  BLN_ARCH_DEEPSEEK2,
} BlnArch;

typedef enum {
  BLN_ROPE_SCALING_NONE,
  BLN_ROPE_SCALING_LINEAR,
  BLN_ROPE_SCALING_YARN,
  BLN_ROPE_SCALING_LLAMA3,
} BlnRopeScaling;

typedef enum {
  BLN_GATING_SOFTMAX = 1,
  BLN_GATING_SIGMOID = 2,
} BlnGating;

/* Hyper-parameters, whatever file they came from. */
typedef struct {
  BlnArch arch;
  int n_vocab;
  int n_ctx_train;
  int n_embd;
  int n_layer;
  int n_head;
  int n_head_kv;
  int head_dim_k;          /* per-head query/key width (nope + rope for MLA) */
  int head_dim_v;          /* per-head value width */
  int n_ff;                /* dense feed-forward width */
  float norm_eps;

  /* rotary embedding */
  int rope_dim;            /* rotated dimensions per head (MLA: qk_rope_head_dim) */
  gboolean rope_neox;      /* pairs (i, i + d/2) when TRUE, (2i, 2i+1) otherwise */
  float rope_theta;
  BlnRopeScaling rope_scaling;
  float rope_factor;
  int rope_orig_ctx;
  float yarn_beta_fast, yarn_beta_slow;
  float yarn_mscale, yarn_mscale_all_dim; /* 0 when absent */
  float llama3_low_freq_factor, llama3_high_freq_factor;

  /* MLA (deepseek2) */
  int q_lora_rank;         /* 0: no q compression (V2-Lite) */
  int kv_lora_rank;
  int qk_nope_dim;
  int qk_rope_dim;

  /* MoE (deepseek2) */
  int n_expert;
  int n_expert_used;
  int n_expert_shared;
  int n_ff_expert;
  int n_layer_dense_lead;  /* first_k_dense_replace */
  float expert_weights_scale;  /* routed_scaling_factor */
  gboolean expert_weights_norm;
  BlnGating gating;
  int n_expert_groups;
  int n_expert_groups_used;

  gboolean tied_embeddings;
} BlnHParams;

typedef struct _BlnModel BlnModel;
typedef struct _BlnContext BlnContext;
typedef struct _BlnTokenizer BlnTokenizer;

typedef struct {
  /* Type to convert 2-D weights of an HF (safetensors) model to on load:
   * BLN_TYPE_F32 (default: keep F32/F16/BF16 as stored), BLN_TYPE_Q8_0,
   * BLN_TYPE_Q4_K or BLN_TYPE_Q6_K. Ignored for GGUF files. */
  BlnType hf_quant;
  /* Load the tokenizer (TRUE by default via bln_model_load()). */
  gboolean load_tokenizer;
} BlnModelOptions;

/* Loads a GGUF file or an HF model directory (config.json + safetensors).
 * Returns NULL with @error set when the file is unreadable, corrupt or of an
 * architecture or tensor type we do not support; nothing is left half-loaded. */
BlnModel *bln_model_load (const char *path, GError **error);
BlnModel *bln_model_load_with_options (const char *path, const BlnModelOptions *options,
                                       GError **error);
void bln_model_free (BlnModel *model);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnModel, bln_model_free)

const BlnHParams *bln_model_hparams (const BlnModel *model);
const char *bln_model_arch_name (const BlnModel *model);   /* "llama", "qwen2", "deepseek2" */
const char *bln_model_name (const BlnModel *model);        /* general.name or the path's basename */
const char *bln_model_path (const BlnModel *model);
/* The model's tokenizer, owned by the model; NULL if loaded without one. */
BlnTokenizer *bln_model_tokenizer (const BlnModel *model);
/* The chat template source (GGUF tokenizer.chat_template or
 * tokenizer_config.json), owned by the model; NULL when the model has none. */
const char *bln_model_chat_template (const BlnModel *model);

/* Weights: number of parameters and bytes they take in memory. */
int64_t bln_model_n_params (const BlnModel *model);
size_t bln_model_weight_bytes (const BlnModel *model);
/* Bytes of weights one decoded token reads: every weight tensor except the
 * token embeddings (of which it reads one row), counted once when tied to the
 * output. With bln_model_kv_bytes_per_token this gives the bandwidth ceiling
 * of batch-1 decode. MoE models: the routed experts count n_expert_used of
 * n_expert. */
size_t bln_model_decode_bytes (const BlnModel *model);
/* Bytes of KV cache one token takes (MLA: the latent only). */
size_t bln_model_kv_bytes_per_token (const BlnModel *model);
/* A summary of the tensor types: "q4_1: 169, f32: 61" (caller frees). */
char *bln_model_type_summary (const BlnModel *model);

/* A sequence context with room for @n_ctx tokens (0: the model's training
 * context, capped at 8192). @pool is borrowed and must outlive the context. */
BlnContext *bln_context_new (BlnModel *model, int n_ctx, BlnPool *pool, GError **error);
void bln_context_free (BlnContext *ctx);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnContext, bln_context_free)

typedef enum {
  BLN_DEVICE_CPU = 0,
  BLN_DEVICE_CUDA = 1,
} BlnDevice;

typedef struct {
  BlnDevice device;        /* where the context runs (BLN_DEVICE_CPU by default) */
  int gpu;                 /* CUDA device ordinal (0 by default) */
  /* KV cache element size on the GPU: 16 (F16, the default), 32 (F32,
   * slower, for checks against the CPU reference) or 8 (int8 with an F16
   * scale per 32 values, about half F16's bytes; llama / qwen2 with head
   * dims 64, 128 or 256, single-sequence contexts). Ignored on the CPU. */
  int kv_bits;
  /* Sliding attention window in tokens (0, the default: off). With W > 0
   * the token at position p attends only to positions (p - W, p], the W
   * most recent ones itself included, in every layer (HF transformers'
   * sliding-window rule); RoPE positions stay absolute. llama and qwen2, on
   * the CPU and on the GPU's paged pool (kv-cache.h); not on a single GPU
   * context (see bln_sliding_window_check). */
  int sliding_window;
} BlnContextOptions;

/* Whether @model can run with a sliding window of @window tokens (0: off,
 * always fine) on @device, in a paged KV pool (@paged) or a single context.
 * FALSE with BLN_ERROR_INVALID for a negative window or for a single GPU
 * context (its attention has no window; the message names the setting, so
 * the user can switch it off or choose another path), and with
 * BLN_ERROR_UNSUPPORTED for deepseek2 (MLA). */
gboolean bln_sliding_window_check (const BlnModel *model, int window, BlnDevice device,
                                   gboolean paged, GError **error);

/* Fills @opts with the defaults (CPU). */
void bln_context_options_init (BlnContextOptions *opts);

/* As bln_context_new, on the device @opts names, with its sliding window
 * (checked by bln_sliding_window_check before anything is allocated: on a
 * usable GPU a window fails with BLN_ERROR_INVALID; without one the failure
 * is BLN_ERROR_BACKEND / UNSUPPORTED as below, so the CPU fallback of
 * bln_context_new_on_device keeps the window). For BLN_DEVICE_CUDA the
 * model's weights are uploaded to the GPU on the first such call (they stay
 * there until the model is freed), after a memory plan that checks weights,
 * KV cache and scratch against the device's free memory: when they do not fit
 * the call fails with BLN_ERROR_NOMEM and a message saying what to change,
 * and nothing stays allocated. BLN_ERROR_UNSUPPORTED when this build has no
 * CUDA backend or the architecture does not run on the GPU yet,
 * BLN_ERROR_BACKEND when there is no usable GPU (the message says why): the
 * caller may fall back to the CPU. */
BlnContext *bln_context_new_with_options (BlnModel *model, int n_ctx, BlnPool *pool,
                                          const BlnContextOptions *opts, GError **error);

/* The device the context runs on. */
BlnDevice bln_context_device (const BlnContext *ctx);

/* Parses a device name for @opts: "cpu", "cuda" or "cuda:N" (GPU N), "auto"
 * (the GPU when this build has a CUDA backend and a usable GPU, else the
 * CPU) or NULL (= "auto"). FALSE with BLN_ERROR_INVALID for anything else. */
gboolean bln_device_parse (const char *name, BlnContextOptions *opts, GError **error);

/* bln_context_new_with_options, falling back to the CPU (with the same
 * sliding window) when the GPU cannot
 * be used: no CUDA backend in this build, no driver or device, or an
 * architecture the GPU path does not run yet. Then *@note (when not NULL)
 * receives a sentence saying why (free with g_free); it stays NULL otherwise.
 * A model that does not fit on the GPU is an error (BLN_ERROR_NOMEM with what
 * to change), not a fallback: the user asked for the GPU and should choose. */
BlnContext *bln_context_new_on_device (BlnModel *model, int n_ctx, BlnPool *pool,
                                       const BlnContextOptions *opts, char **note,
                                       GError **error);

int bln_context_n_ctx (const BlnContext *ctx);
/* Tokens already in the cache. */
int bln_context_n_past (const BlnContext *ctx);
/* Forgets cached tokens from position @n_keep on (0 clears everything). */
void bln_context_truncate (BlnContext *ctx, int n_keep);

/* Runs @n tokens at positions n_past .. n_past+n-1 and appends them to the
 * cache. When @logits is not NULL it receives the logits of the last token
 * (n_vocab floats), or of every token (n × n_vocab) when @all_logits is TRUE.
 * Fails (BLN_ERROR_INVALID) for an id outside the vocabulary or when the
 * context is full; the cache is unchanged then. */
gboolean bln_context_eval (BlnContext *ctx, const int32_t *ids, int n,
                           float *logits, gboolean all_logits, GError **error);

/* Runs @n tokens as bln_context_eval does, then picks the next token from
 * the last one's logits with @sampler, as bln_sampler_sample (sampler,
 * logits, @top, @n_top) would (same token for the same seed; @top, when not
 * NULL, receives n_top + 1 entries). The caller records the token with
 * bln_sampler_accept, as with the CPU sampler. On a GPU context the logits
 * never leave the device: the sampler runs there and only the id and the
 * requested logprobs come back. FALSE with @error as bln_context_eval. */
gboolean bln_context_eval_sample (BlnContext *ctx, const int32_t *ids, int n,
                                  BlnSampler *sampler, int32_t *id_out, BlnLogprob *top,
                                  int n_top, GError **error);

G_END_DECLS
