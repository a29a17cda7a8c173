/* ratelimit.c — the in-process token-bucket backend and the shared helpers. */
#include "ratelimit.h"

#include <math.h>
#include <string.h>

#include "bln-error.h"
#include "ratelimit-private.h"

#define MAX_BUCKETS 100000

typedef struct {
  double req, tok;   /* current levels */
  gint64 ts;         /* microseconds of the last update */
} Bucket;

typedef struct {
  GMutex lock;
  GHashTable *buckets; /* name -> Bucket */
  gint64 (*now_us) (gpointer);
  gpointer now_data;
} Memory;

void
bln_rate_fill_decision (BlnRateDecision *out, gint64 rpm, gint64 tpm, double r, double k)
{
  out->limit_requests = rpm > 0 ? rpm : 0;
  out->limit_tokens = tpm > 0 ? tpm : 0;
  out->remaining_requests = rpm > 0 ? (gint64) MAX (0.0, floor (r)) : 0;
  out->remaining_tokens = tpm > 0 ? (gint64) MAX (0.0, floor (k)) : 0;
  out->reset_requests_s = rpm > 0 ? MAX (0.0, (rpm - r) * 60.0 / rpm) : 0;
  out->reset_tokens_s = tpm > 0 ? MAX (0.0, (tpm - k) * 60.0 / tpm) : 0;
}

static double
refill (double level, gint64 cap, double elapsed_s)
{
  return MIN ((double) cap, level + MAX (0.0, elapsed_s) * cap / 60.0);
}

static gboolean
memory_decide (BlnRateLimiter *rl, const char *bucket, gint64 rpm, gint64 tpm, gint64 cost,
               int mode, BlnRateDecision *out, GError **error)
{
  Memory *m = rl->impl;
  Bucket *b;
  gint64 now;
  double elapsed, need;

  g_mutex_lock (&m->lock);
  now = m->now_us ? m->now_us (m->now_data) : g_get_monotonic_time ();
  b = g_hash_table_lookup (m->buckets, bucket);
  if (!b)
    {
      if (g_hash_table_size (m->buckets) >= MAX_BUCKETS)
        g_hash_table_remove_all (m->buckets); /* bounded memory under address floods */
      b = g_new (Bucket, 1);
      b->req = (double) rpm;
      b->tok = (double) tpm;
      b->ts = now;
      g_hash_table_insert (m->buckets, g_strdup (bucket), b);
    }
  elapsed = (now - b->ts) / 1e6;
  b->ts = now;
  b->req = rpm > 0 ? refill (b->req, rpm, elapsed) : 0;
  b->tok = tpm > 0 ? refill (b->tok, tpm, elapsed) : 0;

  memset (out, 0, sizeof *out);
  if (mode == 1)
    {
      if (tpm > 0)
        b->tok = MAX ((double) -tpm, b->tok - cost);
      out->allowed = TRUE;
    }
  else
    {
      need = tpm > 0 ? MIN ((double) cost, (double) tpm) : 0;
      out->allowed = (rpm <= 0 || b->req >= 1.0) && (tpm <= 0 || b->tok >= need);
      if (out->allowed)
        {
          if (rpm > 0)
            b->req -= 1.0;
          if (tpm > 0)
            b->tok -= need;
        }
      else
        {
          if (rpm > 0 && b->req < 1.0)
            out->retry_after_s = MAX (out->retry_after_s, (1.0 - b->req) * 60.0 / rpm);
          if (tpm > 0 && b->tok < need)
            out->retry_after_s = MAX (out->retry_after_s, (need - b->tok) * 60.0 / tpm);
        }
    }
  bln_rate_fill_decision (out, rpm, tpm, b->req, b->tok);
  g_mutex_unlock (&m->lock);
  return TRUE;
}

static void
memory_destroy (BlnRateLimiter *rl)
{
  Memory *m = rl->impl;

  g_hash_table_unref (m->buckets);
  g_mutex_clear (&m->lock);
  g_free (m);
}

static const BlnRateBackend memory_backend = { memory_decide, memory_destroy };

BlnRateLimiter *
bln_rate_limiter_new_memory (void)
{
  BlnRateLimiter *rl = g_new0 (BlnRateLimiter, 1);
  Memory *m = g_new0 (Memory, 1);

  g_mutex_init (&m->lock);
  m->buckets = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  rl->backend = &memory_backend;
  rl->impl = m;
  return rl;
}

void
bln_rate_limiter_set_clock (BlnRateLimiter *rl, gint64 (*now_us) (gpointer), gpointer data)
{
  Memory *m;

  if (rl->backend != &memory_backend)
    return;
  m = rl->impl;
  g_mutex_lock (&m->lock);
  m->now_us = now_us;
  m->now_data = data;
  g_hash_table_remove_all (m->buckets);
  g_mutex_unlock (&m->lock);
}

void
bln_rate_limiter_free (BlnRateLimiter *rl)
{
  if (!rl)
    return;
  rl->backend->destroy (rl);
  g_free (rl);
}

gboolean
bln_rate_limiter_check (BlnRateLimiter *rl, const char *bucket, gint64 rpm, gint64 tpm,
                        gint64 tokens, BlnRateDecision *out, GError **error)
{
  g_return_val_if_fail (rl != NULL && bucket != NULL && out != NULL, FALSE);
  memset (out, 0, sizeof *out);
  if (rpm <= 0 && tpm <= 0)
    {
      out->allowed = TRUE;
      return TRUE;
    }
  return rl->backend->decide (rl, bucket, MAX (rpm, 0), MAX (tpm, 0), MAX (tokens, 0), 0, out,
                              error);
}

gboolean
bln_rate_limiter_charge (BlnRateLimiter *rl, const char *bucket, gint64 tpm, gint64 tokens,
                         GError **error)
{
  BlnRateDecision d;

  g_return_val_if_fail (rl != NULL && bucket != NULL, FALSE);
  if (tpm <= 0 || tokens <= 0)
    return TRUE;
  return rl->backend->decide (rl, bucket, 0, tpm, tokens, 1, &d, error);
}

/* "1s", "6m0s", "20ms": the duration form OpenAI's headers use. */
static char *
duration (double s)
{
  gint64 ms = (gint64) ceil (s * 1000.0);

  if (ms < 1000)
    return g_strdup_printf ("%" G_GINT64_FORMAT "ms", ms);
  if (ms < 60000)
    return g_strdup_printf ("%gs", ceil (s * 1000.0) / 1000.0);
  return g_strdup_printf ("%" G_GINT64_FORMAT "m%" G_GINT64_FORMAT "s", ms / 60000,
                          (ms % 60000 + 999) / 1000);
}

char **
bln_rate_decision_headers (const BlnRateDecision *d)
{
  GPtrArray *h = g_ptr_array_new ();

  if (d->limit_requests > 0)
    {
      g_ptr_array_add (h, g_strdup ("x-ratelimit-limit-requests"));
      g_ptr_array_add (h, g_strdup_printf ("%" G_GINT64_FORMAT, d->limit_requests));
      g_ptr_array_add (h, g_strdup ("x-ratelimit-remaining-requests"));
      g_ptr_array_add (h, g_strdup_printf ("%" G_GINT64_FORMAT, d->remaining_requests));
      g_ptr_array_add (h, g_strdup ("x-ratelimit-reset-requests"));
      g_ptr_array_add (h, duration (d->reset_requests_s));
    }
  if (d->limit_tokens > 0)
    {
      g_ptr_array_add (h, g_strdup ("x-ratelimit-limit-tokens"));
      g_ptr_array_add (h, g_strdup_printf ("%" G_GINT64_FORMAT, d->limit_tokens));
      g_ptr_array_add (h, g_strdup ("x-ratelimit-remaining-tokens"));
      g_ptr_array_add (h, g_strdup_printf ("%" G_GINT64_FORMAT, d->remaining_tokens));
      g_ptr_array_add (h, g_strdup ("x-ratelimit-reset-tokens"));
      g_ptr_array_add (h, duration (d->reset_tokens_s));
    }
  if (!d->allowed)
    {
      g_ptr_array_add (h, g_strdup ("Retry-After"));
      g_ptr_array_add (h, g_strdup_printf ("%" G_GINT64_FORMAT,
                                           (gint64) MAX (1.0, ceil (d->retry_after_s))));
    }
  g_ptr_array_add (h, NULL);
  return (char **) g_ptr_array_free (h, FALSE);
}
