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

  /* the sliding attention window of every batch the context runs (0: off) */
  int window;

  /* the last row's logits of bln_context_eval_sample on the CPU (n_vocab) */
  float *sample_logits;

  /* scratch, sized for the largest batch seen so far */
  int scratch_tokens;
  float *buf[12];
  size_t buf_len[12];
} BlnContextState;

struct _BlnContext {
  BlnContextState s;
};

/* Where one sequence's cached K/V rows live (see kv-cache.h). The cache is
 * cut into blocks of @block_size positions; a block holds every layer's rows
 * for its positions, [layer][slot][width]. Position p of layer l is row
 *   (blocks[p / block_size] * n_layer + l) * block_size + p % block_size
 * of @k (k_width floats a row) and of @v (v_width floats; NULL for MLA,
 * whose latent lives in @k alone). A BlnContext's own contiguous cache is
 * the special case of one block of n_ctx positions.
 *
 * The 8-bit CPU pool (llama / qwen2 only) leaves @k and @v NULL and sets
 * @k8 / @v8 instead: row r is k_width int8 values at k8 + r * k_width, with
 * one float scale per group of @gk values at ks + r * (k_width / gk) (V
 * likewise with @gv); a value is q * scale. Groups never straddle heads
 * (bln_kv_q8_group). Positional initialisers of the first four fields leave
 * these NULL / 0 (the F32 layout). */
typedef struct {
  float *k;
  float *v;
  const int32_t *blocks;
  int block_size;
  int8_t *k8, *v8;
  float *ks, *vs;
  int gk, gv;
} BlnKvView;

/* Values per scale of the 8-bit KV cache, at most, and the largest head dim
 * it takes (the attention loops dequantise one head's row on the stack). */
#define BLN_KV_Q8_GROUP 32
#define BLN_KV_Q8_MAX_HEAD_DIM 1024

/* The group of the 8-bit cache for heads of @dim values: the largest divisor
 * of @dim that is at most BLN_KV_Q8_GROUP (32 for head dims 64, 128, ...;
 * the whole head for the tiny test models' 12 or 16). */
int bln_kv_q8_group (int dim);
/* Quantises @n values @x (a multiple of @group) into @q and n / group
 * @scales: scale = max |x| / 127 per group, q = round (x / scale), the
 * rounding of engine/quant.c's Q8_0 (there with an F16 scale). */
void bln_kv_q8_store (int8_t *q, float *scales, const float *x, size_t n, int group);
/* The inverse: @y[i] = q[i] * the scale of its group. */
void bln_kv_q8_load (float *y, const int8_t *q, const float *scales, size_t n, int group);

static inline size_t
bln_kv_row (const BlnKvView *kv, int n_layer, int layer, int pos)
{
  return ((size_t) kv->blocks[pos / kv->block_size] * n_layer + layer) * kv->block_size
         + pos % kv->block_size;
}

/* One forward pass over tokens of one or more sequences. Token i has id
 * ids[i], position pos[i] in sequence seq[i] (an index into @kv); a
 * sequence's tokens in the batch have consecutive positions, and the cache
 * already holds its positions before the first of them. Every token's K/V
 * rows are written to its sequence's view, then each token attends over
 * positions 0..pos[i] of its own sequence (pos[i] - window + 1 .. pos[i]
 * with a sliding window). @max_len is max (pos[i]) + 1.
 * Logits are computed for the tokens out_rows[0..n_out) into @logits
 * (n_out × n_vocab), when @logits is not NULL. The caller checks ids, room
 * and block tables before the call. */
typedef struct {
  int n_tokens;
  const int32_t *ids;
  const int32_t *pos;
  const int32_t *seq;
  const BlnKvView *kv;
  int n_seqs;
  int max_len;
  const int32_t *out_rows;
  int n_out;
  float *logits;
  int window;              /* sliding attention window: the token at position p attends to
                            * positions (p - window, p] only; 0: to all of 0..p */
  /* GPU only, may be NULL: out rows j with keep[j] stay on the device (kept
   * rows in out order; bln_cuda_batch_compact) instead of being copied to
   * logits row j (left unwritten). The CPU forward ignores it. */
  const gboolean *keep;
} BlnBatch;

/* The first position token @t of @b attends to (bln_batch's window rule). */
static inline int
bln_batch_first_pos (const BlnBatch *b, int t)
{
  return b->window > 0 ? MAX (0, b->pos[t] - b->window + 1) : 0;
}

/* Architecture entry points: one forward pass of @batch, with @ctx's
 * scratch buffers and thread pool (its own cache is used only through the
 * batch's views). They do not touch ctx->s.n_past. */
gboolean bln_arch_llama_forward (BlnContext *ctx, const BlnBatch *batch, GError **error);
gboolean bln_arch_deepseek2_forward (BlnContext *ctx, const BlnBatch *batch, GError **error);

/* Runs @batch with the model's architecture (CPU). */
gboolean bln_model_forward_batch (BlnContext *ctx, const BlnBatch *batch, GError **error);

/* A context with scratch buffers only (no KV cache of its own): the
 * workspace of batched evaluation over a paged cache (kv-cache.c). */
BlnContext *bln_context_new_workspace (BlnModel *model, BlnPool *pool);

/* Shared helpers (model.c). */
float *bln_ctx_buf (BlnContext *ctx, int slot, size_t n_floats, GError **error);
void bln_rope_apply (const BlnModel *model, float *v, int n_pairs_dim, int pos);
gboolean bln_linear (BlnContext *ctx, const BlnTensor *w, const BlnTensor *b,
                     const float *x, int n_tok, float *y, GError **error);
gboolean bln_swiglu (BlnContext *ctx, const BlnTensor *gate, const BlnTensor *up,
                     const BlnTensor *down, const float *x, int n, float *y, GError **error);
/* Final norm and output projection of rows @rows[0..n_rows) of @x into
 * @logits (n_rows × n_vocab); nothing when @logits is NULL. */
gboolean bln_output_logits_rows (BlnContext *ctx, const float *x, const int32_t *rows,
                                 int n_rows, float *logits, GError **error);

G_END_DECLS
