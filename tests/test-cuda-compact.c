/* test-cuda-compact.c — compact sampling records on the GPU
 * (kernels/sample-compact.h) and their use on the batched path
 * (docs/GPU-SAMPLING.md).
 *
 *  - /kernel: rows of 1,000, 4,097, 32,000, 151,937 and 152,064 logits, 1 to
 *    64 rows per launch, K 256 and 1024, six shapes (peaked, Gaussian,
 *    coarse with many ties across the K boundary, NaN and -inf holes, all
 *    equal, all NaN), per-row temperatures (greedy, 0.7, 1, 1.3) and
 *    penalty histories: every record equals bln_compact_row_build() on the
 *    same row (ids, values and the (K+1)-th value bit for bit, k and
 *    completeness exactly, raw max and scaled max exactly, raw
 *    log-sum-exp and scaled sum within 1e-12 relative, history logits bit for
 *    bit);
 *  - /kv: a tiny qwen2 model on a GPU cache, six sequences, 24 steps of
 *    bln_kv_eval() with compact asks: every record equals the one built
 *    from the full row (fetched with bln_kv_fetch_logits), and drawing
 *    from it with bln_sampler_sample_compact() (greedy, top-k, top-p,
 *    min-p, penalties, seeds) gives bln_sampler_sample()'s token on the full
 *    row, generators in step;
 *  - /sched: the scheduler on the GPU, twelve seeded requests of mixed
 *    parameters (queued behind a gate request whose JSON-style logits
 *    filter holds the first step, so both runs batch alike), once with
 *    BALEEN_GPU_COMPACT_SAMPLING=0 and once with it on: the same tokens
 *    for every request, no compact draw in the first run and some in the
 *    second.
 * With BALEEN_CUDA_TEST_MODEL naming a real-shape llama / qwen2 GGUF,
 * /kv-real-model runs /kv on it (152,064-token rows: records that are not
 * complete). BALEEN_BENCH=1 adds /bench: one launch over 64 rows of 152,064
 * logits against the copy of those rows to the host.
 * Without a usable GPU the cases skip with the reason.
 */
#include <math.h>
#include <string.h>
#include <glib.h>
#include <cuda_runtime_api.h>

#include "bln-error.h"
#include "cuda/cuda.h"
#include "kv-cache.h"
#include "model.h"
#include "sampler.h"
#include "scheduler.h"
#include "kernels/sample-compact.h"
#include "cuda-test-util.h"
#include "model-test-util.h"
#include "sampler-test-util.h"

/* the rows this test always drew: five spikes, and -0.0 among the holes */
#define GPU_ROWS (ROW_FIVE_SPIKES | ROW_NEG_ZERO)

static gboolean
same_bits (float a, float b)
{
  return memcmp (&a, &b, sizeof a) == 0;
}

static void
assert_close (double a, double b, double rel)
{
  if (isnan (a) || isnan (b))
    g_assert_true (isnan (a) && isnan (b));
  else if (isinf (a) || isinf (b))
    g_assert_cmpfloat (a, ==, b);
  else
    g_assert_cmpfloat (fabs (a - b), <=, rel * MAX (fabs (a), fabs (b)) + 1e-300);
}

/* @got (a record from the GPU) against @ref (bln_compact_row_build). */
static void
compare_records (const BlnCompactRow *got, const BlnCompactRow *ref, gboolean scaled)
{
  int i;

  g_assert_cmpint (got->k, ==, ref->k);
  g_assert_cmpint (got->complete, ==, ref->complete);
  for (i = 0; i < ref->k; i++)
    {
      g_assert_cmpint (got->ids[i], ==, ref->ids[i]);
      g_assert_true (same_bits (got->logits[i], ref->logits[i]));
    }
  if (!ref->complete)
    g_assert_cmpfloat (got->next, ==, ref->next);
  g_assert_cmpfloat (got->raw_max, ==, ref->raw_max);
  /* sums of up to 152,064 doubles, added in another order on the GPU: up to
   * n x 2^-53 (1.7e-11) apart; the H200 showed 1.3e-12 on a 152,064 row */
  assert_close (got->raw_lse, ref->raw_lse, 4e-11);
  if (scaled)
    {
      g_assert_cmpfloat (got->t_max, ==, ref->t_max);
      assert_close (got->t_sum, ref->t_sum, 4e-11);
    }
  g_assert_cmpint (got->n_hist, ==, ref->n_hist);
  for (i = 0; i < ref->n_hist; i++)
    g_assert_true (same_bits (got->hist[i], ref->hist[i]) || (isnan (got->hist[i])
                                                              && isnan (ref->hist[i])));
}

static void
check_cuda (cudaError_t e)
{
  if (e != cudaSuccess)
    g_error ("CUDA: %s", cudaGetErrorString (e));
}

/* One launch over @n rows of @V logits with K = @K, checked row by row. */
static void
kernel_case (int V, int n, int K)
{
  static const float temps[] = { 0.0f, 0.7f, 1.0f, 1.3f };
  g_autofree float *rows = g_new (float, (size_t) n * V);
  g_autofree float *temp = g_new (float, n);
  g_autofree int32_t *hoff = g_new0 (int32_t, n + 1);
  g_autoptr (GArray) hids = g_array_new (FALSE, FALSE, sizeof (int32_t));
  g_autofree int32_t *ids = g_new (int32_t, (size_t) n * K);
  g_autofree float *vals = g_new (float, (size_t) n * K);
  g_autofree BlnCompactStats *st = g_new (BlnCompactStats, n);
  g_autofree float *hv = NULL;
  BlnSampler **samplers = g_new0 (BlnSampler *, n);
  float *d_rows, *d_temp, *d_vals, *d_hv;
  int32_t *d_hoff, *d_hids, *d_ids;
  BlnCompactStats *d_st;
  void *d_scratch;
  size_t scratch = bln_kernels_compact_scratch_bytes (n, V);
  int r, i, n_h;

  for (r = 0; r < n; r++)
    {
      BlnSamplerParams p;
      const int32_t *h, *cnt;
      int shape = (int) (rnd () % 16);

      /* mostly the ordinary shapes; all-equal and all-NaN now and then */
      make_row (rows + (size_t) r * V, V,
                shape < 4 ? shape : shape < 14 ? (int) (rnd () % 4) : shape - 10, GPU_ROWS);
      bln_sampler_params_init (&p);
      p.temperature = temp[r] = temps[rnd () % 4];
      if (rnd () % 2)
        p.presence_penalty = 0.5f;
      samplers[r] = bln_sampler_new (&p, V);
      if (p.presence_penalty != 0.0f)
        for (i = 0; i < (int) (rnd () % 200); i++)
          bln_sampler_accept (samplers[r], (int32_t) (rnd () % (guint64) V));
      n_h = bln_sampler_compact_needs_history (samplers[r])
              ? bln_sampler_history (samplers[r], &h, &cnt) : 0;
      hoff[r] = (int32_t) hids->len;
      if (n_h > 0)
        g_array_append_vals (hids, h, (guint) n_h);
    }
  hoff[n] = (int32_t) hids->len;
  hv = g_new (float, MAX (hids->len, 1));

  check_cuda (cudaMalloc ((void **) &d_rows, (size_t) n * V * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_temp, n * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_hoff, (n + 1) * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_hids, MAX (hids->len, 1) * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_ids, (size_t) n * K * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_vals, (size_t) n * K * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_st, n * sizeof (BlnCompactStats)));
  check_cuda (cudaMalloc ((void **) &d_hv, MAX (hids->len, 1) * sizeof (float)));
  check_cuda (cudaMalloc (&d_scratch, scratch));
  check_cuda (cudaMemcpy (d_rows, rows, (size_t) n * V * sizeof (float),
                          cudaMemcpyHostToDevice));
  check_cuda (cudaMemcpy (d_temp, temp, n * sizeof (float), cudaMemcpyHostToDevice));
  check_cuda (cudaMemcpy (d_hoff, hoff, (n + 1) * sizeof (int32_t), cudaMemcpyHostToDevice));
  if (hids->len > 0)
    check_cuda (cudaMemcpy (d_hids, hids->data, hids->len * sizeof (int32_t),
                            cudaMemcpyHostToDevice));
  /* poison the outputs */
  check_cuda (cudaMemset (d_ids, 0xff, (size_t) n * K * sizeof (int32_t)));
  check_cuda (cudaMemset (d_vals, 0xff, (size_t) n * K * sizeof (float)));
  check_cuda (cudaMemset (d_st, 0xff, n * sizeof (BlnCompactStats)));
  check_cuda (cudaMemset (d_scratch, 0xff, scratch));
  check_cuda (bln_kernels_compact (d_rows, (size_t) V, n, V, K, d_temp, d_hoff, d_hids, d_ids,
                                   d_vals, d_st, d_hv, d_scratch, NULL));
  check_cuda (cudaDeviceSynchronize ());
  check_cuda (cudaMemcpy (ids, d_ids, (size_t) n * K * sizeof (int32_t),
                          cudaMemcpyDeviceToHost));
  check_cuda (cudaMemcpy (vals, d_vals, (size_t) n * K * sizeof (float),
                          cudaMemcpyDeviceToHost));
  check_cuda (cudaMemcpy (st, d_st, n * sizeof (BlnCompactStats), cudaMemcpyDeviceToHost));
  check_cuda (cudaMemcpy (hv, d_hv, MAX (hids->len, 1) * sizeof (float),
                          cudaMemcpyDeviceToHost));

  for (r = 0; r < n; r++)
    {
      BlnCompactRow got = { 0 }, ref;

      bln_compact_row_build (samplers[r], rows + (size_t) r * V, K, &ref);
      got.k = st[r].k;
      got.ids = ids + (size_t) r * K;
      got.logits = vals + (size_t) r * K;
      got.complete = st[r].n_valid <= K;
      got.next = st[r].next;
      got.raw_max = st[r].raw_max;
      got.raw_lse = st[r].raw_lse;
      got.t_max = st[r].t_max;
      got.t_sum = st[r].t_sum;
      got.hist = hoff[r + 1] > hoff[r] ? hv + hoff[r] : NULL;
      got.n_hist = hoff[r + 1] - hoff[r];
      compare_records (&got, &ref, temp[r] > 0.0f);
      bln_compact_row_clear (&ref);
      bln_sampler_free (samplers[r]);
    }
  g_free (samplers);
  cudaFree (d_rows);
  cudaFree (d_temp);
  cudaFree (d_hoff);
  cudaFree (d_hids);
  cudaFree (d_ids);
  cudaFree (d_vals);
  cudaFree (d_st);
  cudaFree (d_hv);
  cudaFree (d_scratch);
}

static void
test_kernel (void)
{
  static const int vocabs[] = { 1000, 4097, 32000, 151937, 152064 };
  static const int counts[] = { 1, 3, 17, 64 };
  guint v, c;

  if (!need_gpu ())
    return;
  rng_seed (g_test_rand_int ());
  for (v = 0; v < G_N_ELEMENTS (vocabs); v++)
    for (c = 0; c < G_N_ELEMENTS (counts); c++)
      {
        kernel_case (vocabs[v], counts[c], 256);
        if (c % 2 == 1)
          kernel_case (vocabs[v], counts[c], 1024);
      }
}

/* ---------------------------------------------------------------------- */
/* the batched path                                                        */

#define N_SEQS 6

static void
mix_params (BlnSamplerParams *p, int i)
{
  bln_sampler_params_init (p);
  p->seed = 1000 + (guint64) i;
  switch (i % 6)
    {
    case 0:
      p->temperature = 0.0f;
      break;
    case 1:
      p->temperature = 0.8f;
      p->top_k = 20;
      break;
    case 2:
      p->temperature = 0.7f;
      p->top_p = 0.9f;
      break;
    case 3:
      p->temperature = 1.0f;
      p->min_p = 0.05f;
      p->presence_penalty = 0.4f;
      break;
    case 4:
      p->temperature = 0.0f;
      p->repetition_penalty = 1.3f;
      break;
    default:
      p->temperature = 1.1f;
      p->top_p = 0.8f;
      p->top_k = 40;
      p->frequency_penalty = 0.3f;
    }
}

static void
kv_case (const char *path)
{
  g_autoptr (BlnModel) model = NULL;
  GError *error = NULL;
  BlnKvCache *gpu;
  BlnPool *pool;
  BlnKvSeq *seq[N_SEQS];
  BlnSampler *a[N_SEQS], *b[N_SEQS];
  BlnKvCompactAsk ask[N_SEQS];
  BlnKvBatchItem it[N_SEQS];
  int32_t next[N_SEQS][64];
  float *rows;
  int n_vocab, i, step, decided = 0, draws = 0;

  model = test_model_load (path);
  pool = test_pool_new (2);
  n_vocab = bln_model_hparams (model)->n_vocab;
  gpu = gpu_kv_cache (model, pool, 256 * bln_kv_cache_block_bytes_for (model, 0), 0, 16);
  rows = g_new (float, (size_t) N_SEQS * n_vocab);
  rng_seed (99);
  for (i = 0; i < N_SEQS; i++)
    {
      BlnSamplerParams p;
      int t;

      mix_params (&p, i);
      a[i] = bln_sampler_new (&p, n_vocab);
      b[i] = bln_sampler_new (&p, n_vocab);
      seq[i] = bln_kv_seq_new (gpu);
      for (t = 0; t < 5 + i * 7; t++)
        {
          next[i][t] = (int32_t) (rnd () % (guint64) n_vocab);
          bln_sampler_accept (a[i], next[i][t]);
          bln_sampler_accept (b[i], next[i][t]);
        }
      it[i] = (BlnKvBatchItem) { seq[i], next[i], 5 + i * 7, rows + (size_t) i * n_vocab,
                                 FALSE, &ask[i] };
    }
  for (step = 0; step < 24; step++)
    {
      for (i = 0; i < N_SEQS; i++)
        {
          const int32_t *cnt;

          ask[i].k = bln_sampler_compact_k (b[i], 3);
          if (ask[i].k == 0)
            ask[i].k = 256;
          ask[i].temperature = bln_sampler_params (b[i])->temperature;
          ask[i].hist = NULL;
          ask[i].n_hist = 0;
          if (bln_sampler_compact_needs_history (b[i]))
            ask[i].n_hist = bln_sampler_history (b[i], &ask[i].hist, &cnt);
        }
      g_assert_true (bln_kv_eval (gpu, it, N_SEQS, &error));
      g_assert_no_error (error);
      for (i = 0; i < N_SEQS; i++)
        {
          BlnCompactRow row, ref;
          BlnLogprob ta[4], tb[4];
          float *full = rows + (size_t) i * n_vocab;
          int32_t ia, ib = -1;
          int j;

          g_assert_true (bln_kv_compact_row (gpu, i, &row));
          memset (full, 0xff, (size_t) n_vocab * sizeof (float));
          g_assert_true (bln_kv_fetch_logits (gpu, i, full, &error));
          g_assert_no_error (error);
          bln_compact_row_build (b[i], full, ask[i].k, &ref);
          compare_records (&row, &ref, ask[i].temperature > 0.0f);
          bln_compact_row_clear (&ref);

          ia = bln_sampler_sample (a[i], full, ta, 3);
          draws++;
          if (bln_sampler_compact_k (b[i], 3) > 0
              && bln_sampler_sample_compact (b[i], &row, tb, 3, &ib))
            {
              decided++;
              g_assert_cmpint (ia, ==, ib);
              for (j = 0; j < 4; j++)
                {
                  g_assert_cmpint (ta[j].id, ==, tb[j].id);
                  assert_close (ta[j].logprob, tb[j].logprob, 1e-6);
                }
            }
          else
            g_assert_cmpint (bln_sampler_sample (b[i], full, NULL, 0), ==, ia);
          g_assert_cmpfloat (bln_sampler_peek_uniform (a[i]), ==,
                             bln_sampler_peek_uniform (b[i]));
          bln_sampler_accept (a[i], ia);
          bln_sampler_accept (b[i], ia);
          next[i][0] = ia;
          it[i].ids = next[i];
          it[i].n = 1;
        }
    }
  g_test_message ("kv: %d of %d draws decided by the record", decided, draws);
  g_assert_cmpint (decided, >, draws / 2);
  for (i = 0; i < N_SEQS; i++)
    {
      bln_kv_seq_free (seq[i]);
      bln_sampler_free (a[i]);
      bln_sampler_free (b[i]);
    }
  g_free (rows);
  bln_kv_cache_free (gpu);
  bln_pool_free (pool);
}

static void
test_kv (void)
{
  g_autofree char *path = golden_path ("qwen2", "model.gguf");

  if (need_gpu ())
    kv_case (path);
}

/* The same on a real-shape model (BALEEN_CUDA_TEST_MODEL: a llama / qwen2
 * GGUF, e.g. R1-Distill-Qwen-7B), whose 152,064-token rows make records
 * that are not complete. */
static void
test_kv_real (void)
{
  const char *path = need_test_model ();

  if (path != NULL && need_gpu ())
    kv_case (path);
}

/* BALEEN_BENCH=1: microseconds for one launch over 64 rows of 152,064
 * logits (K 256, half the rows with a 500-id history) against copying the
 * same rows to pinned host memory, the cost the records replace. */
static void
test_bench (void)
{
  const int V = 152064, n = 64, K = 256, reps = 20;
  g_autofree float *rows = g_new (float, (size_t) n * V);
  g_autofree float *temp = g_new (float, n);
  g_autofree int32_t *hoff = g_new (int32_t, n + 1);
  g_autofree int32_t *hids = g_new (int32_t, (size_t) n * 500);
  float *d_rows, *d_temp, *d_vals, *d_hv, *h_pinned;
  int32_t *d_hoff, *d_hids, *d_ids;
  BlnCompactStats *d_st;
  void *d_scratch;
  cudaEvent_t e0, e1;
  float ms_k = 0, ms_c = 0;
  int r, i, nh = 0;

  if (!need_gpu ())
    return;
  rng_seed (7);
  for (r = 0; r < n; r++)
    {
      make_row (rows + (size_t) r * V, V, SHAPE_PEAKED, GPU_ROWS);
      temp[r] = r % 3 == 0 ? 0.0f : 0.7f;
      hoff[r] = nh;
      if (r % 2)
        for (i = 0; i < 500; i++)
          hids[nh++] = i * 300 + r;
    }
  hoff[n] = nh;
  check_cuda (cudaMalloc ((void **) &d_rows, (size_t) n * V * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_temp, n * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_hoff, (n + 1) * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_hids, (size_t) MAX (nh, 1) * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_ids, (size_t) n * K * sizeof (int32_t)));
  check_cuda (cudaMalloc ((void **) &d_vals, (size_t) n * K * sizeof (float)));
  check_cuda (cudaMalloc ((void **) &d_st, n * sizeof (BlnCompactStats)));
  check_cuda (cudaMalloc ((void **) &d_hv, (size_t) MAX (nh, 1) * sizeof (float)));
  check_cuda (cudaMalloc (&d_scratch, bln_kernels_compact_scratch_bytes (n, V)));
  check_cuda (cudaMallocHost ((void **) &h_pinned, (size_t) n * V * sizeof (float)));
  check_cuda (cudaMemcpy (d_rows, rows, (size_t) n * V * sizeof (float),
                          cudaMemcpyHostToDevice));
  check_cuda (cudaMemcpy (d_temp, temp, n * sizeof (float), cudaMemcpyHostToDevice));
  check_cuda (cudaMemcpy (d_hoff, hoff, (n + 1) * sizeof (int32_t), cudaMemcpyHostToDevice));
  check_cuda (cudaMemcpy (d_hids, hids, (size_t) MAX (nh, 1) * sizeof (int32_t),
                          cudaMemcpyHostToDevice));
  check_cuda (cudaEventCreate (&e0));
  check_cuda (cudaEventCreate (&e1));
  for (i = 0; i < reps + 2; i++)
    {
      float ms;

      check_cuda (cudaEventRecord (e0, NULL));
      check_cuda (bln_kernels_compact (d_rows, (size_t) V, n, V, K, d_temp, d_hoff, d_hids,
                                       d_ids, d_vals, d_st, d_hv, d_scratch, NULL));
      check_cuda (cudaEventRecord (e1, NULL));
      check_cuda (cudaEventSynchronize (e1));
      check_cuda (cudaEventElapsedTime (&ms, e0, e1));
      if (i >= 2)
        ms_k += ms;
      check_cuda (cudaEventRecord (e0, NULL));
      check_cuda (cudaMemcpyAsync (h_pinned, d_rows, (size_t) n * V * sizeof (float),
                                   cudaMemcpyDeviceToHost, NULL));
      check_cuda (cudaEventRecord (e1, NULL));
      check_cuda (cudaEventSynchronize (e1));
      check_cuda (cudaEventElapsedTime (&ms, e0, e1));
      if (i >= 2)
        ms_c += ms;
    }
  g_test_message ("bench: 64 x 152064 rows: compact kernel %.1f us, full copy %.1f us",
                  1e3 * ms_k / reps, 1e3 * ms_c / reps);
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  cudaFreeHost (h_pinned);
  cudaFree (d_rows);
  cudaFree (d_temp);
  cudaFree (d_hoff);
  cudaFree (d_hids);
  cudaFree (d_ids);
  cudaFree (d_vals);
  cudaFree (d_st);
  cudaFree (d_hv);
  cudaFree (d_scratch);
}

/* ---------------------------------------------------------------------- */
/* the scheduler, switch off and on                                        */

#define N_REQ 12
#define MAX_TOK 24

/* Request N_REQ is a gate: its logits filter holds the scheduler thread
 * until every other request is queued, so that both runs batch alike. */
typedef struct {
  GMutex lock;
  GCond cond;
  int ended;
  gboolean gated, go;
  GArray *tokens[N_REQ + 1];
} Run;

typedef struct {
  Run *run;
  int i;
} Slot;

static gboolean
on_token (const BlnSchedToken *tok, gpointer data)
{
  Slot *s = data;

  g_mutex_lock (&s->run->lock);
  g_array_append_val (s->run->tokens[s->i], tok->id);
  g_mutex_unlock (&s->run->lock);
  return TRUE;
}

static void
on_end (const BlnSchedResult *res, gpointer data)
{
  Slot *s = data;

  g_assert_true (res->finish != BLN_SCHED_FINISH_ERROR);
  g_mutex_lock (&s->run->lock);
  s->run->ended++;
  g_cond_broadcast (&s->run->cond);
  g_mutex_unlock (&s->run->lock);
}

static gboolean
gate_filter (float *logits, int n_vocab, int left, gpointer data)
{
  Slot *s = data;

  g_mutex_lock (&s->run->lock);
  s->run->gated = TRUE;
  g_cond_broadcast (&s->run->cond);
  while (!s->run->go)
    g_cond_wait (&s->run->cond, &s->run->lock);
  g_mutex_unlock (&s->run->lock);
  return TRUE;
}

static guint64
sched_run (BlnModel *model, BlnPool *pool, Run *run)
{
  BlnSchedOptions o;
  BlnContextOptions dev;
  BlnSchedStats st;
  Slot slots[N_REQ + 1];
  BlnSamplerParams gp;
  int32_t gate_prompt[4] = { 1, 2, 3, 4 };
  GError *error = NULL;
  BlnSched *s;
  int n_vocab = bln_model_hparams (model)->n_vocab, i, t;

  gpu_options_init (&dev, 16);
  bln_sched_options_init (&o);
  o.device = &dev;
  o.max_seqs = 8;
  s = bln_sched_new (model, pool, &o, &error);
  g_assert_no_error (error);
  g_mutex_init (&run->lock);
  g_cond_init (&run->cond);
  run->ended = 0;
  run->gated = run->go = FALSE;
  run->tokens[N_REQ] = g_array_new (FALSE, FALSE, sizeof (int32_t));
  slots[N_REQ].run = run;
  slots[N_REQ].i = N_REQ;
  mix_params (&gp, 0);
  g_assert_cmpuint (bln_sched_submit_filtered (s, gate_prompt, 4, &gp, 4, 0, gate_filter,
                                               on_token, on_end, &slots[N_REQ], &error), >, 0);
  g_assert_no_error (error);
  /* the first step holds the gate alone */
  g_mutex_lock (&run->lock);
  while (!run->gated)
    g_cond_wait (&run->cond, &run->lock);
  g_mutex_unlock (&run->lock);
  rng_seed (4242);
  for (i = 0; i < N_REQ; i++)
    {
      BlnSamplerParams p;
      int32_t prompt[40];

      run->tokens[i] = g_array_new (FALSE, FALSE, sizeof (int32_t));
      slots[i].run = run;
      slots[i].i = i;
      for (t = 0; t < 40; t++)
        prompt[t] = (int32_t) (rnd () % (guint64) n_vocab);
      mix_params (&p, i);
      g_assert_cmpuint (bln_sched_submit (s, prompt, 8 + 2 * i, &p, MAX_TOK, i % 3, on_token,
                                          on_end, &slots[i], &error), >, 0);
      g_assert_no_error (error);
    }
  g_mutex_lock (&run->lock);
  run->go = TRUE;
  g_cond_broadcast (&run->cond);
  while (run->ended < N_REQ + 1)
    g_cond_wait (&run->cond, &run->lock);
  g_mutex_unlock (&run->lock);
  bln_sched_get_stats (s, &st);
  bln_sched_free (s);
  g_mutex_clear (&run->lock);
  g_cond_clear (&run->cond);
  g_test_message ("sched: %" G_GUINT64_FORMAT " compact draws, %" G_GUINT64_FORMAT
                  " fell back", st.compact_draws, st.compact_fallbacks);
  return st.compact_draws;
}

static void
test_sched (void)
{
  g_autoptr (BlnModel) model = NULL;
  BlnPool *pool;
  Run off = { 0 }, on = { 0 };
  int i;

  if (!need_gpu ())
    return;
  model = golden_model_load ("qwen2", "model.gguf");
  pool = test_pool_new (2);
  g_setenv ("BALEEN_GPU_COMPACT_SAMPLING", "0", TRUE);
  g_assert_cmpuint (sched_run (model, pool, &off), ==, 0);
  g_setenv ("BALEEN_GPU_COMPACT_SAMPLING", "1", TRUE);
  g_assert_cmpuint (sched_run (model, pool, &on), >, 0);
  g_unsetenv ("BALEEN_GPU_COMPACT_SAMPLING");
  for (i = 0; i <= N_REQ; i++)
    {
      g_assert_cmpuint (off.tokens[i]->len, ==, on.tokens[i]->len);
      g_assert_cmpmem (off.tokens[i]->data, off.tokens[i]->len * sizeof (int32_t),
                       on.tokens[i]->data, on.tokens[i]->len * sizeof (int32_t));
      g_array_unref (off.tokens[i]);
      g_array_unref (on.tokens[i]);
    }
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/CudaCompact/kernel", test_kernel);
  g_test_add_func ("/Baleen/CudaCompact/kv", test_kv);
  g_test_add_func ("/Baleen/CudaCompact/kv-real-model", test_kv_real);
  g_test_add_func ("/Baleen/CudaCompact/sched", test_sched);
  if (g_strcmp0 (g_getenv ("BALEEN_BENCH"), "1") == 0)
    g_test_add_func ("/Baleen/CudaCompact/bench", test_bench);
  return g_test_run ();
}
