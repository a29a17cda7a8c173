/* model.c — loading models from GGUF files and HF directories, and the
 * pieces of the forward pass that every architecture shares.
 *
 * Loading is all-or-nothing: hyper-parameters are read and checked first,
 * then every tensor the architecture needs is looked up and its shape checked
 * against them, so a forward pass never reads outside a tensor. A file that
 * does not match gets an error naming the tensor or key at fault.
 */
#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "model-private.h"
#include "hfdir.h"
#include "tokenizer.h"
#include "baleen-config.h"
#if BALEEN_HAVE_CUDA
#include "cuda/cuda.h"
#include "cuda/forward.h"
#endif

/* ---------------------------------------------------------------------- */
/* tensors                                                                 */

static void
tensor_free (gpointer p)
{
  BlnTensor *t = p;

  if (t == NULL)
    return;
  bln_tensor_clear (t);
  g_free (t);
}

/* A float copy of @src (any loadable type), owned by the result. */
static BlnTensor *
tensor_to_f32 (const BlnTensor *src, GError **error)
{
  int64_t n = bln_tensor_nelements (src);
  int64_t rows = n / src->ne[0];
  size_t row_bytes = bln_tensor_row_bytes (src);
  BlnTensor *t;
  float *data;
  int64_t r;

  data = g_try_malloc ((size_t) n * sizeof (float));
  if (data == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "out of memory converting tensor '%s' to f32", src->name);
      return NULL;
    }
  for (r = 0; r < rows; r++)
    if (!bln_dequantize_row (src->type, (const guint8 *) src->data + r * row_bytes,
                             data + r * src->ne[0], src->ne[0]))
      {
        g_free (data);
        g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                     "tensor '%s': type %s cannot be converted", src->name,
                     bln_type_name (src->type));
        return NULL;
      }
  t = g_new0 (BlnTensor, 1);
  t->name = g_strdup (src->name);
  t->type = BLN_TYPE_F32;
  t->n_dims = src->n_dims;
  memcpy (t->ne, src->ne, sizeof t->ne);
  t->data = data;
  t->owned = data;
  t->nbytes = (size_t) n * sizeof (float);
  return t;
}

/* Quantises the 2-D float/half tensor @src to @type (rows must be whole
 * blocks; otherwise a float copy is kept). */
static BlnTensor *
tensor_quantize (const BlnTensor *src, BlnType type, GError **error)
{
  const BlnTypeInfo *info = bln_type_info (type);
  size_t row_bytes, src_row_bytes = bln_tensor_row_bytes (src);
  int64_t rows = bln_tensor_nelements (src) / src->ne[0];
  g_autofree float *row = NULL;
  BlnTensor *t;
  guint8 *data;
  int64_t r;

  /* Rows that are not whole k-quant super-blocks (256) fall back to Q8_0
   * blocks (32), then to float. */
  if (info != NULL && src->ne[0] % info->block_size != 0 && src->ne[0] % BLN_QK == 0)
    return tensor_quantize (src, BLN_TYPE_Q8_0, error);
  if (info == NULL || src->ne[0] % info->block_size != 0
      || !bln_type_row_bytes (type, src->ne[0], &row_bytes))
    return tensor_to_f32 (src, error);
  data = g_try_malloc (row_bytes * rows);
  row = g_try_new (float, src->ne[0]);
  if (data == NULL || row == NULL)
    {
      g_free (data);
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "out of memory quantising tensor '%s'", src->name);
      return NULL;
    }
  for (r = 0; r < rows; r++)
    {
      bln_dequantize_row (src->type, (const guint8 *) src->data + r * src_row_bytes, row,
                          src->ne[0]);
      if (!bln_quantize_row (type, row, data + r * row_bytes, src->ne[0]))
        {
          g_free (data);
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "cannot quantise to %s", bln_type_name (type));
          return NULL;
        }
    }
  t = g_new0 (BlnTensor, 1);
  t->name = g_strdup (src->name);
  t->type = type;
  t->n_dims = src->n_dims;
  memcpy (t->ne, src->ne, sizeof t->ne);
  t->data = data;
  t->owned = data;
  t->nbytes = row_bytes * rows;
  return t;
}

/* ---------------------------------------------------------------------- */
/* hyper-parameters from GGUF                                              */

static gboolean
gguf_int (BlnGguf *g, const char *arch, const char *key, int64_t *out, gboolean required,
          int64_t min, int64_t max, GError **error)
{
  g_autofree char *full = g_strdup_printf ("%s.%s", arch, key);

  if (!bln_gguf_get_int (g, full, out))
    {
      if (required)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF metadata key '%s' is missing or not an integer", full);
          return FALSE;
        }
      return TRUE;
    }
  if (*out < min || *out > max)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF metadata key '%s' = %" G_GINT64_FORMAT " is outside [%" G_GINT64_FORMAT
                   ", %" G_GINT64_FORMAT "]", full, *out, min, max);
      return FALSE;
    }
  return TRUE;
}

static float
gguf_float (BlnGguf *g, const char *arch, const char *key, float def)
{
  g_autofree char *full = g_strdup_printf ("%s.%s", arch, key);
  double v;

  if (bln_gguf_get_float (g, full, &v) && isfinite (v))
    return (float) v;
  return def;
}

#define LIMIT_DIM (1 << 20)

static gboolean
hparams_from_gguf (BlnModel *m, GError **error)
{
  BlnGguf *g = m->gguf;
  BlnHParams *hp = &m->hp;
  const char *arch = bln_gguf_get_string (g, "general.architecture", NULL);
  const char *s;
  int64_t v;
  BlnGgufType et;
  uint64_t n;

  if (arch == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF metadata has no general.architecture");
      return FALSE;
    }
  if (g_str_equal (arch, "llama"))
    hp->arch = BLN_ARCH_LLAMA, m->arch_name = "llama";
  else if (g_str_equal (arch, "qwen2"))
    hp->arch = BLN_ARCH_QWEN2, m->arch_name = "qwen2";
  else if (g_str_equal (arch, "deepseek2"))
    hp->arch = BLN_ARCH_DEEPSEEK2, m->arch_name = "deepseek2";
  else
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "architecture '%s' is not supported (llama, qwen2 and deepseek2 are)", arch);
      return FALSE;
    }

#define INT(key, field, req, lo, hi)                                           \
  G_STMT_START {                                                               \
    v = 0;                                                                     \
    if (!gguf_int (g, arch, key, &v, req, lo, hi, error))                      \
      return FALSE;                                                            \
    if (v != 0 || req)                                                         \
      hp->field = (int) v;                                                     \
  } G_STMT_END

  INT ("context_length", n_ctx_train, FALSE, 1, 1 << 24);
  INT ("embedding_length", n_embd, TRUE, 1, LIMIT_DIM);
  INT ("block_count", n_layer, TRUE, 1, 4096);
  INT ("feed_forward_length", n_ff, hp->arch != BLN_ARCH_DEEPSEEK2, 1, LIMIT_DIM);
  INT ("attention.head_count", n_head, TRUE, 1, 4096);
  hp->n_head_kv = hp->n_head;
  INT ("attention.head_count_kv", n_head_kv, FALSE, 1, 4096);
  if (hp->n_head % hp->n_head_kv != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "head_count %d is not a multiple of head_count_kv %d", hp->n_head,
                   hp->n_head_kv);
      return FALSE;
    }
  hp->head_dim_k = hp->n_embd / hp->n_head;
  hp->head_dim_v = hp->head_dim_k;
  INT ("attention.key_length", head_dim_k, FALSE, 1, 65536);
  INT ("attention.value_length", head_dim_v, FALSE, 1, 65536);
  hp->norm_eps = gguf_float (g, arch, "attention.layer_norm_rms_epsilon", 1e-5f);
  hp->rope_theta = gguf_float (g, arch, "rope.freq_base", 10000.0f);
  hp->rope_dim = hp->head_dim_k;
  INT ("rope.dimension_count", rope_dim, FALSE, 2, 65536);
  INT ("vocab_size", n_vocab, FALSE, 1, 1 << 24);

  {
    g_autofree char *k = g_strdup_printf ("%s.rope.scaling.type", arch);
    s = bln_gguf_get_string (g, k, NULL);
  }
  hp->rope_factor = gguf_float (g, arch, "rope.scaling.factor", 0.0f);
  if (hp->rope_factor == 0.0f)
    {
      float scale = gguf_float (g, arch, "rope.scale_linear", 0.0f);
      if (scale > 0.0f)
        {
          hp->rope_factor = scale;
          s = "linear";
        }
    }
  hp->rope_orig_ctx = hp->n_ctx_train;
  INT ("rope.scaling.original_context_length", rope_orig_ctx, FALSE, 1, 1 << 24);
  hp->yarn_beta_fast = gguf_float (g, arch, "rope.scaling.yarn_beta_fast", 32.0f);
  hp->yarn_beta_slow = gguf_float (g, arch, "rope.scaling.yarn_beta_slow", 1.0f);
  if (s != NULL && hp->rope_factor > 0.0f && hp->rope_factor != 1.0f)
    {
      if (g_str_equal (s, "linear"))
        hp->rope_scaling = BLN_ROPE_SCALING_LINEAR;
      else if (g_str_equal (s, "yarn"))
        {
          /* llama.cpp's converter stores 0.1 * mscale_all_dim as the log multiplier
           * and does not store mscale: DeepSeek configs have mscale == mscale_all_dim. */
          float mul = gguf_float (g, arch, "rope.scaling.yarn_log_multiplier", 0.0f);
          hp->rope_scaling = BLN_ROPE_SCALING_YARN;
          hp->yarn_mscale = hp->yarn_mscale_all_dim = mul / 0.1f;
        }
      else if (!g_str_equal (s, "none"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "rope scaling type '%s' is not supported", s);
          return FALSE;
        }
    }

  hp->rope_neox = hp->arch == BLN_ARCH_QWEN2;

  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    {
      int64_t mla_k = 0, mla_v = 0;

      INT ("attention.q_lora_rank", q_lora_rank, FALSE, 1, LIMIT_DIM);
      INT ("attention.kv_lora_rank", kv_lora_rank, TRUE, 1, LIMIT_DIM);
      INT ("expert_count", n_expert, FALSE, 1, BLN_MAX_EXPERTS);
      INT ("expert_used_count", n_expert_used, FALSE, 1, BLN_MAX_EXPERTS);
      INT ("expert_shared_count", n_expert_shared, FALSE, 1, BLN_MAX_EXPERTS);
      INT ("expert_feed_forward_length", n_ff_expert, FALSE, 1, LIMIT_DIM);
      INT ("leading_dense_block_count", n_layer_dense_lead, FALSE, 0, 4096);
      hp->expert_weights_scale = gguf_float (g, arch, "expert_weights_scale", 1.0f);
      hp->expert_weights_norm = FALSE;
      {
        g_autofree char *k = g_strdup_printf ("%s.expert_weights_norm", arch);
        gboolean b;
        if (bln_gguf_get_bool (g, k, &b))
          hp->expert_weights_norm = b;
      }
      v = BLN_GATING_SOFTMAX;
      if (!gguf_int (g, arch, "expert_gating_func", &v, FALSE, 1, 2, error))
        return FALSE;
      hp->gating = (BlnGating) v;
      INT ("expert_group_count", n_expert_groups, FALSE, 1, BLN_MAX_EXPERTS);
      INT ("expert_group_used_count", n_expert_groups_used, FALSE, 1, BLN_MAX_EXPERTS);
      if (!gguf_int (g, arch, "attention.key_length_mla", &mla_k, FALSE, 1, 65536, error)
          || !gguf_int (g, arch, "attention.value_length_mla", &mla_v, FALSE, 1, 65536, error))
        return FALSE;
      if (mla_k > 0)
        hp->head_dim_k = (int) mla_k;
      if (mla_v > 0)
        hp->head_dim_v = (int) mla_v;
      hp->qk_rope_dim = hp->rope_dim;
      hp->qk_nope_dim = hp->head_dim_k - hp->qk_rope_dim;
      if (hp->qk_nope_dim <= 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "deepseek2: key_length %d must exceed rope.dimension_count %d",
                       hp->head_dim_k, hp->qk_rope_dim);
          return FALSE;
        }
      hp->rope_neox = FALSE;
    }
#undef INT

  if (hp->n_vocab == 0)
    {
      if (!bln_gguf_get_array (g, "tokenizer.ggml.tokens", &et, &n) || n == 0 || n > (1 << 24))
        {
          const BlnGgufTensor *te = bln_gguf_find_tensor (g, "token_embd.weight");
          if (te == NULL || te->n_dims < 2)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                           "cannot tell the vocabulary size: no tokenizer.ggml.tokens");
              return FALSE;
            }
          n = (uint64_t) te->ne[1];
        }
      hp->n_vocab = (int) n;
    }
  if (hp->n_ctx_train == 0)
    hp->n_ctx_train = 4096;
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* hyper-parameters from an HF config.json                                 */

static gboolean
hparams_from_hf (BlnModel *m, GError **error)
{
  BlnHParams *hp = &m->hp;
  JsonObject *c = bln_hfdir_config (m->hf);
  const char *mt = json_object_get_string_member_with_default (c, "model_type", "");
  JsonObject *rs = NULL;

  if (g_str_equal (mt, "llama") || g_str_equal (mt, "mistral"))
    hp->arch = BLN_ARCH_LLAMA, m->arch_name = "llama";
  else if (g_str_equal (mt, "qwen2"))
    hp->arch = BLN_ARCH_QWEN2, m->arch_name = "qwen2";
  else if (g_str_equal (mt, "deepseek_v2") || g_str_equal (mt, "deepseek_v3"))
    hp->arch = BLN_ARCH_DEEPSEEK2, m->arch_name = "deepseek2";
  else
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "config.json model_type '%s' is not supported "
                   "(llama, qwen2, deepseek_v2 and deepseek_v3 are)", mt);
      return FALSE;
    }

#define I(key, def) ((int) json_object_get_int_member_with_default (c, key, def))
#define F(obj, key, def) ((float) json_object_get_double_member_with_default (obj, key, def))
  hp->n_vocab = I ("vocab_size", 0);
  hp->n_ctx_train = I ("max_position_embeddings", 4096);
  hp->n_embd = I ("hidden_size", 0);
  hp->n_layer = I ("num_hidden_layers", 0);
  hp->n_head = I ("num_attention_heads", 0);
  hp->n_head_kv = I ("num_key_value_heads", hp->n_head);
  hp->n_ff = I ("intermediate_size", 0);
  hp->norm_eps = F (c, "rms_norm_eps", 1e-6);
  hp->tied_embeddings = json_object_get_boolean_member_with_default (c, "tie_word_embeddings",
                                                                      FALSE);
  if (hp->n_vocab <= 0 || hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0
      || hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv != 0 || hp->n_embd > LIMIT_DIM
      || hp->n_layer > 4096 || hp->n_vocab > (1 << 24) || hp->n_ff < 0 || hp->n_ff > LIMIT_DIM)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "config.json: vocab_size, hidden_size, num_hidden_layers, "
                   "num_attention_heads or num_key_value_heads is missing or invalid");
      return FALSE;
    }
  hp->head_dim_k = I ("head_dim", hp->n_embd / hp->n_head);
  hp->head_dim_v = hp->head_dim_k;
  hp->rope_dim = hp->head_dim_k;

  /* rope_theta lives at the top level (transformers 4) or inside
   * rope_parameters (transformers 5); rope_scaling is the older name. */
  if (json_object_has_member (c, "rope_scaling")
      && JSON_NODE_HOLDS_OBJECT (json_object_get_member (c, "rope_scaling")))
    rs = json_object_get_object_member (c, "rope_scaling");
  else if (json_object_has_member (c, "rope_parameters")
           && JSON_NODE_HOLDS_OBJECT (json_object_get_member (c, "rope_parameters")))
    rs = json_object_get_object_member (c, "rope_parameters");
  hp->rope_theta = F (c, "rope_theta", rs ? F (rs, "rope_theta", 10000.0) : 10000.0);
  if (rs != NULL)
    {
      const char *type = json_object_get_string_member_with_default (
          rs, "rope_type", json_object_get_string_member_with_default (rs, "type", "default"));
      hp->rope_factor = F (rs, "factor", 1.0);
      hp->rope_orig_ctx = (int) json_object_get_int_member_with_default (
          rs, "original_max_position_embeddings", hp->n_ctx_train);
      if (g_str_equal (type, "linear"))
        hp->rope_scaling = BLN_ROPE_SCALING_LINEAR;
      else if (g_str_equal (type, "yarn"))
        {
          hp->rope_scaling = BLN_ROPE_SCALING_YARN;
          hp->yarn_beta_fast = F (rs, "beta_fast", 32.0);
          hp->yarn_beta_slow = F (rs, "beta_slow", 1.0);
          hp->yarn_mscale = F (rs, "mscale", 0.0);
          hp->yarn_mscale_all_dim = F (rs, "mscale_all_dim", 0.0);
        }
      else if (g_str_equal (type, "llama3"))
        {
          hp->rope_scaling = BLN_ROPE_SCALING_LLAMA3;
          hp->llama3_low_freq_factor = F (rs, "low_freq_factor", 1.0);
          hp->llama3_high_freq_factor = F (rs, "high_freq_factor", 4.0);
        }
      else if (!g_str_equal (type, "default"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "config.json: rope type '%s' is not supported", type);
          return FALSE;
        }
    }
  /* HF llama and qwen2 rotate the two halves of each head (rotate_half). */
  hp->rope_neox = TRUE;

  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    {
      const char *scoring = json_object_get_string_member_with_default (c, "scoring_func",
                                                                         NULL);
      const char *topk_method = json_object_get_string_member_with_default (c, "topk_method",
                                                                             "");

      hp->q_lora_rank = I ("q_lora_rank", 0);
      hp->kv_lora_rank = I ("kv_lora_rank", 0);
      hp->qk_nope_dim = I ("qk_nope_head_dim", 0);
      hp->qk_rope_dim = I ("qk_rope_head_dim", 0);
      hp->head_dim_v = I ("v_head_dim", 0);
      hp->head_dim_k = hp->qk_nope_dim + hp->qk_rope_dim;
      hp->rope_dim = hp->qk_rope_dim;
      hp->n_expert = I ("n_routed_experts", 0);
      hp->n_expert_used = I ("num_experts_per_tok", 0);
      hp->n_expert_shared = I ("n_shared_experts", 0);
      hp->n_ff_expert = I ("moe_intermediate_size", 0);
      hp->n_layer_dense_lead = I ("first_k_dense_replace", 0);
      hp->expert_weights_scale = F (c, "routed_scaling_factor", 1.0);
      hp->expert_weights_norm = json_object_get_boolean_member_with_default (c, "norm_topk_prob",
                                                                             FALSE);
      hp->n_expert_groups = I ("n_group", 1);
      hp->n_expert_groups_used = I ("topk_group", 1);
      if (g_str_equal (mt, "deepseek_v3"))
        hp->gating = (scoring == NULL || g_str_equal (scoring, "sigmoid"))
                     ? BLN_GATING_SIGMOID : BLN_GATING_SOFTMAX;
      else
        {
          hp->gating = (scoring != NULL && g_str_equal (scoring, "sigmoid"))
                       ? BLN_GATING_SIGMOID : BLN_GATING_SOFTMAX;
          /* V2's "greedy" ignores the groups; only group_limited_greedy uses them. */
          if (!g_str_equal (topk_method, "group_limited_greedy"))
            hp->n_expert_groups = hp->n_expert_groups_used = 1;
        }
      /* DeepSeek lays its rotary pairs out interleaved unless told otherwise. */
      hp->rope_neox = !json_object_get_boolean_member_with_default (c, "rope_interleave", TRUE);
      if (hp->kv_lora_rank <= 0 || hp->qk_nope_dim <= 0 || hp->qk_rope_dim <= 0
          || hp->head_dim_v <= 0 || hp->n_expert < 0 || hp->n_expert > BLN_MAX_EXPERTS
          || hp->n_expert_used < 0 || hp->n_expert_used > hp->n_expert)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "config.json: invalid MLA or MoE dimensions");
          return FALSE;
        }
    }
#undef I
#undef F
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* tensor lookup with shape checks                                         */

/* Looks up a weight by GGUF name, or by @hf_name in an HF directory
 * ("%d" in both is the layer index). */
static const BlnTensor *
lookup (BlnModel *m, const char *gguf_name, const char *hf_name)
{
  const BlnTensor *t = g_hash_table_lookup (m->tensors, gguf_name);

  if (t != NULL || m->hf == NULL || hf_name == NULL)
    return t;
  return bln_hfdir_find_tensor (m->hf, hf_name);
}

/* The formats are the GGUF/HF name patterns written in this file. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static const BlnTensor *
get (BlnModel *m, int layer, const char *gguf_fmt, const char *hf_fmt,
     int64_t ne0, int64_t ne1, int64_t ne2, gboolean required, GError **error)
{
  g_autofree char *gn = g_strdup_printf (gguf_fmt, layer);
  g_autofree char *hn = hf_fmt ? g_strdup_printf (hf_fmt, layer) : NULL;
  const BlnTensor *t = lookup (m, gn, hn);
  const BlnTypeInfo *info;
  int64_t want[3] = { ne0, ne1, ne2 };
  int d;

  if (t == NULL)
    {
      if (required)
        g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "tensor '%s' is missing",
                     hn != NULL && m->hf != NULL ? hn : gn);
      return NULL;
    }
  info = bln_type_info (t->type);
  if (info == NULL || !info->can_load)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "tensor '%s' has type %s, which cannot be used", t->name,
                   bln_type_name (t->type));
      return NULL;
    }
  for (d = 0; d < 3; d++)
    if (want[d] >= 0 && t->ne[d] != want[d])
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                     "tensor '%s' has shape [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT ", %"
                     G_GINT64_FORMAT "], expected [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                     ", %" G_GINT64_FORMAT "] (-1 = any)", t->name, t->ne[0], t->ne[1],
                     t->ne[2], ne0, ne1, ne2);
        return NULL;
      }
  return t;
}
#pragma GCC diagnostic pop

/* Makes @t a float tensor kept by the model (norm weights, biases, router). */
static const BlnTensor *
as_f32 (BlnModel *m, const BlnTensor *t, GError **error)
{
  BlnTensor *c;

  if (t == NULL || t->type == BLN_TYPE_F32)
    return t;
  c = tensor_to_f32 (t, error);
  if (c != NULL)
    g_ptr_array_add (m->extra, c);
  return c;
}

/* For HF models loaded with a quantisation type: converts a 2-D weight. */
static const BlnTensor *
maybe_quant (BlnModel *m, const BlnTensor *t, BlnType type, GError **error)
{
  BlnTensor *c;

  if (t == NULL || m->hf == NULL || type == BLN_TYPE_F32 || type == t->type)
    return t;
  c = tensor_quantize (t, type, error);
  if (c != NULL)
    g_ptr_array_add (m->extra, c);
  return c;
}

/* Splits a 3-D tensor [ne0, ne1, n] into n 2-D views of [ne0, rows] starting
 * at row @row0 of each slice. */
static BlnTensor *
split_views (BlnModel *m, const BlnTensor *t, int n, int64_t row0, int64_t rows)
{
  size_t row_bytes = bln_tensor_row_bytes (t);
  BlnTensor *views = g_new0 (BlnTensor, n);
  int i;

  for (i = 0; i < n; i++)
    {
      views[i].name = g_strdup_printf ("%s[%d]", t->name, i);
      views[i].type = t->type;
      views[i].n_dims = 2;
      views[i].ne[0] = t->ne[0];
      views[i].ne[1] = rows;
      views[i].ne[2] = views[i].ne[3] = 1;
      views[i].data = (const guint8 *) t->data + ((size_t) i * t->ne[1] + row0) * row_bytes;
      views[i].nbytes = rows * row_bytes;
    }
  return views;
}

static void
free_views (BlnTensor *views, int n)
{
  int i;

  if (views == NULL)
    return;
  for (i = 0; i < n; i++)
    g_free (views[i].name);
  g_free (views);
}

/* MoE experts of layer @il: GGUF stacks them in 3-D tensors; HF files have
 * one tensor per expert, or (transformers 5) a fused gate_up_proj. */
static gboolean
load_experts (BlnModel *m, BlnLayer *L, int il, BlnType q, GError **error)
{
  const BlnHParams *hp = &m->hp;
  int E = hp->n_expert, ff = hp->n_ff_expert, d = hp->n_embd, e;
  const BlnTensor *gate, *up, *down, *gate_up;

  gate = get (m, il, "blk.%d.ffn_gate_exps.weight", NULL, d, ff, E, FALSE, error);
  up = get (m, il, "blk.%d.ffn_up_exps.weight", NULL, d, ff, E, FALSE, error);
  down = get (m, il, "blk.%d.ffn_down_exps.weight", NULL, ff, d, E, FALSE, error);
  if (gate && up && down)
    {
      L->exp_gate = split_views (m, gate, E, 0, ff);
      L->exp_up = split_views (m, up, E, 0, ff);
      L->exp_down = split_views (m, down, E, 0, d);
      return TRUE;
    }
  if (m->hf == NULL)
    {
      if (error != NULL && *error == NULL)
        g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                     "layer %d: expert tensors ffn_{gate,up,down}_exps are missing", il);
      return FALSE;
    }
  g_clear_error (error);

  gate_up = get (m, il, "-", "model.layers.%d.mlp.experts.gate_up_proj", d, 2 * ff, E, FALSE,
                 error);
  if (gate_up != NULL)
    {
      down = get (m, il, "-", "model.layers.%d.mlp.experts.down_proj", ff, d, E, TRUE, error);
      if (down == NULL)
        return FALSE;
      if (q != BLN_TYPE_F32)
        {
          /* quantise the stacked tensors whole, then view them */
          gate_up = maybe_quant (m, gate_up, q, error);
          down = maybe_quant (m, down, q, error);
          if (gate_up == NULL || down == NULL)
            return FALSE;
        }
      L->exp_gate = g_new0 (BlnTensor, E);
      L->exp_up = g_new0 (BlnTensor, E);
      {
        BlnTensor *g2 = split_views (m, gate_up, E, 0, ff);
        BlnTensor *gu = g_new0 (BlnTensor, E);
        size_t rb = bln_tensor_row_bytes (gate_up);
        for (e = 0; e < E; e++)
          {
            gu[e] = g2[e];
            gu[e].name = g_strdup_printf ("%s[%d].up", gate_up->name, e);
            gu[e].data = (const guint8 *) g2[e].data + ff * rb;
          }
        g_free (L->exp_gate);
        g_free (L->exp_up);
        L->exp_gate = g2;
        L->exp_up = gu;
      }
      L->exp_down = split_views (m, down, E, 0, d);
      return TRUE;
    }
  g_clear_error (error);

  L->exp_gate = g_new0 (BlnTensor, E);
  L->exp_up = g_new0 (BlnTensor, E);
  L->exp_down = g_new0 (BlnTensor, E);
  for (e = 0; e < E; e++)
    {
      const BlnTensor *tg, *tu, *td;
      g_autofree char *ng = g_strdup_printf ("model.layers.%d.mlp.experts.%d.gate_proj.weight",
                                             il, e);
      g_autofree char *nu = g_strdup_printf ("model.layers.%d.mlp.experts.%d.up_proj.weight",
                                             il, e);
      g_autofree char *nd = g_strdup_printf ("model.layers.%d.mlp.experts.%d.down_proj.weight",
                                             il, e);
      tg = maybe_quant (m, get (m, 0, "-", ng, d, ff, 1, TRUE, error), q, error);
      tu = tg ? maybe_quant (m, get (m, 0, "-", nu, d, ff, 1, TRUE, error), q, error) : NULL;
      td = tu ? maybe_quant (m, get (m, 0, "-", nd, ff, d, 1, TRUE, error), q, error) : NULL;
      if (td == NULL)
        return FALSE;
      L->exp_gate[e] = *tg;
      L->exp_gate[e].name = g_strdup (tg->name);
      L->exp_gate[e].owned = NULL;
      L->exp_up[e] = *tu;
      L->exp_up[e].name = g_strdup (tu->name);
      L->exp_up[e].owned = NULL;
      L->exp_down[e] = *td;
      L->exp_down[e].name = g_strdup (td->name);
      L->exp_down[e].owned = NULL;
    }
  return TRUE;
}

/* MLA's per-head absorbed matrices from attn_kv_b (HF kv_b_proj), whose
 * rows are, per head, qk_nope rows of W_UK then v rows of W_UV. W_UV rows are
 * used in place; W_UK is transposed to [kv_lora rows × nope] in float. Newer
 * converters store the split attn_k_b / attn_v_b, which are used as they are. */
static gboolean
load_mla_absorb (BlnModel *m, BlnLayer *L, int il, GError **error)
{
  const BlnHParams *hp = &m->hp;
  int H = hp->n_head, nope = hp->qk_nope_dim, vd = hp->head_dim_v, r = hp->kv_lora_rank;
  const BlnTensor *kv_b, *k_b, *v_b;
  int h, i, j;

  k_b = get (m, il, "blk.%d.attn_k_b.weight", NULL, nope, r, H, FALSE, error);
  v_b = get (m, il, "blk.%d.attn_v_b.weight", NULL, r, vd, H, FALSE, error);
  if (k_b != NULL && v_b != NULL)
    {
      L->k_b = split_views (m, k_b, H, 0, r);
      L->v_b = split_views (m, v_b, H, 0, vd);
      return TRUE;
    }
  g_clear_error (error);
  kv_b = get (m, il, "blk.%d.attn_kv_b.weight", "model.layers.%d.self_attn.kv_b_proj.weight",
              r, (int64_t) H * (nope + vd), 1, TRUE, error);
  if (kv_b == NULL)
    return FALSE;
  {
    g_autofree float *row = g_try_new (float, r);
    size_t rb = bln_tensor_row_bytes (kv_b);
    float *kt;

    kt = g_try_new (float, (size_t) H * r * nope);
    if (row == NULL || kt == NULL)
      {
        g_free (kt);
        g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for MLA weights");
        return FALSE;
      }
    for (h = 0; h < H; h++)
      for (i = 0; i < nope; i++)
        {
          bln_dequantize_row (kv_b->type,
                              (const guint8 *) kv_b->data + ((size_t) h * (nope + vd) + i) * rb,
                              row, r);
          for (j = 0; j < r; j++)
            kt[((size_t) h * r + j) * nope + i] = row[j];
        }
    {
      BlnTensor *whole = g_new0 (BlnTensor, 1);
      whole->name = g_strdup_printf ("blk.%d.attn_k_b(absorbed)", il);
      whole->type = BLN_TYPE_F32;
      whole->n_dims = 3;
      whole->ne[0] = nope;
      whole->ne[1] = r;
      whole->ne[2] = H;
      whole->ne[3] = 1;
      whole->data = kt;
      whole->owned = kt;
      whole->nbytes = (size_t) H * r * nope * sizeof (float);
      g_ptr_array_add (m->extra, whole);
      L->k_b = split_views (m, whole, H, 0, r);
    }
    L->v_b = g_new0 (BlnTensor, H);
    for (h = 0; h < H; h++)
      {
        L->v_b[h].name = g_strdup_printf ("%s[v%d]", kv_b->name, h);
        L->v_b[h].type = kv_b->type;
        L->v_b[h].n_dims = 2;
        L->v_b[h].ne[0] = r;
        L->v_b[h].ne[1] = vd;
        L->v_b[h].ne[2] = L->v_b[h].ne[3] = 1;
        L->v_b[h].data = (const guint8 *) kv_b->data + ((size_t) h * (nope + vd) + nope) * rb;
        L->v_b[h].nbytes = (size_t) vd * rb;
      }
  }
  return TRUE;
}

#define GET(field, gg, hh, a, b, c, req)                                       \
  G_STMT_START {                                                               \
    L->field = get (m, il, gg, hh, a, b, c, req, error);                       \
    if (L->field == NULL && (req || (error && *error)))                        \
      return FALSE;                                                            \
  } G_STMT_END
#define GETQ(field, gg, hh, a, b, c, req)                                      \
  G_STMT_START {                                                               \
    GET (field, gg, hh, a, b, c, req);                                         \
    if (L->field != NULL && (L->field = maybe_quant (m, L->field, q, error)) == NULL) \
      return FALSE;                                                            \
  } G_STMT_END
#define GETF(field, gg, hh, a, b, c, req)                                      \
  G_STMT_START {                                                               \
    GET (field, gg, hh, a, b, c, req);                                         \
    if (L->field != NULL && (L->field = as_f32 (m, L->field, error)) == NULL)  \
      return FALSE;                                                            \
  } G_STMT_END

static gboolean
load_layer (BlnModel *m, int il, BlnType q, GError **error)
{
  const BlnHParams *hp = &m->hp;
  BlnLayer *L = &m->layers[il];
  int64_t d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv;
  int64_t dk = hp->head_dim_k, dv = hp->head_dim_v;
  gboolean moe;

  GETF (attn_norm, "blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight",
        d, 1, 1, TRUE);
  GETF (ffn_norm, "blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight",
        d, 1, 1, TRUE);

  if (hp->arch != BLN_ARCH_DEEPSEEK2)
    {
      GETQ (wq, "blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight",
            d, H * dk, 1, TRUE);
      GETQ (wk, "blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight",
            d, Hkv * dk, 1, TRUE);
      GETQ (wv, "blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight",
            d, Hkv * dv, 1, TRUE);
      GETQ (wo, "blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight",
            H * dv, d, 1, TRUE);
      GETF (bq, "blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias", H * dk, 1, 1,
            hp->arch == BLN_ARCH_QWEN2);
      GETF (bk, "blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias", Hkv * dk, 1, 1,
            hp->arch == BLN_ARCH_QWEN2);
      GETF (bv, "blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias", Hkv * dv, 1, 1,
            hp->arch == BLN_ARCH_QWEN2);
      GETQ (ffn_gate, "blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight",
            d, hp->n_ff, 1, TRUE);
      GETQ (ffn_up, "blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight",
            d, hp->n_ff, 1, TRUE);
      GETQ (ffn_down, "blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight",
            hp->n_ff, d, 1, TRUE);
      return TRUE;
    }

  /* deepseek2: MLA */
  if (hp->q_lora_rank > 0)
    {
      GETQ (wq_a, "blk.%d.attn_q_a.weight", "model.layers.%d.self_attn.q_a_proj.weight",
            d, hp->q_lora_rank, 1, TRUE);
      GETF (q_a_norm, "blk.%d.attn_q_a_norm.weight",
            "model.layers.%d.self_attn.q_a_layernorm.weight", hp->q_lora_rank, 1, 1, TRUE);
      GETQ (wq_b, "blk.%d.attn_q_b.weight", "model.layers.%d.self_attn.q_b_proj.weight",
            hp->q_lora_rank, H * dk, 1, TRUE);
    }
  else
    GETQ (wq, "blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight",
          d, H * dk, 1, TRUE);
  GETQ (wkv_a, "blk.%d.attn_kv_a_mqa.weight", "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight",
        d, hp->kv_lora_rank + hp->qk_rope_dim, 1, TRUE);
  GETF (kv_a_norm, "blk.%d.attn_kv_a_norm.weight",
        "model.layers.%d.self_attn.kv_a_layernorm.weight", hp->kv_lora_rank, 1, 1, TRUE);
  GETQ (wo, "blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight",
        H * dv, d, 1, TRUE);
  if (!load_mla_absorb (m, L, il, error))
    return FALSE;

  moe = hp->n_expert > 0 && il >= hp->n_layer_dense_lead;
  if (!moe)
    {
      GETQ (ffn_gate, "blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight",
            d, hp->n_ff, 1, TRUE);
      GETQ (ffn_up, "blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight",
            d, hp->n_ff, 1, TRUE);
      GETQ (ffn_down, "blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight",
            hp->n_ff, d, 1, TRUE);
      return TRUE;
    }
  if (hp->n_expert_used <= 0 || hp->n_ff_expert <= 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "MoE layer %d but expert_used_count or expert_feed_forward_length is unset",
                   il);
      return FALSE;
    }
  GETF (ffn_gate_inp, "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.gate.weight",
        d, hp->n_expert, 1, TRUE);
  GETF (exp_probs_b, "blk.%d.exp_probs_b.bias", "model.layers.%d.mlp.gate.e_score_correction_bias",
        hp->n_expert, 1, 1, FALSE);
  if (hp->n_expert_shared > 0)
    {
      int64_t sff = (int64_t) hp->n_ff_expert * hp->n_expert_shared;
      GETQ (shexp_gate, "blk.%d.ffn_gate_shexp.weight",
            "model.layers.%d.mlp.shared_experts.gate_proj.weight", d, sff, 1, TRUE);
      GETQ (shexp_up, "blk.%d.ffn_up_shexp.weight",
            "model.layers.%d.mlp.shared_experts.up_proj.weight", d, sff, 1, TRUE);
      GETQ (shexp_down, "blk.%d.ffn_down_shexp.weight",
            "model.layers.%d.mlp.shared_experts.down_proj.weight", sff, d, 1, TRUE);
    }
  return load_experts (m, L, il, q, error);
}
#undef GET
#undef GETQ
#undef GETF

/* ---------------------------------------------------------------------- */
/* rotary embedding tables                                                 */

static float
yarn_mscale (float scale, float mscale)
{
  if (scale <= 1.0f)
    return 1.0f;
  return 0.1f * mscale * logf (scale) + 1.0f;
}

static double
yarn_corr_dim (double n_rot, int dim, double base, int orig_ctx)
{
  return (dim * log (orig_ctx / (n_rot * 2.0 * G_PI))) / (2.0 * log (base));
}

static gboolean
setup_rope (BlnModel *m, GError **error)
{
  const BlnHParams *hp = &m->hp;
  int dim = hp->rope_dim, half = dim / 2, i;
  float *f;

  if (dim <= 0 || dim % 2 != 0 || dim > hp->head_dim_k)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "rope dimension %d is invalid for head size %d", dim, hp->head_dim_k);
      return FALSE;
    }
  f = m->rope_inv_freq = g_new (float, half);
  /* Computed in float as transformers does, so positions round alike. */
  for (i = 0; i < half; i++)
    f[i] = 1.0f / powf (hp->rope_theta, (float) (2 * i) / (float) dim);
  m->rope_attn_factor = 1.0f;
  m->attn_scale = 1.0f / sqrtf ((float) hp->head_dim_k);

  switch (hp->rope_scaling)
    {
    case BLN_ROPE_SCALING_NONE:
      break;
    case BLN_ROPE_SCALING_LINEAR:
      for (i = 0; i < half; i++)
        f[i] /= hp->rope_factor;
      break;
    case BLN_ROPE_SCALING_YARN:
      {
        double lo = floor (yarn_corr_dim (hp->yarn_beta_fast, dim, hp->rope_theta,
                                          hp->rope_orig_ctx));
        double hi = ceil (yarn_corr_dim (hp->yarn_beta_slow, dim, hp->rope_theta,
                                         hp->rope_orig_ctx));
        float factor = hp->rope_factor;

        lo = MAX (lo, 0);
        hi = MIN (hi, dim - 1);
        if (lo == hi)
          hi += 0.001;
        for (i = 0; i < half; i++)
          {
            float pos_freq = powf (hp->rope_theta, (float) (2 * i) / (float) dim);
            float extra = 1.0f / pos_freq, inter = 1.0f / (factor * pos_freq);
            float ramp = ((float) i - (float) lo) / (float) (hi - lo);
            float keep;
            ramp = CLAMP (ramp, 0.0f, 1.0f);
            keep = 1.0f - ramp;   /* share of the extrapolated frequency */
            f[i] = inter * (1.0f - keep) + extra * keep;
          }
        if (hp->yarn_mscale > 0.0f && hp->yarn_mscale_all_dim > 0.0f)
          m->rope_attn_factor = yarn_mscale (factor, hp->yarn_mscale)
                                / yarn_mscale (factor, hp->yarn_mscale_all_dim);
        else
          m->rope_attn_factor = yarn_mscale (factor, 1.0f);
        if (hp->arch == BLN_ARCH_DEEPSEEK2 && hp->yarn_mscale_all_dim > 0.0f)
          {
            float ms = yarn_mscale (factor, hp->yarn_mscale_all_dim);
            m->attn_scale *= ms * ms;
          }
      }
      break;
    case BLN_ROPE_SCALING_LLAMA3:
      {
        float lo_wl = hp->rope_orig_ctx / hp->llama3_low_freq_factor;
        float hi_wl = hp->rope_orig_ctx / hp->llama3_high_freq_factor;
        for (i = 0; i < half; i++)
          {
            float wl = 2.0f * (float) G_PI / f[i];
            if (wl > lo_wl)
              f[i] /= hp->rope_factor;
            else if (wl >= hi_wl)
              {
                float s = (hp->rope_orig_ctx / wl - hp->llama3_low_freq_factor)
                          / (hp->llama3_high_freq_factor - hp->llama3_low_freq_factor);
                f[i] = (1.0f - s) * f[i] / hp->rope_factor + s * f[i];
              }
          }
      }
      break;
    }

  if (m->rope_freqs != NULL)
    {
      const float *div = m->rope_freqs->data;
      if (m->rope_freqs->type != BLN_TYPE_F32 || m->rope_freqs->ne[0] < half)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "rope_freqs.weight must be f32 with %d values", half);
          return FALSE;
        }
      for (i = 0; i < half; i++)
        if (div[i] > 0.0f)
          f[i] /= div[i];
    }
  return TRUE;
}

void
bln_rope_apply (const BlnModel *m, float *v, int dim, int pos)
{
  const float *f = m->rope_inv_freq;
  float af = m->rope_attn_factor;
  int half = dim / 2, i;

  for (i = 0; i < half; i++)
    {
      float theta = (float) pos * f[i];
      float c = cosf (theta) * af, s = sinf (theta) * af;
      int a = m->hp.rope_neox ? i : 2 * i;
      int b = m->hp.rope_neox ? i + half : 2 * i + 1;
      float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
}

/* ---------------------------------------------------------------------- */
/* loading                                                                 */

static gboolean
load_tensors_index (BlnModel *m, GError **error)
{
  int64_t i, n;

  if (m->gguf == NULL)
    return TRUE;
  n = bln_gguf_n_tensors (m->gguf);
  for (i = 0; i < n; i++)
    {
      const BlnGgufTensor *gt = bln_gguf_tensor (m->gguf, i);
      BlnTensor *t = g_new0 (BlnTensor, 1);
      int d;

      t->name = g_strdup (gt->name);
      t->type = gt->type;
      t->n_dims = gt->n_dims;
      for (d = 0; d < 4; d++)
        t->ne[d] = d < gt->n_dims ? gt->ne[d] : 1;
      t->data = gt->data;
      t->nbytes = gt->nbytes;
      g_hash_table_replace (m->tensors, t->name, t);
    }
  return TRUE;
}

void
bln_model_free (BlnModel *m)
{
  int il;

  if (m == NULL)
    return;
#if BALEEN_HAVE_CUDA
  g_clear_pointer (&m->cuda, bln_cuda_model_free);
#endif
  g_mutex_clear (&m->cuda_lock);
  if (m->layers != NULL)
    for (il = 0; il < m->hp.n_layer; il++)
      {
        BlnLayer *L = &m->layers[il];
        free_views (L->k_b, m->hp.n_head);
        free_views (L->v_b, m->hp.n_head);
        free_views (L->exp_gate, m->hp.n_expert);
        free_views (L->exp_up, m->hp.n_expert);
        free_views (L->exp_down, m->hp.n_expert);
      }
  g_free (m->layers);
  g_clear_pointer (&m->tokenizer, bln_tokenizer_free);
  g_clear_pointer (&m->tensors, g_hash_table_unref);
  g_clear_pointer (&m->extra, g_ptr_array_unref);
  g_clear_pointer (&m->gguf, bln_gguf_free);
  g_clear_pointer (&m->hf, bln_hfdir_free);
  g_free (m->rope_inv_freq);
  g_free (m->chat_template);
  g_free (m->path);
  g_free (m->name);
  g_free (m);
}

BlnModel *
bln_model_load (const char *path, GError **error)
{
  BlnModelOptions opts = { .hf_quant = BLN_TYPE_F32, .load_tokenizer = TRUE };

  return bln_model_load_with_options (path, &opts, error);
}

BlnModel *
bln_model_load_with_options (const char *path, const BlnModelOptions *opts, GError **error)
{
  g_autoptr (BlnModel) m = NULL;
  BlnHParams *hp;
  BlnType q = opts->hf_quant;
  int il;

  g_return_val_if_fail (path != NULL, NULL);

  m = g_new0 (BlnModel, 1);
  g_mutex_init (&m->cuda_lock);
  m->path = g_strdup (path);
  m->tensors = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, tensor_free);
  m->extra = g_ptr_array_new_with_free_func (tensor_free);
  hp = &m->hp;

  if (q != BLN_TYPE_F32 && q != BLN_TYPE_F16 && q != BLN_TYPE_BF16 && q != BLN_TYPE_Q8_0
      && q != BLN_TYPE_Q4_K && q != BLN_TYPE_Q6_K && q != BLN_TYPE_Q4_0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "cannot convert to %s on load (f16, bf16, q8_0, q4_0, q4_K and q6_K can)",
                   bln_type_name (q));
      return NULL;
    }

  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      m->hf = bln_hfdir_open (path, error);
      if (m->hf == NULL || !hparams_from_hf (m, error))
        return NULL;
      m->name = g_path_get_basename (path);
    }
  else
    {
      const char *name;
      m->gguf = bln_gguf_open (path, error);
      if (m->gguf == NULL || !hparams_from_gguf (m, error))
        return NULL;
      name = bln_gguf_get_string (m->gguf, "general.name", NULL);
      m->name = name ? g_strdup (name) : g_path_get_basename (path);
      load_tensors_index (m, error);
      m->chat_template = g_strdup (bln_gguf_get_string (m->gguf, "tokenizer.chat_template",
                                                        NULL));
    }

  /* global tensors */
  {
    const BlnTensor *t;

    t = get (m, 0, "token_embd.weight", "model.embed_tokens.weight", hp->n_embd, hp->n_vocab, 1,
             TRUE, error);
    if (t == NULL)
      return NULL;
    m->tok_embd = t;
    t = get (m, 0, "output_norm.weight", "model.norm.weight", hp->n_embd, 1, 1, TRUE, error);
    if (t == NULL || (m->output_norm = as_f32 (m, t, error)) == NULL)
      return NULL;
    t = get (m, 0, "output.weight", "lm_head.weight", hp->n_embd, hp->n_vocab, 1, FALSE, error);
    if (t == NULL && error != NULL && *error != NULL)
      return NULL;
    if (t == NULL || (m->hf != NULL && hp->tied_embeddings))
      {
        hp->tied_embeddings = TRUE;
        t = m->tok_embd;
      }
    if ((m->output = maybe_quant (m, t, q, error)) == NULL)
      return NULL;
    m->rope_freqs = get (m, 0, "rope_freqs.weight", NULL, -1, 1, 1, FALSE, error);
    if (m->rope_freqs == NULL && error != NULL && *error != NULL)
      return NULL;
  }

  if (hp->arch == BLN_ARCH_DEEPSEEK2 && hp->n_expert > 0
      && (hp->n_expert_used <= 0 || hp->n_expert_groups <= 0
          || hp->n_expert % MAX (hp->n_expert_groups, 1) != 0
          || hp->n_expert_groups_used > hp->n_expert_groups))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "invalid MoE routing: %d experts, %d used, %d groups, %d groups used",
                   hp->n_expert, hp->n_expert_used, hp->n_expert_groups,
                   hp->n_expert_groups_used);
      return NULL;
    }
  if (hp->n_expert_groups <= 0)
    hp->n_expert_groups = 1;
  if (hp->n_expert_groups_used <= 0)
    hp->n_expert_groups_used = hp->n_expert_groups;

  m->layers = g_new0 (BlnLayer, hp->n_layer);
  for (il = 0; il < hp->n_layer; il++)
    if (!load_layer (m, il, q, error))
      return NULL;

  if (!setup_rope (m, error))
    return NULL;

  if (opts->load_tokenizer)
    {
      if (m->gguf != NULL)
        m->tokenizer = bln_tokenizer_new_from_gguf (m->gguf, error);
      else
        m->tokenizer = bln_tokenizer_new_from_file (path, error);
      if (m->tokenizer == NULL)
        return NULL;
      if (m->chat_template == NULL && bln_tokenizer_chat_template (m->tokenizer) != NULL)
        m->chat_template = g_strdup (bln_tokenizer_chat_template (m->tokenizer));
    }
  return g_steal_pointer (&m);
}

const BlnHParams *
bln_model_hparams (const BlnModel *m)
{
  return &m->hp;
}

const char *
bln_model_arch_name (const BlnModel *m)
{
  return m->arch_name;
}

const char *
bln_model_name (const BlnModel *m)
{
  return m->name;
}

const char *
bln_model_path (const BlnModel *m)
{
  return m->path;
}

BlnTokenizer *
bln_model_tokenizer (const BlnModel *m)
{
  return m->tokenizer;
}

const char *
bln_model_chat_template (const BlnModel *m)
{
  return m->chat_template;
}

/* Each tensor counted once: the unique weights the forward pass reads. */
static void
count_tensor (GHashTable *seen, const BlnTensor *t, int64_t *params, size_t *bytes)
{
  if (t == NULL || t->data == NULL || g_hash_table_contains (seen, t->data))
    return;
  g_hash_table_add (seen, (gpointer) t->data);
  *params += bln_tensor_nelements (t);
  *bytes += t->nbytes;
}

static void
model_totals (const BlnModel *m, int64_t *params, size_t *bytes)
{
  g_autoptr (GHashTable) seen = g_hash_table_new (NULL, NULL);
  GHashTableIter it;
  gpointer v;

  *params = 0;
  *bytes = 0;
  if (m->gguf != NULL)
    {
      g_hash_table_iter_init (&it, m->tensors);
      while (g_hash_table_iter_next (&it, NULL, &v))
        count_tensor (seen, v, params, bytes);
      return;
    }
  count_tensor (seen, m->tok_embd, params, bytes);
  count_tensor (seen, m->output, params, bytes);
  count_tensor (seen, m->output_norm, params, bytes);
  for (int il = 0; il < m->hp.n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      const BlnTensor *list[] = { L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv,
                                  L->wq_a, L->q_a_norm, L->wq_b, L->wkv_a, L->kv_a_norm,
                                  L->ffn_norm, L->ffn_gate, L->ffn_up, L->ffn_down,
                                  L->ffn_gate_inp, L->exp_probs_b, L->shexp_gate, L->shexp_up,
                                  L->shexp_down };
      for (guint k = 0; k < G_N_ELEMENTS (list); k++)
        count_tensor (seen, list[k], params, bytes);
      for (int e = 0; L->exp_gate && e < m->hp.n_expert; e++)
        {
          count_tensor (seen, &L->exp_gate[e], params, bytes);
          count_tensor (seen, &L->exp_up[e], params, bytes);
          count_tensor (seen, &L->exp_down[e], params, bytes);
        }
      for (int h = 0; L->v_b && h < m->hp.n_head; h++)
        {
          count_tensor (seen, &L->k_b[h], params, bytes);
          count_tensor (seen, &L->v_b[h], params, bytes);
        }
    }
}

int64_t
bln_model_n_params (const BlnModel *m)
{
  int64_t p;
  size_t b;

  model_totals (m, &p, &b);
  return p;
}

size_t
bln_model_weight_bytes (const BlnModel *m)
{
  int64_t p;
  size_t b;

  model_totals (m, &p, &b);
  return b;
}

size_t
bln_model_kv_bytes_per_token (const BlnModel *m)
{
  const BlnHParams *hp = &m->hp;

  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    return (size_t) hp->n_layer * (hp->kv_lora_rank + hp->qk_rope_dim) * sizeof (float);
  return (size_t) hp->n_layer * hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v)
         * sizeof (float);
}

size_t
bln_model_decode_bytes (const BlnModel *m)
{
  const BlnHParams *hp = &m->hp;
  GHashTableIter it;
  gpointer v;
  double sum = 0;

  g_hash_table_iter_init (&it, m->tensors);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      const BlnTensor *t = v;
      double b = (double) t->nbytes;

      if (t == m->tok_embd && m->output != m->tok_embd)
        continue;
      if (t->name != NULL && strstr (t->name, "_exps") != NULL && hp->n_expert > 0)
        b = b * hp->n_expert_used / hp->n_expert;
      sum += b;
    }
  return (size_t) sum;
}

char *
bln_model_type_summary (const BlnModel *m)
{
  int counts[BLN_TYPE_COUNT_] = { 0 };
  GString *s = g_string_new (NULL);
  GHashTableIter it;
  gpointer v;
  int t;

  g_hash_table_iter_init (&it, m->tensors);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      const BlnTensor *tt = v;
      if ((int) tt->type >= 0 && tt->type < BLN_TYPE_COUNT_)
        counts[tt->type]++;
    }
  if (m->hf != NULL)
    {
      g_string_append (s, "safetensors");
      return g_string_free (s, FALSE);
    }
  for (t = 0; t < BLN_TYPE_COUNT_; t++)
    if (counts[t] > 0)
      g_string_append_printf (s, "%s%s: %d", s->len ? ", " : "", bln_type_name (t), counts[t]);
  return g_string_free (s, FALSE);
}

/* ---------------------------------------------------------------------- */
/* contexts                                                                */

void
bln_context_options_init (BlnContextOptions *opts)
{
  memset (opts, 0, sizeof *opts);
  opts->device = BLN_DEVICE_CPU;
  opts->kv_bits = 16;
}

gboolean
bln_sliding_window_check (const BlnModel *model, int window, BlnDevice device, gboolean paged,
                          GError **error)
{
  g_return_val_if_fail (model != NULL, FALSE);

  if (window < 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the sliding attention window must be 0 (off) or a number of tokens, not %d",
                   window);
      return FALSE;
    }
  if (window == 0)
    return TRUE;
  if (model->hp.arch == BLN_ARCH_DEEPSEEK2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the sliding attention window (sliding_window %d) is not available for "
                   "deepseek2 (MLA) models; set it to 0", window);
      return FALSE;
    }
  if (device != BLN_DEVICE_CPU && !paged)
    {
      /* BLN_ERROR_INVALID, not UNSUPPORTED: callers fall back to the CPU on
       * the latter, and a user who asked for the GPU should choose */
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the sliding attention window (sliding_window %d) is not available on the "
                   "single-sequence GPU path; set it to 0, or use the batched GPU path "
                   "(more than one parallel sequence) or the CPU", window);
      return FALSE;
    }
  return TRUE;
}

BlnContext *
bln_context_new_with_options (BlnModel *model, int n_ctx, BlnPool *pool,
                              const BlnContextOptions *opts, GError **error)
{
  BlnContext *ctx;

  g_return_val_if_fail (model != NULL && pool != NULL, NULL);

  /* negative windows and deepseek2 first: those fail on every device */
  if (opts != NULL
      && !bln_sliding_window_check (model, opts->sliding_window, BLN_DEVICE_CPU, FALSE, error))
    return NULL;
  if (opts == NULL || opts->device == BLN_DEVICE_CPU)
    {
      ctx = bln_context_new (model, n_ctx, pool, error);
      if (ctx != NULL && opts != NULL)
        ctx->s.window = opts->sliding_window;
      return ctx;
    }
#if BALEEN_HAVE_CUDA
  if (opts->sliding_window > 0)
    {
      g_autofree char *why = NULL;

      /* without a usable GPU this is the usual BLN_ERROR_BACKEND, so that
       * bln_context_new_on_device falls back to the CPU (window and all);
       * with one, the window is refused */
      if (!bln_cuda_available (&why))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "%s", why ? why : "no usable GPU");
          return NULL;
        }
      bln_sliding_window_check (model, opts->sliding_window, opts->device, FALSE, error);
      return NULL;
    }
  if (n_ctx <= 0)
    n_ctx = MIN (model->hp.n_ctx_train, 8192);
  if (n_ctx > (1 << 22))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "context size %d is too large", n_ctx);
      return NULL;
    }
  ctx = g_new0 (BlnContext, 1);
  ctx->s.model = model;
  ctx->s.n_ctx = n_ctx;
  ctx->s.pool = pool;
  ctx->s.cuda = bln_cuda_ctx_new (model, n_ctx, opts, error);
  if (ctx->s.cuda == NULL)
    {
      g_free (ctx);
      return NULL;
    }
  return ctx;
#else
  (void) ctx;
  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
               "this build of Baleen has no CUDA backend (built without nvcc)");
  return NULL;
#endif
}

BlnDevice
bln_context_device (const BlnContext *ctx)
{
  return ctx->s.cuda != NULL ? BLN_DEVICE_CUDA : BLN_DEVICE_CPU;
}

gboolean
bln_device_parse (const char *name, BlnContextOptions *opts, GError **error)
{
  char *end = NULL;
  gint64 n;

  if (name == NULL || g_str_equal (name, "auto"))
    {
#if BALEEN_HAVE_CUDA
      opts->device = bln_cuda_available (NULL) ? BLN_DEVICE_CUDA : BLN_DEVICE_CPU;
#else
      opts->device = BLN_DEVICE_CPU;
#endif
      return TRUE;
    }
  if (g_str_equal (name, "cpu"))
    {
      opts->device = BLN_DEVICE_CPU;
      return TRUE;
    }
  if (g_str_equal (name, "cuda") || g_str_equal (name, "gpu"))
    {
      opts->device = BLN_DEVICE_CUDA;
      return TRUE;
    }
  if (g_str_has_prefix (name, "cuda:"))
    {
      n = g_ascii_strtoll (name + 5, &end, 10);
      if (end != name + 5 && *end == '\0' && n >= 0 && n < 64)
        {
          opts->device = BLN_DEVICE_CUDA;
          opts->gpu = (int) n;
          return TRUE;
        }
    }
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
               "unknown device '%s' (cpu, cuda, cuda:N or auto)", name);
  return FALSE;
}

BlnContext *
bln_context_new_on_device (BlnModel *model, int n_ctx, BlnPool *pool,
                           const BlnContextOptions *opts, char **note, GError **error)
{
  GError *local = NULL;
  BlnContext *ctx;

  if (note != NULL)
    *note = NULL;
  ctx = bln_context_new_with_options (model, n_ctx, pool, opts, &local);
  if (ctx != NULL)
    return ctx;
  if (opts != NULL && opts->device == BLN_DEVICE_CUDA
      && (g_error_matches (local, BLN_ERROR, BLN_ERROR_UNSUPPORTED)
          || g_error_matches (local, BLN_ERROR, BLN_ERROR_BACKEND)))
    {
      BlnContextOptions cpu = *opts;

      if (note != NULL)
        *note = g_strdup_printf ("running on the CPU: %s", local->message);
      g_clear_error (&local);
      cpu.device = BLN_DEVICE_CPU;
      return bln_context_new_with_options (model, n_ctx, pool, &cpu, error);
    }
  g_propagate_error (error, local);
  return NULL;
}

BlnContext *
bln_context_new (BlnModel *model, int n_ctx, BlnPool *pool, GError **error)
{
  const BlnHParams *hp = &model->hp;
  BlnContext *ctx;
  BlnContextState *s;
  size_t k_total, v_total;

  g_return_val_if_fail (model != NULL && pool != NULL, NULL);

  if (n_ctx <= 0)
    n_ctx = MIN (hp->n_ctx_train, 8192);
  if (n_ctx > (1 << 22))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "context size %d is too large", n_ctx);
      return NULL;
    }
  ctx = g_new0 (BlnContext, 1);
  s = &ctx->s;
  s->model = model;
  s->n_ctx = n_ctx;
  s->pool = pool;
  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    {
      s->k_width = hp->kv_lora_rank + hp->qk_rope_dim;
      s->v_width = 0;
    }
  else
    {
      s->k_width = (size_t) hp->n_head_kv * hp->head_dim_k;
      s->v_width = (size_t) hp->n_head_kv * hp->head_dim_v;
    }
  k_total = (size_t) hp->n_layer * n_ctx * s->k_width;
  v_total = (size_t) hp->n_layer * n_ctx * s->v_width;
  s->k_cache = g_try_malloc (k_total * sizeof (float));
  s->v_cache = v_total ? g_try_malloc (v_total * sizeof (float)) : NULL;
  if (s->k_cache == NULL || (v_total && s->v_cache == NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "cannot allocate the KV cache for %d tokens (%.1f MiB); use a smaller context",
                   n_ctx, (k_total + v_total) * sizeof (float) / 1048576.0);
      bln_context_free (ctx);
      return NULL;
    }
  return ctx;
}

void
bln_context_free (BlnContext *ctx)
{
  int i;

  if (ctx == NULL)
    return;
#if BALEEN_HAVE_CUDA
  bln_cuda_ctx_free (ctx->s.cuda);
#endif
  g_free (ctx->s.k_cache);
  g_free (ctx->s.v_cache);
  g_free (ctx->s.sample_logits);
  for (i = 0; i < (int) G_N_ELEMENTS (ctx->s.buf); i++)
    g_free (ctx->s.buf[i]);
  g_free (ctx);
}

BlnContext *
bln_context_new_workspace (BlnModel *model, BlnPool *pool)
{
  BlnContext *ctx = g_new0 (BlnContext, 1);

  ctx->s.model = model;
  ctx->s.pool = pool;
  return ctx;
}

int
bln_context_n_ctx (const BlnContext *ctx)
{
  return ctx->s.n_ctx;
}

int
bln_context_n_past (const BlnContext *ctx)
{
  return ctx->s.n_past;
}

void
bln_context_truncate (BlnContext *ctx, int n_keep)
{
  if (n_keep < ctx->s.n_past && n_keep >= 0)
    ctx->s.n_past = n_keep;
}

/* A context on the CPU is a batch of one sequence whose cache is one block
 * of n_ctx positions. */
static gboolean
context_eval_cpu (BlnContext *ctx, const int32_t *ids, int n, float *logits,
                  gboolean all_logits, GError **error)
{
  static const int32_t block0 = 0;
  BlnContextState *s = &ctx->s;
  g_autofree int32_t *pos = g_try_new (int32_t, n);
  g_autofree int32_t *seq = g_try_new0 (int32_t, n);
  g_autofree int32_t *rows = g_try_new (int32_t, n);
  BlnKvView kv = { s->k_cache, s->v_cache, &block0, s->n_ctx };
  BlnBatch b = { 0 };
  int i;

  if (pos == NULL || seq == NULL || rows == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for a batch of %d", n);
      return FALSE;
    }
  for (i = 0; i < n; i++)
    {
      pos[i] = s->n_past + i;
      rows[i] = i;
    }
  b.n_tokens = n;
  b.ids = ids;
  b.pos = pos;
  b.seq = seq;
  b.kv = &kv;
  b.n_seqs = 1;
  b.max_len = s->n_past + n;
  b.out_rows = all_logits ? rows : rows + n - 1;
  b.n_out = all_logits ? n : 1;
  b.logits = logits;
  b.window = s->window;
  if (!bln_model_forward_batch (ctx, &b, error))
    return FALSE;
  s->n_past += n;
  return TRUE;
}

/* The checks of bln_context_eval: tokens, room in the context, ids. */
static gboolean
eval_args_ok (BlnContext *ctx, const int32_t *ids, int n, GError **error)
{
  const BlnModel *m = ctx->s.model;
  int i;

  if (n <= 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "no tokens to evaluate");
      return FALSE;
    }
  if (n > ctx->s.n_ctx - ctx->s.n_past)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "context is full: %d tokens cached, %d more do not fit in %d",
                   ctx->s.n_past, n, ctx->s.n_ctx);
      return FALSE;
    }
  for (i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= m->hp.n_vocab)
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                     "token id %d is outside the vocabulary (0..%d)", ids[i], m->hp.n_vocab - 1);
        return FALSE;
      }
  return TRUE;
}

gboolean
bln_context_eval (BlnContext *ctx, const int32_t *ids, int n, float *logits,
                  gboolean all_logits, GError **error)
{
  g_return_val_if_fail (ctx != NULL && (ids != NULL || n == 0), FALSE);

  if (!eval_args_ok (ctx, ids, n, error))
    return FALSE;
#if BALEEN_HAVE_CUDA
  if (ctx->s.cuda != NULL)
    return bln_cuda_ctx_eval (ctx, ids, n, logits, all_logits, error);
#endif
  return context_eval_cpu (ctx, ids, n, logits, all_logits, error);
}

gboolean
bln_context_eval_sample (BlnContext *ctx, const int32_t *ids, int n, BlnSampler *sampler,
                         int32_t *id_out, BlnLogprob *top, int n_top, GError **error)
{
  int n_vocab;

  g_return_val_if_fail (ctx != NULL && (ids != NULL || n == 0), FALSE);
  g_return_val_if_fail (sampler != NULL && id_out != NULL, FALSE);

  if (!eval_args_ok (ctx, ids, n, error))
    return FALSE;
#if BALEEN_HAVE_CUDA
  if (ctx->s.cuda != NULL)
    return bln_cuda_ctx_eval_sample (ctx, ids, n, sampler, id_out, top, n_top, error);
#endif
  n_vocab = ctx->s.model->hp.n_vocab;
  if (ctx->s.sample_logits == NULL)
    {
      ctx->s.sample_logits = g_try_new (float, n_vocab);
      if (ctx->s.sample_logits == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for the logits");
          return FALSE;
        }
    }
  if (!context_eval_cpu (ctx, ids, n, ctx->s.sample_logits, FALSE, error))
    return FALSE;
  *id_out = bln_sampler_sample (sampler, ctx->s.sample_logits, top, n_top);
  return TRUE;
}

gboolean
bln_model_forward_batch (BlnContext *ctx, const BlnBatch *batch, GError **error)
{
  if (ctx->s.model->hp.arch == BLN_ARCH_DEEPSEEK2)
    {
      if (batch->window > 0)
        return bln_sliding_window_check (ctx->s.model, batch->window, BLN_DEVICE_CPU, TRUE,
                                         error);
      return bln_arch_deepseek2_forward (ctx, batch, error);
    }
  return bln_arch_llama_forward (ctx, batch, error);
}

/* ---------------------------------------------------------------------- */
/* shared forward helpers                                                  */

float *
bln_ctx_buf (BlnContext *ctx, int slot, size_t n_floats, GError **error)
{
  BlnContextState *s = &ctx->s;

  g_assert (slot >= 0 && slot < (int) G_N_ELEMENTS (s->buf));
  if (s->buf_len[slot] < n_floats)
    {
      float *p = g_try_realloc (s->buf[slot], n_floats * sizeof (float));
      if (p == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                       "out of memory for %zu scratch values", n_floats);
          return NULL;
        }
      s->buf[slot] = p;
      s->buf_len[slot] = n_floats;
    }
  return s->buf[slot];
}

gboolean
bln_linear (BlnContext *ctx, const BlnTensor *w, const BlnTensor *b, const float *x, int n_tok,
            float *y, GError **error)
{
  int t, i;

  if (!bln_cpu_matmul (ctx->s.pool, w, x, n_tok, y, error))
    return FALSE;
  if (b != NULL)
    {
      const float *bias = b->data;
      for (t = 0; t < n_tok; t++)
        for (i = 0; i < w->ne[1]; i++)
          y[(size_t) t * w->ne[1] + i] += bias[i];
    }
  return TRUE;
}

/* y = down(silu(gate x) * up x) for @n rows, the feed-forward block of
 * every architecture here (dense layers, shared and routed experts). */
gboolean
bln_swiglu (BlnContext *ctx, const BlnTensor *gate, const BlnTensor *up, const BlnTensor *down,
            const float *x, int n, float *y, GError **error)
{
  size_t len = (size_t) n * gate->ne[1];
  float *g = bln_ctx_buf (ctx, 7, len, error);
  float *u = bln_ctx_buf (ctx, 8, len, error);

  if (g == NULL || u == NULL)
    return FALSE;
  if (!bln_linear (ctx, gate, NULL, x, n, g, error)
      || !bln_linear (ctx, up, NULL, x, n, u, error))
    return FALSE;
  bln_cpu_silu_mul (g, g, u, (int64_t) len);
  return bln_linear (ctx, down, NULL, g, n, y, error);
}

gboolean
bln_output_logits_rows (BlnContext *ctx, const float *x, const int32_t *rows, int n_rows,
                        float *logits, GError **error)
{
  const BlnModel *m = ctx->s.model;
  int d = m->hp.n_embd, t;
  float *h;

  if (logits == NULL || n_rows == 0)
    return TRUE;
  h = bln_ctx_buf (ctx, 11, (size_t) n_rows * d, error);
  if (h == NULL)
    return FALSE;
  for (t = 0; t < n_rows; t++)
    bln_cpu_rmsnorm (h + (size_t) t * d, x + (size_t) rows[t] * d, m->output_norm->data, d,
                     m->hp.norm_eps);
  return bln_cpu_matmul (ctx->s.pool, m->output, h, n_rows, logits, error);
}
