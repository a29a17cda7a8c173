/* test-safetensors.c — safetensors files and HF model directories.
 *
 * The fixtures in tests/golden/safetensors/ were written by the safetensors
 * Python package and transformers' save_pretrained, and the expected values
 * next to them were read back by the same package
 * (tools/gen_safetensors_fixture.py). Corrupt variants are made here from the
 * real files and from small synthetic headers; every one must fail cleanly.
 */
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "hfdir.h"
#include "quant.h"
#include "safetensors.h"

static char *
golden_path (const char *name)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");

  return g_build_filename (dir != NULL ? dir : "tests/golden", "safetensors", name, NULL);
}

static JsonParser *
load_golden (const char *name, JsonObject **root)
{
  g_autofree char *path = golden_path (name);
  g_autoptr(GError) error = NULL;
  JsonParser *parser = json_parser_new ();

  json_parser_load_from_file (parser, path, &error);
  g_assert_no_error (error);
  *root = json_node_get_object (json_parser_get_root (parser));
  return parser;
}

static const char *
torch_to_st (const char *torch_name)
{
  if (g_str_equal (torch_name, "float32"))
    return "F32";
  if (g_str_equal (torch_name, "float16"))
    return "F16";
  if (g_str_equal (torch_name, "bfloat16"))
    return "BF16";
  if (g_str_equal (torch_name, "int64"))
    return "I64";
  return "?";
}

static guint32
float_bits (float f)
{
  guint32 b;

  memcpy (&b, &f, 4);
  return b;
}

/* Checks one tensor's header entry and values against the golden entry. */
static void
check_tensor (const char *name, const BlnStTensorInfo *info, const BlnTensor *t,
              GError *tensor_error, JsonObject *want)
{
  JsonArray *shape = json_object_get_array_member (want, "shape");
  guint n_dims = json_array_get_length (shape), d;
  int64_t n = 1, k;

  g_assert_nonnull (info);
  g_assert_cmpstr (info->name, ==, name);
  g_assert_cmpstr (bln_st_dtype_name (info->dtype), ==,
                   torch_to_st (json_object_get_string_member (want, "dtype")));
  g_assert_cmpint (info->n_dims, ==, n_dims);
  for (d = 0; d < n_dims; d++)
    {
      g_assert_cmpint (info->shape[d], ==, json_array_get_int_element (shape, d));
      n *= info->shape[d];
    }
  g_assert_cmpuint (info->end - info->begin, ==, n * bln_st_dtype_size (info->dtype));

  if (json_object_has_member (want, "ints"))
    {
      JsonArray *vals = json_object_get_array_member (want, "ints");

      g_assert_null (t);
      g_assert_error (tensor_error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
      g_assert_cmpint (json_array_get_length (vals), ==, n);
      for (k = 0; k < n; k++)
        {
          gint64 v;

          memcpy (&v, (const guint8 *) info->data + 8 * k, 8);
          g_assert_cmpint (GINT64_FROM_LE (v), ==, json_array_get_int_element (vals, k));
        }
      return;
    }
  if (n_dims > 4)
    {
      g_assert_null (t);
      g_assert_error (tensor_error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
      return;
    }

  g_assert_no_error (tensor_error);
  g_assert_nonnull (t);
  g_assert_cmpstr (t->name, ==, name);
  g_assert_cmpint (bln_tensor_nelements (t), ==, n);
  g_assert_cmpint (t->n_dims, ==, n_dims > 0 ? n_dims : 1);
  for (d = 0; d < 4; d++)
    g_assert_cmpint (t->ne[d], ==, d < n_dims ? info->shape[n_dims - 1 - d] : 1);
  g_assert_cmpuint (t->nbytes, ==, info->end - info->begin);
  {
    JsonArray *bits = json_object_get_array_member (want, "f32_bits");
    size_t esize = bln_st_dtype_size (info->dtype);

    g_assert_cmpint (json_array_get_length (bits), ==, n);
    g_assert_true (n == 0 || ((uintptr_t) t->data) % esize == 0);
    for (k = 0; k < n; k++)
      {
        float f;

        if (t->type == BLN_TYPE_F32)
          f = ((const float *) t->data)[k];
        else if (t->type == BLN_TYPE_F16)
          f = bln_half_to_float (((const guint16 *) t->data)[k]);
        else
          {
            g_assert_cmpint (t->type, ==, BLN_TYPE_BF16);
            f = bln_bf16_to_float (((const guint16 *) t->data)[k]);
          }
        g_assert_cmpuint (float_bits (f), ==, (guint32) json_array_get_int_element (bits, k));
      }
  }
}

static void
check_file_against (BlnSafetensors *st, JsonObject *golden)
{
  JsonObject *tensors = json_object_get_object_member (golden, "tensors");
  JsonObject *meta = json_object_get_object_member (golden, "metadata");
  JsonObjectIter iter;
  const char *name;
  JsonNode *node;
  int64_t i;

  g_assert_cmpint (bln_safetensors_n_tensors (st), ==, json_object_get_size (tensors));
  json_object_iter_init (&iter, meta);
  while (json_object_iter_next (&iter, &name, &node))
    g_assert_cmpstr (bln_safetensors_metadata (st, name), ==, json_node_get_string (node));
  g_assert_null (bln_safetensors_metadata (st, "no-such-key"));
  g_assert_cmpint (bln_safetensors_find (st, "no-such-tensor"), ==, -1);

  /* the infos come sorted by offset and never overlap */
  for (i = 1; i < bln_safetensors_n_tensors (st); i++)
    g_assert_cmpuint (bln_safetensors_info (st, i - 1)->end, <=,
                      bln_safetensors_info (st, i)->begin);

  json_object_iter_init (&iter, tensors);
  while (json_object_iter_next (&iter, &name, &node))
    {
      g_autoptr(GError) error = NULL;
      int64_t idx = bln_safetensors_find (st, name);
      const BlnTensor *t;

      g_assert_cmpint (idx, >=, 0);
      t = bln_safetensors_tensor (st, idx, &error);
      check_tensor (name, bln_safetensors_info (st, idx), t, error, json_node_get_object (node));
      /* asking again hands out the same tensor */
      if (t != NULL)
        g_assert_true (bln_safetensors_tensor (st, idx, NULL) == t);
    }
}

static void
test_basic (void)
{
  g_autofree char *path = golden_path ("basic.safetensors");
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(BlnSafetensors) st = NULL;
  g_autoptr(BlnSafetensors) mem = NULL;
  g_autofree char *contents = NULL;
  gsize len;
  JsonObject *golden;

  parser = load_golden ("basic.json", &golden);
  st = bln_safetensors_open (path, &error);
  g_assert_no_error (error);
  check_file_against (st, golden);

  g_assert_true (g_file_get_contents (path, &contents, &len, NULL));
  mem = bln_safetensors_open_memory (contents, len, &error);
  g_assert_no_error (error);
  check_file_against (mem, golden);
}

static void
test_missing_file (void)
{
  g_autoptr(GError) error = NULL;
  BlnSafetensors *st = bln_safetensors_open ("/nonexistent/x.safetensors", &error);

  g_assert_null (st);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
}

/* ---------------------------------------------------------------------- */
/* corrupt files                                                            */

/* Opens a copy of @data in a buffer of exactly @len bytes, so a read past the
 * end lands outside the allocation. */
static BlnSafetensors *
open_exact (const guint8 *data, gsize len, GError **error)
{
  g_autofree guint8 *copy = g_malloc (len > 0 ? len : 1);
  BlnSafetensors *st;
  int64_t i;

  memcpy (copy, data, len);
  st = bln_safetensors_open_memory (copy, len, error);
  if (st != NULL)
    {
      /* whatever opened must be self-consistent */
      for (i = 0; i < bln_safetensors_n_tensors (st); i++)
        {
          const BlnStTensorInfo *info = bln_safetensors_info (st, i);

          g_assert_cmpuint (info->begin, <=, info->end);
          g_assert_true ((const guint8 *) info->data >= copy);
          g_assert_true ((const guint8 *) info->data + (info->end - info->begin) <= copy + len);
          bln_safetensors_tensor (st, i, NULL);
        }
      bln_safetensors_free (st);
      st = (BlnSafetensors *) 1;   /* opened; the caller only tests for NULL */
    }
  return st;
}

/* A file made of an 8-byte length, @header and @data_len bytes of data. */
static GByteArray *
make_file (const char *header, gsize data_len)
{
  GByteArray *b = g_byte_array_new ();
  guint64 n = GUINT64_TO_LE ((guint64) strlen (header));
  gsize i;

  g_byte_array_append (b, (const guint8 *) &n, 8);
  g_byte_array_append (b, (const guint8 *) header, (guint) strlen (header));
  for (i = 0; i < data_len; i++)
    {
      guint8 v = (guint8) i;
      g_byte_array_append (b, &v, 1);
    }
  return b;
}

static void
expect_fail (const char *header, gsize data_len, int code)
{
  g_autoptr(GByteArray) b = make_file (header, data_len);
  g_autoptr(GError) error = NULL;

  if (open_exact (b->data, b->len, &error) != NULL)
    g_error ("header opened but should not have: %s", header);
  g_assert_error (error, BLN_ERROR, code);
  g_assert_true (g_str_has_prefix (error->message, "safetensors: "));
}

static void
expect_ok (const char *header, gsize data_len)
{
  g_autoptr(GByteArray) b = make_file (header, data_len);
  g_autoptr(GError) error = NULL;

  open_exact (b->data, b->len, &error);
  g_assert_no_error (error);
}

static void
test_corrupt_truncated (void)
{
  g_autofree char *path = golden_path ("basic.safetensors");
  g_autofree guint8 *contents = NULL;
  gsize len, cut;

  g_assert_true (g_file_get_contents (path, (char **) &contents, &len, NULL));
  g_assert_nonnull (open_exact (contents, len, NULL));
  for (cut = 0; cut < len; cut++)
    {
      g_autoptr(GError) error = NULL;

      g_assert_null (open_exact (contents, cut, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
    }
}

static void
test_corrupt_header_length (void)
{
  g_autofree char *path = golden_path ("basic.safetensors");
  g_autofree guint8 *contents = NULL;
  gsize len;
  guint64 header_len, bad[] = { 0, 1, 7, 0, 0, 0, G_MAXUINT64, G_MAXINT64, (guint64) 1 << 32,
                                BLN_SAFETENSORS_MAX_HEADER + 1ull };
  guint i;

  g_assert_true (g_file_get_contents (path, (char **) &contents, &len, NULL));
  memcpy (&header_len, contents, 8);
  header_len = GUINT64_FROM_LE (header_len);
  /* cut the closing brace (the writer pads the header with spaces after it) */
  bad[3] = header_len;
  while (bad[3] > 0 && contents[8 + bad[3] - 1] != '}')
    bad[3]--;
  bad[3]--;
  bad[4] = header_len + 1;
  bad[5] = len - 7;
  for (i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;
      guint64 le = GUINT64_TO_LE (bad[i]);

      memcpy (contents, &le, 8);
      g_assert_null (open_exact (contents, len, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
    }
}

static void
test_corrupt_headers (void)
{
  static const char *bad[] = {
    "",
    "x",
    "[]",
    "{",
    "{\"a\":}",
    "not json at all",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}",         /* unterminated */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}",       /* past the end */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",        /* wrong size */
    "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}",        /* wrong dtype size */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",        /* reversed */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.0,8.0]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0,8\"}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}",
    "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}",
    "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
    "{\"a\":[1,2,3]}",
    "{\"a\":null}",
    /* overlapping ranges */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
    /* shapes whose byte size overflows */
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}",
    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
    "{\"__metadata__\":{\"k\":1}}",
    "{\"__metadata__\":[\"k\"]}",
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}\xff",   /* not UTF-8 */
  };
  GString *deep = g_string_new ("{\"__metadata__\":");
  guint i;

  for (i = 0; i < G_N_ELEMENTS (bad); i++)
    expect_fail (bad[i], 8, BLN_ERROR_CORRUPT);

  /* unknown dtype names are refused as unsupported, not as corruption */
  expect_fail ("{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 8,
               BLN_ERROR_UNSUPPORTED);
  expect_fail ("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               BLN_ERROR_UNSUPPORTED);

  /* a nesting bomb is refused before the parser recurses into it */
  for (i = 0; i < 200000; i++)
    g_string_append_c (deep, '[');
  g_string_append_c (deep, '}');
  expect_fail (deep->str, 0, BLN_ERROR_CORRUPT);
  g_string_free (deep, TRUE);

  /* an embedded NUL in the header */
  {
    const char h[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    g_autoptr(GByteArray) b = make_file (h, 8);
    g_autoptr(GError) error = NULL;

    b->data[8 + 6] = '\0';
    g_assert_null (open_exact (b->data, b->len, &error));
    g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
  }
}

static void
test_valid_headers (void)
{
  /* padding after the JSON, gaps, empty tensors and the empty header are legal */
  expect_ok ("{}", 0);
  expect_ok ("{}        ", 0);
  expect_ok ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ", 8);
  expect_ok ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16);
  expect_ok ("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  expect_ok ("{\"__metadata__\":{\"format\":\"pt\"},"
             "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);

  /* an unaligned F32 tensor gets an aligned copy with the same bytes */
  {
    g_autoptr(GString) h = g_string_new (
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}");
    g_autoptr(GByteArray) b = NULL;
    g_autoptr(BlnSafetensors) st = NULL;
    g_autoptr(GError) error = NULL;
    const BlnTensor *t;
    const BlnStTensorInfo *info;

    /* pad the header so the data section starts 8-aligned and "a" does not */
    while ((8 + h->len) % 8 != 0)
      g_string_append_c (h, ' ');
    b = make_file (h->str, 10);
    st = bln_safetensors_open_memory (b->data, b->len, &error);
    g_assert_no_error (error);
    info = bln_safetensors_info (st, bln_safetensors_find (st, "a"));
    t = bln_safetensors_tensor (st, bln_safetensors_find (st, "a"), &error);
    g_assert_no_error (error);
    g_assert_true (((uintptr_t) t->data) % 4 == 0);
    g_assert_true (((uintptr_t) info->data) % 4 != 0);
    g_assert_true (t->data != info->data);
    g_assert_cmpmem (t->data, t->nbytes, info->data, info->end - info->begin);
    g_assert_cmpint (t->ne[0], ==, 2);
  }
}

/* Random byte changes in the header of the real file: no crash, and whatever
 * opens is consistent (checked in open_exact). */
static void
test_corrupt_random (void)
{
  g_autofree char *path = golden_path ("basic.safetensors");
  g_autofree guint8 *contents = NULL;
  g_autofree guint8 *work = NULL;
  static const char alphabet[] = "0123456789[]{},:\"-.eE FB";
  guint64 header_len;
  gsize len;
  int round, k;

  g_assert_true (g_file_get_contents (path, (char **) &contents, &len, NULL));
  memcpy (&header_len, contents, 8);
  header_len = GUINT64_FROM_LE (header_len);
  work = g_malloc (len);
  for (round = 0; round < 3000; round++)
    {
      g_autoptr(GError) error = NULL;
      int n_changes = g_test_rand_int_range (1, 4);

      memcpy (work, contents, len);
      for (k = 0; k < n_changes; k++)
        {
          gsize at = 8 + (gsize) g_test_rand_int_range (0, (gint32) header_len);

          work[at] = (guint8) alphabet[g_test_rand_int_range (0, sizeof alphabet - 1)];
        }
      if (open_exact (work, len, &error) == NULL)
        g_assert_true (error != NULL && error->domain == BLN_ERROR);
    }
}

/* ---------------------------------------------------------------------- */
/* HF directories                                                           */

static void
check_dir_against (BlnHfDir *hf, JsonObject *golden)
{
  JsonObject *tensors = json_object_get_object_member (golden, "tensors");
  JsonObjectIter iter;
  const char *name;
  JsonNode *node;
  int64_t i;

  g_assert_cmpint (bln_hfdir_n_tensors (hf), ==, json_object_get_size (tensors));
  for (i = 0; i < bln_hfdir_n_tensors (hf); i++)
    {
      g_assert_true (json_object_has_member (tensors, bln_hfdir_tensor_name (hf, i)));
      if (i > 0)
        g_assert_cmpstr (bln_hfdir_tensor_name (hf, i - 1), <, bln_hfdir_tensor_name (hf, i));
    }

  json_object_iter_init (&iter, tensors);
  while (json_object_iter_next (&iter, &name, &node))
    {
      g_autoptr(GError) error = NULL;
      const BlnTensor *t = bln_hfdir_get_tensor (hf, name, &error);

      check_tensor (name, bln_hfdir_tensor_info (hf, name), t, error, json_node_get_object (node));
      g_assert_true (bln_hfdir_find_tensor (hf, name) == t);
    }

  {
    g_autoptr(GError) error = NULL;

    g_assert_null (bln_hfdir_get_tensor (hf, "model.no_such.weight", &error));
    g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
    g_assert_null (bln_hfdir_find_tensor (hf, "model.no_such.weight"));
    g_assert_null (bln_hfdir_tensor_info (hf, "model.no_such.weight"));
  }
}

/* The config helpers against json-glib's own reading of the golden copy. */
static void
check_config (BlnHfDir *hf, JsonObject *golden)
{
  JsonObject *want = json_object_get_object_member (golden, "config");
  JsonObject *c = bln_hfdir_config (hf);
  JsonObject *rope = json_object_get_object_member (want, "rope_parameters");

  g_assert_nonnull (c);
  g_assert_cmpint (bln_hf_config_get_int (c, "hidden_size", -1), ==,
                   json_object_get_int_member (want, "hidden_size"));
  g_assert_cmpint (bln_hf_config_get_int (c, "num_key_value_heads", -1), ==,
                   json_object_get_int_member (want, "num_key_value_heads"));
  g_assert_cmpint (bln_hf_config_get_int (c, "vocab_size", -1), ==,
                   json_object_get_int_member (want, "vocab_size"));
  g_assert_cmpfloat (bln_hf_config_get_float (c, "rms_norm_eps", -1), ==,
                     json_object_get_double_member (want, "rms_norm_eps"));
  g_assert_cmpfloat (bln_hf_config_get_float (c, "rope_parameters.factor", -1), ==,
                     json_object_get_double_member (rope, "factor"));
  g_assert_cmpfloat (bln_hf_config_get_float (c, "rope_parameters.rope_theta", -1), ==,
                     json_object_get_double_member (rope, "rope_theta"));
  g_assert_cmpstr (bln_hf_config_get_string (c, "rope_parameters.rope_type", NULL), ==,
                   json_object_get_string_member (rope, "rope_type"));
  g_assert_cmpstr (bln_hf_config_get_string (c, "model_type", NULL), ==,
                   json_object_get_string_member (want, "model_type"));
  g_assert_true (bln_hf_config_get_bool (c, "tie_word_embeddings", TRUE)
                 == json_object_get_boolean_member (want, "tie_word_embeddings"));
  g_assert_nonnull (bln_hf_config_get_object (c, "rope_parameters"));
  g_assert_true (bln_hf_config_has (c, "rope_parameters.factor"));

  /* defaults: absent, null, wrong type, path through a non-object */
  g_assert_false (bln_hf_config_has (c, "pad_token_id"));   /* null in the file */
  g_assert_cmpint (bln_hf_config_get_int (c, "pad_token_id", 77), ==, 77);
  g_assert_cmpint (bln_hf_config_get_int (c, "no_such_key", 5), ==, 5);
  g_assert_cmpint (bln_hf_config_get_int (c, "model_type", 6), ==, 6);
  g_assert_cmpint (bln_hf_config_get_int (c, "hidden_size.x", 7), ==, 7);
  g_assert_cmpint (bln_hf_config_get_int (c, "rope_parameters.nope", 8), ==, 8);
  g_assert_cmpfloat (bln_hf_config_get_float (c, "architectures", 1.5), ==, 1.5);
  g_assert_cmpstr (bln_hf_config_get_string (c, "hidden_size", "d"), ==, "d");
  g_assert_true (bln_hf_config_get_bool (c, "hidden_size", TRUE));
  g_assert_null (bln_hf_config_get_object (c, "hidden_size"));
  /* an integer read as a float is the same number */
  g_assert_cmpfloat (bln_hf_config_get_float (c, "hidden_size", -1), ==,
                     json_object_get_int_member (want, "hidden_size"));
}

static void
test_hf_single (void)
{
  g_autofree char *dir = golden_path ("tiny-single");
  g_autofree char *tok = g_build_filename (dir, "tokenizer.json", NULL);
  g_autofree char *tokcfg = g_build_filename (dir, "tokenizer_config.json", NULL);
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(BlnHfDir) hf = NULL;
  JsonObject *golden;

  parser = load_golden ("tiny-single.json", &golden);
  hf = bln_hfdir_open (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (bln_hfdir_path (hf), ==, dir);
  g_assert_cmpint (bln_hfdir_n_shards (hf), ==, 1);
  g_assert_cmpstr (bln_hfdir_tokenizer_json (hf), ==, tok);
  g_assert_cmpstr (bln_hfdir_tokenizer_config (hf), ==, tokcfg);
  g_assert_nonnull (bln_hfdir_generation_config (hf));
  check_config (hf, golden);
  check_dir_against (hf, golden);
}

static void
test_hf_sharded (void)
{
  g_autofree char *dir = golden_path ("tiny-sharded");
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(BlnHfDir) hf = NULL;
  g_autoptr(GHashTable) files = g_hash_table_new (g_str_hash, g_str_equal);
  JsonObject *golden, *tensors;
  JsonObjectIter iter;
  const char *name;
  JsonNode *node;

  parser = load_golden ("tiny-sharded.json", &golden);
  hf = bln_hfdir_open (dir, &error);
  g_assert_no_error (error);
  g_assert_null (bln_hfdir_tokenizer_json (hf));
  g_assert_null (bln_hfdir_tokenizer_config (hf));
  tensors = json_object_get_object_member (golden, "tensors");
  json_object_iter_init (&iter, tensors);
  while (json_object_iter_next (&iter, &name, &node))
    g_hash_table_add (files, (gpointer) json_object_get_string_member (
                                 json_node_get_object (node), "file"));
  g_assert_cmpint (g_hash_table_size (files), >=, 2);
  g_assert_cmpint (bln_hfdir_n_shards (hf), ==, g_hash_table_size (files));
  check_config (hf, golden);
  check_dir_against (hf, golden);
}

/* A scratch copy of the sharded fixture whose index is replaced by @index
 * (NULL keeps it); @extra_copy, when set, copies shard 1 under that name. */
static char *
scratch_dir (const char *index, const char *extra_copy)
{
  g_autofree char *src = golden_path ("tiny-sharded");
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) d = g_dir_open (src, 0, &error);
  char *dst = g_dir_make_tmp ("baleen-st-XXXXXX", &error);
  const char *name;

  g_assert_no_error (error);
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *from = g_build_filename (src, name, NULL);
      g_autofree char *to = g_build_filename (dst, name, NULL);
      g_autofree char *data = NULL;
      gsize len;

      g_assert_true (g_file_get_contents (from, &data, &len, NULL));
      g_assert_true (g_file_set_contents (to, data, (gssize) len, NULL));
      if (extra_copy != NULL && g_str_has_prefix (name, "model-00001-"))
        {
          g_autofree char *to2 = g_build_filename (dst, extra_copy, NULL);
          g_assert_true (g_file_set_contents (to2, data, (gssize) len, NULL));
        }
    }
  if (index != NULL)
    {
      g_autofree char *to = g_build_filename (dst, "model.safetensors.index.json", NULL);
      g_assert_true (g_file_set_contents (to, index, -1, NULL));
    }
  return dst;
}

static void
remove_dir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (dir, name, NULL);
      g_assert_cmpint (g_unlink (p), ==, 0);
    }
  g_assert_cmpint (g_rmdir (dir), ==, 0);
}

static void
expect_dir_fail (const char *index, const char *extra_copy, int code, const char *must_mention)
{
  g_autofree char *dir = scratch_dir (index, extra_copy);
  g_autoptr(GError) error = NULL;
  BlnHfDir *hf = bln_hfdir_open (dir, &error);

  g_assert_null (hf);
  g_assert_error (error, BLN_ERROR, code);
  if (must_mention != NULL && strstr (error->message, must_mention) == NULL)
    g_error ("error '%s' does not mention '%s'", error->message, must_mention);
  remove_dir (dir);
}

/* The real index with one entry's shard replaced. */
static char *
index_with (const char *tensor, const char *shard)
{
  g_autofree char *src = golden_path ("tiny-sharded/model.safetensors.index.json");
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  JsonObject *map;

  g_assert_true (json_parser_load_from_file (parser, src, NULL));
  map = json_object_get_object_member (json_node_get_object (json_parser_get_root (parser)),
                                       "weight_map");
  json_object_set_string_member (map, tensor, shard);
  json_generator_set_root (gen, json_parser_get_root (parser));
  return json_generator_to_data (gen, NULL);
}

static const char *
shard_of (const char *tensor)
{
  static char buf[256];
  g_autofree char *src = golden_path ("tiny-sharded/model.safetensors.index.json");
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonObject *map;

  g_assert_true (json_parser_load_from_file (parser, src, NULL));
  map = json_object_get_object_member (json_node_get_object (json_parser_get_root (parser)),
                                       "weight_map");
  g_strlcpy (buf, json_object_get_string_member (map, tensor), sizeof buf);
  return buf;
}

static void
test_hf_bad_dirs (void)
{
  const char *emb = "model.embed_tokens.weight";
  const char *norm = "model.norm.weight";
  g_autofree char *shard_emb = g_strdup (shard_of (emb));
  g_autofree char *shard_norm = g_strdup (shard_of (norm));
  g_autofree char *idx = NULL;

  g_assert_cmpstr (shard_emb, !=, shard_norm);

  /* the scratch copy itself opens */
  {
    g_autofree char *dir = scratch_dir (NULL, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(BlnHfDir) hf = bln_hfdir_open (dir, &error);

    g_assert_no_error (error);
    remove_dir (dir);
  }

  idx = index_with (emb, "../tiny-single/model.safetensors");
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, "not a file in the model directory");
  g_clear_pointer (&idx, g_free);
  idx = index_with (emb, "/etc/passwd");
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, "not a file in the model directory");
  g_clear_pointer (&idx, g_free);
  idx = index_with (emb, "..");
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, "not a file in the model directory");
  g_clear_pointer (&idx, g_free);
  idx = index_with (emb, "");
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, "not a file in the model directory");
  g_clear_pointer (&idx, g_free);
  /* a shard that does not exist */
  idx = index_with (emb, "model-00009-of-00005.safetensors");
  expect_dir_fail (idx, NULL, BLN_ERROR_IO, "model-00009-of-00005.safetensors");
  g_clear_pointer (&idx, g_free);
  /* a tensor in the wrong shard */
  idx = index_with (emb, shard_norm);
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, emb);
  g_clear_pointer (&idx, g_free);
  /* a tensor no shard has */
  idx = index_with ("model.extra.weight", shard_norm);
  expect_dir_fail (idx, NULL, BLN_ERROR_CORRUPT, "model.extra.weight");
  g_clear_pointer (&idx, g_free);
  /* the same tensors present in two shard files */
  idx = index_with (emb, "copy.safetensors");
  expect_dir_fail (idx, "copy.safetensors", BLN_ERROR_CORRUPT, "two shards");
  g_clear_pointer (&idx, g_free);

  expect_dir_fail ("{\"weight_map\": []}", NULL, BLN_ERROR_CORRUPT, "weight_map");
  expect_dir_fail ("{\"weight_map\": {}}", NULL, BLN_ERROR_CORRUPT, "weight_map");
  expect_dir_fail ("{\"metadata\": {}}", NULL, BLN_ERROR_CORRUPT, "weight_map");
  expect_dir_fail ("{\"weight_map\": {\"a\": 1}}", NULL, BLN_ERROR_CORRUPT, "'a'");
  expect_dir_fail ("{\"weight_map\": ", NULL, BLN_ERROR_CORRUPT, NULL);
  expect_dir_fail ("[1]", NULL, BLN_ERROR_CORRUPT, NULL);

  /* no config.json, no weights, not a directory */
  {
    g_autofree char *dir = scratch_dir (NULL, NULL);
    g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
    g_autofree char *index = g_build_filename (dir, "model.safetensors.index.json", NULL);
    g_autoptr(GError) e1 = NULL;
    g_autoptr(GError) e2 = NULL;
    g_autoptr(GError) e3 = NULL;
    g_autoptr(GError) e4 = NULL;

    g_assert_true (g_file_set_contents (cfg, "{\"hidden_size\": ", -1, NULL));
    g_assert_null (bln_hfdir_open (dir, &e1));
    g_assert_error (e1, BLN_ERROR, BLN_ERROR_CORRUPT);
    g_assert_cmpint (g_unlink (cfg), ==, 0);
    g_assert_null (bln_hfdir_open (dir, &e2));
    g_assert_error (e2, BLN_ERROR, BLN_ERROR_IO);
    g_assert_true (g_file_set_contents (cfg, "{}", -1, NULL));
    g_assert_cmpint (g_unlink (index), ==, 0);
    g_assert_null (bln_hfdir_open (dir, &e3));
    g_assert_error (e3, BLN_ERROR, BLN_ERROR_IO);
    g_assert_null (bln_hfdir_open (cfg, &e4));
    g_assert_error (e4, BLN_ERROR, BLN_ERROR_IO);
    remove_dir (dir);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/Baleen/Safetensors/basic", test_basic);
  g_test_add_func ("/Baleen/Safetensors/missing-file", test_missing_file);
  g_test_add_func ("/Baleen/Safetensors/valid-headers", test_valid_headers);
  g_test_add_func ("/Baleen/Safetensors/corrupt/truncated", test_corrupt_truncated);
  g_test_add_func ("/Baleen/Safetensors/corrupt/header-length", test_corrupt_header_length);
  g_test_add_func ("/Baleen/Safetensors/corrupt/headers", test_corrupt_headers);
  g_test_add_func ("/Baleen/Safetensors/corrupt/random", test_corrupt_random);
  g_test_add_func ("/Baleen/HfDir/single", test_hf_single);
  g_test_add_func ("/Baleen/HfDir/sharded", test_hf_sharded);
  g_test_add_func ("/Baleen/HfDir/bad-index", test_hf_bad_dirs);

  return g_test_run ();
}
