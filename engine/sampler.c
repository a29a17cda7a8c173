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

/* Raw logit @l of token @id after the history penalties. */
static inline float
penalise (const BlnSampler *s, float l, int32_t id)
{
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

/* The logit of @id after the history penalties. */
static inline float
penalised (const BlnSampler *s, const float *logits, int32_t id)
{
  return penalise (s, logits[id], id);
}

/* A penalised logit @l divided by the temperature, +inf clamped to the
 * largest float; FALSE for a value that can never be chosen. */
static inline gboolean
scale_value (float l, float temp, float *out)
{
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

/* The value token @id enters the filters with: penalised, divided by the
 * temperature, +inf clamped to the largest float (+inf would turn every
 * probability into NaN). FALSE for a token that can never be chosen. */
static inline gboolean
scaled_logit (const BlnSampler *s, const float *logits, int32_t id, float temp, float *out)
{
  return scale_value (penalised (s, logits, id), temp, out);
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

/* The survivors' probabilities; returns @n. */
static int
normalise (BlnCandidate *c, int n)
{
  double mx, sum = 0.0;
  int i;

  mx = max_logit (c, n);
  for (i = 0; i < n; i++)
    sum += exp ((double) c[i].logit - mx);
  for (i = 0; i < n; i++)
    c[i].prob = (float) (exp ((double) c[i].logit - mx) / sum);
  return n;
}

/* Steps 4-6 and the renormalisation over c[0..n), the usable scaled logits
 * that reach the top-k floor, in id order (an empty set gives token 0). */
static int
finish_filters (BlnSampler *s, BlnCandidate *c, int n)
{
  const BlnSamplerParams *p = &s->params;

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
  return normalise (c, n);
}

int
bln_sampler_filter (BlnSampler *s, const float *logits, const BlnCandidate **out)
{
  const BlnSamplerParams *p;
  BlnCandidate *c;
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
  return finish_filters (s, c, n);
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

/* Step 7: one uniform number when more than one token survived. */
static int32_t
draw_from (BlnSampler *s, const BlnCandidate *c, int n)
{
  double u, cum = 0.0, total = 0.0;
  int i;

  if (n == 1)
    return c[0].id;
  for (i = 0; i < n; i++)
    total += c[i].prob;
  u = next_double (s) * total;
  for (i = 0; i < n; i++)
    {
      cum += c[i].prob;
      if (u < cum)
        return c[i].id;
    }
  return c[n - 1].id;
}

int32_t
bln_sampler_sample (BlnSampler *s, const float *logits, BlnLogprob *top, int n_top)
{
  const BlnCandidate *c;
  int32_t chosen;
  int n;

  g_return_val_if_fail (s != NULL && logits != NULL, 0);
  g_return_val_if_fail (n_top >= 0, 0);

  n = bln_sampler_filter (s, logits, &c);
  chosen = draw_from (s, c, n);

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

/* ---------------------------------------------------------------------- */
/* compact sampling (docs/GPU-SAMPLING.md)                                 */

static gboolean
penalties_on (const BlnSamplerParams *p)
{
  return (p->repetition_penalty > 0.0f && p->repetition_penalty != 1.0f)
         || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
}

gboolean
bln_sampler_compact_needs_history (const BlnSampler *s)
{
  g_return_val_if_fail (s != NULL, FALSE);
  return penalties_on (&s->params);
}

int
bln_sampler_compact_k (const BlnSampler *s, int n_top)
{
  const BlnSamplerParams *p;
  int need, k = 256;

  g_return_val_if_fail (s != NULL, 0);
  p = &s->params;
  need = MAX (n_top, 0);
  if (p->temperature > 0.0f)
    {
      if (p->top_k > 0)
        {
          if (p->top_k > s->n_vocab / 8)
            return 0;
          need = MAX (need, p->top_k);
        }
      else if (!(p->top_p < 1.0f) && !(p->min_p > 0.0f))
        return 0;
    }
  if (need > BLN_COMPACT_MAX_K)
    return 0;
  while (k < need)
    k *= 2;
  return k;
}

static int
compare_id (const void *pa, const void *pb)
{
  const BlnCandidate *a = pa, *b = pb;

  return (a->id > b->id) - (a->id < b->id);
}

/* The raw logit of @id if the record holds it. */
static gboolean
compact_raw (const BlnCompactRow *row, const int32_t *hids, int n_h, int32_t id, float *out)
{
  int i;

  for (i = 0; i < row->k; i++)
    if (row->ids[i] == id)
      {
        *out = row->logits[i];
        return TRUE;
      }
  for (i = 0; i < n_h && row->hist != NULL; i++)
    if (hids[i] == id)
      {
        *out = row->hist[i];
        return TRUE;
      }
  if (row->complete)
    {
      *out = NAN;   /* every non-NaN logit is listed */
      return TRUE;
    }
  return FALSE;
}

/* The k-th largest value of c[0..n) (n >= k >= 1), via a sorted copy. */
static float
kth_of (const BlnCandidate *c, int n, int k)
{
  g_autofree BlnCandidate *t = g_memdup2 (c, (size_t) n * sizeof *c);

  qsort (t, (size_t) n, sizeof *t, compare_cand);
  return t[k - 1].logit;
}

/* Fills @c with the record's usable candidates (top entries and, with the
 * penalties on, the history), penalised and scaled, in id order; returns
 * how many. With @temp <= 0 the values are penalised only and nothing is
 * dropped. *@n_listed gets how many came from the top entries (they come
 * first before the sort). */
static int
compact_candidates (BlnSampler *s, const BlnCompactRow *row, gboolean pen, const int32_t *hids,
                    int n_h, float temp, int *n_listed)
{
  BlnCandidate *c = s->cand;
  int i, n = 0;

  for (i = 0; i < row->k; i++)
    {
      int32_t id = row->ids[i];

      if (pen && s->counts[id] > 0)
        continue;     /* comes with the history */
      c[n].id = id;
      c[n].logit = row->logits[i];
      n++;
    }
  *n_listed = n;
  for (i = 0; pen && i < n_h; i++)
    {
      c[n].id = hids[i];
      c[n].logit = penalise (s, row->hist[i], hids[i]);
      n++;
    }
  if (temp > 0.0f)
    {
      int m = 0;

      for (i = 0; i < n; i++)
        {
          float v;

          if (scale_value (c[i].logit, temp, &v))
            {
              c[m].id = c[i].id;
              c[m].logit = v;
              m++;
            }
        }
      n = m;
      qsort (c, (size_t) n, sizeof *c, compare_id);
    }
  return n;
}

/* Greedy from the record: FALSE when a token outside it could tie or win. */
static gboolean
compact_greedy (BlnSampler *s, const BlnCompactRow *row, gboolean pen, const int32_t *hids,
                int n_h, int32_t *out_id)
{
  BlnCandidate *c = s->cand;
  int32_t best = 0;
  float best_l = -INFINITY;
  int i, best_i = -1, n_listed, n;

  n = compact_candidates (s, row, pen, hids, n_h, 0.0f, &n_listed);
  for (i = 0; i < n; i++)
    if (c[i].logit > best_l || (c[i].logit == best_l && best_i >= 0 && c[i].id < best))
      {
        best_l = c[i].logit;
        best = c[i].id;
        best_i = i;
      }
  if (!row->complete && !(best_l > row->next))
    {
      /* outside tokens keep raw logits <= next and follow the listed ones
       * in the total order: a listed, unpenalised best still wins a tie */
      if (best_l == row->next && best_i >= 0 && best_i < n_listed)
        ;
      else if (!(best_i < 0 && row->next == -INFINITY))
        return FALSE;
    }
  *out_id = best;
  return TRUE;
}

gboolean
bln_sampler_sample_compact (BlnSampler *s, const BlnCompactRow *row, BlnLogprob *top,
                            int n_top, int32_t *out_id)
{
  const BlnSamplerParams *p;
  const int32_t *hids = NULL, *counts = NULL;
  BlnCandidate *c;
  gboolean pen, bound_on;
  float temp, bound = -INFINITY, raw;
  int32_t chosen;
  int i, n, n_h = 0, n_listed;

  g_return_val_if_fail (s != NULL && row != NULL && out_id != NULL, FALSE);
  g_return_val_if_fail (row->k >= 0 && (row->k == 0 || (row->ids && row->logits)), FALSE);
  p = &s->params;
  c = s->cand;
  temp = p->temperature;
  pen = penalties_on (p);
  if (pen)
    {
      n_h = bln_sampler_history (s, &hids, &counts);
      if (n_h > 0 && (row->hist == NULL || row->n_hist != n_h))
        return FALSE;
    }
  if (top != NULL && n_top > row->k && !row->complete)
    return FALSE;

  if (!(temp > 0.0f))
    {
      if (!compact_greedy (s, row, pen, hids, n_h, &chosen))
        return FALSE;
      goto logprobs;
    }

  n = compact_candidates (s, row, pen, hids, n_h, temp, &n_listed);
  /* a token outside the record is unpenalised with a raw logit <= next, so
   * it enters the filters with at most scale (next) */
  bound_on = !row->complete && scale_value (row->next, temp, &bound);
  if (!bound_on)
    {
      /* the record holds every usable token: the CPU's own steps */
      if (p->top_k > 0 && p->top_k <= s->n_vocab / 8)
        {
          float floor_l = n < p->top_k ? -INFINITY : kth_of (c, n, p->top_k);
          int m = 0;

          for (i = 0; i < n; i++)
            if (c[i].logit >= floor_l)
              c[m++] = c[i];
          n = m;
        }
      n = finish_filters (s, c, n);
    }
  else if (p->top_k > 0)
    {
      float kth;
      int m = 0;

      /* the k-th largest is exact when it beats every outside value, and
       * then the survivors (>= it) are all in the record */
      if (p->top_k > s->n_vocab / 8 || n < p->top_k)
        return FALSE;
      kth = kth_of (c, n, p->top_k);
      if (!(kth > bound))
        return FALSE;
      for (i = 0; i < n; i++)
        if (c[i].logit >= kth)
          c[m++] = c[i];
      n = finish_filters (s, c, m);
    }
  else if (p->top_p < 1.0f)
    {
      double mx, total, target, cum = 0.0;
      int m = -1;

      if (n < 2)
        return FALSE;
      mx = max_logit (c, n);
      if (mx < bound)
        return FALSE;
      qsort (c, (size_t) n, sizeof *c, compare_cand);
      if (!(p->top_p > 0.0f))
        m = 1;
      else
        {
          /* the row's mass: the kernel's sum over the tokens outside the
           * history plus the history's penalised terms (no cancellation) */
          total = row->t_sum > 0.0 ? row->t_sum * exp (row->t_max - mx) : 0.0;
          for (i = 0; pen && i < n_h; i++)
            {
              float v;

              if (scale_value (penalise (s, row->hist[i], hids[i]), temp, &v))
                total += exp ((double) v - mx);
            }
          if (!isfinite (total))
            return FALSE;
          target = (double) p->top_p * total;
          for (i = 0; i < n; i++)
            {
              cum += exp ((double) c[i].logit - mx);
              if (cum >= target)
                {
                  m = i + 1;
                  break;
                }
            }
        }
      if (m < 0 || !(c[m - 1].logit > bound))
        return FALSE;
      n = apply_min_p (c, m, (double) p->min_p);
      n = normalise (c, n);
    }
  else if (p->min_p > 0.0f)
    {
      double mx;

      if (n < 2)
        return FALSE;
      mx = max_logit (c, n);
      if (mx < bound || exp ((double) bound - mx) >= (double) p->min_p)
        return FALSE;
      n = apply_min_p (c, n, (double) p->min_p);
      n = normalise (c, n);
    }
  else
    return FALSE;     /* plain sampling: every token can be drawn */

  if (top != NULL && n == 1 && !compact_raw (row, hids, n_h, c[0].id, &raw))
    return FALSE;     /* token 0 of a row with nothing usable, not listed */
  chosen = draw_from (s, c, n);

logprobs:
  if (top != NULL)
    {
      if (!compact_raw (row, hids, n_h, chosen, &raw))
        return FALSE;   /* only before a draw: greedy's token 0 */
      top[0].id = chosen;
      top[0].logprob = logprob_of (row->raw_lse, raw);
      for (i = 0; i < n_top; i++)
        {
          if (i < row->k)
            {
              top[1 + i].id = row->ids[i];
              top[1 + i].logprob = logprob_of (row->raw_lse, row->logits[i]);
            }
          else
            {
              top[1 + i].id = -1;
              top[1 + i].logprob = -INFINITY;
            }
        }
    }
  *out_id = chosen;
  return TRUE;
}

void
bln_compact_row_build (const BlnSampler *s, const float *logits, int k, BlnCompactRow *row)
{
  const BlnSamplerParams *p;
  g_autofree BlnCandidate *all = NULL;
  int i, n = 0;

  g_return_if_fail (s != NULL && logits != NULL && k > 0 && row != NULL);
  p = &s->params;
  memset (row, 0, sizeof *row);
  all = g_new (BlnCandidate, s->n_vocab);
  for (i = 0; i < s->n_vocab; i++)
    if (!isnan (logits[i]))
      {
        all[n].id = i;
        all[n].logit = logits[i];
        n++;
      }
  qsort (all, (size_t) n, sizeof *all, compare_cand);
  row->k = MIN (k, n);
  row->complete = n <= k;
  row->next = row->complete ? -INFINITY : all[k].logit;
  row->ids = g_new (int32_t, MAX (row->k, 1));
  row->logits = g_new (float, MAX (row->k, 1));
  for (i = 0; i < row->k; i++)
    {
      ((int32_t *) row->ids)[i] = all[i].id;
      ((float *) row->logits)[i] = all[i].logit;
    }
  raw_lse (logits, s->n_vocab, &row->raw_max, &row->raw_lse);
  row->t_max = -INFINITY;
  row->t_sum = 0.0;
  if (p->temperature > 0.0f)
    {
      gboolean pen = penalties_on (p);
      float v;

      for (i = 0; i < s->n_vocab; i++)
        if (!(pen && s->counts[i] > 0) && scale_value (logits[i], p->temperature, &v)
            && v > row->t_max)
          row->t_max = v;
      if (row->t_max > -INFINITY)
        for (i = 0; i < s->n_vocab; i++)
          if (!(pen && s->counts[i] > 0) && scale_value (logits[i], p->temperature, &v))
            row->t_sum += exp ((double) v - row->t_max);
    }
  if (penalties_on (p))
    {
      const int32_t *ids, *counts;
      int n_h = bln_sampler_history (s, &ids, &counts);
      float *h = g_new (float, MAX (n_h, 1));

      for (i = 0; i < n_h; i++)
        h[i] = logits[ids[i]];
      row->hist = h;
      row->n_hist = n_h;
    }
}

void
bln_compact_row_clear (BlnCompactRow *row)
{
  if (row == NULL)
    return;
  g_free ((gpointer) row->ids);
  g_free ((gpointer) row->logits);
  g_free ((gpointer) row->hist);
  memset (row, 0, sizeof *row);
}
