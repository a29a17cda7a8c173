/* tokenizer-load.c — building a BlnTokenizer from GGUF metadata or a Hugging Face
 * tokenizer.json (+ tokenizer_config.json). */
#include <string.h>
#include <json-glib/json-glib.h>
#include <zlib.h>
#include "bln-error.h"
#include "tokenizer-private.h"

/* ---------------------------------------------------------------------------------------
 * Pre-tokenizers by GGUF tokenizer.ggml.pre name. These are the Split regexes of each
 * family's HF tokenizer.json, applied in order with "Isolated" behaviour.
 */

static const char *const pre_deepseek_llm[] = {
  "[\\r\\n]",
  /* Cased letters; written as code points because NFC would fold some of them. */
  "\\s?["
  "\\x{41}-\\x{5A}\\x{61}-\\x{7A}\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}"
  "\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}"
  "\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}"
  "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"
  "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}"
  "\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}"
  "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}"
  "\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}"
  "\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
  "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}"
  "\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"
  "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
  "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"
  "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
  "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"
  "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
  "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"
  "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
  "]+",
  "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
  "\\s+$",
  "[一-龥ࠀ-一가-퟿]+",
  "\\p{N}+",
  NULL,
};

static const char *const pre_deepseek_coder[] = {
  "[\\r\\n]",
  "\\s?\\p{L}+",
  "\\s?\\p{P}+",
  "[一-龥ࠀ-一가-퟿]+",
  "\\p{N}",
  NULL,
};

static const char *const pre_deepseek_v3[] = {
  "\\p{N}{1,3}",
  "[一-龥぀-ゟ゠-ヿ]+",
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
  "| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  NULL,
};

static const char *const pre_qwen2[] = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  NULL,
};

static const char *const pre_llama3[] = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  NULL,
};

/* SmolLM2: HF Digits(individual_digits) followed by ByteLevel(use_regex). */
static const char *const pre_smollm[] = {
  "\\p{N}",
  bln_tokenizer_gpt2_regex,
  NULL,
};

static const char *const pre_gpt2[] = {
  bln_tokenizer_gpt2_regex,
  NULL,
};

static const struct {
  const char *name;
  const char *const *regex;
  gboolean nfc;
  gboolean ignore_merges;
} pre_table[] = {
  { "default", pre_gpt2, FALSE, FALSE },
  { "gpt2", pre_gpt2, FALSE, FALSE },
  { "gpt-2", pre_gpt2, FALSE, FALSE },
  { "deepseek-llm", pre_deepseek_llm, FALSE, FALSE },
  { "deepseek-coder", pre_deepseek_coder, FALSE, FALSE },
  { "deepseek-v3", pre_deepseek_v3, FALSE, FALSE },
  { "qwen2", pre_qwen2, TRUE, FALSE },
  { "deepseek-r1-qwen", pre_qwen2, TRUE, FALSE },
  { "llama-bpe", pre_llama3, FALSE, TRUE },
  { "llama3", pre_llama3, FALSE, TRUE },
  { "llama-v3", pre_llama3, FALSE, TRUE },
  { "smollm", pre_smollm, FALSE, FALSE },
};

/* ---------------------------------------------------------------------------------------
 * GGUF
 */

enum {
  GGUF_TOK_NORMAL = 1,
  GGUF_TOK_UNKNOWN = 2,
  GGUF_TOK_CONTROL = 3,
  GGUF_TOK_USER_DEFINED = 4,
  GGUF_TOK_UNUSED = 5,
  GGUF_TOK_BYTE = 6,
};

static int32_t
gguf_id (const BlnGguf *gguf, const char *key, int32_t n_vocab)
{
  int64_t v;

  if (!bln_gguf_get_int (gguf, key, &v) || v < 0 || v >= n_vocab)
    return -1;
  return (int32_t) v;
}

/* Adds the merges "a b" → rank; pairs naming unknown tokens are skipped, as a token
 * that cannot be formed never matters. */
static gboolean
add_merge_text (BlnTokenizer *tok, const char *m, gsize len, int32_t rank)
{
  const char *sp = memchr (m, ' ', len);
  int32_t a, b, r;
  g_autofree char *joined = NULL;

  if (sp == NULL || sp == m)
    {
      /* A space inside the first token ("  a") is possible: look for the next one. */
      sp = sp == m ? memchr (m + 1, ' ', len - 1) : NULL;
      if (sp == NULL)
        return FALSE;
    }
  a = bln_tokenizer_lookup (tok, m, sp - m);
  b = bln_tokenizer_lookup (tok, sp + 1, m + len - sp - 1);
  if (a < 0 || b < 0)
    return TRUE;
  joined = g_malloc (len);
  memcpy (joined, m, sp - m);
  memcpy (joined + (sp - m), sp + 1, m + len - sp - 1);
  r = bln_tokenizer_lookup (tok, joined, len - 1);
  if (r >= 0)
    bln_tokenizer_add_merge (tok, a, b, r, rank);
  return TRUE;
}

BlnTokenizer *
bln_tokenizer_new_from_gguf (const BlnGguf *gguf, GError **error)
{
  g_autoptr (BlnTokenizer) tok = NULL;
  const char *model, *pre;
  BlnTokenizerKind kind;
  BlnGgufType et;
  uint64_t n = 0, n_types = 0, n_scores = 0, n_merges = 0, i;
  gboolean has_types, has_scores, b;
  int64_t k;

  g_return_val_if_fail (gguf != NULL, NULL);

  model = bln_gguf_get_string (gguf, "tokenizer.ggml.model", NULL);
  if (model == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "GGUF has no tokenizer.ggml.model");
      return NULL;
    }
  if (strcmp (model, "gpt2") == 0)
    kind = BLN_TOKENIZER_BYTE_BPE;
  else if (strcmp (model, "llama") == 0)
    kind = BLN_TOKENIZER_SPM;
  else
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "tokenizer model “%s” is not supported (only gpt2 and llama)", model);
      return NULL;
    }

  if (!bln_gguf_get_array (gguf, "tokenizer.ggml.tokens", &et, &n) || et != BLN_GGUF_STRING
      || n == 0 || n > G_MAXINT32 / 4)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF tokenizer.ggml.tokens is missing, empty or not a string array");
      return NULL;
    }
  has_types = bln_gguf_get_array (gguf, "tokenizer.ggml.token_type", &et, &n_types);
  if (has_types && n_types != n)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF tokenizer.ggml.token_type has %" G_GUINT64_FORMAT
                   " entries for %" G_GUINT64_FORMAT " tokens", n_types, n);
      return NULL;
    }
  has_scores = bln_gguf_get_array (gguf, "tokenizer.ggml.scores", &et, &n_scores);
  if (kind == BLN_TOKENIZER_SPM && (!has_scores || n_scores != n))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF llama tokenizer needs tokenizer.ggml.scores with one score per token");
      return NULL;
    }

  tok = bln_tokenizer_alloc (kind, (int32_t) n);
  for (i = 0; i < n; i++)
    {
      size_t len;
      const char *s = bln_gguf_array_string (gguf, "tokenizer.ggml.tokens", i, &len);

      if (s == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "GGUF token %" G_GUINT64_FORMAT
                       " cannot be read", i);
          return NULL;
        }
      bln_tokenizer_set_text (tok, (int32_t) i, s, len);
    }
  if (kind == BLN_TOKENIZER_SPM)
    {
      tok->scores = g_new (float, n);
      for (i = 0; i < n; i++)
        {
          double v = 0;

          bln_gguf_array_float (gguf, "tokenizer.ggml.scores", i, &v);
          tok->scores[i] = (float) v;
        }
    }

  tok->unk = gguf_id (gguf, "tokenizer.ggml.unknown_token_id", tok->n_vocab);
  for (i = 0; has_types && i < n; i++)
    {
      int64_t t = GGUF_TOK_NORMAL;

      bln_gguf_array_int (gguf, "tokenizer.ggml.token_type", i, &t);
      switch (t)
        {
        case GGUF_TOK_UNKNOWN:
          if (tok->unk < 0)
            tok->unk = (int32_t) i;
          bln_tokenizer_add_added (tok, (int32_t) i, TRUE, FALSE, FALSE, FALSE);
          break;
        case GGUF_TOK_CONTROL:
          bln_tokenizer_add_added (tok, (int32_t) i, TRUE, FALSE, FALSE, FALSE);
          break;
        case GGUF_TOK_USER_DEFINED:
          bln_tokenizer_add_added (tok, (int32_t) i, FALSE, FALSE, FALSE, FALSE);
          break;
        case GGUF_TOK_UNUSED:
          tok->attr[i] |= BLN_TOK_ATTR_UNUSED;
          break;
        case GGUF_TOK_BYTE:
          tok->attr[i] |= BLN_TOK_ATTR_BYTE | BLN_TOK_ATTR_UNUSED;
          break;
        default:
          break;
        }
    }

  bln_tokenizer_build_index (tok);

  if (kind == BLN_TOKENIZER_BYTE_BPE)
    {
      guint p;

      if (!bln_gguf_get_array (gguf, "tokenizer.ggml.merges", &et, &n_merges)
          || et != BLN_GGUF_STRING)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF gpt2 tokenizer has no tokenizer.ggml.merges string array");
          return NULL;
        }
      bln_tokenizer_alloc_merges (tok, n_merges);
      for (i = 0; i < n_merges; i++)
        {
          size_t len;
          const char *m = bln_gguf_array_string (gguf, "tokenizer.ggml.merges", i, &len);

          if (m == NULL || !add_merge_text (tok, m, len, (int32_t) i))
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                           "GGUF merge %" G_GUINT64_FORMAT " is not of the form “a b”", i);
              return NULL;
            }
        }

      pre = bln_gguf_get_string (gguf, "tokenizer.ggml.pre", NULL);
      if (pre == NULL)
        pre = "default";
      for (p = 0; p < G_N_ELEMENTS (pre_table); p++)
        if (strcmp (pre_table[p].name, pre) == 0)
          break;
      if (p == G_N_ELEMENTS (pre_table))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "pre-tokenizer “%s” (tokenizer.ggml.pre) is not supported", pre);
          return NULL;
        }
      for (k = 0; pre_table[p].regex[k] != NULL; k++)
        if (!bln_tokenizer_add_regex (tok, pre_table[p].regex[k], FALSE, FALSE, error))
          return NULL;
      tok->nfc = pre_table[p].nfc;
      tok->ignore_merges = pre_table[p].ignore_merges;
    }
  else
    {
      tok->spm_prefix = TRUE;
      tok->byte_fallback = TRUE;
    }

  tok->bos = gguf_id (gguf, "tokenizer.ggml.bos_token_id", tok->n_vocab);
  tok->eos = gguf_id (gguf, "tokenizer.ggml.eos_token_id", tok->n_vocab);
  tok->pad = gguf_id (gguf, "tokenizer.ggml.padding_token_id", tok->n_vocab);
  tok->eot = gguf_id (gguf, "tokenizer.ggml.eot_token_id", tok->n_vocab);
  tok->add_bos = kind == BLN_TOKENIZER_SPM;
  if (bln_gguf_get_bool (gguf, "tokenizer.ggml.add_bos_token", &b))
    tok->add_bos = b;
  if (bln_gguf_get_bool (gguf, "tokenizer.ggml.add_eos_token", &b))
    tok->add_eos = b;
  {
    int32_t eom = gguf_id (gguf, "tokenizer.ggml.eom_token_id", tok->n_vocab);

    if (eom >= 0)
      g_array_append_val (tok->eog, eom);
  }

  for (k = 0; k < bln_gguf_n_kv (gguf); k++)
    {
      const char *key = bln_gguf_kv_key (gguf, k);
      const char *name = NULL;
      const char *tmpl;

      if (strcmp (key, "tokenizer.chat_template") == 0)
        name = "default";
      else if (g_str_has_prefix (key, "tokenizer.chat_template."))
        name = key + strlen ("tokenizer.chat_template.");
      if (name == NULL || (tmpl = bln_gguf_get_string (gguf, key, NULL)) == NULL)
        continue;
      g_hash_table_replace (tok->templates, g_strdup (name), g_strdup (tmpl));
    }

  if (!bln_tokenizer_finish (tok, error))
    return NULL;
  return g_steal_pointer (&tok);
}

/* ---------------------------------------------------------------------------------------
 * tokenizer.json
 */

#define MAX_JSON_SIZE ((gsize) 1 << 30)

static char *
gunzip (const char *data, gsize len, gsize *out_len, GError **error)
{
  z_stream zs = { 0 };
  gsize cap = len * 4 + 1024, n = 0;
  char *out;
  int rc;

  if (inflateInit2 (&zs, 15 + 32) != Z_OK)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "cannot start zlib");
      return NULL;
    }
  out = g_malloc (cap);
  zs.next_in = (Bytef *) data;
  zs.avail_in = len;
  do
    {
      if (n == cap)
        {
          if (cap >= MAX_JSON_SIZE)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                           "compressed tokenizer.json unpacks to more than 1 GiB");
              rc = Z_DATA_ERROR;
              break;
            }
          cap *= 2;
          out = g_realloc (out, cap);
        }
      zs.next_out = (Bytef *) out + n;
      zs.avail_out = cap - n;
      rc = inflate (&zs, Z_NO_FLUSH);
      n = cap - zs.avail_out;
      if (rc == Z_STREAM_END)
        break;
      if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs.avail_out == 0))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "tokenizer.json gzip data is corrupt: %s",
                       zs.msg ? zs.msg : "truncated");
          rc = Z_DATA_ERROR;
          break;
        }
    }
  while (TRUE);
  inflateEnd (&zs);
  if (rc != Z_STREAM_END)
    {
      g_free (out);
      return NULL;
    }
  *out_len = n;
  return out;
}

static const char *
member_type (JsonObject *o)
{
  return json_object_get_string_member_with_default (o, "type", "");
}

static gboolean
get_bool (JsonObject *o, const char *name, gboolean dflt)
{
  JsonNode *n = json_object_get_member (o, name);

  if (n == NULL || JSON_NODE_TYPE (n) != JSON_NODE_VALUE
      || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    return dflt;
  return json_node_get_boolean (n);
}

static gboolean
unsupported (GError **error, const char *what, const char *type)
{
  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
               "tokenizer.json %s “%s” is not supported", what, type);
  return FALSE;
}

static gboolean
load_normalizer (BlnTokenizer *tok, JsonNode *node, gboolean *saw_prepend,
                 gboolean *saw_replace, GError **error)
{
  JsonObject *o;
  const char *type;

  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return unsupported (error, "normalizer", "(not an object)");
  o = json_node_get_object (node);
  type = member_type (o);
  if (strcmp (type, "Sequence") == 0)
    {
      JsonArray *a = json_object_get_array_member (o, "normalizers");
      guint i;

      for (i = 0; a != NULL && i < json_array_get_length (a); i++)
        if (!load_normalizer (tok, json_array_get_element (a, i), saw_prepend, saw_replace,
                              error))
          return FALSE;
      return TRUE;
    }
  if (strcmp (type, "NFC") == 0)
    {
      tok->nfc = TRUE;
      return TRUE;
    }
  if (strcmp (type, "Prepend") == 0
      && g_strcmp0 (json_object_get_string_member_with_default (o, "prepend", ""), "▁") == 0)
    {
      *saw_prepend = TRUE;
      return TRUE;
    }
  if (strcmp (type, "Replace") == 0)
    {
      JsonObject *pat = json_object_get_object_member (o, "pattern");
      const char *from = pat ? json_object_get_string_member_with_default (pat, "String", "")
                             : "";
      const char *to = json_object_get_string_member_with_default (o, "content", "");

      if (strcmp (from, " ") == 0 && strcmp (to, "▁") == 0)
        {
          *saw_replace = TRUE;
          return TRUE;
        }
    }
  return unsupported (error, "normalizer", type);
}

static gboolean
load_pre_tokenizer (BlnTokenizer *tok, JsonNode *node, gboolean *byte_level, GError **error)
{
  JsonObject *o;
  const char *type;

  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return unsupported (error, "pre_tokenizer", "(not an object)");
  o = json_node_get_object (node);
  type = member_type (o);
  if (strcmp (type, "Sequence") == 0)
    {
      JsonArray *a = json_object_get_array_member (o, "pretokenizers");
      guint i;

      for (i = 0; a != NULL && i < json_array_get_length (a); i++)
        if (!load_pre_tokenizer (tok, json_array_get_element (a, i), byte_level, error))
          return FALSE;
      return TRUE;
    }
  if (strcmp (type, "Split") == 0)
    {
      JsonObject *pat = json_object_get_object_member (o, "pattern");
      const char *behavior = json_object_get_string_member_with_default (o, "behavior", "");
      gboolean invert = get_bool (o, "invert", FALSE);
      g_autofree char *regex = NULL;
      gboolean remove;

      if (strcmp (behavior, "Isolated") == 0)
        remove = FALSE;
      else if (strcmp (behavior, "Removed") == 0)
        remove = TRUE;
      else
        return unsupported (error, "Split behavior", behavior);
      if (pat != NULL && json_object_has_member (pat, "Regex"))
        regex = g_strdup (json_object_get_string_member (pat, "Regex"));
      else if (pat != NULL && json_object_has_member (pat, "String"))
        {
          const char *s = json_object_get_string_member (pat, "String");

          regex = g_strdup_printf ("\\Q%s\\E", s ? s : "");
        }
      if (regex == NULL)
        return unsupported (error, "Split pattern", "(missing)");
      return bln_tokenizer_add_regex (tok, regex, remove, invert, error);
    }
  if (strcmp (type, "ByteLevel") == 0)
    {
      *byte_level = TRUE;
      tok->byte_level_prefix_space = get_bool (o, "add_prefix_space", FALSE);
      if (get_bool (o, "use_regex", TRUE))
        return bln_tokenizer_add_regex (tok, bln_tokenizer_gpt2_regex, FALSE, FALSE, error);
      return TRUE;
    }
  if (strcmp (type, "Digits") == 0)
    return bln_tokenizer_add_regex (tok, get_bool (o, "individual_digits", FALSE)
                                    ? "\\p{N}" : "\\p{N}+", FALSE, FALSE, error);
  return unsupported (error, "pre_tokenizer", type);
}

/* "content" of a token given as a string or as {"content": …}. */
static const char *
token_content (JsonObject *o, const char *name)
{
  JsonNode *n = json_object_get_member (o, name);

  if (n == NULL)
    return NULL;
  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    return json_node_get_string (n);
  if (JSON_NODE_HOLDS_OBJECT (n))
    return json_object_get_string_member_with_default (json_node_get_object (n), "content",
                                                        NULL);
  return NULL;
}

static gboolean
load_config (BlnTokenizer *tok, const char *config, gsize len, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) local = NULL;
  JsonNode *root, *ct;
  JsonObject *o;
  const char *s;

  if (!json_parser_load_from_data (parser, config, len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "tokenizer_config.json: %s",
                   local->message);
      return FALSE;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "tokenizer_config.json is not a JSON object");
      return FALSE;
    }
  o = json_node_get_object (root);
  tok->add_bos = get_bool (o, "add_bos_token", tok->add_bos);
  tok->add_eos = get_bool (o, "add_eos_token", tok->add_eos);
  if ((s = token_content (o, "bos_token")) != NULL)
    tok->bos = bln_tokenizer_token_id (tok, s);
  if ((s = token_content (o, "eos_token")) != NULL)
    tok->eos = bln_tokenizer_token_id (tok, s);
  if ((s = token_content (o, "pad_token")) != NULL)
    tok->pad = bln_tokenizer_token_id (tok, s);
  if ((s = token_content (o, "unk_token")) != NULL && tok->unk < 0)
    tok->unk = bln_tokenizer_token_id (tok, s);

  ct = json_object_get_member (o, "chat_template");
  if (ct != NULL && JSON_NODE_HOLDS_VALUE (ct) && json_node_get_value_type (ct) == G_TYPE_STRING)
    g_hash_table_replace (tok->templates, g_strdup ("default"),
                          g_strdup (json_node_get_string (ct)));
  else if (ct != NULL && JSON_NODE_HOLDS_ARRAY (ct))
    {
      JsonArray *a = json_node_get_array (ct);
      guint i;

      for (i = 0; i < json_array_get_length (a); i++)
        {
          JsonNode *e = json_array_get_element (a, i);
          const char *name, *tmpl;

          if (!JSON_NODE_HOLDS_OBJECT (e))
            continue;
          name = json_object_get_string_member_with_default (json_node_get_object (e),
                                                             "name", NULL);
          tmpl = json_object_get_string_member_with_default (json_node_get_object (e),
                                                             "template", NULL);
          if (name != NULL && tmpl != NULL)
            g_hash_table_replace (tok->templates, g_strdup (name), g_strdup (tmpl));
        }
    }
  return TRUE;
}

static gboolean
corrupt (GError **error, const char *what)
{
  g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "tokenizer.json: %s", what);
  return FALSE;
}

#define MAX_VOCAB (1 << 24)

typedef struct {
  GPtrArray *names;
  GArray *ids;
  int64_t max_id;
  gboolean ok;
} VocabScan;

static void
scan_vocab (JsonObject *o, const char *name, JsonNode *node, gpointer data)
{
  VocabScan *scan = data;
  int64_t id = -1;

  if (JSON_NODE_HOLDS_VALUE (node) && json_node_get_value_type (node) == G_TYPE_INT64)
    id = json_node_get_int (node);
  if (id < 0 || id >= MAX_VOCAB)
    {
      scan->ok = FALSE;
      return;
    }
  g_ptr_array_add (scan->names, (gpointer) name);
  g_array_append_val (scan->ids, id);
  scan->max_id = MAX (scan->max_id, id);
}

BlnTokenizer *
bln_tokenizer_new_from_json_data (const char *json, gsize json_len, const char *config,
                                  gsize config_len, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local = NULL;
  g_autoptr (BlnTokenizer) tok = NULL;
  g_autofree char *unpacked = NULL;
  g_autoptr (GPtrArray) names = g_ptr_array_new ();
  g_autoptr (GArray) name_ids = g_array_new (FALSE, FALSE, sizeof (int64_t));
  JsonNode *root, *node;
  JsonObject *o, *model, *vocab;
  JsonArray *added = NULL, *merges = NULL;
  const char *type;
  int64_t max_id = -1;
  gboolean byte_level = FALSE, saw_prepend = FALSE, saw_replace = FALSE;
  VocabScan scan;
  guint i;

  g_return_val_if_fail (json != NULL, NULL);

  if (json_len >= 2 && (guint8) json[0] == 0x1f && (guint8) json[1] == 0x8b)
    {
      if ((unpacked = gunzip (json, json_len, &json_len, error)) == NULL)
        return NULL;
      json = unpacked;
    }
  if (!json_parser_load_from_data (parser, json, json_len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "tokenizer.json: %s", local->message);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return corrupt (error, "not a JSON object"), NULL;
  o = json_node_get_object (root);
  node = json_object_get_member (o, "model");
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    return corrupt (error, "no model object"), NULL;
  model = json_node_get_object (node);
  type = member_type (model);
  if (*type != '\0' && strcmp (type, "BPE") != 0)
    return unsupported (error, "model", type), NULL;
  node = json_object_get_member (model, "vocab");
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    return corrupt (error, "model.vocab is not an object"), NULL;
  vocab = json_node_get_object (node);
  node = json_object_get_member (model, "merges");
  if (node != NULL && JSON_NODE_HOLDS_ARRAY (node))
    merges = json_node_get_array (node);
  node = json_object_get_member (o, "added_tokens");
  if (node != NULL && JSON_NODE_HOLDS_ARRAY (node))
    added = json_node_get_array (node);
  {
    const char *p = json_object_get_string_member_with_default (model,
                                                                "continuing_subword_prefix", "");
    const char *s = json_object_get_string_member_with_default (model, "end_of_word_suffix", "");

    if ((p != NULL && *p) || (s != NULL && *s))
      return unsupported (error, "BPE option", "continuing_subword_prefix/end_of_word_suffix"),
             NULL;
  }

  /* The id range covers the vocabulary and the added tokens. */
  scan = (VocabScan) { names, name_ids, -1, TRUE };
  json_object_foreach_member (vocab, scan_vocab, &scan);
  if (!scan.ok)
    return corrupt (error, "vocabulary id out of range"), NULL;
  max_id = scan.max_id;
  for (i = 0; added != NULL && i < json_array_get_length (added); i++)
    {
      JsonNode *e = json_array_get_element (added, i);
      int64_t id;

      if (!JSON_NODE_HOLDS_OBJECT (e))
        return corrupt (error, "added_tokens entry is not an object"), NULL;
      id = json_object_get_int_member_with_default (json_node_get_object (e), "id", -1);
      if (id < 0 || id >= MAX_VOCAB
          || json_object_get_string_member_with_default (json_node_get_object (e),
                                                         "content", NULL) == NULL)
        return corrupt (error, "added token without a valid id and content"), NULL;
      max_id = MAX (max_id, id);
    }
  if (max_id < 0)
    return corrupt (error, "empty vocabulary"), NULL;

  /* The kind follows from the pre-tokenizer: ByteLevel means byte-level BPE. */
  tok = bln_tokenizer_alloc (BLN_TOKENIZER_BYTE_BPE, (int32_t) (max_id + 1));
  if (!load_pre_tokenizer (tok, json_object_get_member (o, "pre_tokenizer"), &byte_level,
                           error))
    return NULL;
  if (!load_normalizer (tok, json_object_get_member (o, "normalizer"), &saw_prepend,
                        &saw_replace, error))
    return NULL;
  if (saw_prepend != saw_replace)
    return unsupported (error, "normalizer", saw_prepend ? "Prepend without Replace"
                                                         : "Replace without Prepend"), NULL;
  if (!byte_level)
    {
      JsonNode *dec = json_object_get_member (o, "decoder");

      if (dec != NULL && JSON_NODE_HOLDS_OBJECT (dec)
          && strcmp (member_type (json_node_get_object (dec)), "ByteLevel") == 0)
        byte_level = TRUE;
    }
  tok->kind = byte_level ? BLN_TOKENIZER_BYTE_BPE : BLN_TOKENIZER_SPM;
  tok->spm_prefix = saw_prepend;
  tok->byte_fallback = get_bool (model, "byte_fallback", FALSE);
  tok->ignore_merges = get_bool (model, "ignore_merges", FALSE);

  for (i = 0; i < names->len; i++)
    {
      const char *t = g_ptr_array_index (names, i);
      int64_t id = g_array_index (name_ids, int64_t, i);

      bln_tokenizer_set_text (tok, (int32_t) id, t, strlen (t));
      if (tok->byte_fallback && strlen (t) == 6 && g_str_has_prefix (t, "<0x")
          && g_ascii_isxdigit (t[3]) && g_ascii_isxdigit (t[4]) && t[5] == '>')
        tok->attr[id] |= BLN_TOK_ATTR_BYTE | BLN_TOK_ATTR_UNUSED;
    }
  for (i = 0; added != NULL && i < json_array_get_length (added); i++)
    {
      JsonObject *e = json_array_get_object_element (added, i);
      int64_t id = json_object_get_int_member (e, "id");
      const char *c = json_object_get_string_member (e, "content");

      bln_tokenizer_set_text (tok, (int32_t) id, c, strlen (c));
      bln_tokenizer_add_added (tok, (int32_t) id, get_bool (e, "special", FALSE),
                               get_bool (e, "lstrip", FALSE), get_bool (e, "rstrip", FALSE),
                               get_bool (e, "single_word", FALSE));
    }
  bln_tokenizer_build_index (tok);

  {
    const char *unk = json_object_get_string_member_with_default (model, "unk_token", NULL);

    if (unk != NULL)
      tok->unk = bln_tokenizer_token_id (tok, unk);
  }

  bln_tokenizer_alloc_merges (tok, merges ? json_array_get_length (merges) : 0);
  for (i = 0; merges != NULL && i < json_array_get_length (merges); i++)
    {
      JsonNode *m = json_array_get_element (merges, i);

      if (JSON_NODE_HOLDS_VALUE (m) && json_node_get_value_type (m) == G_TYPE_STRING)
        {
          const char *s = json_node_get_string (m);

          if (!add_merge_text (tok, s, strlen (s), (int32_t) i))
            return corrupt (error, "a merge is not of the form “a b”"), NULL;
        }
      else if (JSON_NODE_HOLDS_ARRAY (m) && json_array_get_length (json_node_get_array (m)) == 2)
        {
          JsonArray *pair = json_node_get_array (m);
          const char *a = json_array_get_string_element (pair, 0);
          const char *b = json_array_get_string_element (pair, 1);
          int32_t ia, ib, ir;
          g_autofree char *joined = NULL;

          if (a == NULL || b == NULL)
            return corrupt (error, "a merge pair does not hold two strings"), NULL;
          ia = bln_tokenizer_token_id (tok, a);
          ib = bln_tokenizer_token_id (tok, b);
          joined = g_strconcat (a, b, NULL);
          ir = bln_tokenizer_token_id (tok, joined);
          if (ia >= 0 && ib >= 0 && ir >= 0)
            bln_tokenizer_add_merge (tok, ia, ib, ir, (int32_t) i);
        }
      else
        return corrupt (error, "a merge is neither a string nor a pair"), NULL;
    }

  if (config != NULL && !load_config (tok, config, config_len, error))
    return NULL;

  if (!bln_tokenizer_finish (tok, error))
    return NULL;
  return g_steal_pointer (&tok);
}

BlnTokenizer *
bln_tokenizer_new_from_file (const char *path, GError **error)
{
  g_autofree char *json_path = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *config_path = NULL;
  g_autofree char *json = NULL;
  g_autofree char *config = NULL;
  gsize json_len = 0, config_len = 0;
  g_autoptr (GError) local = NULL;

  g_return_val_if_fail (path != NULL, NULL);

  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      json_path = g_build_filename (path, "tokenizer.json", NULL);
      if (!g_file_test (json_path, G_FILE_TEST_EXISTS))
        {
          g_free (json_path);
          json_path = g_build_filename (path, "tokenizer.json.gz", NULL);
        }
      dir = g_strdup (path);
    }
  else
    {
      json_path = g_strdup (path);
      dir = g_path_get_dirname (path);
    }
  if (!g_file_get_contents (json_path, &json, &json_len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot read %s: %s", json_path,
                   local->message);
      return NULL;
    }
  config_path = g_build_filename (dir, "tokenizer_config.json", NULL);
  if (g_file_test (config_path, G_FILE_TEST_EXISTS)
      && !g_file_get_contents (config_path, &config, &config_len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot read %s: %s", config_path,
                   local->message);
      return NULL;
    }
  return bln_tokenizer_new_from_json_data (json, json_len, config, config_len, error);
}
