/* test-tokenizer.c — the tokenizer against Hugging Face reference ids.
 *
 * References (none written here): llama.cpp's vocab test vectors (made with HF
 * AutoTokenizer, ../shared/data/vocab) and the HF-tokenizers-generated cases next to the
 * DeepSeek-V3 and Qwen2.5 tokenizer.json files (../shared/data/tokenizers). Every case is
 * also decoded back (full and incremental) and compared with its input text.
 */
#include <string.h>
#include <json-glib/json-glib.h>
#include "bln-error.h"
#include "gguf.h"
#include "tokenizer.h"

static const char *shared_dir;

static char *
data_path (const char *rel)
{
  return g_build_filename (shared_dir, rel, NULL);
}

/* ---- reference vectors ------------------------------------------------------------- */

typedef struct {
  char *name;
  char *text;
  gsize len;
  GArray *ids;
} Case;

static void
case_clear (gpointer p)
{
  Case *c = p;

  g_free (c->name);
  g_free (c->text);
  g_array_unref (c->ids);
}

static GArray *
cases_new (void)
{
  GArray *a = g_array_new (FALSE, TRUE, sizeof (Case));

  g_array_set_clear_func (a, case_clear);
  return a;
}

/* llama.cpp .inp/.out pair (format in ../shared/data/vocab/README.md). */
static GArray *
read_inp_out (const char *inp_rel, const char *out_rel)
{
  static const char sep[] = "\n__ggml_vocab_test__\n";
  g_autofree char *inp_path = data_path (inp_rel);
  g_autofree char *out_path = data_path (out_rel);
  g_autofree char *inp = NULL, *out = NULL;
  g_auto (GStrv) lines = NULL;
  gsize inp_len, out_len, pos = 0;
  GArray *cases = cases_new ();
  guint line = 0;

  g_assert_true (g_file_get_contents (inp_path, &inp, &inp_len, NULL));
  g_assert_true (g_file_get_contents (out_path, &out, &out_len, NULL));
  lines = g_strsplit (out, "\n", -1);
  while (pos < inp_len)
    {
      const char *s = memmem (inp + pos, inp_len - pos, sep, strlen (sep));
      gsize end = s ? (gsize) (s - inp) : inp_len;
      Case c = { 0 };
      char *p;

      c.name = g_strdup_printf ("%s#%u", inp_rel, line);
      c.text = g_malloc (end - pos + 1);
      memcpy (c.text, inp + pos, end - pos);
      c.text[end - pos] = '\0';
      c.len = end - pos;
      c.ids = g_array_new (FALSE, FALSE, sizeof (int32_t));
      g_assert_nonnull (lines[line]);
      for (p = lines[line]; *p;)
        {
          char *e;
          int32_t id = (int32_t) g_ascii_strtoll (p, &e, 10);

          if (e == p)
            break;
          g_array_append_val (c.ids, id);
          p = e;
        }
      g_array_append_val (cases, c);
      line++;
      pos = s ? end + strlen (sep) : inp_len;
    }
  g_assert_cmpuint (cases->len, >, 0);
  return cases;
}

/* jsonl with "text" (or "rendered") and "ids". */
static GArray *
read_jsonl (const char *rel, const char *text_member)
{
  g_autofree char *path = data_path (rel);
  g_autofree char *data = NULL;
  g_auto (GStrv) lines = NULL;
  GArray *cases = cases_new ();
  guint i;

  g_assert_true (g_file_get_contents (path, &data, NULL, NULL));
  lines = g_strsplit (data, "\n", -1);
  for (i = 0; lines[i] != NULL; i++)
    {
      g_autoptr (JsonParser) parser = json_parser_new ();
      JsonObject *o;
      JsonArray *ids;
      JsonNode *text;
      Case c = { 0 };
      guint k;

      if (lines[i][0] == '\0')
        continue;
      g_assert_true (json_parser_load_from_data (parser, lines[i], -1, NULL));
      o = json_node_get_object (json_parser_get_root (parser));
      c.name = g_strdup (json_object_get_string_member (o, "name"));
      text = json_object_get_member (o, text_member);
      /* json-glib stops strings at NUL: take the length from the escaped form. */
      c.text = g_strdup (json_node_get_string (text));
      c.len = strlen (c.text);
      if (strstr (lines[i], "\\u0000") != NULL)
        {
          /* Re-decode the text by hand so embedded NULs survive. */
          const char *q = strstr (lines[i], "\"text\":\"");
          GString *b = g_string_new (NULL);

          g_assert_nonnull (q);
          for (q += 8; *q != '"'; q++)
            {
              if (*q != '\\')
                {
                  g_string_append_c (b, *q);
                  continue;
                }
              q++;
              switch (*q)
                {
                case 'n': g_string_append_c (b, '\n'); break;
                case 't': g_string_append_c (b, '\t'); break;
                case 'r': g_string_append_c (b, '\r'); break;
                case 'u':
                  {
                    char hex[5] = { q[1], q[2], q[3], q[4], 0 };

                    g_string_append_unichar (b, (gunichar) g_ascii_strtoull (hex, NULL, 16));
                    q += 4;
                    break;
                  }
                default: g_string_append_c (b, *q); break;
                }
            }
          g_free (c.text);
          c.len = b->len;
          c.text = g_string_free (b, FALSE);
        }
      ids = json_object_get_array_member (o, "ids");
      c.ids = g_array_new (FALSE, FALSE, sizeof (int32_t));
      for (k = 0; k < json_array_get_length (ids); k++)
        {
          int32_t id = (int32_t) json_array_get_int_element (ids, k);

          g_array_append_val (c.ids, id);
        }
      g_array_append_val (cases, c);
    }
  g_assert_cmpuint (cases->len, >, 0);
  return cases;
}

/* ---- checks ----------------------------------------------------------------------- */

static gboolean
valid_utf8 (const char *p, gsize n)
{
  const char *end = p + n;

  while (p < end)
    {
      if (*p == '\0')
        {
          p++;
          continue;
        }
      if (g_utf8_get_char_validated (p, end - p) == (gunichar) -1
          || g_utf8_get_char_validated (p, end - p) == (gunichar) -2)
        return FALSE;
      p = g_utf8_next_char (p);
    }
  return TRUE;
}

static char *
ids_str (const int32_t *ids, guint n)
{
  GString *s = g_string_new ("[");
  guint i;

  for (i = 0; i < n; i++)
    g_string_append_printf (s, "%s%d", i ? " " : "", ids[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* Encodes every case, compares with the reference, then decodes it back (unless the
 * name is in @no_roundtrip) both at once and one id at a time. */
static void
check_cases (const BlnTokenizer *tok, GArray *cases, gboolean parse_special,
             const char *const *no_roundtrip)
{
  guint i, fails = 0;

  for (i = 0; i < cases->len; i++)
    {
      const Case *c = &g_array_index (cases, Case, i);
      g_autoptr (GArray) ids = NULL;
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnDetok) detok = NULL;
      g_autofree char *full = NULL, *rest = NULL;
      gsize full_len;
      GString *inc;
      guint k;

      ids = bln_tokenizer_encode (tok, c->text, c->len, FALSE, parse_special, &error);
      g_assert_no_error (error);
      g_assert_nonnull (ids);
      if (ids->len != c->ids->len
          || (ids->len > 0
              && memcmp (ids->data, c->ids->data, sizeof (int32_t) * ids->len) != 0))
        {
          g_autofree char *got = ids_str ((int32_t *) ids->data, ids->len);
          g_autofree char *want = ids_str ((int32_t *) c->ids->data, c->ids->len);

          g_test_message ("%s: got %s want %s", c->name, got, want);
          fails++;
          continue;
        }

      full = bln_tokenizer_decode (tok, (int32_t *) ids->data, ids->len, &full_len);
      if (no_roundtrip == NULL || !g_strv_contains (no_roundtrip, c->name))
        {
          if (full_len != c->len || memcmp (full, c->text, c->len) != 0)
            {
              g_test_message ("%s: decode gives “%s”", c->name, full);
              fails++;
            }
        }

      detok = bln_detok_new (tok);
      inc = g_string_new (NULL);
      for (k = 0; k < ids->len; k++)
        {
          gsize before = inc->len;

          bln_detok_push_append (detok, g_array_index (ids, int32_t, k), inc);
          g_assert_true (valid_utf8 (inc->str + before, inc->len - before));
        }
      rest = bln_detok_flush (detok);
      g_assert_true (valid_utf8 (rest, strlen (rest)));
      g_string_append (inc, rest);
      if (valid_utf8 (full, full_len))
        {
          if (inc->len != full_len || memcmp (inc->str, full, full_len) != 0)
            {
              g_test_message ("%s: incremental decode differs", c->name);
              fails++;
            }
        }
      g_string_free (inc, TRUE);
    }
  g_test_message ("%u cases, %u failures", cases->len, fails);
  g_assert_cmpuint (fails, ==, 0);
}

/* ---- tokenizers, loaded once ------------------------------------------------------ */

static BlnTokenizer *v3_tok, *qwen_tok, *r1_tok;

static BlnTokenizer *
load_json (const char *dir_rel)
{
  g_autofree char *path = data_path (dir_rel);
  g_autoptr (GError) error = NULL;
  gint64 t0 = g_get_monotonic_time ();
  BlnTokenizer *tok = bln_tokenizer_new_from_file (path, &error);

  g_assert_no_error (error);
  g_assert_nonnull (tok);
  g_test_message ("loaded %s in %.3f s", dir_rel, (g_get_monotonic_time () - t0) / 1e6);
  return tok;
}

static const BlnTokenizer *
v3 (void)
{
  if (v3_tok == NULL)
    {
      g_autofree char *p = data_path ("tokenizers/deepseek-v3");
      g_autofree char *gz = g_build_filename (p, "tokenizer.json.gz", NULL);
      g_autoptr (GError) error = NULL;

      /* The directory form (tokenizer.json.gz inside) and the file form both load. */
      v3_tok = load_json ("tokenizers/deepseek-v3");
      bln_tokenizer_free (bln_tokenizer_new_from_file (gz, &error));
      g_assert_no_error (error);
    }
  return v3_tok;
}

static const BlnTokenizer *
qwen (void)
{
  if (qwen_tok == NULL)
    qwen_tok = load_json ("tokenizers/qwen2");
  return qwen_tok;
}

/* The R1-Distill-Qwen tokenizer: Qwen2.5's with added tokens 151643–151649 replaced, per
 * the table in ../shared/data/tokenizers/README.md. */
static const BlnTokenizer *
r1 (void)
{
  static const struct {
    int id;
    const char *content;
    gboolean special;
  } swap[] = {
    { 151643, "<｜end▁of▁sentence｜>", TRUE },
    { 151644, "<｜User｜>", FALSE },
    { 151645, "<｜Assistant｜>", FALSE },
    { 151646, "<｜begin▁of▁sentence｜>", TRUE },
    { 151647, "<|EOT|>", FALSE },
    { 151648, "<think>", FALSE },
    { 151649, "</think>", FALSE },
  };
  g_autofree char *path = NULL, *gz = NULL, *json = NULL;
  g_autoptr (JsonParser) parser = NULL;
  g_autoptr (JsonGenerator) gen = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ids = NULL;
  g_autoptr (BlnTokenizer) plain = NULL;
  JsonArray *added;
  gsize gz_len, len;
  guint i, k;

  if (r1_tok != NULL)
    return r1_tok;
  path = data_path ("tokenizers/qwen2/tokenizer.json.gz");
  g_assert_true (g_file_get_contents (path, &gz, &gz_len, NULL));
  /* json-glib does not read gzip: unpack with GIO first, then patch the added tokens. */
  {
    g_autoptr (GZlibDecompressor) dec = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    g_autoptr (GInputStream) mem = g_memory_input_stream_new_from_data (gz, gz_len, NULL);
    g_autoptr (GInputStream) in = g_converter_input_stream_new (mem, G_CONVERTER (dec));
    g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();

    g_assert_cmpint (g_output_stream_splice (out, in, G_OUTPUT_STREAM_SPLICE_CLOSE_TARGET,
                                             NULL, &error), >, 0);
    g_assert_no_error (error);
    len = g_memory_output_stream_get_data_size (G_MEMORY_OUTPUT_STREAM (out));
    json = g_memory_output_stream_steal_data (G_MEMORY_OUTPUT_STREAM (out));
  }
  parser = json_parser_new ();
  g_assert_true (json_parser_load_from_data (parser, json, len, &error));
  added = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                        "added_tokens");
  for (i = 0; i < json_array_get_length (added); i++)
    {
      JsonObject *e = json_array_get_object_element (added, i);

      for (k = 0; k < G_N_ELEMENTS (swap); k++)
        if (json_object_get_int_member (e, "id") == swap[k].id)
          {
            json_object_set_string_member (e, "content", swap[k].content);
            json_object_set_boolean_member (e, "special", swap[k].special);
          }
    }
  gen = json_generator_new ();
  json_generator_set_root (gen, json_parser_get_root (parser));
  g_free (json);
  json = json_generator_to_data (gen, &len);
  r1_tok = bln_tokenizer_new_from_json_data (json, len, NULL, 0, &error);
  g_assert_no_error (error);
  return r1_tok;
}

static BlnTokenizer *
load_gguf (const char *rel)
{
  g_autofree char *path = data_path (rel);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGguf) gguf = bln_gguf_open (path, &error);
  BlnTokenizer *tok;

  g_assert_no_error (error);
  tok = bln_tokenizer_new_from_gguf (gguf, &error);
  g_assert_no_error (error);
  g_assert_nonnull (tok);
  return tok;
}

/* ---- tests ------------------------------------------------------------------------ */

static void
test_gguf_vocab (gconstpointer data)
{
  const char *name = data;
  g_autofree char *gguf = g_strdup_printf ("vocab/ggml-vocab-%s.gguf", name);
  g_autofree char *inp = g_strdup_printf ("%s.inp", gguf);
  g_autofree char *out = g_strdup_printf ("%s.out", gguf);
  g_autoptr (BlnTokenizer) tok = load_gguf (gguf);
  g_autoptr (GArray) cases = read_inp_out (inp, out);

  /* llama.cpp's test encodes with parse_special off; no case holds a special string. */
  check_cases (tok, cases, FALSE, NULL);
}

static void
test_v3_vocab (void)
{
  g_autoptr (GArray) cases = read_inp_out ("vocab/ggml-vocab-deepseek-v3.gguf.inp",
                                           "vocab/ggml-vocab-deepseek-v3.gguf.out");

  check_cases (v3 (), cases, TRUE, NULL);
}

static void
test_qwen_vocab (void)
{
  g_autoptr (GArray) a = read_inp_out ("vocab/ggml-vocab-qwen2.gguf.inp",
                                       "vocab/ggml-vocab-qwen2.gguf.out");
  g_autoptr (GArray) b = read_inp_out ("vocab/ggml-vocab-deepseek-r1-qwen.gguf.inp",
                                       "vocab/ggml-vocab-deepseek-r1-qwen.gguf.out");

  check_cases (qwen (), a, TRUE, NULL);
  check_cases (r1 (), b, TRUE, NULL);
}

/* The one case whose text is changed by Qwen's NFC normaliser (e + U+0301 → é). */
static const char *const qwen_nfc_cases[] = { "combining_marks_nfd", NULL };

static void
test_v3_cases (void)
{
  g_autoptr (GArray) a = read_jsonl ("tokenizers/deepseek-v3/cases.jsonl", "text");
  g_autoptr (GArray) b = read_inp_out ("tokenizers/deepseek-v3/cases.inp",
                                       "tokenizers/deepseek-v3/cases.out");

  check_cases (v3 (), a, TRUE, NULL);
  check_cases (v3 (), b, TRUE, NULL);
}

static void
test_qwen_cases (void)
{
  g_autoptr (GArray) a = read_jsonl ("tokenizers/qwen2/cases.jsonl", "text");

  check_cases (qwen (), a, TRUE, qwen_nfc_cases);
}

static void
test_chat_cases (gconstpointer data)
{
  const char *which = data;
  g_autoptr (GArray) cases = NULL;
  const BlnTokenizer *tok;

  if (strcmp (which, "deepseek-v3") == 0)
    {
      tok = v3 ();
      cases = read_jsonl ("tokenizers/deepseek-v3/chat_template_cases.jsonl", "rendered");
    }
  else if (strcmp (which, "qwen2") == 0)
    {
      tok = qwen ();
      cases = read_jsonl ("tokenizers/qwen2/chat_template_cases.jsonl", "rendered");
    }
  else
    {
      tok = r1 ();
      cases = read_jsonl ("tokenizers/qwen2/r1_distill_derived_chat_template_cases.jsonl",
                          "rendered");
    }
  check_cases (tok, cases, TRUE, NULL);
}

static void
test_r1_cases (void)
{
  g_autoptr (GArray) cases = read_jsonl ("tokenizers/qwen2/r1_distill_derived_cases.jsonl",
                                         "text");

  check_cases (r1 (), cases, TRUE, NULL);
}

/* Metadata from tokenizer_config.json and the README's special-id tables. */
static void
test_metadata (void)
{
  const BlnTokenizer *t = v3 ();
  const BlnTokenizer *q = qwen ();

  g_assert_cmpint (bln_tokenizer_n_vocab (t), ==, 128815);
  g_assert_cmpint (bln_tokenizer_bos (t), ==, 0);
  g_assert_cmpint (bln_tokenizer_eos (t), ==, 1);
  g_assert_true (bln_tokenizer_add_bos (t));
  g_assert_false (bln_tokenizer_add_eos (t));
  g_assert_cmpint (bln_tokenizer_token_id (t, "<|EOT|>"), ==, 128805);
  g_assert_true (bln_tokenizer_is_end_of_generation (t, 1));
  g_assert_true (bln_tokenizer_is_end_of_generation (t, 128805));
  g_assert_false (bln_tokenizer_is_end_of_generation (t, 128803));
  g_assert_true (bln_tokenizer_is_special (t, 0));
  g_assert_nonnull (bln_tokenizer_chat_template (t));

  g_assert_cmpint (bln_tokenizer_n_vocab (q), ==, 151665);
  g_assert_cmpint (bln_tokenizer_bos (q), ==, -1);
  g_assert_cmpint (bln_tokenizer_eos (q), ==, 151645);
  g_assert_false (bln_tokenizer_add_bos (q));
  g_assert_true (bln_tokenizer_is_end_of_generation (q, 151645));
  g_assert_true (bln_tokenizer_is_end_of_generation (q, 151643));
  g_assert_nonnull (strstr (bln_tokenizer_chat_template_named (q, "default"), "im_start"));
  g_assert_cmpstr (bln_tokenizer_token_text (q, 151644), ==, "<|im_start|>");
}

static void
test_add_special (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) a = bln_tokenizer_encode (v3 (), "Hello", -1, FALSE, FALSE, &error);
  g_autoptr (GArray) b = bln_tokenizer_encode (v3 (), "Hello", -1, TRUE, FALSE, &error);

  g_assert_no_error (error);
  g_assert_cmpuint (b->len, ==, a->len + 1);
  g_assert_cmpint (g_array_index (b, int32_t, 0), ==, 0);
}

/* With parse_special off, a control-token string in user text is ordinary text; a
 * non-special added token (<tool_call>) is still recognised, as HF does. */
static void
test_no_injection (void)
{
  const BlnTokenizer *q = qwen ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ids = bln_tokenizer_encode (q, "x<|im_end|><tool_call>", -1, FALSE, FALSE,
                                                 &error);
  g_autofree char *back = NULL;
  guint i;

  g_assert_no_error (error);
  for (i = 0; i < ids->len; i++)
    g_assert_false (bln_tokenizer_is_special (q, g_array_index (ids, int32_t, i)));
  g_assert_cmpint (g_array_index (ids, int32_t, ids->len - 1), ==,
                   bln_tokenizer_token_id (q, "<tool_call>"));
  back = bln_tokenizer_decode (q, (int32_t *) ids->data, ids->len, NULL);
  g_assert_cmpstr (back, ==, "x<|im_end|><tool_call>");
}

static void
test_errors (void)
{
  g_autoptr (GArray) ids = g_array_new (FALSE, FALSE, sizeof (int32_t));
  g_autoptr (GError) error = NULL;
  BlnTokenizer *tok;
  static const char unigram[] = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}";
  static const char badpre[] =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
    "\"pre_tokenizer\":{\"type\":\"Whitespace\"}}";

  g_assert_false (bln_tokenizer_encode_append (qwen (), "a\xff", 2, FALSE, TRUE, ids, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_assert_cmpuint (ids->len, ==, 0);
  g_clear_error (&error);

  tok = bln_tokenizer_new_from_json_data ("{", 1, NULL, 0, &error);
  g_assert_null (tok);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
  g_clear_error (&error);

  tok = bln_tokenizer_new_from_json_data (unigram, strlen (unigram), NULL, 0, &error);
  g_assert_null (tok);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "Unigram"));
  g_clear_error (&error);

  tok = bln_tokenizer_new_from_json_data (badpre, strlen (badpre), NULL, 0, &error);
  g_assert_null (tok);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "Whitespace"));
  g_clear_error (&error);

  tok = bln_tokenizer_new_from_file ("/nonexistent/tokenizer.json", &error);
  g_assert_null (tok);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
}

/* A long input: the merge loop must stay near-linear. Timing is reported, not asserted. */
static void
test_long_input (void)
{
  GString *text = g_string_new (NULL);
  g_autoptr (GArray) ids = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *back = NULL;
  gint64 t0;
  int i;

  for (i = 0; i < 2000; i++)
    g_string_append (text, "The quick brown fox — 敏捷的棕色狐狸 — jumps over 12345 lazy dogs! ");
  g_string_append (text, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  for (i = 0; i < 20000; i++)
    g_string_append_c (text, 'x');
  t0 = g_get_monotonic_time ();
  ids = bln_tokenizer_encode (v3 (), text->str, text->len, FALSE, FALSE, &error);
  g_assert_no_error (error);
  g_test_message ("%zu bytes → %u tokens in %.3f s", text->len, ids->len,
                  (g_get_monotonic_time () - t0) / 1e6);
  back = bln_tokenizer_decode (v3 (), (int32_t *) ids->data, ids->len, NULL);
  g_assert_cmpstr (back, ==, text->str);
  g_string_free (text, TRUE);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  shared_dir = g_getenv ("BALEEN_SHARED_DATA");
  if (shared_dir == NULL)
    shared_dir = "../shared/data";

  g_test_add_data_func ("/Baleen/Tokenizer/gguf/deepseek-llm", "deepseek-llm", test_gguf_vocab);
  g_test_add_data_func ("/Baleen/Tokenizer/gguf/deepseek-coder", "deepseek-coder",
                        test_gguf_vocab);
  g_test_add_data_func ("/Baleen/Tokenizer/gguf/llama-spm", "llama-spm", test_gguf_vocab);
  g_test_add_func ("/Baleen/Tokenizer/deepseek-v3/vocab-cases", test_v3_vocab);
  g_test_add_func ("/Baleen/Tokenizer/deepseek-v3/cases", test_v3_cases);
  g_test_add_data_func ("/Baleen/Tokenizer/deepseek-v3/chat", "deepseek-v3", test_chat_cases);
  g_test_add_func ("/Baleen/Tokenizer/qwen2/vocab-cases", test_qwen_vocab);
  g_test_add_func ("/Baleen/Tokenizer/qwen2/cases", test_qwen_cases);
  g_test_add_data_func ("/Baleen/Tokenizer/qwen2/chat", "qwen2", test_chat_cases);
  g_test_add_func ("/Baleen/Tokenizer/r1-distill-qwen/cases", test_r1_cases);
  g_test_add_data_func ("/Baleen/Tokenizer/r1-distill-qwen/chat", "r1", test_chat_cases);
  g_test_add_func ("/Baleen/Tokenizer/metadata", test_metadata);
  g_test_add_func ("/Baleen/Tokenizer/add-special", test_add_special);
  g_test_add_func ("/Baleen/Tokenizer/no-injection", test_no_injection);
  g_test_add_func ("/Baleen/Tokenizer/errors", test_errors);
  g_test_add_func ("/Baleen/Tokenizer/long-input", test_long_input);

  rc = g_test_run ();
  bln_tokenizer_free (v3_tok);
  bln_tokenizer_free (qwen_tok);
  bln_tokenizer_free (r1_tok);
  return rc;
}
