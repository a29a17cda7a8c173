/* cpu/matmul.c — weight matrix × activations on the thread pool.
 *
 * y[t][r] = W[r] · x[t]. For quantised W the activation rows are first
 * quantised once to the 8-bit blocks the kernels expect (vecdot.h), in
 * parallel when there are many of them. Then each thread owns a contiguous
 * slice of output rows (or of tokens, when there are few rows and many
 * tokens) and walks it in blocks of ROW_BLOCK weight rows; within a block,
 * every weight row is dotted with up to BLN_DOT_MAX_NA activation rows per
 * kernel call, so a weight block is read from memory once and reused from
 * cache for all tokens — what makes prompt processing fast.
 */
#include <string.h>

#include "../bln-error.h"
#include "vecdot.h"

/* Weight rows per cache block: 16 rows of 4096 Q4_0 values take 36 KiB. */
#define ROW_BLOCK 16

/* Below this many activation values, quantising them on the calling thread
 * is cheaper than a round trip through the pool. */
#define PARALLEL_QUANT_MIN 16384

BlnActKind
bln_cpu_act_kind (int wtype)
{
  switch (wtype)
    {
    case BLN_TYPE_F32:
    case BLN_TYPE_F16:
    case BLN_TYPE_BF16:
      return BLN_ACT_F32;
    case BLN_TYPE_Q4_0:
    case BLN_TYPE_Q4_1:
    case BLN_TYPE_Q5_0:
    case BLN_TYPE_Q5_1:
    case BLN_TYPE_Q8_0:
      return BLN_ACT_Q8;
    case BLN_TYPE_Q2_K:
    case BLN_TYPE_Q3_K:
    case BLN_TYPE_Q4_K:
    case BLN_TYPE_Q5_K:
    case BLN_TYPE_Q6_K:
      return BLN_ACT_Q8K;
    default:
      return BLN_ACT_NONE;
    }
}

size_t
bln_cpu_act_row_bytes (int wtype, int64_t n)
{
  switch (bln_cpu_act_kind (wtype))
    {
    case BLN_ACT_F32:
      return (size_t) n * sizeof (float);
    case BLN_ACT_Q8:
      return n % BLN_QK ? 0 : (size_t) (n / BLN_QK) * sizeof (BlnActQ8);
    case BLN_ACT_Q8K:
      return n % BLN_QK_K ? 0 : (size_t) (n / BLN_QK_K) * sizeof (BlnBlockQ8_K);
    case BLN_ACT_NONE:
    default:
      return 0;
    }
}

typedef struct {
  BlnDotFn dot;
  BlnQuantActFn quant;
  const uint8_t *w;
  size_t w_row_bytes;
  int64_t n_in, n_out;
  const float *x;
  const char *act;          /* the activation rows the kernels read */
  size_t act_row_bytes;
  int n_tok;
  gboolean split_tokens;
  float *y;
} MatmulJob;

static void
quant_rows (MatmulJob *job, char *dst, int t0, int t1)
{
  for (int t = t0; t < t1; t++)
    job->quant (job->x + (size_t) t * job->n_in, dst + (size_t) t * job->act_row_bytes,
                job->n_in);
}

static void
quant_worker (void *ctx, int ith, int nth)
{
  MatmulJob *job = ctx;

  quant_rows (job, (char *) job->act, job->n_tok * ith / nth, job->n_tok * (ith + 1) / nth);
}

static void
dot_range (const MatmulJob *job, int64_t r0, int64_t r1, int t0, int t1)
{
  for (int64_t rb = r0; rb < r1; rb += ROW_BLOCK)
    {
      int64_t re = MIN (rb + ROW_BLOCK, r1);

      for (int t = t0; t < t1; t += BLN_DOT_MAX_NA)
        {
          int na = MIN (BLN_DOT_MAX_NA, t1 - t);
          const char *a = job->act + (size_t) t * job->act_row_bytes;
          float *y = job->y + (size_t) t * job->n_out;

          for (int64_t r = rb; r < re; r++)
            job->dot (job->n_in, job->w + (size_t) r * job->w_row_bytes, a, job->act_row_bytes,
                      na, y + r, (size_t) job->n_out);
        }
    }
}

static void
dot_worker (void *ctx, int ith, int nth)
{
  MatmulJob *job = ctx;

  if (job->split_tokens)
    dot_range (job, 0, job->n_out, job->n_tok * ith / nth, job->n_tok * (ith + 1) / nth);
  else
    dot_range (job, job->n_out * ith / nth, job->n_out * (ith + 1) / nth, 0, job->n_tok);
}

gboolean
bln_cpu_matmul (BlnPool *pool, const BlnTensor *w, const float *x, int n_tok, float *y,
                GError **error)
{
  const BlnCpuKernels *k = bln_cpu_kernels ();
  MatmulJob job = { 0 };
  BlnActKind kind;
  int nth = pool != NULL ? bln_pool_n_threads (pool) : 1;
  void *owned_scratch = NULL;

  g_return_val_if_fail (w != NULL && x != NULL && y != NULL, FALSE);
  g_return_val_if_fail (n_tok >= 0, FALSE);

  kind = bln_cpu_act_kind (w->type);
  if (kind == BLN_ACT_NONE || k->dot[w->type] == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "matmul with %s weights",
                   bln_type_name (w->type));
      return FALSE;
    }
  job.n_in = w->ne[0];
  job.n_out = w->ne[1] * w->ne[2] * w->ne[3];
  job.w_row_bytes = bln_tensor_row_bytes (w);
  job.act_row_bytes = bln_cpu_act_row_bytes (w->type, job.n_in);
  if (w->data == NULL || job.n_in <= 0 || job.w_row_bytes == 0 || job.act_row_bytes == 0
      || job.n_out <= 0 || (size_t) job.n_out > w->nbytes / job.w_row_bytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "matmul: tensor %s has bad shape or size for type %s",
                   w->name ? w->name : "?", bln_type_name (w->type));
      return FALSE;
    }
  if (n_tok == 0)
    return TRUE;

  job.dot = k->dot[w->type];
  job.w = w->data;
  job.x = x;
  job.n_tok = n_tok;
  job.y = y;
  /* Few rows, many tokens (a small projection in prefill): split tokens. */
  job.split_tokens = n_tok >= 4 * nth && job.n_out < 64 * nth;

  if (kind == BLN_ACT_F32)
    job.act = (const char *) x;
  else
    {
      size_t need;
      char *buf;

      job.quant = kind == BLN_ACT_Q8 ? k->quant_q8 : k->quant_q8k;
      if ((size_t) n_tok > G_MAXSIZE / job.act_row_bytes)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "matmul: too many tokens");
          return FALSE;
        }
      need = (size_t) n_tok * job.act_row_bytes;
      if (pool != NULL)
        buf = bln_pool_scratch (pool, need, error);
      else
        buf = owned_scratch = g_try_malloc (need);
      if (buf == NULL)
        {
          if (pool == NULL)
            g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                         "cannot allocate %" G_GSIZE_FORMAT " bytes of matmul scratch", need);
          return FALSE;
        }
      job.act = buf;
      if (pool != NULL && nth > 1 && n_tok > 1 && (int64_t) n_tok * job.n_in >= PARALLEL_QUANT_MIN)
        bln_pool_run (pool, quant_worker, &job);
      else
        quant_rows (&job, buf, 0, n_tok);
    }

  if (pool != NULL && nth > 1)
    bln_pool_run (pool, dot_worker, &job);
  else
    dot_worker (&job, 0, 1);
  g_free (owned_scratch);
  return TRUE;
}

gboolean
bln_cpu_get_rows (const BlnTensor *w, const int32_t *ids, int n, float *out, GError **error)
{
  size_t row_bytes;
  int64_t n_rows;

  g_return_val_if_fail (w != NULL && (ids != NULL || n == 0) && (out != NULL || n == 0), FALSE);
  row_bytes = bln_tensor_row_bytes (w);
  n_rows = w->ne[1] * w->ne[2] * w->ne[3];
  if (row_bytes == 0 || w->data == NULL || (size_t) n_rows > w->nbytes / row_bytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "get_rows: tensor %s has a bad shape",
                   w->name ? w->name : "?");
      return FALSE;
    }
  for (int i = 0; i < n; i++)
    {
      if (ids[i] < 0 || ids[i] >= n_rows)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "get_rows: row %d out of range for %s (%" G_GINT64_FORMAT " rows)",
                       (int) ids[i], w->name ? w->name : "?", n_rows);
          return FALSE;
        }
      if (!bln_dequantize_row (w->type, (const uint8_t *) w->data + (size_t) ids[i] * row_bytes,
                               out + (size_t) i * w->ne[0], w->ne[0]))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "get_rows: cannot read %s rows",
                       bln_type_name (w->type));
          return FALSE;
        }
    }
  return TRUE;
}
