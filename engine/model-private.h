/* model-private.h — what model.c shares with the architecture files.
 *
 * Weights are looked up by their GGUF names (llama.cpp's naming), whatever
 * file they came from: model.c maps HF names onto them, so the forward
 * functions see one layout.
 */
#pragma once

#include "model.h"
#include "gguf.h"

G_BEGIN_DECLS

#define BLN_MAX_EXPERTS 512

typedef struct {
  const BlnTensor *attn_norm;
  /* llama / qwen2 */
  const BlnTensor *wq, *wk, *wv, *wo;
  const BlnTensor *bq, *bk, *bv;
  /* MLA */
  const BlnTensor *wq_a, *q_a_norm, *wq_b;
  const BlnTensor *wkv_a, *kv_a_norm;
  BlnTensor *k_b;          /* n_head views, each kv_lora_rank rows of qk_nope_dim (W_UK^T) */
  BlnTensor *v_b;          /* n_head views, each v_head_dim rows of kv_lora_rank (W_UV) */
  /* dense feed-forward */
  const BlnTensor *ffn_norm;
  const BlnTensor *ffn_gate, *ffn_up, *ffn_down;
  /* MoE */
  const BlnTensor *ffn_gate_inp;   /* router, F32 */
  const BlnTensor *exp_probs_b;    /* correction bias, F32, may be NULL */
  BlnTensor *exp_gate, *exp_up, *exp_down;   /* n_expert views each */
  const BlnTensor *shexp_gate, *shexp_up, *shexp_down;
} BlnLayer;

typedef struct _BlnHfDir BlnHfDir;

struct _BlnModel {
  char *path;
  char *name;
  BlnHParams hp;
  const char *arch_name;

  BlnGguf *gguf;             /* owned, when loaded from GGUF */
  BlnHfDir *hf;              /* owned, when loaded from an HF directory */

  GHashTable *tensors;       /* GGUF name -> BlnTensor * (owned) */
  GPtrArray *extra;          /* BlnTensor * made on load (views, conversions), owned */

  const BlnTensor *tok_embd;
  const BlnTensor *output_norm;
  const BlnTensor *output;
  const BlnTensor *rope_freqs; /* llama3-style per-frequency divisors, may be NULL */
  BlnLayer *layers;

  float *rope_inv_freq;      /* rope_dim / 2 inverse frequencies */
  float rope_attn_factor;    /* multiplies cos and sin (YaRN) */
  float attn_scale;          /* softmax scale */

  BlnTokenizer *tokenizer;
  char *chat_template;

  /* The weights on the GPU (engine/cuda/), uploaded when the first CUDA
   * context is made; guarded by cuda_lock. NULL on the CPU. */
  struct _BlnCudaModel *cuda;
  GMutex cuda_lock;
};

typedef struct {
  BlnModel *model;
  int n_ctx;
  int n_past;
  BlnPool *pool;

  /* KV cache, F32: [layer][pos][kv_width] for k and v (MLA: latent in k only) */
  float *k_cache;
  float *v_cache;
  size_t k_width;
  size_t v_width;

  /* the CUDA state (engine/cuda/forward.c) of a context on the GPU: its KV
   * cache and scratch live there, and k_cache / v_cache above are NULL */
  struct _BlnCudaCtx *cuda;

  /* scratch, sized for the largest batch seen so far */
  int scratch_tokens;
  float *buf[12];
  size_t buf_len[12];
} BlnContextState;

struct _BlnContext {
  BlnContextState s;
};

/* Architecture entry points. */
gboolean bln_arch_llama_forward (BlnContext *ctx, const int32_t *ids, int n,
                                 float *logits, gboolean all_logits, GError **error);
gboolean bln_arch_deepseek2_forward (BlnContext *ctx, const int32_t *ids, int n,
                                     float *logits, gboolean all_logits, GError **error);

/* Shared helpers (model.c). */
float *bln_ctx_buf (BlnContext *ctx, int slot, size_t n_floats, GError **error);
void bln_rope_apply (const BlnModel *model, float *v, int n_pairs_dim, int pos);
gboolean bln_linear (BlnContext *ctx, const BlnTensor *w, const BlnTensor *b,
                     const float *x, int n_tok, float *y, GError **error);
gboolean bln_swiglu (BlnContext *ctx, const BlnTensor *gate, const BlnTensor *up,
                     const BlnTensor *down, const float *x, int n, float *y, GError **error);
gboolean bln_output_logits (BlnContext *ctx, float *x, int n, float *logits,
                            gboolean all_logits, GError **error);

G_END_DECLS
