/* test-quant.c — the tensor-type conversions of engine/quant.c against the
 * gguf Python package (vectors from tools/gen_quant_golden.py), plus
 * round-trip bounds for the quantisers the package does not have. */
#include <math.h>
#include <string.h>

#include "quant.h"

typedef struct {
  GBytes *bytes;
  uint32_t type, block_size, type_size, nd, nq;
  const uint8_t *deq_raw;
  const float *deq_out;
  const float *q_in;
  const uint8_t *q_out;
} Golden;

static char *
golden_path (const char *name)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");

  if (dir == NULL)
    dir = "tests/golden";
  return g_build_filename (dir, "quant", name, NULL);
}

static GBytes *
load_file (const char *name)
{
  g_autofree char *path = golden_path (name);
  g_autoptr (GError) error = NULL;
  char *data;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, &error))
    g_error ("cannot read golden %s: %s (run tools/gen_quant_golden.py)", path, error->message);
  return g_bytes_new_take (data, len);
}

/* The golden floats are stored as little-endian; we are on a little-endian
 * host (GGUF itself is little-endian only), so they are read in place. Copies
 * keep the float arrays aligned. */
static void
golden_load (Golden *g, const char *name)
{
  gsize len, need;
  const uint8_t *p;
  uint32_t hdr[5];

  g->bytes = load_file (name);
  p = g_bytes_get_data (g->bytes, &len);
  g_assert_cmpuint (len, >=, 24);
  g_assert_cmpmem (p, 4, "BQG1", 4);
  memcpy (hdr, p + 4, sizeof hdr);
  g->type = hdr[0];
  g->block_size = hdr[1];
  g->type_size = hdr[2];
  g->nd = hdr[3];
  g->nq = hdr[4];
  need = 24 + (gsize) (g->nd + g->nq) * (g->type_size + 4 * g->block_size);
  g_assert_cmpuint (len, ==, need);
  p += 24;
  g->deq_raw = p;
  p += (gsize) g->nd * g->type_size;
  g->deq_out = g_memdup2 (p, (gsize) g->nd * g->block_size * 4);
  p += (gsize) g->nd * g->block_size * 4;
  g->q_in = g_memdup2 (p, (gsize) g->nq * g->block_size * 4);
  p += (gsize) g->nq * g->block_size * 4;
  g->q_out = p;
}

static void
golden_clear (Golden *g)
{
  g_free ((gpointer) g->deq_out);
  g_free ((gpointer) g->q_in);
  g_bytes_unref (g->bytes);
}

static void
assert_floats_bitequal (const float *got, const float *want, gsize n, const char *what)
{
  for (gsize i = 0; i < n; i++)
    if (memcmp (&got[i], &want[i], 4) != 0)
      g_error ("%s: value %" G_GSIZE_FORMAT " is %.9g, the gguf package gives %.9g",
               what, i, got[i], want[i]);
}

static void
test_type (gconstpointer data)
{
  const char *file = data;
  Golden g = { 0 };
  const BlnTypeInfo *info;
  size_t bytes;

  golden_load (&g, file);
  info = bln_type_info ((int) g.type);
  g_assert_nonnull (info);
  g_assert_cmpint (info->block_size, ==, g.block_size);
  g_assert_cmpuint (info->type_size, ==, g.type_size);
  g_assert_true (bln_type_row_bytes ((int) g.type, 3 * (int64_t) g.block_size, &bytes));
  g_assert_cmpuint (bytes, ==, 3 * (gsize) g.type_size);

  if (g.nd > 0)
    {
      int64_t n = (int64_t) g.nd * g.block_size;
      g_autofree float *out = g_new0 (float, n);

      g_assert_true (bln_dequantize_row ((int) g.type, g.deq_raw, out, n));
      assert_floats_bitequal (out, g.deq_out, (gsize) n, info->name);
    }
  if (g.nq > 0)
    {
      int64_t n = (int64_t) g.nq * g.block_size;
      gsize nbytes = (gsize) g.nq * g.type_size;
      g_autofree uint8_t *out = g_malloc0 (nbytes);

      g_assert_true (bln_quantize_row ((int) g.type, g.q_in, out, n));
      for (gsize b = 0; b < g.nq; b++)
        if (memcmp (out + b * g.type_size, g.q_out + b * g.type_size, g.type_size) != 0)
          {
            for (gsize i = 0; i < g.type_size; i++)
              if (out[b * g.type_size + i] != g.q_out[b * g.type_size + i])
                {
                  g_error ("%s quantise: block %" G_GSIZE_FORMAT " byte %" G_GSIZE_FORMAT
                           " is 0x%02x, the gguf package gives 0x%02x", info->name, b, i,
                           out[b * g.type_size + i], g.q_out[b * g.type_size + i]);
                }
          }
    }
  golden_clear (&g);
}

static void
test_type_table (void)
{
  size_t bytes = 0;

  g_assert_null (bln_type_info (-1));
  g_assert_null (bln_type_info (4));          /* ids 4 and 5 were retired */
  g_assert_null (bln_type_info (BLN_TYPE_COUNT_));
  g_assert_cmpstr (bln_type_name (BLN_TYPE_Q4_K), ==, "q4_K");
  g_assert_cmpstr (bln_type_name (1000), ==, "unknown");
  g_assert_false (bln_type_info (BLN_TYPE_Q8_1)->can_load);
  g_assert_false (bln_type_info (BLN_TYPE_Q8_K)->can_load);
  g_assert_true (bln_type_info (BLN_TYPE_Q6_K)->can_load);

  g_assert_false (bln_type_row_bytes (BLN_TYPE_Q4_0, 33, &bytes));
  g_assert_false (bln_type_row_bytes (BLN_TYPE_Q4_0, -32, &bytes));
  g_assert_false (bln_type_row_bytes (4, 32, &bytes));
  g_assert_false (bln_type_row_bytes (BLN_TYPE_F32, INT64_MAX, &bytes));
  g_assert_false (bln_type_row_bytes (BLN_TYPE_F32, INT64_MAX / 2 + 1, &bytes));
  g_assert_true (bln_type_row_bytes (BLN_TYPE_Q6_K, 0, &bytes));
  g_assert_cmpuint (bytes, ==, 0);
  g_assert_true (bln_type_row_bytes (BLN_TYPE_Q6_K, 512, &bytes));
  g_assert_cmpuint (bytes, ==, 420);
  g_assert_false (bln_dequantize_row (BLN_TYPE_Q4_0, NULL, NULL, 31));
}

static void
test_half (void)
{
  g_autoptr (GBytes) bytes = load_file ("half.bin");
  gsize len;
  const uint8_t *p = g_bytes_get_data (bytes, &len);
  uint32_t n;
  g_autofree uint32_t *in = NULL;
  g_autofree uint16_t *want_h = NULL, *want_b = NULL;
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);

  g_assert_cmpmem (p, 4, "BQH1", 4);
  memcpy (&n, p + 4, 4);
  g_assert_cmpuint (len, ==, 8 + (gsize) n * 8 + 64);
  in = g_memdup2 (p + 8, (gsize) n * 4);
  want_h = g_memdup2 (p + 8 + (gsize) n * 4, (gsize) n * 2);
  want_b = g_memdup2 (p + 8 + (gsize) n * 6, (gsize) n * 2);

  for (uint32_t i = 0; i < n; i++)
    {
      float f;
      memcpy (&f, &in[i], 4);
      if (bln_float_to_half (f) != want_h[i])
        g_error ("float 0x%08x -> half 0x%04x, numpy gives 0x%04x", in[i],
                 bln_float_to_half (f), want_h[i]);
      if (bln_float_to_bf16 (f) != want_b[i])
        g_error ("float 0x%08x -> bf16 0x%04x, the gguf package gives 0x%04x", in[i],
                 bln_float_to_bf16 (f), want_b[i]);
    }

  /* every half: the float values hash to what numpy gives, and converting
   * back is the identity (NaN payloads included, as in numpy) */
  for (uint32_t h = 0; h < 65536; h++)
    {
      float f = bln_half_to_float ((bln_half) h);
      uint32_t b;

      memcpy (&b, &f, 4);
      b = GUINT32_TO_LE (b);
      g_checksum_update (sum, (const guchar *) &b, 4);
      g_assert_cmpuint (bln_float_to_half (f), ==, h);
    }
  g_assert_cmpmem (g_checksum_get_string (sum), 64, p + 8 + (gsize) n * 8, 64);

  /* bfloat16 -> float -> bfloat16 is exact for every non-NaN pattern */
  for (uint32_t b = 0; b < 65536; b++)
    if ((b & 0x7f80) != 0x7f80 || (b & 0x7f) == 0)
      g_assert_cmpuint (bln_float_to_bf16 (bln_bf16_to_float ((uint16_t) b)), ==, b);
}

/* Gaussian rows with a different spread per 256-block, some outliers. */
static float *
test_rows (int64_t n, guint32 seed)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (seed);
  float *x = g_new (float, n);

  for (int64_t i = 0; i < n; i++)
    {
      double u1 = g_rand_double_range (rand, 1e-12, 1.0), u2 = g_rand_double (rand);
      double scale = pow (10.0, (double) ((i / 256) % 5) - 2.0);

      x[i] = (float) (scale * sqrt (-2.0 * log (u1)) * cos (2 * G_PI * u2));
      if (g_rand_int_range (rand, 0, 200) == 0)
        x[i] *= 6.0f;
    }
  return x;
}

/* sqrt (sum (x - y)^2 / sum x^2) over each 256-block, averaged. */
static double
rel_rmse (const float *x, const float *y, int64_t n)
{
  double total = 0.0;

  for (int64_t b = 0; b < n / 256; b++)
    {
      double e = 0.0, s = 0.0;
      for (int i = 0; i < 256; i++)
        {
          double d = (double) x[b * 256 + i] - y[b * 256 + i];
          e += d * d;
          s += (double) x[b * 256 + i] * x[b * 256 + i];
        }
      total += sqrt (e / s);
    }
  return total / (double) (n / 256);
}

/* A naive Q4_K: each 32-group gets scale (max - min) / 15 and offset min
 * (no search), then the same 6-bit packing and re-rounding. */
static void
naive_q4_k (const float *x, uint8_t *b)
{
  BlnBlockQ4_K blk;
  float sc[8], mn[8], msc = 0, mmn = 0, d, dmin;

  memset (&blk, 0, sizeof blk);
  for (int j = 0; j < 8; j++)
    {
      float lo = 0, hi = x[32 * j];
      for (int i = 0; i < 32; i++)
        {
          lo = MIN (lo, x[32 * j + i]);
          hi = MAX (hi, x[32 * j + i]);
        }
      sc[j] = (hi - lo) / 15;
      mn[j] = -lo;
      msc = MAX (msc, sc[j]);
      mmn = MAX (mmn, mn[j]);
    }
  blk.d = bln_float_to_half (msc / 63);
  blk.dmin = bln_float_to_half (mmn / 63);
  d = bln_half_to_float (blk.d);
  dmin = bln_half_to_float (blk.dmin);
  for (int j = 0; j < 8; j++)
    {
      int ls = d > 0 ? MIN (63, (int) lrintf (sc[j] / d)) : 0;
      int lm = dmin > 0 ? MIN (63, (int) lrintf (mn[j] / dmin)) : 0;
      float ds = d * ls, dm = dmin * lm;

      if (j < 4)
        {
          blk.scales[j] = (uint8_t) ls;
          blk.scales[j + 4] = (uint8_t) lm;
        }
      else
        {
          blk.scales[j + 4] = (uint8_t) ((ls & 0xf) | ((lm & 0xf) << 4));
          blk.scales[j - 4] |= (uint8_t) ((ls >> 4) << 6);
          blk.scales[j] |= (uint8_t) ((lm >> 4) << 6);
        }
      for (int i = 0; i < 32; i++)
        {
          int l = ds > 0 ? CLAMP ((int) lrintf ((x[32 * j + i] + dm) / ds), 0, 15) : 0;
          blk.qs[(j / 2) * 32 + i] |= (uint8_t) (l << (4 * (j % 2)));
        }
    }
  memcpy (b, &blk, sizeof blk);
}

/* A naive Q6_K: each 16-group gets scale amax / 31 (rounded to 8 bits). */
static void
naive_q6_k (const float *x, uint8_t *b)
{
  BlnBlockQ6_K blk;
  float sc[16], msc = 0, d;
  uint8_t L[256];

  memset (&blk, 0, sizeof blk);
  for (int s = 0; s < 16; s++)
    {
      float amax = 0;
      for (int i = 0; i < 16; i++)
        amax = MAX (amax, fabsf (x[16 * s + i]));
      sc[s] = amax / 31;
      msc = MAX (msc, sc[s]);
    }
  blk.d = bln_float_to_half (msc / 127);
  d = bln_half_to_float (blk.d);
  for (int s = 0; s < 16; s++)
    {
      int ls = d > 0 ? MIN (127, (int) lrintf (sc[s] / d)) : 0;
      float ds = d * ls;
      blk.scales[s] = (int8_t) ls;
      for (int i = 0; i < 16; i++)
        L[16 * s + i] = (uint8_t) (32 + (ds > 0 ? CLAMP ((int) lrintf (x[16 * s + i] / ds), -32, 31)
                                             : 0));
    }
  for (int h = 0; h < 2; h++)
    for (int i = 0; i < 32; i++)
      {
        const uint8_t *l = L + 128 * h;
        blk.ql[64 * h + i] = (uint8_t) ((l[i] & 0xf) | ((l[i + 64] & 0xf) << 4));
        blk.ql[64 * h + i + 32] = (uint8_t) ((l[i + 32] & 0xf) | ((l[i + 96] & 0xf) << 4));
        blk.qh[32 * h + i] = (uint8_t) ((l[i] >> 4) | ((l[i + 32] >> 4) << 2)
                                        | ((l[i + 64] >> 4) << 4) | ((l[i + 96] >> 4) << 6));
      }
  memcpy (b, &blk, sizeof blk);
}

typedef struct {
  int type;
  void (*naive) (const float *x, uint8_t *b);
  double bound;   /* mean relative RMS error allowed on Gaussian rows */
} RoundTrip;

/* Q4_K: 4.5 bits a value, so a relative RMS error around 2^-4 (~0.07-0.09 on
 * Gaussian data); Q6_K: around 2^-6. The bounds leave a small margin over
 * that; the searched quantiser must also beat the naive one. */
static const RoundTrip q4_k_trip = { BLN_TYPE_Q4_K, naive_q4_k, 0.10 };
static const RoundTrip q6_k_trip = { BLN_TYPE_Q6_K, naive_q6_k, 0.025 };

static void
test_round_trip_k (gconstpointer data)
{
  const RoundTrip *rt = data;
  const BlnTypeInfo *info = bln_type_info (rt->type);
  const int64_t n = 256 * 40;
  g_autofree float *x = test_rows (n, 7);
  g_autofree float *y = g_new (float, n), *yn = g_new (float, n);
  g_autofree uint8_t *q = g_malloc (n / 256 * info->type_size);
  g_autofree uint8_t *qn = g_malloc (n / 256 * info->type_size);
  double err, err_naive;

  g_assert_true (bln_quantize_row (rt->type, x, q, n));
  g_assert_true (bln_dequantize_row (rt->type, q, y, n));
  for (int64_t b = 0; b < n / 256; b++)
    rt->naive (x + 256 * b, qn + b * info->type_size);
  g_assert_true (bln_dequantize_row (rt->type, qn, yn, n));
  err = rel_rmse (x, y, n);
  err_naive = rel_rmse (x, yn, n);
  g_test_message ("%s: relative RMS error %.5f (naive %.5f)", info->name, err, err_naive);
  g_assert_cmpfloat (err, <, rt->bound);
  g_assert_cmpfloat (err, <, err_naive);

  /* an all-zero block quantises to zeros */
  memset (x, 0, 256 * sizeof (float));
  g_assert_true (bln_quantize_row (rt->type, x, q, 256));
  g_assert_true (bln_dequantize_row (rt->type, q, y, 256));
  for (int i = 0; i < 256; i++)
    g_assert_cmpfloat (y[i], ==, 0.0f);
}

/* Q8_1 and Q8_K have no dequantiser in the gguf package: check the definition
 * directly (value = d * q, each within half a step, sums consistent). */
static void
test_q8_activations (void)
{
  const int64_t n = 256 * 8;
  g_autofree float *x = test_rows (n, 11);
  g_autofree float *y = g_new (float, n);
  g_autofree BlnBlockQ8_1 *q1 = g_new (BlnBlockQ8_1, n / 32);
  g_autofree BlnBlockQ8_K *qk = g_new (BlnBlockQ8_K, n / 256);

  g_assert_true (bln_quantize_row (BLN_TYPE_Q8_1, x, q1, n));
  g_assert_true (bln_dequantize_row (BLN_TYPE_Q8_1, q1, y, n));
  for (int64_t b = 0; b < n / 32; b++)
    {
      float d = bln_half_to_float (q1[b].d);
      int sum = 0;
      for (int i = 0; i < 32; i++)
        {
          sum += q1[b].qs[i];
          /* half a step, plus up to 127 q times the rounding of d to half */
          g_assert_cmpfloat (fabsf (y[32 * b + i] - x[32 * b + i]), <=, d * 0.57f);
        }
      /* s is d * sum (q) before d was rounded to half: within two half ulps */
      g_assert_cmpfloat (fabsf (bln_half_to_float (q1[b].s) - (float) sum * d), <=,
                         fabsf ((float) sum * d) * 0x1p-10f + 1e-6f);
    }

  g_assert_true (bln_quantize_row (BLN_TYPE_Q8_K, x, qk, n));
  g_assert_true (bln_dequantize_row (BLN_TYPE_Q8_K, qk, y, n));
  for (int64_t b = 0; b < n / 256; b++)
    {
      for (int g = 0; g < 16; g++)
        {
          int sum = 0;
          for (int i = 0; i < 16; i++)
            sum += qk[b].qs[16 * g + i];
          g_assert_cmpint (qk[b].bsums[g], ==, sum);
        }
      for (int i = 0; i < 256; i++)
        g_assert_cmpfloat (fabsf (y[256 * b + i] - x[256 * b + i]), <=,
                           fabsf (qk[b].d) * 0.5f * 1.01f);
    }
}

int
main (int argc, char **argv)
{
  static const char *files[] = {
    "f32.bin", "f16.bin", "bf16.bin", "q4_0.bin", "q4_1.bin", "q5_0.bin", "q5_1.bin",
    "q8_0.bin", "q2_K.bin", "q3_K.bin", "q4_K.bin", "q5_K.bin", "q6_K.bin",
  };

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Quant/type-table", test_type_table);
  g_test_add_func ("/Baleen/Quant/half-bf16", test_half);
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *name = g_strndup (files[i], strlen (files[i]) - 4);
      g_autofree char *path = g_strdup_printf ("/Baleen/Quant/gguf-package/%s", name);
      g_test_add_data_func (path, files[i], test_type);
    }
  g_test_add_data_func ("/Baleen/Quant/round-trip/q4_K", &q4_k_trip, test_round_trip_k);
  g_test_add_data_func ("/Baleen/Quant/round-trip/q6_K", &q6_k_trip, test_round_trip_k);
  g_test_add_func ("/Baleen/Quant/q8-activations", test_q8_activations);
  return g_test_run ();
}
