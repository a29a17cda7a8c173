/* sampler.c — see sampler.h for the steps and their order. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bln-error.h"
#include "sampler.h"

struct _BlnSampler {
  BlnSamplerParams params;
  int n_vocab;
  uint64_t rng[4];          /* xoshiro256** state */
  int32_t *counts;          /* occurrences of each id in the history */
  GArray *seen;             /* distinct ids with counts > 0, int32_t */
  BlnCandidate *cand;       /* n_vocab survivors buffer */
  float *heap;              /* min-heap for a small top_k, n_vocab / 8 + 1 values */
};

/* ---------------------------------------------------------------------- */
/* random numbers                                                          */

static uint64_t
splitmix64 (uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline uint64_t
rotl (uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

static uint64_t
xoshiro_next (uint64_t s[4])
{
  uint64_t result = rotl (s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;

  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl (s[3], 45);
  return result;
}

static void
seed_rng (BlnSampler *s)
{
  uint64_t x = s->params.seed;
  int i;

  for (i = 0; i < 4; i++)
    s->rng[i] = splitmix64 (&x);
}

/* Uniform in [0, 1) from the top 53 bits. */
static double
next_double (BlnSampler *s)
{
  return (double) (xoshiro_next (s->rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------------------------------------------------------------------- */
/* parameters                                                              */

void
bln_sampler_params_init (BlnSamplerParams *params)
{
  g_return_if_fail (params != NULL);
  memset (params, 0, sizeof *params);
  params->temperature = 1.0f;
  params->top_p = 1.0f;
  params->min_p = 0.0f;
  params->top_k = 0;
  params->repetition_penalty = 1.0f;
}

gboolean
bln_sampler_params_validate (const BlnSamplerParams *p, GError **error)
{
  const char *bad = NULL;

  g_return_val_if_fail (p != NULL, FALSE);
  if (!(p->temperature >= 0.0f) || isinf (p->temperature))
    bad = "temperature must be a finite number >= 0";
  else if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
    bad = "top_p must be between 0 and 1";
  else if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
    bad = "min_p must be between 0 and 1";
  else if (p->top_k < 0)
    bad = "top_k must be >= 0";
  else if (!(p->repetition_penalty > 0.0f) || isinf (p->repetition_penalty))
    bad = "repetition_penalty must be a finite number > 0";
  else if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
    bad = "presence_penalty must be between -2 and 2";
  else if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
    bad = "frequency_penalty must be between -2 and 2";
  if (bad != NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s", bad);
      return FALSE;
    }
  return TRUE;
}

BlnSampler *
bln_sampler_new (const BlnSamplerParams *params, int n_vocab)
{
  BlnSampler *s;

  g_return_val_if_fail (params != NULL, NULL);
  g_return_val_if_fail (n_vocab > 0, NULL);

  s = g_new0 (BlnSampler, 1);
  s->params = *params;
  s->n_vocab = n_vocab;
  s->counts = g_new0 (int32_t, n_vocab);
  s->seen = g_array_new (FALSE, FALSE, sizeof (int32_t));
  s->cand = g_new (BlnCandidate, n_vocab);
  s->heap = g_new (float, n_vocab / 8 + 1);
  seed_rng (s);
  return s;
}

void
bln_sampler_free (BlnSampler *s)
{
  if (s == NULL)
    return;
  g_free (s->counts);
  g_array_unref (s->seen);
  g_free (s->cand);
  g_free (s->heap);
  g_free (s);
}

const BlnSamplerParams *
bln_sampler_params (const BlnSampler *s)
{
  g_return_val_if_fail (s != NULL, NULL);
  return &s->params;
}

void
bln_sampler_accept (BlnSampler *s, int32_t id)
{
  g_return_if_fail (s != NULL);
  if (id < 0 || id >= s->n_vocab)
    return;
  if (s->counts[id] == 0)
    g_array_append_val (s->seen, id);
  if (s->counts[id] < INT32_MAX)
    s->counts[id]++;
}

void
bln_sampler_reset (BlnSampler *s)
{
  guint i;

  g_return_if_fail (s != NULL);
  for (i = 0; i < s->seen->len; i++)
    s->counts[g_array_index (s->seen, int32_t, i)] = 0;
  g_array_set_size (s->seen, 0);
  seed_rng (s);
}

/* ---------------------------------------------------------------------- */
/* selection                                                               */

/* The total order used everywhere: larger logit first, then smaller id. */
static inline gboolean
before (const BlnCandidate *a, const BlnCandidate *b)
{
  return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int
compare_cand (const void *pa, const void *pb)
{
  const BlnCandidate *a = pa, *b = pb;

  if (before (a, b))
    return -1;
  return before (b, a) ? 1 : 0;
}

static inline void
swap_cand (BlnCandidate *a, BlnCandidate *b)
{
  BlnCandidate t = *a;

  *a = *b;
  *b = t;
}

/* Rearranges c[0..n) so that the @m first (in the total order) come first,
 * in no particular order. Quickselect with a median-of-three pivot; keys are
 * distinct (ids break ties), so partitions always shrink. */
static void
select_top (BlnCandidate *c, int n, int m)
{
  int lo = 0, hi = n - 1;

  if (m <= 0 || m >= n)
    return;
  while (hi > lo)
    {
      int mid = lo + (hi - lo) / 2, i, j;
      BlnCandidate pivot;

      if (before (&c[mid], &c[lo]))
        swap_cand (&c[mid], &c[lo]);
      if (before (&c[hi], &c[lo]))
        swap_cand (&c[hi], &c[lo]);
      if (before (&c[hi], &c[mid]))
        swap_cand (&c[hi], &c[mid]);
      pivot = c[mid];
      i = lo;
      j = hi;
      while (i <= j)
        {
          while (before (&c[i], &pivot))
            i++;
          while (before (&pivot, &c[j]))
            j--;
          if (i <= j)
            {
              swap_cand (&c[i], &c[j]);
              i++;
              j--;
            }
        }
      /* [lo, j] precede or equal the pivot, [i, hi] follow or equal it */
      if (m - 1 <= j)
        hi = j;
      else if (m - 1 >= i)
        lo = i;
      else
        return;
    }
}

static double
max_logit (const BlnCandidate *c, int n)
{
  double mx = -INFINITY;
  int i;

  for (i = 0; i < n; i++)
    if (c[i].logit > mx)
      mx = c[i].logit;
  return mx;
}

/* top-k with HF's tie rule: everything >= the k-th largest logit stays. */
static int
apply_top_k (BlnCandidate *c, int n, int k)
{
  float kth;
  int i, kept = 0;

  if (k <= 0 || k >= n)
    return n;
  select_top (c, n, k);
  kth = c[0].logit;
  for (i = 1; i < k; i++)
    if (c[i].logit < kth)
      kth = c[i].logit;
  for (i = 0; i < n; i++)
    if (c[i].logit >= kth)
      c[kept++] = c[i];
  return kept;
}

/* Nucleus: the smallest prefix (in the total order) whose probability mass
 * reaches @p. The prefix is found by sorting the top m candidates for
 * growing m, so a peaked distribution never pays for a full sort. */
static int
apply_top_p (BlnCandidate *c, int n, double p)
{
  double mx, total = 0.0, target;
  int i, m;

  if (p >= 1.0 || n <= 1)
    return n;
  if (!(p > 0.0))
    {
      select_top (c, n, 1);
      return 1;
    }
  mx = max_logit (c, n);
  for (i = 0; i < n; i++)
    total += exp ((double) c[i].logit - mx);
  target = p * total;

  for (m = n < 64 ? n : 64;; m = (m > n / 4) ? n : m * 4)
    {
      double cum = 0.0;

      select_top (c, n, m);
      qsort (c, (size_t) m, sizeof *c, compare_cand);
      for (i = 0; i < m; i++)
        {
          cum += exp ((double) c[i].logit - mx);
          if (cum >= target)
            return i + 1;
        }
      if (m == n)
        return n;   /* rounding left the sum a hair short: keep everything */
    }
}

/* min-p: probability >= min_p * max probability, i.e. exp(l - max) >= min_p. */
static int
apply_min_p (BlnCandidate *c, int n, double min_p)
{
  double mx;
  int i, kept = 0;

  if (!(min_p > 0.0) || n <= 1)
    return n;
  mx = max_logit (c, n);
  for (i = 0; i < n; i++)
    if (exp ((double) c[i].logit - mx) >= min_p)
      c[kept++] = c[i];
  return kept > 0 ? kept : 1;   /* cannot happen (the max passes), but stay safe */
}

/* The logit of @id after the history penalties. */
static inline float
penalised (const BlnSampler *s, const float *logits, int32_t id)
{
  float l = logits[id];
  int32_t cnt = s->counts[id];

  if (cnt > 0)
    {
      float rp = s->params.repetition_penalty;

      if (rp > 0.0f && rp != 1.0f)
        l = l < 0.0f ? l * rp : l / rp;
      l -= s->params.presence_penalty + s->params.frequency_penalty * (float) cnt;
    }
  return l;
}

/* The value token @id enters the filters with: penalised, divided by the
 * temperature, +inf clamped to the largest float (+inf would turn every
 * probability into NaN). FALSE for a token that can never be chosen. */
static inline gboolean
scaled_logit (const BlnSampler *s, const float *logits, int32_t id, float temp, float *out)
{
  float l = penalised (s, logits, id);

  if (isnan (l) || l == -INFINITY)
    return FALSE;
  if (temp != 1.0f)
    {
      l = l / temp;
      if (isnan (l) || l == -INFINITY)
        return FALSE;
    }
  *out = l > FLT_MAX ? FLT_MAX : l;
  return TRUE;
}

static void
heap_sift_down (float *h, int n, int i)
{
  for (;;)
    {
      int l = 2 * i + 1, r = l + 1, m = i;
      float t;

      if (l < n && h[l] < h[m])
        m = l;
      if (r < n && h[r] < h[m])
        m = r;
      if (m == i)
        return;
      t = h[i];
      h[i] = h[m];
      h[m] = t;
      i = m;
    }
}

/* The k-th largest usable value in one streaming pass with a size-k
 * min-heap (most values fail the first comparison, so this is O(V) in
 * practice); -inf when fewer than k values are usable. */
static float
kth_largest (BlnSampler *s, const float *logits, int k, float temp)
{
  float *h = s->heap;
  int i, n = 0;

  for (i = 0; i < s->n_vocab; i++)
    {
      float l;

      if (!scaled_logit (s, logits, i, temp, &l))
        continue;
      if (n < k)
        {
          int j = n++;

          h[j] = l;
          while (j > 0 && h[(j - 1) / 2] > h[j])
            {
              float t = h[j];

              h[j] = h[(j - 1) / 2];
              h[(j - 1) / 2] = t;
              j = (j - 1) / 2;
            }
        }
      else if (l > h[0])
        {
          h[0] = l;
          heap_sift_down (h, n, 0);
        }
    }
  return n < k ? -INFINITY : h[0];
}

int
bln_sampler_filter (BlnSampler *s, const float *logits, const BlnCandidate **out)
{
  const BlnSamplerParams *p;
  BlnCandidate *c;
  double mx, sum = 0.0;
  float temp, floor_l;
  int i, n = 0;

  g_return_val_if_fail (s != NULL && logits != NULL && out != NULL, 0);
  p = &s->params;
  c = s->cand;
  *out = c;
  temp = p->temperature;

  if (!(temp > 0.0f))
    {
      /* greedy: the first largest penalised logit */
      int32_t best = 0;
      float best_l = -INFINITY;

      for (i = 0; i < s->n_vocab; i++)
        {
          float l = penalised (s, logits, i);

          if (l > best_l)
            {
              best_l = l;
              best = i;
            }
        }
      c[0].id = best;
      c[0].logit = best_l;
      c[0].prob = 1.0f;
      return 1;
    }

  /* a small top_k is found while streaming, so only its survivors (and
   * ties with the k-th) are ever stored */
  floor_l = -INFINITY;
  if (p->top_k > 0 && p->top_k <= s->n_vocab / 8)
    floor_l = kth_largest (s, logits, p->top_k, temp);
  for (i = 0; i < s->n_vocab; i++)
    {
      float l;

      if (!scaled_logit (s, logits, i, temp, &l) || l < floor_l)
        continue;
      c[n].id = i;
      c[n].logit = l;
      n++;
    }
  if (n == 0)
    {
      c[0].id = 0;
      c[0].logit = 0.0f;
      c[0].prob = 1.0f;
      return 1;
    }

  n = apply_top_k (c, n, p->top_k);
  n = apply_top_p (c, n, (double) p->top_p);
  n = apply_min_p (c, n, (double) p->min_p);

  mx = max_logit (c, n);
  for (i = 0; i < n; i++)
    sum += exp ((double) c[i].logit - mx);
  for (i = 0; i < n; i++)
    c[i].prob = (float) (exp ((double) c[i].logit - mx) / sum);
  return n;
}

/* ---------------------------------------------------------------------- */
/* sampling and logprobs                                                   */

double
bln_logprob (const float *logits, int n, int32_t id)
{
  double mx = -INFINITY, sum = 0.0;
  int i;

  g_return_val_if_fail (logits != NULL && id >= 0 && id < n, -INFINITY);
  for (i = 0; i < n; i++)
    if (logits[i] > mx)
      mx = logits[i];
  if (mx == -INFINITY || isinf (mx))
    return logits[id] == mx ? 0.0 : -INFINITY;
  for (i = 0; i < n; i++)
    sum += exp ((double) logits[i] - mx);
  return (double) logits[id] - mx - log (sum);
}

/* log-sum-exp of the raw logits, with the max split out for accuracy. */
static void
raw_lse (const float *logits, int n, double *mx_out, double *lse_out)
{
  double mx = -INFINITY, sum = 0.0;
  int i;

  for (i = 0; i < n; i++)
    if (logits[i] > mx)
      mx = logits[i];
  if (isfinite (mx))
    for (i = 0; i < n; i++)
      sum += exp ((double) logits[i] - mx);
  *mx_out = mx;
  *lse_out = isfinite (mx) ? mx + log (sum) : mx;
}

static float
logprob_of (double lse, float logit)
{
  if (isnan (logit))
    return -INFINITY;
  if (!isfinite (lse))
    return logit == lse ? 0.0f : -INFINITY;
  return (float) ((double) logit - lse);
}

/* The @n_top largest raw logits, most likely first (smaller id on ties),
 * by insertion into a short sorted list: O(V * n_top) worst case, O(V) for
 * the usual few alternatives. */
static void
fill_top (const float *logits, int n, double lse, BlnLogprob *top, int n_top)
{
  int i, j, filled = 0;

  for (i = 0; i < n; i++)
    {
      float l = logits[i];

      if (isnan (l))
        continue;
      if (filled == n_top && !(l > logits[top[filled - 1].id]))
        continue;
      j = filled < n_top ? filled++ : n_top - 1;
      while (j > 0 && l > logits[top[j - 1].id])
        {
          top[j] = top[j - 1];
          j--;
        }
      top[j].id = i;
    }
  for (i = 0; i < n_top; i++)
    {
      if (i < filled)
        top[i].logprob = logprob_of (lse, logits[top[i].id]);
      else
        {
          top[i].id = -1;
          top[i].logprob = -INFINITY;
        }
    }
}

int32_t
bln_sampler_sample (BlnSampler *s, const float *logits, BlnLogprob *top, int n_top)
{
  const BlnCandidate *c;
  int32_t chosen;
  double u, cum = 0.0, total = 0.0;
  int i, n;

  g_return_val_if_fail (s != NULL && logits != NULL, 0);
  g_return_val_if_fail (n_top >= 0, 0);

  n = bln_sampler_filter (s, logits, &c);
  if (n == 1)
    chosen = c[0].id;
  else
    {
      for (i = 0; i < n; i++)
        total += c[i].prob;
      u = next_double (s) * total;
      chosen = c[n - 1].id;
      for (i = 0; i < n; i++)
        {
          cum += c[i].prob;
          if (u < cum)
            {
              chosen = c[i].id;
              break;
            }
        }
    }

  if (top != NULL)
    {
      double mx, lse;

      raw_lse (logits, s->n_vocab, &mx, &lse);
      top[0].id = chosen;
      top[0].logprob = logprob_of (lse, logits[chosen]);
      if (n_top > 0)
        fill_top (logits, s->n_vocab, lse, top + 1, n_top);
    }
  return chosen;
}

/* ---------------------------------------------------------------------- */
/* state for other implementations (sampler.h)                             */

int
bln_sampler_n_vocab (const BlnSampler *s)
{
  g_return_val_if_fail (s != NULL, 0);
  return s->n_vocab;
}

int
bln_sampler_history (const BlnSampler *s, const int32_t **ids, const int32_t **counts)
{
  g_return_val_if_fail (s != NULL && ids != NULL && counts != NULL, 0);
  *ids = (const int32_t *) (void *) s->seen->data;
  *counts = s->counts;
  return (int) s->seen->len;
}

double
bln_sampler_peek_uniform (const BlnSampler *s)
{
  uint64_t st[4];

  g_return_val_if_fail (s != NULL, 0.0);
  memcpy (st, s->rng, sizeof st);
  return (double) (xoshiro_next (st) >> 11) * (1.0 / 9007199254740992.0);
}

void
bln_sampler_skip_uniform (BlnSampler *s)
{
  g_return_if_fail (s != NULL);
  (void) xoshiro_next (s->rng);
}
