/* hf-convert-deepseek2.c — DeepSeek-V2/V3 folders (HF model_type deepseek_v2
 * and deepseek_v3) in the GGUF layout of llama.cpp's converter (see
 * hf-convert-private.h).
 *
 * Two things differ from the one-tensor-one-tensor mapping of llama:
 *
 * - MLA. HF keeps one kv_b_proj per layer whose rows are, head after head,
 *   qk_nope rows of W_UK followed by v rows of W_UV (each kv_lora_rank
 *   wide). The GGUF holds them apart, in the shapes the absorbed attention
 *   multiplies by: attn_k_b is W_UK transposed per head (kv_lora_rank rows
 *   of qk_nope values), attn_v_b the W_UV rows as they are (v rows of
 *   kv_lora_rank values). The key/value lengths in the metadata then
 *   describe the latent cache (kv_lora_rank + rope, one "KV head"), and
 *   key_length_mla / value_length_mla the per-head sizes.
 * - Experts. HF has one tensor per expert and projection (or, written by
 *   transformers 5, a fused gate_up_proj and a down_proj per layer); GGUF
 *   stacks them into ffn_{gate,up,down}_exps of shape [in, out, experts].
 */
#include <string.h>

#include "bln-error.h"
#include "hf-convert-private.h"

#define TRY(call) G_STMT_START { if (!(call)) return FALSE; } G_STMT_END

/* Per-layer HF tensors that map one to one. */
static const struct { const char *hf, *gguf; } one_to_one[] = {
  { "input_layernorm.weight", "attn_norm.weight" },
  { "post_attention_layernorm.weight", "ffn_norm.weight" },
  { "self_attn.q_proj.weight", "attn_q.weight" },
  { "self_attn.q_a_proj.weight", "attn_q_a.weight" },
  { "self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight" },
  { "self_attn.q_b_proj.weight", "attn_q_b.weight" },
  { "self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight" },
  { "self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight" },
  { "self_attn.o_proj.weight", "attn_output.weight" },
  { "mlp.gate_proj.weight", "ffn_gate.weight" },
  { "mlp.up_proj.weight", "ffn_up.weight" },
  { "mlp.down_proj.weight", "ffn_down.weight" },
  { "mlp.gate.weight", "ffn_gate_inp.weight" },
  { "mlp.gate.e_score_correction_bias", "exp_probs_b.bias" },
  { "mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight" },
  { "mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight" },
  { "mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight" },
  { "mlp.experts.down_proj", "ffn_down_exps.weight" },   /* transformers 5, fused */
};

static const char *const expert_proj[] = { "gate_proj", "up_proj", "down_proj" };
static const char *const expert_gguf[] = { "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" };

typedef struct {
  gint64 n_layer, n_head, n_expert, nope, rope, v, rank;
} Dims;

static BlnConvertEntry *
add (GPtrArray *entries, const char *gguf, const char *hf, const int64_t *ne)
{
  BlnConvertEntry *e = bln_convert_entry_new (gguf, hf, bln_convert_n_dims (ne), ne);

  g_ptr_array_add (entries, e);
  return e;
}

/* kv_b_proj -> attn_k_b and attn_v_b (see the top of the file). */
static gboolean
plan_kv_b (GPtrArray *entries, const Dims *d, int il, const char *hn, const BlnTensor *t,
           GError **error)
{
  g_autofree char *k_name = g_strdup_printf ("blk.%d.attn_k_b.weight", il);
  g_autofree char *v_name = g_strdup_printf ("blk.%d.attn_v_b.weight", il);
  int64_t k_ne[4] = { d->nope, d->rank, d->n_head, 1 };
  int64_t v_ne[4] = { d->rank, d->v, d->n_head, 1 };
  BlnConvertEntry *e;

  if (t->ne[0] != d->rank || t->ne[1] != d->n_head * (d->nope + d->v) || t->ne[2] != 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "%s: shape [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] does not match "
                   "num_attention_heads × (qk_nope_head_dim + v_head_dim) by kv_lora_rank", hn,
                   t->ne[1], t->ne[0]);
      return FALSE;
    }
  e = add (entries, k_name, hn, k_ne);
  e->source = BLN_CONVERT_K_B;
  e->group = d->nope + d->v;
  e->take = d->nope;
  e = add (entries, v_name, hn, v_ne);
  e->source = BLN_CONVERT_GROUPED;
  e->group = d->nope + d->v;
  e->offset = d->nope;
  e->take = d->v;
  return TRUE;
}

/* transformers 5's fused gate_up_proj [experts, 2 × ff, d] -> the gate and
 * up stacks. */
static gboolean
plan_gate_up (GPtrArray *entries, int il, const char *hn, const BlnTensor *t, GError **error)
{
  int64_t ne[4] = { t->ne[0], t->ne[1] / 2, t->ne[2], 1 };

  if (t->ne[1] % 2 != 0 || t->ne[3] != 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: an odd number of rows", hn);
      return FALSE;
    }
  for (int half = 0; half < 2; half++)
    {
      g_autofree char *name = g_strdup_printf ("blk.%d.%s.weight", il, expert_gguf[half]);
      BlnConvertEntry *e = add (entries, name, hn, ne);

      e->source = BLN_CONVERT_GROUPED;
      e->group = t->ne[1];
      e->offset = half * ne[1];
      e->take = ne[1];
    }
  return TRUE;
}

/* One layer's experts, one HF tensor each: stacked. @names holds, for each
 * projection, n_expert names (NULL where missing). */
static gboolean
plan_stacks (GPtrArray *entries, BlnHfDir *hf, const Dims *d, int il, const char **names,
             GError **error)
{
  for (int p = 0; p < 3; p++)
    {
      const char **part = names + (gsize) p * d->n_expert;
      g_autofree char *gguf = NULL;
      const BlnTensor *t;
      int64_t ne[4];
      BlnConvertEntry *e;

      for (gint64 x = 0; x < d->n_expert; x++)
        if (part[x] == NULL)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                         "layer %d: expert %" G_GINT64_FORMAT " has no %s (n_routed_experts is "
                         "%" G_GINT64_FORMAT ")", il, x, expert_proj[p], d->n_expert);
            return FALSE;
          }
      if (!(t = bln_hfdir_get_shape (hf, part[0], error)))
        return FALSE;
      ne[0] = t->ne[0];
      ne[1] = t->ne[1];
      ne[2] = d->n_expert;
      ne[3] = 1;
      gguf = g_strdup_printf ("blk.%d.%s.weight", il, expert_gguf[p]);
      e = add (entries, gguf, part[0], ne);
      e->source = BLN_CONVERT_STACK;
      e->parts = g_ptr_array_new ();
      for (gint64 x = 0; x < d->n_expert; x++)
        g_ptr_array_add (e->parts, (gpointer) part[x]);
    }
  return TRUE;
}

/* "model.layers.L.mlp.experts.X.PROJ.weight": sets *@x and *@p. */
static gboolean
parse_expert (const char *rest, gint64 n_expert, gint64 *x, int *p)
{
  char *end = NULL;

  if (!g_str_has_prefix (rest, "mlp.experts.") || !g_ascii_isdigit (rest[12]))
    return FALSE;
  *x = g_ascii_strtoll (rest + 12, &end, 10);
  if (*x < 0 || *x >= n_expert || *end != '.')
    return FALSE;
  for (*p = 0; *p < 3; (*p)++)
    if (g_str_has_prefix (end + 1, expert_proj[*p])
        && g_str_equal (end + 1 + strlen (expert_proj[*p]), ".weight"))
      return TRUE;
  return FALSE;
}

gboolean
bln_convert_plan_deepseek2 (BlnHfDir *hf, GPtrArray *entries, GError **error)
{
  JsonObject *c = bln_hfdir_config (hf);
  Dims d;
  g_autofree const char **experts = NULL;   /* [layer][proj][expert] */
  g_autofree gboolean *stacked = NULL;      /* per layer: per-expert tensors seen */

  d.n_layer = bln_hf_config_get_int (c, "num_hidden_layers", 0);
  d.n_head = bln_hf_config_get_int (c, "num_attention_heads", 0);
  d.n_expert = bln_hf_config_get_int (c, "n_routed_experts", 0);
  d.nope = bln_hf_config_get_int (c, "qk_nope_head_dim", 0);
  d.rope = bln_hf_config_get_int (c, "qk_rope_head_dim", 0);
  d.v = bln_hf_config_get_int (c, "v_head_dim", 0);
  d.rank = bln_hf_config_get_int (c, "kv_lora_rank", 0);
  if (d.n_layer <= 0 || d.n_layer > 4096 || d.n_head <= 0 || d.n_head > 4096 || d.nope <= 0
      || d.rope <= 0 || d.v <= 0 || d.rank <= 0 || d.n_expert < 0 || d.n_expert > 4096
      || d.nope > 65536 || d.v > 65536 || d.rank > 65536)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "config.json: invalid MLA or MoE dimensions for a DeepSeek model");
      return FALSE;
    }
  if (!bln_hf_config_get_bool (c, "rope_interleave", TRUE))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "rope_interleave false is not converted; load the folder directly");
      return FALSE;
    }
  experts = g_new0 (const char *, (gsize) (d.n_layer * 3 * MAX (d.n_expert, 1)));
  stacked = g_new0 (gboolean, d.n_layer);

  for (int64_t i = 0; i < bln_hfdir_n_tensors (hf); i++)
    {
      const char *hn = bln_hfdir_tensor_name (hf, i);
      const BlnTensor *t;
      const char *rest;
      char *end = NULL;
      gint64 il, x;
      int p;
      gboolean done = FALSE;

      if (g_str_has_suffix (hn, "rotary_emb.inv_freq"))
        continue;   /* recomputed from the rope settings */
      if (!(t = bln_hfdir_get_shape (hf, hn, error)))
        return FALSE;
      if (g_str_equal (hn, "model.embed_tokens.weight"))
        {
          add (entries, "token_embd.weight", hn, t->ne);
          continue;
        }
      if (g_str_equal (hn, "model.norm.weight"))
        {
          add (entries, "output_norm.weight", hn, t->ne);
          continue;
        }
      if (g_str_equal (hn, "lm_head.weight"))
        {
          add (entries, "output.weight", hn, t->ne);
          continue;
        }
      if (!g_str_has_prefix (hn, "model.layers."))
        goto unknown;
      il = g_ascii_strtoll (hn + 13, &end, 10);
      if (!end || *end != '.' || il < 0)
        goto unknown;
      if (il >= d.n_layer)
        continue;   /* V3's multi-token-prediction layers: llama.cpp leaves them out too */
      rest = end + 1;
      for (guint k = 0; k < G_N_ELEMENTS (one_to_one); k++)
        if (g_str_equal (rest, one_to_one[k].hf))
          {
            g_autofree char *gguf = g_strdup_printf ("blk.%d.%s", (int) il, one_to_one[k].gguf);
            add (entries, gguf, hn, t->ne);
            done = TRUE;
            break;
          }
      if (done)
        continue;
      if (g_str_equal (rest, "self_attn.kv_b_proj.weight"))
        {
          TRY (plan_kv_b (entries, &d, (int) il, hn, t, error));
          continue;
        }
      if (g_str_equal (rest, "mlp.experts.gate_up_proj"))
        {
          TRY (plan_gate_up (entries, (int) il, hn, t, error));
          continue;
        }
      if (parse_expert (rest, d.n_expert, &x, &p))
        {
          experts[(il * 3 + p) * d.n_expert + x] = hn;
          stacked[il] = TRUE;
          continue;
        }
    unknown:
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "tensor “%s” has no GGUF name in a DeepSeek model (a layout this "
                   "converter does not know)", hn);
      return FALSE;
    }
  for (gint64 il = 0; il < d.n_layer; il++)
    if (stacked[il])
      TRY (plan_stacks (entries, hf, &d, (int) il, experts + il * 3 * d.n_expert, error));
  return TRUE;
}

static gboolean
add_u32 (BlnGgufWriter *w, const char *key, gint64 v, GError **error)
{
  g_autofree char *k = g_strconcat ("deepseek2.", key, NULL);

  if (v < 0 || v > G_MAXUINT32)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "config.json: %s = %" G_GINT64_FORMAT
                   " is out of range", key, v);
      return FALSE;
    }
  return bln_gguf_writer_add_uint32 (w, k, (guint32) v, error);
}

static gboolean
add_f32 (BlnGgufWriter *w, const char *key, double v, GError **error)
{
  g_autofree char *k = g_strconcat ("deepseek2.", key, NULL);

  return bln_gguf_writer_add_float32 (w, k, (float) v, error);
}

gboolean
bln_convert_metadata_deepseek2 (BlnGgufWriter *w, BlnHfDir *hf, gint64 n_vocab, GError **error)
{
  JsonObject *c = bln_hfdir_config (hf);
  const char *mt = bln_hf_config_get_string (c, "model_type", "");
  gboolean v3 = g_str_equal (mt, "deepseek_v3");
  const char *scoring = bln_hf_config_get_string (c, "scoring_func", NULL);
  const char *topk = bln_hf_config_get_string (c, "topk_method", "");
  gint64 rank = bln_hf_config_get_int (c, "kv_lora_rank", 0);
  gint64 nope = bln_hf_config_get_int (c, "qk_nope_head_dim", 0);
  gint64 rope = bln_hf_config_get_int (c, "qk_rope_head_dim", 0);
  gint64 q_rank = bln_hf_config_get_int (c, "q_lora_rank", 0);
  gint64 groups = bln_hf_config_get_int (c, "n_group", 1);
  gint64 groups_used = bln_hf_config_get_int (c, "topk_group", 1);
  JsonObject *rs = bln_hf_config_get_object (c, "rope_scaling");
  gboolean sigmoid;

  if (!rs)
    rs = bln_hf_config_get_object (c, "rope_parameters");
  /* as the engine reads a folder (model.c): V3 routes by sigmoid unless told
   * otherwise; V2's groups only count for group_limited_greedy */
  sigmoid = v3 ? scoring == NULL || g_str_equal (scoring, "sigmoid")
               : scoring != NULL && g_str_equal (scoring, "sigmoid");
  if (!v3 && !g_str_equal (topk, "group_limited_greedy"))
    groups = groups_used = 1;

  TRY (add_u32 (w, "block_count", bln_hf_config_get_int (c, "num_hidden_layers", -1), error));
  TRY (add_u32 (w, "context_length", bln_hf_config_get_int (c, "max_position_embeddings", 4096),
                error));
  TRY (add_u32 (w, "embedding_length", bln_hf_config_get_int (c, "hidden_size", -1), error));
  TRY (add_u32 (w, "feed_forward_length", bln_hf_config_get_int (c, "intermediate_size", -1),
                error));
  TRY (add_u32 (w, "attention.head_count", bln_hf_config_get_int (c, "num_attention_heads", -1),
                error));
  TRY (add_f32 (w, "rope.freq_base", bln_hf_config_get_float (c, "rope_theta", rs
                ? bln_hf_config_get_float (rs, "rope_theta", 10000) : 10000), error));
  TRY (add_f32 (w, "attention.layer_norm_rms_epsilon",
                bln_hf_config_get_float (c, "rms_norm_eps", 1e-6), error));
  /* the latent cache is one "KV head" */
  TRY (add_u32 (w, "attention.head_count_kv", 1, error));
  TRY (add_u32 (w, "expert_count", bln_hf_config_get_int (c, "n_routed_experts", 0), error));
  TRY (add_u32 (w, "expert_used_count", bln_hf_config_get_int (c, "num_experts_per_tok", 0),
                error));
  TRY (add_u32 (w, "expert_group_count", groups, error));
  TRY (add_u32 (w, "expert_group_used_count", groups_used, error));
  TRY (add_u32 (w, "expert_gating_func", sigmoid ? 2 : 1, error));
  if (rs)
    {
      const char *kind = bln_hf_config_get_string (rs, "rope_type",
                                                   bln_hf_config_get_string (rs, "type", ""));

      if (g_str_equal (kind, "yarn"))
        {
          TRY (bln_gguf_writer_add_string (w, "deepseek2.rope.scaling.type", "yarn", error));
          TRY (add_f32 (w, "rope.scaling.factor", bln_hf_config_get_float (rs, "factor", 1),
                        error));
          TRY (add_u32 (w, "rope.scaling.original_context_length",
                        bln_hf_config_get_int (rs, "original_max_position_embeddings",
                                               bln_hf_config_get_int (c, "max_position_embeddings",
                                                                      4096)), error));
          TRY (add_f32 (w, "rope.scaling.yarn_beta_fast",
                        bln_hf_config_get_float (rs, "beta_fast", 32), error));
          TRY (add_f32 (w, "rope.scaling.yarn_beta_slow",
                        bln_hf_config_get_float (rs, "beta_slow", 1), error));
        }
      else if (*kind && !g_str_equal (kind, "default"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "rope scaling “%s” is not converted for DeepSeek models; load the folder "
                       "directly", kind);
          return FALSE;
        }
    }
  TRY (add_u32 (w, "leading_dense_block_count",
                bln_hf_config_get_int (c, "first_k_dense_replace", 0), error));
  TRY (add_u32 (w, "vocab_size", n_vocab, error));
  if (q_rank > 0)
    TRY (add_u32 (w, "attention.q_lora_rank", q_rank, error));
  TRY (add_u32 (w, "attention.kv_lora_rank", rank, error));
  TRY (add_u32 (w, "attention.key_length", rank + rope, error));
  TRY (add_u32 (w, "attention.value_length", rank, error));
  TRY (add_u32 (w, "attention.key_length_mla", nope + rope, error));
  TRY (add_u32 (w, "attention.value_length_mla", bln_hf_config_get_int (c, "v_head_dim", 0),
                error));
  TRY (add_u32 (w, "expert_feed_forward_length",
                bln_hf_config_get_int (c, "moe_intermediate_size", 0), error));
  TRY (add_u32 (w, "expert_shared_count", bln_hf_config_get_int (c, "n_shared_experts", 0),
                error));
  TRY (add_f32 (w, "expert_weights_scale",
                bln_hf_config_get_float (c, "routed_scaling_factor", 1), error));
  if (bln_hf_config_get_bool (c, "norm_topk_prob", FALSE))
    TRY (bln_gguf_writer_add_bool (w, "deepseek2.expert_weights_norm", TRUE, error));
  TRY (add_u32 (w, "rope.dimension_count", rope, error));
  if (rs && bln_hf_config_has (rs, "mscale_all_dim"))
    TRY (add_f32 (w, "rope.scaling.yarn_log_multiplier",
                  0.1 * bln_hf_config_get_float (rs, "mscale_all_dim", 0), error));
  return TRUE;
}
