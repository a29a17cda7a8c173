/* test-gguf.c — engine/gguf.c against files written by others: the llama.cpp
 * vocabulary GGUFs (values from /work/shared/data/vocab/README.md), a fixture
 * written by the gguf Python package's GGUFWriter (tools/gen_gguf_fixture.py,
 * described by the package's GGUFReader in fixture.json), and corrupted
 * copies of that fixture, which must all fail cleanly or read consistently. */
#include <json-glib/json-glib.h>
#include <string.h>

#include "bln-error.h"
#include "gguf.h"

static char *
golden_path (const char *name)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");

  return g_build_filename (dir ? dir : "tests/golden", "gguf", name, NULL);
}

/* Calls every accessor on everything the reader exposes; used on files that
 * opened but may be odd (mutated copies). Returns a value so that nothing is
 * optimised away. */
static guint64
touch_all (const BlnGguf *g)
{
  guint64 acc = bln_gguf_version (g) + bln_gguf_alignment (g);

  for (int64_t i = 0; i < bln_gguf_n_kv (g); i++)
    {
      const char *key = bln_gguf_kv_key (g, i);
      BlnGgufType et;
      uint64_t n = 0;
      int64_t iv;
      uint64_t uv;
      double fv;
      gboolean bv;
      size_t len;

      g_assert_nonnull (key);
      g_assert_cmpint (bln_gguf_find_key (g, key), ==, i);
      acc += bln_gguf_kv_type (g, i);
      acc += bln_gguf_get_int (g, key, &iv) + bln_gguf_get_uint64 (g, key, &uv)
             + bln_gguf_get_float (g, key, &fv) + bln_gguf_get_bool (g, key, &bv);
      if (bln_gguf_get_string (g, key, &len))
        acc += len;
      if (bln_gguf_get_array (g, key, &et, &n))
        for (uint64_t j = 0; j <= n && j < 4096; j++)
          {
            acc += bln_gguf_array_int (g, key, j, &iv) + bln_gguf_array_float (g, key, j, &fv);
            if (bln_gguf_array_string (g, key, j, &len))
              acc += len;
          }
    }
  for (int64_t i = 0; i < bln_gguf_n_tensors (g); i++)
    {
      const BlnGgufTensor *t = bln_gguf_tensor (g, i);
      const uint8_t *p = t->data;

      g_assert_true (bln_gguf_find_tensor (g, t->name) == t);
      for (size_t k = 0; k < t->nbytes; k++)
        acc += p[k];
    }
  return acc;
}

/* ---------------------------------------------------------------------------
 * The GGUFWriter fixture
 * ------------------------------------------------------------------------- */

static GBytes *
unhex (const char *hex)
{
  gsize n = strlen (hex) / 2;
  guint8 *b = g_malloc (n + 1);

  for (gsize i = 0; i < n; i++)
    b[i] = (guint8) (g_ascii_xdigit_value (hex[2 * i]) * 16
                     + g_ascii_xdigit_value (hex[2 * i + 1]));
  return g_bytes_new_take (b, n);
}

static void
check_string (const char *got, size_t got_len, JsonObject *o)
{
  g_autoptr (GBytes) want = unhex (json_object_get_string_member (o, "hex"));
  gsize want_len;
  const void *w = g_bytes_get_data (want, &want_len);

  g_assert_nonnull (got);
  g_assert_cmpmem (got, got_len, w, want_len);
  g_assert_cmpint (got[got_len], ==, '\0');
}

static gboolean
is_signed_type (int t)
{
  return t == BLN_GGUF_INT8 || t == BLN_GGUF_INT16 || t == BLN_GGUF_INT32 || t == BLN_GGUF_INT64;
}

static void
check_kv (const BlnGguf *g, JsonObject *o)
{
  const char *key = json_object_get_string_member (o, "key");
  int type = (int) json_object_get_int_member (o, "type");
  int64_t idx = bln_gguf_find_key (g, key);
  int64_t iv;
  uint64_t uv;
  double fv;
  gboolean bv;
  size_t len;

  g_assert_cmpint (idx, >=, 0);
  g_assert_cmpint (bln_gguf_kv_type (g, idx), ==, type);

  if (type == BLN_GGUF_STRING)
    {
      const char *s = bln_gguf_get_string (g, key, &len);
      check_string (s, len, o);
      g_assert_false (bln_gguf_get_int (g, key, &iv));
    }
  else if (type == BLN_GGUF_BOOL)
    {
      g_assert_true (bln_gguf_get_bool (g, key, &bv));
      g_assert_cmpint (bv, ==, json_object_get_boolean_member (o, "value"));
      g_assert_null (bln_gguf_get_string (g, key, NULL));
    }
  else if (type == BLN_GGUF_FLOAT32 || type == BLN_GGUF_FLOAT64)
    {
      g_assert_true (bln_gguf_get_float (g, key, &fv));
      g_assert_cmpfloat (fv, ==, json_object_get_double_member (o, "value"));
      g_assert_false (bln_gguf_get_int (g, key, &iv));
      g_assert_false (bln_gguf_get_bool (g, key, &bv));
    }
  else if (type == BLN_GGUF_ARRAY)
    {
      int et = (int) json_object_get_int_member (o, "elem_type");
      BlnGgufType got_et;
      uint64_t n;
      JsonArray *vals;

      g_assert_true (bln_gguf_get_array (g, key, &got_et, &n));
      g_assert_cmpint (got_et, ==, et);
      g_assert_cmpuint (n, ==, (uint64_t) json_object_get_int_member (o, "n"));
      g_assert_false (bln_gguf_array_int (g, key, n, &iv));
      g_assert_null (bln_gguf_array_string (g, key, n, NULL));
      if (!json_object_has_member (o, "values"))
        {
          /* nested arrays are validated and skipped: no element is readable */
          g_assert_false (bln_gguf_array_int (g, key, 0, &iv));
          return;
        }
      vals = json_object_get_array_member (o, "values");
      g_assert_cmpuint (json_array_get_length (vals), ==, n);
      for (uint64_t i = 0; i < n; i++)
        {
          JsonObject *e = json_array_get_object_element (vals, (guint) i);

          if (et == BLN_GGUF_STRING)
            {
              const char *s = bln_gguf_array_string (g, key, i, &len);
              check_string (s, len, e);
              g_assert_false (bln_gguf_array_float (g, key, i, &fv));
            }
          else if (et == BLN_GGUF_FLOAT32 || et == BLN_GGUF_FLOAT64)
            {
              g_assert_true (bln_gguf_array_float (g, key, i, &fv));
              g_assert_cmpfloat (fv, ==, json_object_get_double_member (e, "value"));
              g_assert_false (bln_gguf_array_int (g, key, i, &iv));
            }
          else if (et == BLN_GGUF_BOOL)
            {
              g_assert_true (bln_gguf_array_int (g, key, i, &iv));
              g_assert_cmpint (iv, ==, json_object_get_boolean_member (e, "value"));
            }
          else
            {
              const char *dec = json_object_get_string_member (e, "value");
              if (is_signed_type (et))
                {
                  g_assert_true (bln_gguf_array_int (g, key, i, &iv));
                  g_assert_cmpint (iv, ==, g_ascii_strtoll (dec, NULL, 10));
                }
              else if (bln_gguf_array_int (g, key, i, &iv))
                g_assert_cmpuint ((uint64_t) iv, ==, g_ascii_strtoull (dec, NULL, 10));
              else
                g_assert_cmpuint (g_ascii_strtoull (dec, NULL, 10), >, (uint64_t) INT64_MAX);
              g_assert_null (bln_gguf_array_string (g, key, i, NULL));
            }
        }
    }
  else
    {
      const char *dec = json_object_get_string_member (o, "value");

      if (is_signed_type (type))
        {
          g_assert_true (bln_gguf_get_int (g, key, &iv));
          g_assert_cmpint (iv, ==, g_ascii_strtoll (dec, NULL, 10));
          g_assert_true (bln_gguf_get_float (g, key, &fv));
          g_assert_cmpfloat (fv, ==, (double) iv);
          g_assert_cmpint (bln_gguf_get_uint64 (g, key, &uv), ==, iv >= 0);
        }
      else
        {
          g_assert_true (bln_gguf_get_uint64 (g, key, &uv));
          g_assert_cmpuint (uv, ==, g_ascii_strtoull (dec, NULL, 10));
          g_assert_cmpint (bln_gguf_get_int (g, key, &iv), ==, uv <= (uint64_t) INT64_MAX);
        }
      g_assert_false (bln_gguf_get_bool (g, key, &bv));
      g_assert_false (bln_gguf_get_array (g, key, NULL, NULL));
    }
}

static void
check_fixture (const BlnGguf *g)
{
  g_autofree char *json_path = golden_path ("fixture.json");
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonObject *root;
  JsonArray *kvs, *tensors;

  g_assert_true (json_parser_load_from_file (parser, json_path, &error));
  g_assert_no_error (error);
  root = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpuint (bln_gguf_version (g), ==, json_object_get_int_member (root, "version"));
  g_assert_cmpuint (bln_gguf_alignment (g), ==, json_object_get_int_member (root, "alignment"));

  kvs = json_object_get_array_member (root, "kv");
  g_assert_cmpint (bln_gguf_n_kv (g), ==, json_array_get_length (kvs));
  for (guint i = 0; i < json_array_get_length (kvs); i++)
    {
      JsonObject *o = json_array_get_object_element (kvs, i);
      g_assert_cmpstr (bln_gguf_kv_key (g, i), ==, json_object_get_string_member (o, "key"));
      check_kv (g, o);
    }
  g_assert_cmpint (bln_gguf_find_key (g, "no.such.key"), ==, -1);

  tensors = json_object_get_array_member (root, "tensors");
  g_assert_cmpint (bln_gguf_n_tensors (g), ==, json_array_get_length (tensors));
  for (guint i = 0; i < json_array_get_length (tensors); i++)
    {
      JsonObject *o = json_array_get_object_element (tensors, i);
      const BlnGgufTensor *t = bln_gguf_tensor (g, i);
      JsonArray *ne = json_object_get_array_member (o, "ne");
      g_autofree char *sum = NULL;

      g_assert_cmpstr (t->name, ==, json_object_get_string_member (o, "name"));
      g_assert_true (bln_gguf_find_tensor (g, t->name) == t);
      g_assert_cmpint (t->type, ==, json_object_get_int_member (o, "type"));
      g_assert_cmpint (t->n_dims, ==, json_array_get_length (ne));
      for (int d = 0; d < BLN_GGUF_MAX_DIMS; d++)
        g_assert_cmpint (t->ne[d], ==,
                         d < t->n_dims ? json_array_get_int_element (ne, d) : 1);
      g_assert_cmpuint (t->offset, ==, json_object_get_int_member (o, "offset"));
      g_assert_cmpuint (t->nbytes, ==, json_object_get_int_member (o, "nbytes"));
      sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, t->data, t->nbytes);
      g_assert_cmpstr (sum, ==, json_object_get_string_member (o, "sha256"));
    }
  g_assert_null (bln_gguf_find_tensor (g, "no.such.tensor"));
  g_assert_null (bln_gguf_tensor (g, -1));
  g_assert_null (bln_gguf_tensor (g, bln_gguf_n_tensors (g)));
}

static GBytes *
load_fixture (void)
{
  g_autofree char *path = golden_path ("fixture.gguf");
  char *data;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, NULL))
    g_error ("cannot read %s (run tools/gen_gguf_fixture.py)", path);
  return g_bytes_new_take (data, len);
}

static void
test_fixture_file (void)
{
  g_autofree char *path = golden_path ("fixture.gguf");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGguf) g = bln_gguf_open (path, &error);

  g_assert_no_error (error);
  check_fixture (g);
}

static void
test_fixture_memory (void)
{
  g_autoptr (GBytes) bytes = load_fixture ();
  g_autoptr (GError) error = NULL;
  gsize len;
  const void *data = g_bytes_get_data (bytes, &len);
  g_autoptr (BlnGguf) g = bln_gguf_open_memory (data, len, &error);

  g_assert_no_error (error);
  check_fixture (g);
}

/* ---------------------------------------------------------------------------
 * Real vocabulary files
 * ------------------------------------------------------------------------- */

typedef struct {
  const char *name, *model, *pre;
  uint64_t n_tokens, n_merges;
  int64_t bos, eos, pad, unk;   /* -1: key absent */
} VocabCase;

static const VocabCase vocab_cases[] = {
  { "deepseek-llm", "gpt2", "deepseek-llm", 102400, 99757, 100000, 100001, 100001, -1 },
  { "deepseek-coder", "gpt2", "deepseek-coder", 32256, 31757, 32013, 32014, 32014, -1 },
  { "llama-spm", "llama", "default", 32000, 0, 1, 2, -1, 0 },
};

static void
check_id (const BlnGguf *g, const char *key, int64_t want)
{
  int64_t v;

  if (want < 0)
    g_assert_cmpint (bln_gguf_find_key (g, key), ==, -1);
  else
    {
      g_assert_true (bln_gguf_get_int (g, key, &v));
      g_assert_cmpint (v, ==, want);
    }
}

static void
test_vocab (gconstpointer data)
{
  const VocabCase *vc = data;
  const char *shared = g_getenv ("BALEEN_SHARED_DATA");
  g_autofree char *file = g_strdup_printf ("ggml-vocab-%s.gguf", vc->name);
  g_autofree char *path = g_build_filename (shared ? shared : "../shared/data", "vocab", file,
                                            NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGguf) g = NULL;
  BlnGgufType et;
  uint64_t n;
  gboolean b;
  int64_t tt;

  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("vocabulary file not available");
      return;
    }
  g = bln_gguf_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (bln_gguf_version (g), ==, 3);
  g_assert_cmpint (bln_gguf_n_tensors (g), ==, 0);
  g_assert_cmpstr (bln_gguf_get_string (g, "general.architecture", NULL), ==, "llama");
  g_assert_cmpstr (bln_gguf_get_string (g, "tokenizer.ggml.model", NULL), ==, vc->model);
  g_assert_cmpstr (bln_gguf_get_string (g, "tokenizer.ggml.pre", NULL), ==, vc->pre);

  g_assert_true (bln_gguf_get_array (g, "tokenizer.ggml.tokens", &et, &n));
  g_assert_cmpint (et, ==, BLN_GGUF_STRING);
  g_assert_cmpuint (n, ==, vc->n_tokens);
  g_assert_true (bln_gguf_get_array (g, "tokenizer.ggml.token_type", &et, &n));
  g_assert_cmpint (et, ==, BLN_GGUF_INT32);
  g_assert_cmpuint (n, ==, vc->n_tokens);
  if (vc->n_merges)
    {
      g_assert_true (bln_gguf_get_array (g, "tokenizer.ggml.merges", &et, &n));
      g_assert_cmpint (et, ==, BLN_GGUF_STRING);
      g_assert_cmpuint (n, ==, vc->n_merges);
    }
  else
    {
      g_assert_true (bln_gguf_get_array (g, "tokenizer.ggml.scores", &et, &n));
      g_assert_cmpint (et, ==, BLN_GGUF_FLOAT32);
      g_assert_cmpuint (n, ==, vc->n_tokens);
    }
  check_id (g, "tokenizer.ggml.bos_token_id", vc->bos);
  check_id (g, "tokenizer.ggml.eos_token_id", vc->eos);
  check_id (g, "tokenizer.ggml.padding_token_id", vc->pad);
  check_id (g, "tokenizer.ggml.unknown_token_id", vc->unk);
  g_assert_true (bln_gguf_get_bool (g, "tokenizer.ggml.add_bos_token", &b));
  g_assert_true (b);
  g_assert_true (bln_gguf_get_bool (g, "tokenizer.ggml.add_eos_token", &b));
  g_assert_false (b);
  /* the BOS token is a control token (type 3) */
  g_assert_true (bln_gguf_array_int (g, "tokenizer.ggml.token_type", (uint64_t) vc->bos, &tt));
  g_assert_cmpint (tt, ==, 3);
  g_assert_false (bln_gguf_array_int (g, "tokenizer.ggml.token_type", vc->n_tokens, &tt));

  if (g_str_equal (vc->name, "deepseek-llm"))
    g_assert_cmpstr (bln_gguf_array_string (g, "tokenizer.ggml.tokens", 100000, NULL), ==,
                     "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
  if (g_str_equal (vc->name, "deepseek-coder"))
    {
      double f;
      g_assert_cmpstr (bln_gguf_get_string (g, "llama.rope.scaling.type", NULL), ==, "linear");
      g_assert_true (bln_gguf_get_float (g, "llama.rope.scaling.factor", &f));
      g_assert_cmpfloat (f, ==, 4.0);
      g_assert_true (bln_gguf_array_int (g, "tokenizer.ggml.token_type", 32000, &tt));
      g_assert_cmpint (tt, ==, 4);
    }
  if (g_str_equal (vc->name, "llama-spm"))
    {
      g_assert_cmpstr (bln_gguf_array_string (g, "tokenizer.ggml.tokens", 0, NULL), ==, "<unk>");
      g_assert_cmpstr (bln_gguf_array_string (g, "tokenizer.ggml.tokens", 3, NULL), ==, "<0x00>");
      g_assert_true (bln_gguf_array_int (g, "tokenizer.ggml.token_type", 0, &tt));
      g_assert_cmpint (tt, ==, 2);
      g_assert_true (bln_gguf_array_int (g, "tokenizer.ggml.token_type", 3, &tt));
      g_assert_cmpint (tt, ==, 6);
    }
}

/* ---------------------------------------------------------------------------
 * Corruption
 * ------------------------------------------------------------------------- */

/* Opens an exact-size heap copy (so that ASan sees any over-read). */
static BlnGguf *
open_copy (const uint8_t *data, size_t len, GError **error)
{
  g_autofree uint8_t *copy = g_memdup2 (data, len);
  BlnGguf *g = bln_gguf_open_memory (copy, len, error);

  if (g)
    {
      touch_all (g);
      bln_gguf_free (g);
      return (BlnGguf *) 1;   /* only success matters to callers */
    }
  return NULL;
}

static void
test_truncate (void)
{
  g_autoptr (GBytes) bytes = load_fixture ();
  gsize len;
  const uint8_t *data = g_bytes_get_data (bytes, &len);
  g_autoptr (BlnGguf) orig = bln_gguf_open_memory (data, len, NULL);
  size_t data_end = 0;

  /* GGUFWriter pads the file after the last tensor: cutting the padding
   * leaves a valid file, cutting anything before it must fail */
  for (int64_t i = 0; i < bln_gguf_n_tensors (orig); i++)
    {
      const BlnGgufTensor *t = bln_gguf_tensor (orig, i);
      data_end = MAX (data_end, (size_t) ((const uint8_t *) t->data - data) + t->nbytes);
    }
  g_assert_cmpuint (data_end, >, 0);
  for (gsize cut = 0; cut < len; cut++)
    {
      g_autoptr (GError) error = NULL;
      gboolean opened = open_copy (data, cut, &error) != NULL;

      if (cut < data_end)
        {
          if (opened)
            g_error ("the file cut to %" G_GSIZE_FORMAT " bytes opened", cut);
          g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
        }
      else
        g_assert_no_error (error);
    }
}

static void
test_mutate (void)
{
  g_autoptr (GBytes) bytes = load_fixture ();
  gsize len;
  const uint8_t *data = g_bytes_get_data (bytes, &len);
  g_autofree uint8_t *buf = g_memdup2 (data, len);
  g_autoptr (BlnGguf) orig = bln_gguf_open_memory (data, len, NULL);
  size_t header_end = len;
  static const int edits[] = { 0x00, 0xff, 0x80, 0x7f, 0x01, 0x40, -1, -2 };
  guint ok = 0, failed = 0;

  /* every byte before the tensor data, every edit */
  for (int64_t i = 0; i < bln_gguf_n_tensors (orig); i++)
    {
      const uint8_t *tdata = bln_gguf_tensor (orig, i)->data;
      header_end = MIN (header_end, (size_t) (tdata - data));
    }
  for (size_t pos = 0; pos < header_end; pos++)
    for (gsize e = 0; e < G_N_ELEMENTS (edits); e++)
      {
        g_autoptr (GError) error = NULL;
        uint8_t saved = buf[pos];

        buf[pos] = edits[e] >= 0 ? (uint8_t) edits[e] : (uint8_t) (saved ^ (1u << (-edits[e] + 2)));
        if (open_copy (buf, len, &error))
          ok++;
        else
          {
            g_assert_nonnull (error);
            g_assert_true (error->domain == BLN_ERROR);
            g_assert_cmpuint (strlen (error->message), >, 10);
            failed++;
          }
        buf[pos] = saved;
      }
  g_test_message ("mutations: %u still valid, %u rejected", ok, failed);
  g_assert_cmpuint (failed, >, 0);
}

/* A tiny GGUF writer for hand-made hostile files. */
typedef struct { GByteArray *b; } W;

static void
w_u32 (W *w, uint32_t v)
{
  v = GUINT32_TO_LE (v);
  g_byte_array_append (w->b, (guint8 *) &v, 4);
}

static void
w_u64 (W *w, uint64_t v)
{
  v = GUINT64_TO_LE (v);
  g_byte_array_append (w->b, (guint8 *) &v, 8);
}

static void
w_str (W *w, const char *s)
{
  w_u64 (w, strlen (s));
  g_byte_array_append (w->b, (const guint8 *) s, (guint) strlen (s));
}

static void
w_hdr (W *w, uint32_t version, uint64_t nt, uint64_t nkv)
{
  g_byte_array_append (w->b, (const guint8 *) "GGUF", 4);
  w_u32 (w, version);
  w_u64 (w, nt);
  w_u64 (w, nkv);
}

static void
w_pad (W *w, guint align)
{
  while (w->b->len % align)
    g_byte_array_append (w->b, (const guint8 *) "", 1);
}

/* one tensor of f32 [ne0] at @offset */
static void
w_tensor (W *w, const char *name, uint32_t n_dims, uint64_t ne0, uint32_t type, uint64_t offset)
{
  w_str (w, name);
  w_u32 (w, n_dims);
  for (uint32_t d = 0; d < n_dims; d++)
    w_u64 (w, d == 0 ? ne0 : 1);
  w_u32 (w, type);
  w_u64 (w, offset);
}

static void
expect_fail (W *w, int code, const char *fragment)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GByteArray) b = w->b;

  g_assert_null (open_copy (b->data, b->len, &error));
  g_assert_error (error, BLN_ERROR, code);
  if (strstr (error->message, fragment) == NULL)
    g_error ("error '%s' does not mention '%s'", error->message, fragment);
  g_test_message ("rejected: %s", error->message);
}

static void
test_hostile (void)
{
  W w;

  w.b = g_byte_array_new ();
  w_hdr (&w, 1, 0, 0);
  expect_fail (&w, BLN_ERROR_UNSUPPORTED, "version 1");

  w.b = g_byte_array_new ();
  w_hdr (&w, GUINT32_SWAP_LE_BE (3), 0, 0);
  expect_fail (&w, BLN_ERROR_UNSUPPORTED, "big-endian");

  w.b = g_byte_array_new ();
  g_byte_array_append (w.b, (const guint8 *) "GGUG\3\0\0\0", 8);
  expect_fail (&w, BLN_ERROR_CORRUPT, "not a GGUF");

  w.b = g_byte_array_new ();
  w_hdr (&w, 3, 0, G_MAXUINT64);
  expect_fail (&w, BLN_ERROR_CORRUPT, "metadata entries");

  w.b = g_byte_array_new ();
  w_hdr (&w, 3, G_MAXUINT64 / 2, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "tensors");

  w.b = g_byte_array_new ();   /* key length past the end */
  w_hdr (&w, 3, 0, 1);
  w_u64 (&w, G_MAXUINT64);
  w_u32 (&w, 0);
  g_byte_array_set_size (w.b, w.b->len + 64);
  expect_fail (&w, BLN_ERROR_CORRUPT, "remain");

  w.b = g_byte_array_new ();   /* array count larger than the file */
  w_hdr (&w, 3, 0, 1);
  w_str (&w, "a");
  w_u32 (&w, BLN_GGUF_ARRAY);
  w_u32 (&w, BLN_GGUF_STRING);
  w_u64 (&w, 1u << 30);
  expect_fail (&w, BLN_ERROR_CORRUPT, "elements");

  w.b = g_byte_array_new ();   /* arrays nested too deep */
  w_hdr (&w, 3, 0, 1);
  w_str (&w, "deep");
  w_u32 (&w, BLN_GGUF_ARRAY);
  for (int i = 0; i < 12; i++)
    {
      w_u32 (&w, BLN_GGUF_ARRAY);
      w_u64 (&w, 1);
    }
  w_u32 (&w, BLN_GGUF_UINT8);
  w_u64 (&w, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "nests");

  w.b = g_byte_array_new ();   /* unknown value type */
  w_hdr (&w, 3, 0, 1);
  w_str (&w, "k");
  w_u32 (&w, 13);
  g_byte_array_set_size (w.b, w.b->len + 64);
  expect_fail (&w, BLN_ERROR_CORRUPT, "unknown value type");

  w.b = g_byte_array_new ();   /* duplicate key */
  w_hdr (&w, 3, 0, 2);
  w_str (&w, "k");
  w_u32 (&w, BLN_GGUF_UINT8);
  g_byte_array_append (w.b, (const guint8 *) "\1", 1);
  w_str (&w, "k");
  w_u32 (&w, BLN_GGUF_UINT8);
  g_byte_array_append (w.b, (const guint8 *) "\2", 1);
  expect_fail (&w, BLN_ERROR_CORRUPT, "twice");

  w.b = g_byte_array_new ();   /* alignment not a power of two */
  w_hdr (&w, 3, 0, 1);
  w_str (&w, "general.alignment");
  w_u32 (&w, BLN_GGUF_UINT32);
  w_u32 (&w, 48);
  expect_fail (&w, BLN_ERROR_CORRUPT, "power of two");

  w.b = g_byte_array_new ();   /* alignment of the wrong type */
  w_hdr (&w, 3, 0, 1);
  w_str (&w, "general.alignment");
  w_u32 (&w, BLN_GGUF_STRING);
  w_str (&w, "32");
  expect_fail (&w, BLN_ERROR_CORRUPT, "alignment");

  w.b = g_byte_array_new ();   /* five dimensions */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 5, 8, BLN_TYPE_F32, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "dimensions");

  w.b = g_byte_array_new ();   /* element count overflows */
  w_hdr (&w, 3, 1, 0);
  w_str (&w, "t");
  w_u32 (&w, 2);
  w_u64 (&w, (uint64_t) 1 << 40);
  w_u64 (&w, (uint64_t) 1 << 40);
  w_u32 (&w, BLN_TYPE_F32);
  w_u64 (&w, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "64 bits");

  w.b = g_byte_array_new ();   /* negative dimension */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 1, G_MAXUINT64, BLN_TYPE_F32, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "negative");

  w.b = g_byte_array_new ();   /* unknown tensor type */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 1, 8, 4, 0);
  expect_fail (&w, BLN_ERROR_UNSUPPORTED, "type 4");

  w.b = g_byte_array_new ();   /* row not a whole number of blocks */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 1, 33, BLN_TYPE_Q4_0, 0);
  expect_fail (&w, BLN_ERROR_CORRUPT, "block size");

  w.b = g_byte_array_new ();   /* misaligned offset */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 1, 8, BLN_TYPE_F32, 4);
  expect_fail (&w, BLN_ERROR_CORRUPT, "multiple of the alignment");

  w.b = g_byte_array_new ();   /* data past the end */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "blk.0.attn_q.weight", 1, 8, BLN_TYPE_F32, 0);
  w_pad (&w, 32);
  g_byte_array_set_size (w.b, w.b->len + 16);
  expect_fail (&w, BLN_ERROR_CORRUPT, "tensor 'blk.0.attn_q.weight': data");

  w.b = g_byte_array_new ();   /* huge offset */
  w_hdr (&w, 3, 1, 0);
  w_tensor (&w, "t", 1, 8, BLN_TYPE_F32, G_MAXUINT64 - 31);
  w_pad (&w, 32);
  g_byte_array_set_size (w.b, w.b->len + 32);
  expect_fail (&w, BLN_ERROR_CORRUPT, "past the end");

  w.b = g_byte_array_new ();   /* overlapping tensors */
  w_hdr (&w, 3, 2, 0);
  w_tensor (&w, "a", 1, 16, BLN_TYPE_F32, 0);
  w_tensor (&w, "b", 1, 8, BLN_TYPE_F32, 32);
  w_pad (&w, 32);
  g_byte_array_set_size (w.b, w.b->len + 64);
  expect_fail (&w, BLN_ERROR_CORRUPT, "overlap");

  w.b = g_byte_array_new ();   /* duplicate tensor */
  w_hdr (&w, 3, 2, 0);
  w_tensor (&w, "a", 1, 8, BLN_TYPE_F32, 0);
  w_tensor (&w, "a", 1, 8, BLN_TYPE_F32, 32);
  w_pad (&w, 32);
  g_byte_array_set_size (w.b, w.b->len + 64);
  expect_fail (&w, BLN_ERROR_CORRUPT, "twice");

  {
    /* and a valid hand-made v2 file, with a zero-size tensor */
    g_autoptr (GError) error = NULL;
    g_autoptr (GByteArray) b = NULL;
    g_autoptr (BlnGguf) g = NULL;

    w.b = g_byte_array_new ();
    w_hdr (&w, 2, 2, 0);
    w_tensor (&w, "a", 1, 8, BLN_TYPE_F32, 0);
    w_tensor (&w, "empty", 2, 0, BLN_TYPE_Q8_0, 32);
    w_pad (&w, 32);
    g_byte_array_set_size (w.b, w.b->len + 32);
    b = w.b;
    g = bln_gguf_open_memory (b->data, b->len, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (bln_gguf_version (g), ==, 2);
    g_assert_cmpuint (bln_gguf_find_tensor (g, "empty")->nbytes, ==, 0);
    g_assert_cmpuint (bln_gguf_find_tensor (g, "a")->nbytes, ==, 32);
  }
}

static void
test_open_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGguf) g = bln_gguf_open ("/nonexistent/baleen.gguf", &error);

  g_assert_null (g);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  g = bln_gguf_open_memory ("", 0, &error);
  g_assert_null (g);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Gguf/fixture/file", test_fixture_file);
  g_test_add_func ("/Baleen/Gguf/fixture/memory", test_fixture_memory);
  for (gsize i = 0; i < G_N_ELEMENTS (vocab_cases); i++)
    {
      g_autofree char *p = g_strdup_printf ("/Baleen/Gguf/vocab/%s", vocab_cases[i].name);
      g_test_add_data_func (p, &vocab_cases[i], test_vocab);
    }
  g_test_add_func ("/Baleen/Gguf/corrupt/truncate", test_truncate);
  g_test_add_func ("/Baleen/Gguf/corrupt/mutate", test_mutate);
  g_test_add_func ("/Baleen/Gguf/corrupt/hostile", test_hostile);
  g_test_add_func ("/Baleen/Gguf/open-errors", test_open_errors);
  return g_test_run ();
}
