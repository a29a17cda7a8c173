/* test-gguf-write.c — engine/gguf-write.c: files it writes are read back by our
 * reader (engine/gguf.c) and by the gguf Python package (tests/gguf_dump.py,
 * the reference), and its failure paths (unwritable path, ENOSPC on /dev/full,
 * aborted streams) leave no partial file. Also runs tests/synth_check.py, which
 * checks tools/synth-gguf's models against the gguf package's name map and key
 * constants and loads them with baleen-cli. */
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "bln-error.h"
#include "gguf-write.h"
#include "gguf.h"
#include "quant.h"

typedef struct {
  const char *name;
  BlnType type;
  int n_dims;
  int64_t ne[4];
} TDesc;

static const TDesc tdescs[] = {
  { "f32", BLN_TYPE_F32, 1, { 5, 1, 1, 1 } },
  { "blk.0.f16", BLN_TYPE_F16, 2, { 7, 3, 1, 1 } },
  { "bf16", BLN_TYPE_BF16, 2, { 8, 2, 1, 1 } },
  { "q8_0", BLN_TYPE_Q8_0, 2, { 64, 3, 1, 1 } },
  { "q4_k", BLN_TYPE_Q4_K, 2, { 256, 2, 1, 1 } },
  { "q6_k.3d", BLN_TYPE_Q6_K, 3, { 512, 1, 2, 1 } },
  { "q5_0", BLN_TYPE_Q5_0, 2, { 32, 3, 1, 1 } },
  { "q4_0.4d", BLN_TYPE_Q4_0, 4, { 32, 2, 2, 2 } },
  { "q5_1", BLN_TYPE_Q5_1, 1, { 96, 1, 1, 1 } },
};

/* The data we wrote, to compare with what comes back. */
typedef struct {
  GBytes *data[G_N_ELEMENTS (tdescs)];
} Sample;

static void
sample_clear (Sample *s)
{
  for (guint i = 0; i < G_N_ELEMENTS (tdescs); i++)
    g_clear_pointer (&s->data[i], g_bytes_unref);
}

static const uint8_t a_u8[] = { 0, 7, 255 };
static const int8_t a_i8[] = { -128, 0, 127 };
static const uint16_t a_u16[] = { 0, 65535 };
static const int16_t a_i16[] = { -32768, 32767, -1 };
static const uint32_t a_u32[] = { 4000000000u, 1 };
static const int32_t a_i32[] = { -2000000000, 0, 2000000000 };
static const uint64_t a_u64[] = { G_GUINT64_CONSTANT (18000000000000000000), 3 };
static const int64_t a_i64[] = { G_GINT64_CONSTANT (-9000000000000000000), 42 };
static const float a_f32[] = { 0.5f, -1e-3f, 3.25e30f };
static const double a_f64[] = { -2.5e-300, 1.0 / 3.0 };
static const uint8_t a_bool[] = { 1, 0, 1 };
static const char *const a_str[] = { "x", "", "ünï ✓" };

static void
write_sample (const char *path, size_t alignment, Sample *s)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGgufWriter) w = bln_gguf_writer_new (path, alignment, &error);
  GByteArray *all = g_byte_array_new ();
  guint64 rng = 12345;

  g_assert_no_error (error);
#define OK(call) G_STMT_START { g_assert_true (call); g_assert_no_error (error); } G_STMT_END
  OK (bln_gguf_writer_add_string (w, "general.architecture", "test", &error));
  OK (bln_gguf_writer_add_uint8 (w, "v.u8", 200, &error));
  OK (bln_gguf_writer_add_int8 (w, "v.i8", -100, &error));
  OK (bln_gguf_writer_add_uint16 (w, "v.u16", 60000, &error));
  OK (bln_gguf_writer_add_int16 (w, "v.i16", -30000, &error));
  OK (bln_gguf_writer_add_uint32 (w, "v.u32", 4000000000u, &error));
  OK (bln_gguf_writer_add_int32 (w, "v.i32", -2000000000, &error));
  OK (bln_gguf_writer_add_uint64 (w, "v.u64", G_GUINT64_CONSTANT (9223372036854775813), &error));
  OK (bln_gguf_writer_add_int64 (w, "v.i64", G_GINT64_CONSTANT (-4611686018427387904), &error));
  OK (bln_gguf_writer_add_float32 (w, "v.f32", 1.5f, &error));
  OK (bln_gguf_writer_add_float64 (w, "v.f64", -2.25e100, &error));
  OK (bln_gguf_writer_add_bool (w, "v.bool", TRUE, &error));
  OK (bln_gguf_writer_add_bool (w, "v.bool_false", FALSE, &error));
  OK (bln_gguf_writer_add_string (w, "v.str", "héllo wörld", &error));
  OK (bln_gguf_writer_add_string (w, "v.empty", "", &error));
  OK (bln_gguf_writer_add_array (w, "a.u8", BLN_GGUF_UINT8, a_u8, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.i8", BLN_GGUF_INT8, a_i8, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.u16", BLN_GGUF_UINT16, a_u16, 2, &error));
  OK (bln_gguf_writer_add_array (w, "a.i16", BLN_GGUF_INT16, a_i16, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.u32", BLN_GGUF_UINT32, a_u32, 2, &error));
  OK (bln_gguf_writer_add_array (w, "a.i32", BLN_GGUF_INT32, a_i32, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.u64", BLN_GGUF_UINT64, a_u64, 2, &error));
  OK (bln_gguf_writer_add_array (w, "a.i64", BLN_GGUF_INT64, a_i64, 2, &error));
  OK (bln_gguf_writer_add_array (w, "a.f32", BLN_GGUF_FLOAT32, a_f32, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.f64", BLN_GGUF_FLOAT64, a_f64, 2, &error));
  OK (bln_gguf_writer_add_array (w, "a.bool", BLN_GGUF_BOOL, a_bool, 3, &error));
  OK (bln_gguf_writer_add_array (w, "a.empty", BLN_GGUF_INT32, NULL, 0, &error));
  OK (bln_gguf_writer_add_string_array (w, "a.str", a_str, NULL, 3, &error));

  for (guint i = 0; i < G_N_ELEMENTS (tdescs); i++)
    OK (bln_gguf_writer_add_tensor (w, tdescs[i].name, tdescs[i].type, tdescs[i].n_dims,
                                    tdescs[i].ne, &error));

  /* quantise random values into one stream */
  for (guint i = 0; i < G_N_ELEMENTS (tdescs); i++)
    {
      const TDesc *d = &tdescs[i];
      int64_t rows = d->ne[1] * d->ne[2] * d->ne[3];
      size_t row_bytes;
      g_autofree float *f = g_new (float, d->ne[0]);
      g_autofree guint8 *q = NULL;

      g_assert_true (bln_type_row_bytes (d->type, d->ne[0], &row_bytes));
      q = g_malloc (row_bytes * rows);
      for (int64_t r = 0; r < rows; r++)
        {
          for (int64_t k = 0; k < d->ne[0]; k++)
            {
              rng = rng * 6364136223846793005ull + 1442695040888963407ull;
              f[k] = (float) ((double) (rng >> 11) / 9007199254740992.0 * 4.0 - 2.0);
            }
          g_assert_true (bln_quantize_row (d->type, f, q + r * row_bytes, d->ne[0]));
        }
      g_assert_cmpuint (bln_gguf_writer_tensor_nbytes (w, i), ==, row_bytes * rows);
      s->data[i] = g_bytes_new (q, row_bytes * rows);
      g_byte_array_append (all, q, (guint) (row_bytes * rows));
    }
  /* hand it over in odd pieces that straddle tensor boundaries */
  for (guint off = 0; off < all->len; off += 13)
    OK (bln_gguf_writer_write (w, all->data + off, MIN (13u, all->len - off), &error));
  g_assert_cmpint (bln_gguf_writer_current_tensor (w), ==, G_N_ELEMENTS (tdescs));
  OK (bln_gguf_writer_finish (w, &error));
#undef OK
  g_byte_array_unref (all);
  {
    GStatBuf st;
    g_assert_cmpint (g_stat (path, &st), ==, 0);
    g_assert_cmpuint ((guint64) st.st_size, ==, bln_gguf_writer_file_size (w));
  }
}

static char *
tmp_dir (void)
{
  g_autoptr (GError) error = NULL;
  char *d = g_dir_make_tmp ("bln-gguf-write-XXXXXX", &error);

  g_assert_no_error (error);
  return d;
}

static void
rm_dir (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *n;

  while (d && (n = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (dir, n, NULL);
      if (g_file_test (p, G_FILE_TEST_IS_DIR))
        rm_dir (p);
      else
        g_unlink (p);
    }
  g_rmdir (dir);
}

/* ------------------------------------------------------------------------ */

static void
check_ours (const char *path, size_t alignment, const Sample *s)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGguf) g = bln_gguf_open (path, &error);
  int64_t iv;
  uint64_t uv;
  double fv;
  gboolean bv;
  size_t len;
  BlnGgufType et;
  uint64_t n;
  const char *str;

  g_assert_no_error (error);
  g_assert_cmpuint (bln_gguf_version (g), ==, 3);
  g_assert_cmpuint (bln_gguf_alignment (g), ==, alignment);
  /* general.alignment is present exactly when it is not the default */
  g_assert_cmpint (bln_gguf_find_key (g, "general.alignment") >= 0, ==, alignment != 32);
  g_assert_cmpstr (bln_gguf_get_string (g, "general.architecture", NULL), ==, "test");
  g_assert_true (bln_gguf_get_int (g, "v.u8", &iv) && iv == 200);
  g_assert_true (bln_gguf_get_int (g, "v.i8", &iv) && iv == -100);
  g_assert_true (bln_gguf_get_int (g, "v.u16", &iv) && iv == 60000);
  g_assert_true (bln_gguf_get_int (g, "v.i16", &iv) && iv == -30000);
  g_assert_true (bln_gguf_get_int (g, "v.u32", &iv) && iv == 4000000000LL);
  g_assert_true (bln_gguf_get_int (g, "v.i32", &iv) && iv == -2000000000);
  g_assert_true (bln_gguf_get_uint64 (g, "v.u64", &uv)
                 && uv == G_GUINT64_CONSTANT (9223372036854775813));
  g_assert_true (bln_gguf_get_int (g, "v.i64", &iv)
                 && iv == G_GINT64_CONSTANT (-4611686018427387904));
  g_assert_true (bln_gguf_get_float (g, "v.f32", &fv) && fv == 1.5);
  g_assert_true (bln_gguf_get_float (g, "v.f64", &fv) && fv == -2.25e100);
  g_assert_true (bln_gguf_get_bool (g, "v.bool", &bv) && bv);
  g_assert_true (bln_gguf_get_bool (g, "v.bool_false", &bv) && !bv);
  g_assert_cmpstr (bln_gguf_get_string (g, "v.str", &len), ==, "héllo wörld");
  g_assert_cmpuint (len, ==, strlen ("héllo wörld"));
  g_assert_cmpstr (bln_gguf_get_string (g, "v.empty", &len), ==, "");
  g_assert_true (bln_gguf_get_array (g, "a.i32", &et, &n) && et == BLN_GGUF_INT32 && n == 3);
  for (uint64_t i = 0; i < 3; i++)
    g_assert_true (bln_gguf_array_int (g, "a.i32", i, &iv) && iv == a_i32[i]);
  g_assert_true (bln_gguf_get_array (g, "a.u64", &et, &n) && et == BLN_GGUF_UINT64 && n == 2);
  g_assert_true (bln_gguf_get_array (g, "a.f64", &et, &n) && et == BLN_GGUF_FLOAT64 && n == 2);
  for (uint64_t i = 0; i < 2; i++)
    g_assert_true (bln_gguf_array_float (g, "a.f64", i, &fv) && fv == a_f64[i]);
  for (uint64_t i = 0; i < 3; i++)
    g_assert_true (bln_gguf_array_float (g, "a.f32", i, &fv) && fv == (double) a_f32[i]);
  for (uint64_t i = 0; i < 3; i++)
    g_assert_true (bln_gguf_array_int (g, "a.i16", i, &iv) && iv == a_i16[i]);
  g_assert_true (bln_gguf_get_array (g, "a.bool", &et, &n) && et == BLN_GGUF_BOOL && n == 3);
  g_assert_true (bln_gguf_get_array (g, "a.empty", &et, &n) && n == 0);
  g_assert_true (bln_gguf_get_array (g, "a.str", &et, &n) && et == BLN_GGUF_STRING && n == 3);
  for (uint64_t i = 0; i < 3; i++)
    {
      str = bln_gguf_array_string (g, "a.str", i, &len);
      g_assert_cmpstr (str, ==, a_str[i]);
    }

  g_assert_cmpint (bln_gguf_n_tensors (g), ==, G_N_ELEMENTS (tdescs));
  for (guint i = 0; i < G_N_ELEMENTS (tdescs); i++)
    {
      const BlnGgufTensor *t = bln_gguf_tensor (g, i);
      size_t sz;
      const void *want = g_bytes_get_data (s->data[i], &sz);

      g_assert_cmpstr (t->name, ==, tdescs[i].name);
      g_assert_cmpint (t->type, ==, tdescs[i].type);
      g_assert_cmpint (t->n_dims, ==, tdescs[i].n_dims);
      for (int d = 0; d < 4; d++)
        g_assert_cmpint (t->ne[d], ==, tdescs[i].ne[d]);
      g_assert_cmpuint (t->offset % alignment, ==, 0);
      g_assert_cmpuint (t->nbytes, ==, sz);
      g_assert_true (memcmp (t->data, want, sz) == 0);
    }
}

static void
test_roundtrip_ours (void)
{
  static const size_t aligns[] = { 32, 64, 1, 4096 };
  g_autofree char *dir = tmp_dir ();

  for (guint i = 0; i < G_N_ELEMENTS (aligns); i++)
    {
      g_autofree char *p = g_strdup_printf ("%s/a%zu.gguf", dir, aligns[i]);
      Sample s = { 0 };
      write_sample (p, aligns[i], &s);
      check_ours (p, aligns[i], &s);
      sample_clear (&s);
    }
  rm_dir (dir);
}

/* ------------------------------------------------------------------------ */

static char *
source_file (const char *name)
{
  const char *golden = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *tests = golden ? g_path_get_dirname (golden) : g_strdup ("tests");

  return g_build_filename (tests, name, NULL);
}

/* Runs python3 @script @args...; returns stdout, or NULL after marking the test
 * skipped when python3 or the gguf package is missing (exit 77). */
static char *
run_python (const char *const *argv_tail, int *status_out)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;

  g_ptr_array_add (argv, (gpointer) "python3");
  for (int i = 0; argv_tail[i]; i++)
    g_ptr_array_add (argv, (gpointer) argv_tail[i]);
  g_ptr_array_add (argv, NULL);
  if (!g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                     &err, &status, &error))
    {
      g_test_skip ("python3 is not available");
      return NULL;
    }
  if (WIFEXITED (status) && WEXITSTATUS (status) == 77)
    {
      g_autofree char *msg = g_strdup_printf ("skipped by %s: %s", argv_tail[0], err);
      g_test_skip (msg);
      return NULL;
    }
  if (err && *err)
    g_test_message ("%s stderr:\n%s", argv_tail[0], err);
  if (status_out)
    *status_out = status;
  else if (!g_spawn_check_wait_status (status, &error))
    g_error ("%s failed: %s\n%s", argv_tail[0], error->message, err);
  return g_steal_pointer (&out);
}

static void
check_kv_json (JsonObject *kv, const char *key, int type, JsonNode *want)
{
  JsonObject *o;
  JsonArray *types;
  JsonNode *v;

  g_assert_true (json_object_has_member (kv, key));
  o = json_object_get_object_member (kv, key);
  types = json_object_get_array_member (o, "types");
  g_assert_cmpint (json_array_get_int_element (types, 0), ==, type);
  v = json_object_get_member (o, "value");
  if (want != NULL)
    {
      if (!json_node_equal (v, want))
        {
          g_autofree char *a = json_to_string (v, FALSE), *b = json_to_string (want, FALSE);
          g_error ("gguf package reads %s = %s, wrote %s", key, a, b);
        }
      json_node_unref (want);
    }
}

static JsonNode *
jint (gint64 v)
{
  JsonNode *n = json_node_new (JSON_NODE_VALUE);
  json_node_set_int (n, v);
  return n;
}

static JsonNode *
jstr (const char *s)
{
  JsonNode *n = json_node_new (JSON_NODE_VALUE);
  json_node_set_string (n, s);
  return n;
}

static JsonNode *
jbool (gboolean b)
{
  JsonNode *n = json_node_new (JSON_NODE_VALUE);
  json_node_set_boolean (n, b);
  return n;
}

static JsonNode *
jints (const gint64 *v, int n)
{
  JsonArray *a = json_array_new ();
  JsonNode *node = json_node_new (JSON_NODE_ARRAY);

  for (int i = 0; i < n; i++)
    json_array_add_int_element (a, v[i]);
  json_node_take_array (node, a);
  return node;
}

static double
kv_float (JsonObject *kv, const char *key, guint i)
{
  JsonNode *v = json_object_get_member (json_object_get_object_member (kv, key), "value");

  if (JSON_NODE_HOLDS_ARRAY (v))
    return json_array_get_double_element (json_node_get_array (v), i);
  return json_node_get_double (v);
}

static void
test_gguf_package (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "s.gguf", NULL);
  g_autofree char *script = source_file ("gguf_dump.py");
  const char *args[] = { script, path, NULL };
  g_autofree char *out = NULL;
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonObject *root, *kv;
  JsonArray *tensors;
  Sample s = { 0 };
  gint64 tmp[3];

  write_sample (path, 64, &s);
  out = run_python (args, NULL);
  if (out == NULL)
    {
      sample_clear (&s);
      rm_dir (dir);
      return;
    }
  g_assert_true (json_parser_load_from_data (p, out, -1, &error));
  g_assert_no_error (error);
  root = json_node_get_object (json_parser_get_root (p));
  g_assert_cmpint (json_object_get_int_member (root, "alignment"), ==, 64);
  kv = json_object_get_object_member (root, "kv");
  g_assert_cmpuint (json_object_get_size (kv), ==, 28 + 1 /* general.alignment */);
  check_kv_json (kv, "general.alignment", BLN_GGUF_UINT32, jint (64));
  check_kv_json (kv, "general.architecture", BLN_GGUF_STRING, jstr ("test"));
  check_kv_json (kv, "v.u8", BLN_GGUF_UINT8, jint (200));
  check_kv_json (kv, "v.i8", BLN_GGUF_INT8, jint (-100));
  check_kv_json (kv, "v.u16", BLN_GGUF_UINT16, jint (60000));
  check_kv_json (kv, "v.i16", BLN_GGUF_INT16, jint (-30000));
  check_kv_json (kv, "v.u32", BLN_GGUF_UINT32, jint (4000000000LL));
  check_kv_json (kv, "v.i32", BLN_GGUF_INT32, jint (-2000000000));
  /* 2^63 + 5 does not fit JSON-GLib's gint64: look for the digits */
  check_kv_json (kv, "v.u64", BLN_GGUF_UINT64, NULL);
  g_assert_nonnull (strstr (out, "9223372036854775813"));
  check_kv_json (kv, "v.i64", BLN_GGUF_INT64, jint (G_GINT64_CONSTANT (-4611686018427387904)));
  check_kv_json (kv, "v.f32", BLN_GGUF_FLOAT32, NULL);
  g_assert_cmpfloat (kv_float (kv, "v.f32", 0), ==, 1.5);
  check_kv_json (kv, "v.f64", BLN_GGUF_FLOAT64, NULL);
  g_assert_cmpfloat (kv_float (kv, "v.f64", 0), ==, -2.25e100);
  check_kv_json (kv, "v.bool", BLN_GGUF_BOOL, jbool (TRUE));
  check_kv_json (kv, "v.bool_false", BLN_GGUF_BOOL, jbool (FALSE));
  check_kv_json (kv, "v.str", BLN_GGUF_STRING, jstr ("héllo wörld"));
  check_kv_json (kv, "v.empty", BLN_GGUF_STRING, jstr (""));
  for (int i = 0; i < 3; i++)
    tmp[i] = a_u8[i];
  check_kv_json (kv, "a.u8", BLN_GGUF_ARRAY, jints (tmp, 3));
  for (int i = 0; i < 3; i++)
    tmp[i] = a_i8[i];
  check_kv_json (kv, "a.i8", BLN_GGUF_ARRAY, jints (tmp, 3));
  for (int i = 0; i < 2; i++)
    tmp[i] = a_u16[i];
  check_kv_json (kv, "a.u16", BLN_GGUF_ARRAY, jints (tmp, 2));
  for (int i = 0; i < 3; i++)
    tmp[i] = a_i16[i];
  check_kv_json (kv, "a.i16", BLN_GGUF_ARRAY, jints (tmp, 3));
  for (int i = 0; i < 2; i++)
    tmp[i] = a_u32[i];
  check_kv_json (kv, "a.u32", BLN_GGUF_ARRAY, jints (tmp, 2));
  for (int i = 0; i < 3; i++)
    tmp[i] = a_i32[i];
  check_kv_json (kv, "a.i32", BLN_GGUF_ARRAY, jints (tmp, 3));
  check_kv_json (kv, "a.u64", BLN_GGUF_ARRAY, NULL);
  g_assert_nonnull (strstr (out, "18000000000000000000"));
  check_kv_json (kv, "a.i64", BLN_GGUF_ARRAY, jints (a_i64, 2));
  check_kv_json (kv, "a.f32", BLN_GGUF_ARRAY, NULL);
  for (int i = 0; i < 3; i++)
    g_assert_cmpfloat (kv_float (kv, "a.f32", i), ==, (double) a_f32[i]);
  check_kv_json (kv, "a.f64", BLN_GGUF_ARRAY, NULL);
  for (int i = 0; i < 2; i++)
    g_assert_cmpfloat (kv_float (kv, "a.f64", i), ==, a_f64[i]);
  {
    JsonArray *a = json_object_get_array_member (
        json_object_get_object_member (kv, "a.bool"), "value");
    check_kv_json (kv, "a.bool", BLN_GGUF_ARRAY, NULL);
    for (int i = 0; i < 3; i++)
      g_assert_cmpint (json_node_get_boolean (json_array_get_element (a, i)), ==, a_bool[i]);
    a = json_object_get_array_member (json_object_get_object_member (kv, "a.str"), "value");
    for (int i = 0; i < 3; i++)
      g_assert_cmpstr (json_array_get_string_element (a, i), ==, a_str[i]);
    check_kv_json (kv, "a.empty", BLN_GGUF_ARRAY, jints (NULL, 0));
  }

  tensors = json_object_get_array_member (root, "tensors");
  g_assert_cmpuint (json_array_get_length (tensors), ==, G_N_ELEMENTS (tdescs));
  for (guint i = 0; i < G_N_ELEMENTS (tdescs); i++)
    {
      JsonObject *t = json_array_get_object_element (tensors, i);
      JsonArray *shape = json_object_get_array_member (t, "shape");
      JsonArray *values = json_object_get_array_member (t, "values");
      const TDesc *d = &tdescs[i];
      size_t sz;
      const guint8 *data = g_bytes_get_data (s.data[i], &sz);
      g_autofree char *sha = g_compute_checksum_for_data (G_CHECKSUM_SHA256, data, sz);
      int64_t nvals = d->ne[0] * d->ne[1] * d->ne[2] * d->ne[3];
      g_autofree float *deq = g_new (float, nvals);

      g_assert_cmpstr (json_object_get_string_member (t, "name"), ==, d->name);
      g_assert_cmpint (json_object_get_int_member (t, "type"), ==, d->type);
      /* the package gives the shape innermost first, as ne[] */
      g_assert_cmpuint (json_array_get_length (shape), ==, d->n_dims);
      for (int k = 0; k < d->n_dims; k++)
        g_assert_cmpint (json_array_get_int_element (shape, k), ==, d->ne[k]);
      g_assert_cmpint (json_object_get_int_member (t, "n_bytes"), ==, sz);
      g_assert_cmpint (json_object_get_int_member (t, "data_offset") % 64, ==, 0);
      g_assert_cmpstr (json_object_get_string_member (t, "sha256"), ==, sha);
      /* the package's dequantiser agrees with ours on the bytes we wrote */
      g_assert_true (bln_dequantize_row (d->type, data, deq, nvals));
      for (guint k = 0; k < json_array_get_length (values); k++)
        g_assert_cmpfloat_with_epsilon (json_array_get_double_element (values, k), deq[k],
                                        1e-6 * MAX (1.0, fabs (deq[k])));
    }
  sample_clear (&s);
  rm_dir (dir);
}

/* ------------------------------------------------------------------------ */

static gboolean
fail_fill (void *buf, size_t offset, size_t len, gpointer user_data, GError **error)
{
  memset (buf, 0, len);
  if (offset > 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "generator gave up");
      return FALSE;
    }
  return TRUE;
}

static gboolean
count_fill (void *buf, size_t offset, size_t len, gpointer user_data, GError **error)
{
  guint8 *b = buf;

  for (size_t i = 0; i < len; i++)
    b[i] = (guint8) ((offset + i) * 7 + 3);
  (*(int *) user_data)++;
  return TRUE;
}

static void
test_stream_cb (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "big.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGgufWriter) w = bln_gguf_writer_new (path, 0, &error);
  g_autoptr (BlnGguf) g = NULL;
  const int64_t ne[2] = { 1 << 16, 40 };   /* 10 MiB of F32: several callback pieces */
  const int64_t ne1[1] = { 3 };
  const BlnGgufTensor *t;
  int calls = 0;
  const guint8 *d;

  g_assert_no_error (error);
  g_assert_true (bln_gguf_writer_add_tensor (w, "big", BLN_TYPE_F32, 2, ne, &error));
  g_assert_true (bln_gguf_writer_add_tensor (w, "hole", BLN_TYPE_F32, 1, ne1, &error));
  g_assert_true (bln_gguf_writer_write_tensor_cb (w, count_fill, &calls, &error));
  g_assert_no_error (error);
  g_assert_cmpint (calls, >, 1);
  g_assert_true (bln_gguf_writer_skip_tensor (w, &error));
  g_assert_true (bln_gguf_writer_finish (w, &error));
  g_assert_no_error (error);
  g = bln_gguf_open (path, &error);
  g_assert_no_error (error);
  t = bln_gguf_find_tensor (g, "big");
  d = t->data;
  for (size_t i = 0; i < t->nbytes; i += 4093)
    g_assert_cmpuint (d[i], ==, (guint8) (i * 7 + 3));
  t = bln_gguf_find_tensor (g, "hole");
  g_assert_cmpfloat (((const float *) t->data)[2], ==, 0.0f);
  rm_dir (dir);
}

static void
test_errors (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "x.gguf", NULL);
  g_autofree char *missing = g_build_filename (dir, "no", "such", "dir.gguf", NULL);
  const int64_t ne[2] = { 256, 4 }, bad[2] = { 100, 4 };
  GError *error = NULL;
  BlnGgufWriter *w;
  guint8 junk[64] = { 0 };

  /* unwritable paths */
  g_assert_null (bln_gguf_writer_new (missing, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_assert_nonnull (strstr (error->message, g_strerror (ENOENT)));
  g_clear_error (&error);
  g_assert_null (bln_gguf_writer_new (dir, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  g_assert_null (bln_gguf_writer_new (path, 48, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  /* caller mistakes */
  w = bln_gguf_writer_new (path, 0, &error);
  g_assert_no_error (error);
  g_assert_true (bln_gguf_writer_add_uint32 (w, "k", 1, &error));
  g_assert_false (bln_gguf_writer_add_string (w, "k", "again", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_gguf_writer_add_uint32 (w, "general.alignment", 64, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_gguf_writer_add_array (w, "s", BLN_GGUF_STRING, junk, 1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_gguf_writer_add_tensor (w, "q", BLN_TYPE_Q4_K, 2, bad, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_gguf_writer_add_tensor (w, "q", (BlnType) 37, 2, ne, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_true (bln_gguf_writer_add_tensor (w, "q", BLN_TYPE_Q4_K, 2, ne, &error));
  g_assert_false (bln_gguf_writer_add_tensor (w, "q", BLN_TYPE_F32, 2, ne, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_true (bln_gguf_writer_write (w, junk, sizeof junk, &error));
  g_assert_false (bln_gguf_writer_add_uint8 (w, "late", 1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  /* data missing at finish: refused, file gone */
  g_assert_false (bln_gguf_writer_finish (w, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  bln_gguf_writer_free (w);

  /* too much data */
  w = bln_gguf_writer_new (path, 0, &error);
  g_assert_true (bln_gguf_writer_add_tensor (w, "s", BLN_TYPE_F32, 1, (int64_t[]) { 4 }, &error));
  g_assert_false (bln_gguf_writer_write (w, junk, 20, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  bln_gguf_writer_free (w);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));

  /* a failing fill callback: its error comes back, the file is removed */
  w = bln_gguf_writer_new (path, 0, &error);
  g_assert_true (bln_gguf_writer_add_tensor (w, "big", BLN_TYPE_F32, 2,
                                             (int64_t[]) { 1 << 20, 2 }, &error));
  g_assert_false (bln_gguf_writer_write_tensor_cb (w, fail_fill, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_BACKEND);
  g_clear_error (&error);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  g_assert_false (bln_gguf_writer_finish (w, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  bln_gguf_writer_free (w);

  /* a writer dropped before finish removes its file */
  w = bln_gguf_writer_new (path, 0, &error);
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  bln_gguf_writer_free (w);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));

  /* disk full: /dev/full fails every write with ENOSPC (and must survive) */
  if (access ("/dev/full", W_OK) == 0)
    {
      g_autofree guint8 *big = g_malloc0 (6 << 20);
      w = bln_gguf_writer_new ("/dev/full", 0, &error);
      g_assert_no_error (error);
      g_assert_true (bln_gguf_writer_add_string (w, "general.architecture", "x", &error));
      g_assert_true (bln_gguf_writer_add_tensor (w, "t", BLN_TYPE_F32, 2,
                                                 (int64_t[]) { 1 << 20, 2 }, &error));
      g_assert_false (bln_gguf_writer_write (w, big, 6 << 20, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
      g_assert_nonnull (strstr (error->message, g_strerror (ENOSPC)));
      g_clear_error (&error);
      g_assert_false (bln_gguf_writer_write (w, big, 16, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
      g_clear_error (&error);
      bln_gguf_writer_free (w);
      g_assert_true (g_file_test ("/dev/full", G_FILE_TEST_EXISTS));

      /* a small file fails at finish, when the buffer is flushed */
      w = bln_gguf_writer_new ("/dev/full", 0, &error);
      g_assert_true (bln_gguf_writer_add_uint8 (w, "a", 1, &error));
      g_assert_false (bln_gguf_writer_finish (w, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
      g_clear_error (&error);
      bln_gguf_writer_free (w);
      g_assert_true (g_file_test ("/dev/full", G_FILE_TEST_EXISTS));
    }
  else
    g_test_message ("no writable /dev/full: ENOSPC case not run");
  rm_dir (dir);
}

/* ------------------------------------------------------------------------ */

static void
test_synth (void)
{
  const char *build = g_getenv ("BALEEN_BUILD_DIR");
  g_autofree char *script = source_file ("synth_check.py");
  g_autofree char *synth = NULL, *cli = NULL, *out = NULL;
  int status = 0;
  g_autoptr (GError) error = NULL;

  if (build == NULL)
    {
      g_test_skip ("BALEEN_BUILD_DIR not set");
      return;
    }
  synth = g_build_filename (build, "tools", "synth-gguf", NULL);
  cli = g_build_filename (build, "app", "cli", "baleen-cli", NULL);
  if (!g_file_test (synth, G_FILE_TEST_IS_EXECUTABLE))
    {
      g_test_skip ("tools/synth-gguf not built");
      return;
    }
  {
    const char *args[] = { script, "--synth", synth, "--cli", cli, NULL };
    out = run_python (args, &status);
  }
  if (out == NULL)
    return;
  g_test_message ("%s", out);
  if (!g_spawn_check_wait_status (status, &error))
    g_error ("synth_check.py failed (%s):\n%s", error->message, out);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/GgufWrite/roundtrip-ours", test_roundtrip_ours);
  g_test_add_func ("/Baleen/GgufWrite/gguf-package", test_gguf_package);
  g_test_add_func ("/Baleen/GgufWrite/stream-callback", test_stream_cb);
  g_test_add_func ("/Baleen/GgufWrite/errors", test_errors);
  g_test_add_func ("/Baleen/GgufWrite/synth-models", test_synth);
  return g_test_run ();
}
