/* hf-convert.c — HF folder to GGUF (see hf-convert.h).
 *
 * Three passes over small data and one over the weights: config.json gives
 * the hyper-parameters, tokenizer.json and tokenizer_config.json the
 * vocabulary, the safetensors headers the tensor list; then each weight is
 * read row by row from the mapped shards, converted to float, reordered where
 * GGUF wants another row order, quantised and streamed to the writer, so
 * memory stays at one row whatever the model's size (MLA's attn_k_b, a
 * transpose, reads its one source tensor whole). Each GGUF tensor is planned
 * first as an entry saying where its rows come from (hf-convert-private.h):
 * here for llama and qwen2, in hf-convert-deepseek2.c for DeepSeek-V2/V3.
 */
#include "hf-convert.h"

#include <errno.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "gguf-write.h"
#include "hf-convert-private.h"
#include "hfdir.h"

static const BlnConvertType targets[] = {
  { "q8_0", BLN_TYPE_Q8_0 },
  { "q4_0", BLN_TYPE_Q4_0 },
  { "q4_K", BLN_TYPE_Q4_K },
  { "q6_K", BLN_TYPE_Q6_K },
  { "f16", BLN_TYPE_F16 },
  { "bf16", BLN_TYPE_BF16 },
  { "f32", BLN_TYPE_F32 },
};

const BlnConvertType *
bln_hf_convert_types (guint *n)
{
  *n = G_N_ELEMENTS (targets);
  return targets;
}

gboolean
bln_hf_convert_type_from_name (const char *name, BlnType *out)
{
  for (guint i = 0; name && i < G_N_ELEMENTS (targets); i++)
    if (g_ascii_strcasecmp (targets[i].name, name) == 0)
      {
        *out = targets[i].type;
        return TRUE;
      }
  return FALSE;
}

static const char *
target_name (BlnType type)
{
  for (guint i = 0; i < G_N_ELEMENTS (targets); i++)
    if (targets[i].type == type)
      return targets[i].name;
  return NULL;
}

char *
bln_hf_convert_file_name (const char *hf_dir, BlnType type)
{
  g_autofree char *trimmed = g_strdup (hf_dir);
  g_autofree char *base = NULL;
  gsize len = strlen (trimmed);

  while (len > 1 && trimmed[len - 1] == G_DIR_SEPARATOR)
    trimmed[--len] = '\0';
  base = g_path_get_basename (trimmed);
  return g_strdup_printf ("%s-%s.gguf", base, target_name (type) ? target_name (type) : "f32");
}

/* llama.cpp's general.file_type numbers for a model "mostly" of @type. */
static guint32
file_type (BlnType type)
{
  switch (type)
    {
    case BLN_TYPE_F16: return 1;
    case BLN_TYPE_Q4_0: return 2;
    case BLN_TYPE_Q8_0: return 7;
    case BLN_TYPE_Q4_K: return 14;   /* every weight q4_K: the "small" mix */
    case BLN_TYPE_Q6_K: return 18;
    case BLN_TYPE_BF16: return 32;
    case BLN_TYPE_F32:
    default: return 0;
    }
}

/* ---- the tokenizer -------------------------------------------------------- */

typedef struct {
  GPtrArray *tokens;        /* char *, by id */
  GArray *types;            /* int32_t GGUF token types */
  GPtrArray *merges;        /* char * "a b" */
  const char *pre;          /* static */
  gint64 bos, eos, pad;     /* -1: none */
  gboolean add_bos;
  char *chat_template;
} Vocab;

static void
vocab_clear (Vocab *v)
{
  g_clear_pointer (&v->tokens, g_ptr_array_unref);
  g_clear_pointer (&v->types, g_array_unref);
  g_clear_pointer (&v->merges, g_ptr_array_unref);
  g_clear_pointer (&v->chat_template, g_free);
}

static JsonNode *
load_json (const char *path, JsonParser *parser, GError **error)
{
  if (!json_parser_load_from_file (parser, path, error))
    {
      g_prefix_error (error, "%s: ", path);
      return NULL;
    }
  return json_parser_get_root (parser);
}

/* Does the pre-tokenizer tree @node hold a Split whose regex contains @piece
 * (or, when @piece starts with '=', is the rest of @piece)? */
static gboolean
has_split (JsonNode *node, const char *piece)
{
  JsonObject *o;

  if (!node)
    return FALSE;
  if (JSON_NODE_HOLDS_ARRAY (node))
    {
      JsonArray *a = json_node_get_array (node);
      for (guint i = 0; i < json_array_get_length (a); i++)
        if (has_split (json_array_get_element (a, i), piece))
          return TRUE;
      return FALSE;
    }
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return FALSE;
  o = json_node_get_object (node);
  if (json_object_has_member (o, "pretokenizers"))
    return has_split (json_object_get_member (o, "pretokenizers"), piece);
  if (g_strcmp0 (json_object_get_string_member_with_default (o, "type", ""), "Split") == 0 &&
      json_object_has_member (o, "pattern"))
    {
      JsonObject *p = json_object_get_object_member (o, "pattern");
      const char *re = p ? json_object_get_string_member_with_default (p, "Regex", "") : "";
      return *piece == '=' ? strcmp (re, piece + 1) == 0 : strstr (re, piece) != NULL;
    }
  return FALSE;
}

static gboolean
has_type (JsonNode *node, const char *type)
{
  JsonObject *o;

  if (!node || !JSON_NODE_HOLDS_OBJECT (node))
    return FALSE;
  o = json_node_get_object (node);
  if (g_strcmp0 (json_object_get_string_member_with_default (o, "type", ""), type) == 0)
    return TRUE;
  if (json_object_has_member (o, "pretokenizers"))
    {
      JsonArray *a = json_object_get_array_member (o, "pretokenizers");
      for (guint i = 0; a && i < json_array_get_length (a); i++)
        if (has_type (json_array_get_element (a, i), type))
          return TRUE;
    }
  return FALSE;
}

/* The GGUF pre-tokenizer name for the HF pre_tokenizer @pre, recognised by
 * the regexes of the families the engine knows (tokenizer-load.c); NULL when
 * it is none of them. */
static const char *
pre_name (JsonNode *pre)
{
  if (has_split (pre, "=[\\r\\n]") && has_split (pre, "=\\s?\\p{L}+"))
    return "deepseek-coder";
  if (has_split (pre, "=[\\r\\n]"))
    return "deepseek-llm";
  if (has_split (pre, "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"))
    return "deepseek-v3";
  if (has_split (pre, "(?i:'s|'t|'re|'ve|'m|'ll|'d)") && has_split (pre, "\\p{N}{1,3}"))
    return "llama-bpe";
  if (has_split (pre, "(?i:'s|'t|'re|'ve|'m|'ll|'d)"))
    return "qwen2";
  if (has_type (pre, "ByteLevel") && has_type (pre, "Digits"))
    return "smollm";
  if (has_type (pre, "ByteLevel"))
    return "gpt-2";
  return NULL;
}

/* A special token's text from tokenizer_config.json: a string or {"content"}. */
static const char *
token_text (JsonObject *cfg, const char *key)
{
  JsonNode *n = cfg && json_object_has_member (cfg, key) ? json_object_get_member (cfg, key)
                                                          : NULL;

  if (!n || JSON_NODE_HOLDS_NULL (n))
    return NULL;
  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    return json_node_get_string (n);
  if (JSON_NODE_HOLDS_OBJECT (n))
    return json_object_get_string_member_with_default (json_node_get_object (n), "content",
                                                       NULL);
  return NULL;
}

static gint64
token_id (GHashTable *ids, const char *text)
{
  gpointer v;

  if (!text || !g_hash_table_lookup_extended (ids, text, NULL, &v))
    return -1;
  return GPOINTER_TO_INT (v);
}

static gboolean
load_vocab (BlnHfDir *hf, gint64 n_vocab_cfg, Vocab *v, GError **error)
{
  const char *tok_path = bln_hfdir_tokenizer_json (hf);
  const char *cfg_path = bln_hfdir_tokenizer_config (hf);
  g_autoptr (JsonParser) tp = json_parser_new ();
  g_autoptr (JsonParser) cp = json_parser_new ();
  g_autoptr (GHashTable) ids = g_hash_table_new (g_str_hash, g_str_equal);
  JsonObject *tok, *model, *vocab, *cfg = NULL, *hfcfg = bln_hfdir_config (hf);
  JsonNode *root, *merges_node, *tmpl;
  JsonArray *added = NULL, *merges;
  g_autoptr (GList) names = NULL;
  gint64 n = 0;

  if (!tok_path)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the folder has no tokenizer.json (only byte-level BPE tokenizers from "
                   "tokenizer.json are converted)");
      return FALSE;
    }
  if (!(root = load_json (tok_path, tp, error)))
    return FALSE;
  tok = JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
  model = tok ? json_object_get_object_member (tok, "model") : NULL;
  vocab = model ? json_object_get_object_member (model, "vocab") : NULL;
  merges_node = model ? json_object_get_member (model, "merges") : NULL;
  if (!model || !vocab || !merges_node || !JSON_NODE_HOLDS_ARRAY (merges_node) ||
      g_strcmp0 (json_object_get_string_member_with_default (model, "type", ""), "BPE") != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%s: only BPE tokenizers with a vocabulary and merges are converted",
                   tok_path);
      return FALSE;
    }
  v->pre = pre_name (json_object_get_member (tok, "pre_tokenizer"));
  if (!v->pre)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%s: the pre-tokenizer is not one of the byte-level families Baleen knows "
                   "(GPT-2, SmolLM, Llama 3, Qwen2, DeepSeek)", tok_path);
      return FALSE;
    }

  /* ids: the vocabulary, then the added tokens */
  names = json_object_get_members (vocab);
  for (GList *l = names; l; l = l->next)
    {
      gint64 id = json_object_get_int_member (vocab, l->data);
      if (id < 0 || id >= (1 << 24))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: token id %" G_GINT64_FORMAT
                       " out of range", tok_path, id);
          return FALSE;
        }
      g_hash_table_insert (ids, l->data, GINT_TO_POINTER ((int) id));
      n = MAX (n, id + 1);
    }
  if (json_object_has_member (tok, "added_tokens"))
    added = json_object_get_array_member (tok, "added_tokens");
  for (guint i = 0; added && i < json_array_get_length (added); i++)
    {
      JsonObject *a = json_array_get_object_element (added, i);
      gint64 id = a ? json_object_get_int_member_with_default (a, "id", -1) : -1;
      const char *content = a ? json_object_get_string_member_with_default (a, "content", NULL)
                              : NULL;
      if (id < 0 || id >= (1 << 24) || !content)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: a bad added token", tok_path);
          return FALSE;
        }
      g_hash_table_insert (ids, (gpointer) content, GINT_TO_POINTER ((int) id));
      n = MAX (n, id + 1);
    }
  if (n_vocab_cfg > n)
    n = n_vocab_cfg;   /* padded vocabularies: fill the gap like the reference converter */

  v->tokens = g_ptr_array_new_full (n, g_free);
  v->types = g_array_sized_new (FALSE, TRUE, sizeof (int32_t), n);
  g_ptr_array_set_size (v->tokens, n);
  g_array_set_size (v->types, n);
  for (GList *l = names; l; l = l->next)
    {
      gint64 id = json_object_get_int_member (vocab, l->data);
      g_free (v->tokens->pdata[id]);
      v->tokens->pdata[id] = g_strdup (l->data);
      g_array_index (v->types, int32_t, id) = 1;               /* normal */
    }
  for (guint i = 0; added && i < json_array_get_length (added); i++)
    {
      JsonObject *a = json_array_get_object_element (added, i);
      gint64 id = json_object_get_int_member (a, "id");
      g_free (v->tokens->pdata[id]);
      v->tokens->pdata[id] = g_strdup (json_object_get_string_member (a, "content"));
      g_array_index (v->types, int32_t, id) =
        json_object_get_boolean_member_with_default (a, "special", FALSE) ? 3 : 4;
    }
  for (gint64 i = 0; i < n; i++)
    if (!v->tokens->pdata[i])
      {
        v->tokens->pdata[i] = g_strdup_printf ("[PAD%" G_GINT64_FORMAT "]", i);
        g_array_index (v->types, int32_t, i) = 5;              /* unused */
      }

  /* merges: "a b" strings, or [a, b] pairs in newer files */
  merges = json_node_get_array (merges_node);
  v->merges = g_ptr_array_new_full (json_array_get_length (merges), g_free);
  for (guint i = 0; i < json_array_get_length (merges); i++)
    {
      JsonNode *m = json_array_get_element (merges, i);
      if (JSON_NODE_HOLDS_VALUE (m) && json_node_get_value_type (m) == G_TYPE_STRING)
        g_ptr_array_add (v->merges, g_strdup (json_node_get_string (m)));
      else if (JSON_NODE_HOLDS_ARRAY (m) && json_array_get_length (json_node_get_array (m)) == 2)
        g_ptr_array_add (v->merges,
                         g_strdup_printf ("%s %s",
                                          json_array_get_string_element (json_node_get_array (m), 0),
                                          json_array_get_string_element (json_node_get_array (m), 1)));
      else
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: merge %u is malformed",
                       tok_path, i);
          return FALSE;
        }
    }

  /* special ids: tokenizer_config.json first, config.json for what it lacks */
  if (cfg_path)
    {
      JsonNode *c = load_json (cfg_path, cp, error);
      if (!c)
        return FALSE;
      cfg = JSON_NODE_HOLDS_OBJECT (c) ? json_node_get_object (c) : NULL;
    }
  v->bos = token_id (ids, token_text (cfg, "bos_token"));
  v->eos = token_id (ids, token_text (cfg, "eos_token"));
  v->pad = token_id (ids, token_text (cfg, "pad_token"));
  if (v->bos < 0)
    v->bos = bln_hf_config_get_int (hfcfg, "bos_token_id", -1);
  if (v->eos < 0)
    v->eos = bln_hf_config_get_int (hfcfg, "eos_token_id", -1);
  v->add_bos = cfg && json_object_get_boolean_member_with_default (cfg, "add_bos_token", FALSE);
  tmpl = cfg && json_object_has_member (cfg, "chat_template")
           ? json_object_get_member (cfg, "chat_template") : NULL;
  if (tmpl && JSON_NODE_HOLDS_VALUE (tmpl) && json_node_get_value_type (tmpl) == G_TYPE_STRING)
    v->chat_template = g_strdup (json_node_get_string (tmpl));
  else if (tmpl && JSON_NODE_HOLDS_ARRAY (tmpl))
    {
      /* named templates: keep "default" */
      JsonArray *a = json_node_get_array (tmpl);
      for (guint i = 0; i < json_array_get_length (a); i++)
        {
          JsonObject *t = json_array_get_object_element (a, i);
          if (t && g_strcmp0 (json_object_get_string_member_with_default (t, "name", ""),
                              "default") == 0)
            v->chat_template = g_strdup (json_object_get_string_member_with_default (
                                           t, "template", ""));
        }
    }
  return TRUE;
}

/* ---- tensors ---------------------------------------------------------------- */

typedef BlnConvertEntry Entry;

int
bln_convert_n_dims (const int64_t *ne)
{
  return ne[3] > 1 ? 4 : ne[2] > 1 ? 3 : ne[1] > 1 ? 2 : 1;
}

BlnConvertEntry *
bln_convert_entry_new (const char *gguf, const char *hf, int n_dims, const int64_t *ne)
{
  BlnConvertEntry *e = g_new0 (BlnConvertEntry, 1);
  int i;

  e->gguf = g_strdup (gguf);
  e->hf = hf;
  e->source = BLN_CONVERT_ROWS;
  e->n_dims = n_dims;
  for (i = 0; i < 4; i++)
    e->ne[i] = i < n_dims ? ne[i] : 1;
  e->order = g_str_has_prefix (gguf, "blk.") ? 1 : g_str_has_prefix (gguf, "token_embd") ? 0 : 2;
  if (e->order == 1)
    e->block = (int) CLAMP (g_ascii_strtoll (gguf + 4, NULL, 10), 0, G_MAXINT);
  return e;
}

void
bln_convert_entry_free (gpointer p)
{
  BlnConvertEntry *e = p;

  g_free (e->gguf);
  g_clear_pointer (&e->parts, g_ptr_array_unref);
  g_free (e);
}

static int
entry_cmp (gconstpointer a, gconstpointer b)
{
  const Entry *x = *(Entry *const *) a, *y = *(Entry *const *) b;

  if (x->order != y->order)
    return x->order - y->order;
  if (x->block != y->block)
    return x->block - y->block;
  return strcmp (x->gguf, y->gguf);
}

/* The GGUF name of HF tensor @name ("model.layers.3.self_attn.q_proj.weight"
 * -> "blk.3.attn_q.weight"), the block in *@block; NULL when it has none. */
static char *
gguf_name (const char *name, int *block, int *order)
{
  static const struct { const char *hf, *gguf; } layer[] = {
    { "input_layernorm", "attn_norm" },
    { "self_attn.q_proj", "attn_q" },
    { "self_attn.k_proj", "attn_k" },
    { "self_attn.v_proj", "attn_v" },
    { "self_attn.o_proj", "attn_output" },
    { "post_attention_layernorm", "ffn_norm" },
    { "mlp.gate_proj", "ffn_gate" },
    { "mlp.up_proj", "ffn_up" },
    { "mlp.down_proj", "ffn_down" },
  };
  const char *suffix;

  *block = 0;
  *order = 2;
  if (g_str_equal (name, "model.embed_tokens.weight"))
    {
      *order = 0;
      return g_strdup ("token_embd.weight");
    }
  if (g_str_equal (name, "model.norm.weight"))
    return g_strdup ("output_norm.weight");
  if (g_str_equal (name, "lm_head.weight"))
    return g_strdup ("output.weight");
  if (g_str_has_prefix (name, "model.layers."))
    {
      char *end = NULL;
      gint64 b = g_ascii_strtoll (name + 13, &end, 10);
      if (!end || *end != '.' || b < 0 || b > 100000)
        return NULL;
      for (guint i = 0; i < G_N_ELEMENTS (layer); i++)
        {
          gsize n = strlen (layer[i].hf);
          if (strncmp (end + 1, layer[i].hf, n) == 0 && end[1 + n] == '.')
            {
              suffix = end + 1 + n;   /* ".weight" or ".bias" */
              if (!g_str_equal (suffix, ".weight") && !g_str_equal (suffix, ".bias"))
                return NULL;
              *block = (int) b;
              *order = 1;
              return g_strdup_printf ("blk.%d.%s%s", (int) b, layer[i].gguf, suffix);
            }
        }
    }
  return NULL;
}

/* The type a tensor of @n_dims with rows of @row values is stored as. */
static BlnType
storage_type (BlnType want, int n_dims, int64_t row)
{
  const BlnTypeInfo *info = bln_type_info (want);

  if (n_dims < 2)
    return BLN_TYPE_F32;
  if (info && row % info->block_size == 0)
    return want;
  return row % BLN_QK == 0 ? BLN_TYPE_Q8_0 : BLN_TYPE_F16;
}

typedef struct {
  BlnGgufWriter *w;
  GCancellable *cancellable;
  BlnConvertProgress progress;
  gpointer user_data;
  guint64 done, total;
  gint64 last_report;
} Job;

/* Rows of a source tensor, for reading one at a time: a tensor of the
 * directory as it is, or an FP8 one (with block scales) decoded row by row,
 * so that no whole FP8 tensor is expanded to floats. */
typedef struct {
  BlnHfDir *hf;
  const char *name;
  const BlnTensor *t;   /* NULL for FP8 */
  size_t row_bytes;
  int64_t width, n_rows;
} Src;

static gboolean
src_open (BlnHfDir *hf, const char *name, Src *src, GError **error)
{
  src->hf = hf;
  src->name = name;
  src->t = NULL;
  if (bln_hfdir_tensor_is_fp8 (hf, name))
    {
      const BlnStTensorInfo *info = bln_hfdir_tensor_info (hf, name);

      if (info->n_dims != 2)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: an FP8 tensor of %d "
                       "dimensions", name, info->n_dims);
          return FALSE;
        }
      src->width = info->shape[1];
      src->n_rows = info->shape[0];
      src->row_bytes = (size_t) src->width;
      return TRUE;
    }
  src->t = bln_hfdir_get_tensor (hf, name, error);
  if (!src->t)
    return FALSE;
  src->width = src->t->ne[0];
  src->n_rows = src->t->ne[1] * src->t->ne[2] * src->t->ne[3];
  if (!bln_type_row_bytes (src->t->type, src->t->ne[0], &src->row_bytes))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: %s rows of %" G_GINT64_FORMAT
                   " values cannot be read", name, bln_type_name (src->t->type), src->t->ne[0]);
      return FALSE;
    }
  return TRUE;
}

static const char *
src_type_name (const Src *src)
{
  return src->t ? bln_type_name (src->t->type) : "fp8";
}

static gboolean
src_row (const Src *src, const char *name, int64_t r, float *out, GError **error)
{
  if (src->t == NULL)
    return bln_hfdir_fp8_row (src->hf, src->name, r, out, error);
  if (r < 0 || r >= src->n_rows
      || !bln_dequantize_row (src->t->type, (const guint8 *) src->t->data + r * src->row_bytes,
                              out, src->t->ne[0]))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: cannot read row %" G_GINT64_FORMAT
                   " of %s data", name, r, bln_type_name (src->t->type));
      return FALSE;
    }
  return TRUE;
}

/* A tensor assembled from other sources than one HF tensor's rows in order:
 * the row counts and lengths must agree with the planned shape. */
static gboolean
check_source (BlnHfDir *hf, const Entry *e, Src *first, GError **error)
{
  int64_t row = e->ne[0], n_rows = e->ne[1] * e->ne[2] * e->ne[3];
  gboolean ok = TRUE;

  if (!src_open (hf, e->hf, first, error))
    return FALSE;
  switch (e->source)
    {
    case BLN_CONVERT_ROWS:
      ok = first->width == row && first->n_rows == n_rows;
      break;
    case BLN_CONVERT_GROUPED:
      ok = first->width == row && e->group > 0 && e->take > 0 && e->offset >= 0
           && e->offset + e->take <= e->group && first->n_rows % e->group == 0
           && first->n_rows / e->group * e->take == n_rows;
      break;
    case BLN_CONVERT_STACK:
      ok = e->parts != NULL && e->parts->len > 0 && first->width == row
           && first->n_rows * (int64_t) e->parts->len == n_rows;
      for (guint i = 1; ok && i < e->parts->len; i++)
        {
          Src other;
          if (!src_open (hf, e->parts->pdata[i], &other, error))
            return FALSE;
          ok = other.width == row && other.n_rows == first->n_rows;
        }
      break;
    case BLN_CONVERT_K_B:
      ok = e->group > 0 && e->take == row && e->take <= e->group
           && first->n_rows % e->group == 0 && first->width == e->ne[1]
           && first->n_rows / e->group * first->width == n_rows;
      break;
    }
  if (!ok)
    g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: its shape does not give %s",
                 e->hf, e->gguf);
  return ok;
}

static gboolean
write_tensor (Job *job, BlnHfDir *hf, const Entry *e, GError **error)
{
  Src src, part = { 0 };
  int64_t row, n_rows, hd = 0, part_index = 0;
  size_t dst_row_bytes;
  g_autofree float *f = NULL;
  g_autofree float *full = NULL;
  g_autofree guint8 *q = NULL;

  if (!check_source (hf, e, &src, error))
    return FALSE;
  row = e->ne[0];
  n_rows = e->ne[1] * e->ne[2] * e->ne[3];
  if (!bln_type_row_bytes (e->type, row, &dst_row_bytes))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: rows of %" G_GINT64_FORMAT
                   " values cannot be stored as %s", e->hf, row, bln_type_name (e->type));
      return FALSE;
    }
  if (e->source == BLN_CONVERT_K_B)
    {
      /* a transpose: read the whole source once */
      int64_t width = src.width;

      full = g_try_new (float, (gsize) (src.n_rows * width));
      if (!full)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "%s: out of memory", e->hf);
          return FALSE;
        }
      for (int64_t r = 0; r < src.n_rows; r++)
        if (!src_row (&src, e->hf, r, full + r * width, error))
          return FALSE;
    }
  part = src;
  if (e->permute_heads > 0)
    {
      hd = n_rows / e->permute_heads;
      if (hd * e->permute_heads != n_rows || hd % 2 != 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: %" G_GINT64_FORMAT " rows do "
                       "not split into %d heads of an even size", e->hf, n_rows,
                       e->permute_heads);
          return FALSE;
        }
    }
  f = g_new (float, row);
  q = g_malloc (dst_row_bytes);
  for (int64_t r = 0; r < n_rows; r++)
    {
      int64_t from = r;

      switch (e->source)
        {
        case BLN_CONVERT_ROWS:
          if (hd > 0)
            {
              /* GGUF row (head h, pair j, member i) = HF row (h, half i, j) */
              int64_t h = r / hd, j = (r % hd) / 2, i = r % 2;
              from = h * hd + i * (hd / 2) + j;
            }
          if (!src_row (&src, e->hf, from, f, error))
            return FALSE;
          break;
        case BLN_CONVERT_GROUPED:
          from = r / e->take * e->group + e->offset + r % e->take;
          if (!src_row (&src, e->hf, from, f, error))
            return FALSE;
          break;
        case BLN_CONVERT_STACK:
          if (r / src.n_rows != part_index)
            {
              part_index = r / src.n_rows;
              if (!src_open (hf, e->parts->pdata[part_index], &part, error))
                return FALSE;
            }
          if (!src_row (&part, e->parts->pdata[part_index], r % src.n_rows, f, error))
            return FALSE;
          break;
        case BLN_CONVERT_K_B:
          {
            int64_t width = src.width, h = r / width, c = r % width;

            for (int64_t i = 0; i < row; i++)
              f[i] = full[(h * e->group + i) * width + c];
          }
          break;
        }
      if (!bln_quantize_row (e->type, f, q, row))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: cannot store %s as %s",
                       e->hf, src_type_name (&src), bln_type_name (e->type));
          return FALSE;
        }
      if (!bln_gguf_writer_write (job->w, q, dst_row_bytes, error))
        return FALSE;
      job->done += dst_row_bytes;
      if ((r & 255) == 255 && g_cancellable_set_error_if_cancelled (job->cancellable, error))
        return FALSE;
      if (job->progress && g_get_monotonic_time () - job->last_report > 100000)
        {
          job->last_report = g_get_monotonic_time ();
          job->progress (job->total ? (double) job->done / job->total : 0, job->user_data);
        }
    }
  return TRUE;
}

/* ---- metadata --------------------------------------------------------------- */

#define TRY(call) G_STMT_START { if (!(call)) return FALSE; } G_STMT_END

static gboolean
add_u32 (BlnGgufWriter *w, const char *arch, const char *key, gint64 v, GError **error)
{
  g_autofree char *k = g_strdup_printf ("%s.%s", arch, key);

  if (v < 0 || v > G_MAXUINT32)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "config.json: %s = %" G_GINT64_FORMAT
                   " is out of range", key, v);
      return FALSE;
    }
  return bln_gguf_writer_add_uint32 (w, k, (guint32) v, error);
}

static gboolean
add_f32 (BlnGgufWriter *w, const char *arch, const char *key, double v, GError **error)
{
  g_autofree char *k = g_strdup_printf ("%s.%s", arch, key);

  return bln_gguf_writer_add_float32 (w, k, (float) v, error);
}

/* llama and qwen2: the architecture's hyper-parameters. */
static gboolean
write_hparams (BlnGgufWriter *w, BlnHfDir *hf, const char *arch, const Vocab *v,
               GError **error)
{
  JsonObject *c = bln_hfdir_config (hf);
  gint64 n_embd = bln_hf_config_get_int (c, "hidden_size", 0);
  gint64 n_head = bln_hf_config_get_int (c, "num_attention_heads", 0);
  gint64 n_kv = bln_hf_config_get_int (c, "num_key_value_heads", n_head);
  gint64 head_dim = bln_hf_config_get_int (c, "head_dim", n_head > 0 ? n_embd / n_head : 0);
  JsonObject *rs = bln_hf_config_get_object (c, "rope_scaling");

  if (n_embd <= 0 || n_head <= 0 || n_kv <= 0 || head_dim <= 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "config.json lacks hidden_size or num_attention_heads");
      return FALSE;
    }
  TRY (add_u32 (w, arch, "block_count", bln_hf_config_get_int (c, "num_hidden_layers", -1),
                error));
  TRY (add_u32 (w, arch, "context_length",
                bln_hf_config_get_int (c, "max_position_embeddings", 4096), error));
  TRY (add_u32 (w, arch, "embedding_length", n_embd, error));
  TRY (add_u32 (w, arch, "feed_forward_length",
                bln_hf_config_get_int (c, "intermediate_size", -1), error));
  TRY (add_u32 (w, arch, "attention.head_count", n_head, error));
  TRY (add_f32 (w, arch, "rope.freq_base", bln_hf_config_get_float (c, "rope_theta", 10000),
                error));
  TRY (add_f32 (w, arch, "attention.layer_norm_rms_epsilon",
                bln_hf_config_get_float (c, "rms_norm_eps", 1e-6), error));
  TRY (add_u32 (w, arch, "attention.head_count_kv", n_kv, error));
  if (g_str_equal (arch, "llama"))
    TRY (add_u32 (w, arch, "vocab_size", v->tokens->len, error));
  if (head_dim != n_embd / n_head)
    {
      TRY (add_u32 (w, arch, "attention.key_length", head_dim, error));
      TRY (add_u32 (w, arch, "attention.value_length", head_dim, error));
    }
  TRY (add_u32 (w, arch, "rope.dimension_count", head_dim, error));
  if (rs)
    {
      const char *kind = bln_hf_config_get_string (rs, "rope_type",
                                                   bln_hf_config_get_string (rs, "type", ""));
      double factor = bln_hf_config_get_float (rs, "factor", 1);
      g_autofree char *k = g_strdup_printf ("%s.rope.scaling.type", arch);

      if (g_str_equal (kind, "linear"))
        {
          TRY (bln_gguf_writer_add_string (w, k, "linear", error));
          TRY (add_f32 (w, arch, "rope.scaling.factor", factor, error));
        }
      else if (!g_str_equal (kind, "default") && *kind)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "rope scaling “%s” is not converted yet; load the folder directly", kind);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
write_metadata (BlnGgufWriter *w, BlnHfDir *hf, const char *arch, const char *name,
                BlnType type, const Vocab *v, GError **error)
{
  TRY (bln_gguf_writer_add_string (w, "general.architecture", arch, error));
  TRY (bln_gguf_writer_add_string (w, "general.type", "model", error));
  TRY (bln_gguf_writer_add_string (w, "general.name", name, error));
  if (g_str_equal (arch, "deepseek2"))
    TRY (bln_convert_metadata_deepseek2 (w, hf, v->tokens->len, error));
  else
    TRY (write_hparams (w, hf, arch, v, error));
  TRY (bln_gguf_writer_add_uint32 (w, "general.file_type", file_type (type), error));
  if (type != BLN_TYPE_F32)
    TRY (bln_gguf_writer_add_uint32 (w, "general.quantization_version", 2, error));

  TRY (bln_gguf_writer_add_string (w, "tokenizer.ggml.model", "gpt2", error));
  TRY (bln_gguf_writer_add_string (w, "tokenizer.ggml.pre", v->pre, error));
  TRY (bln_gguf_writer_add_string_array (w, "tokenizer.ggml.tokens",
                                         (const char *const *) v->tokens->pdata, NULL,
                                         v->tokens->len, error));
  TRY (bln_gguf_writer_add_array (w, "tokenizer.ggml.token_type", BLN_GGUF_INT32,
                                  v->types->data, v->types->len, error));
  TRY (bln_gguf_writer_add_string_array (w, "tokenizer.ggml.merges",
                                         (const char *const *) v->merges->pdata, NULL,
                                         v->merges->len, error));
  if (v->bos >= 0)
    TRY (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.bos_token_id", (guint32) v->bos, error));
  if (v->eos >= 0)
    TRY (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.eos_token_id", (guint32) v->eos, error));
  if (v->pad >= 0)
    TRY (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.padding_token_id", (guint32) v->pad,
                                     error));
  TRY (bln_gguf_writer_add_bool (w, "tokenizer.ggml.add_bos_token", v->add_bos, error));
  if (v->chat_template)
    TRY (bln_gguf_writer_add_string (w, "tokenizer.chat_template", v->chat_template, error));
  return TRUE;
}

/* ---- the whole file ----------------------------------------------------------- */

static gboolean
convert (const char *hf_dir, const char *part, BlnType type, Job *job, GError **error)
{
  g_autoptr (BlnHfDir) hf = bln_hfdir_open (hf_dir, error);
  g_autoptr (GPtrArray) entries = g_ptr_array_new_with_free_func (bln_convert_entry_free);
  g_autofree char *name = NULL;
  Vocab v = { 0 };
  JsonObject *c;
  const char *arch;
  gint64 n_head, n_kv;
  gboolean ok = FALSE;

  if (!hf)
    return FALSE;
  c = bln_hfdir_config (hf);
  arch = bln_hf_config_get_string (c, "model_type", "");
  if (g_str_equal (arch, "deepseek_v2") || g_str_equal (arch, "deepseek_v3"))
    arch = "deepseek2";
  if (!g_str_equal (arch, "llama") && !g_str_equal (arch, "qwen2")
      && !g_str_equal (arch, "deepseek2"))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "converting “%s” models is not supported (llama, qwen2, deepseek_v2 and "
                   "deepseek_v3 are); load the folder directly instead", arch);
      return FALSE;
    }
  n_head = bln_hf_config_get_int (c, "num_attention_heads", 0);
  n_kv = bln_hf_config_get_int (c, "num_key_value_heads", n_head);
  if (!load_vocab (hf, bln_hf_config_get_int (c, "vocab_size", 0), &v, error))
    goto out;

  if (g_str_equal (arch, "deepseek2"))
    {
      if (!bln_convert_plan_deepseek2 (hf, entries, error))
        goto out;
      for (guint i = 0; i < entries->len; i++)
        {
          Entry *e = entries->pdata[i];
          e->type = storage_type (type, e->n_dims, e->ne[0]);
        }
    }
  for (int64_t i = 0; !g_str_equal (arch, "deepseek2") && i < bln_hfdir_n_tensors (hf); i++)
    {
      const char *hn = bln_hfdir_tensor_name (hf, i);
      const BlnTensor *t;
      Entry *e;
      int n_dims;
      g_autofree char *gguf = NULL;
      int block, order;

      if (g_str_has_suffix (hn, "rotary_emb.inv_freq"))
        continue;   /* recomputed from rope_theta */
      gguf = gguf_name (hn, &block, &order);
      if (!gguf)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "tensor “%s” has no GGUF name in a %s model", hn, arch);
          goto out;
        }
      if (!(t = bln_hfdir_get_shape (hf, hn, error)))
        goto out;
      n_dims = bln_convert_n_dims (t->ne);
      e = bln_convert_entry_new (gguf, hn, n_dims, t->ne);
      g_ptr_array_add (entries, e);
      e->type = storage_type (type, n_dims, t->ne[0]);
      if (g_str_equal (arch, "llama") && g_str_has_suffix (e->gguf, "attn_q.weight"))
        e->permute_heads = (int) n_head;
      else if (g_str_equal (arch, "llama") && g_str_has_suffix (e->gguf, "attn_k.weight"))
        e->permute_heads = (int) n_kv;
    }
  g_ptr_array_sort (entries, entry_cmp);

  name = g_path_get_basename (hf_dir);
  job->w = bln_gguf_writer_new (part, 0, error);
  if (!job->w || !write_metadata (job->w, hf, arch, name, type, &v, error))
    goto out;
  for (guint i = 0; i < entries->len; i++)
    {
      const Entry *e = entries->pdata[i];

      if (!bln_gguf_writer_add_tensor (job->w, e->gguf, e->type, e->n_dims, e->ne, error))
        goto out;
    }
  for (guint i = 0; i < entries->len; i++)
    job->total += bln_gguf_writer_tensor_nbytes (job->w, i);
  for (guint i = 0; i < entries->len; i++)
    {
      if (g_cancellable_set_error_if_cancelled (job->cancellable, error) ||
          !write_tensor (job, hf, entries->pdata[i], error))
        goto out;
      if (job->progress)
        job->progress ((double) job->done / MAX (job->total, 1), job->user_data);
    }
  ok = bln_gguf_writer_finish (job->w, error);
  if (ok && job->progress)
    job->progress (1.0, job->user_data);
out:
  g_clear_pointer (&job->w, bln_gguf_writer_free);   /* removes the part file unless finished */
  vocab_clear (&v);
  return ok;
}

gboolean
bln_hf_convert (const char *hf_dir, const char *out_path, BlnType type,
                GCancellable *cancellable, BlnConvertProgress progress, gpointer user_data,
                GError **error)
{
  g_autofree char *part = NULL;
  Job job = { 0 };

  g_return_val_if_fail (hf_dir != NULL && out_path != NULL, FALSE);
  if (!target_name (type))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s is not a conversion target",
                   bln_type_name (type));
      return FALSE;
    }
  part = g_strconcat (out_path, ".part", NULL);
  job.cancellable = cancellable;
  job.progress = progress;
  job.user_data = user_data;
  if (!convert (hf_dir, part, type, &job, error))
    return FALSE;
  if (g_rename (part, out_path) != 0)
    {
      int e = errno;
      g_unlink (part);
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot rename %s to %s: %s", part, out_path,
                   g_strerror (e));
      return FALSE;
    }
  return TRUE;
}
