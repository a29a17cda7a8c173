/* ratelimit-private.h — the backend table shared by ratelimit.c and
 * ratelimit-redis.c. Not for other files. */
#pragma once

#include "ratelimit.h"

typedef struct {
  /* mode 0: check (take 1 request + cost tokens when both suffice);
   * mode 1: charge (take cost tokens from the token bucket unconditionally). */
  gboolean (*decide) (BlnRateLimiter *rl, const char *bucket, gint64 rpm, gint64 tpm,
                      gint64 cost, int mode, BlnRateDecision *out, GError **error);
  void (*destroy) (BlnRateLimiter *rl);
} BlnRateBackend;

struct _BlnRateLimiter {
  const BlnRateBackend *backend;
  gpointer impl;
};

/* Fills the remaining/reset fields of @out from the bucket levels @r and @k
 * (negative: that dimension is unlimited). */
void bln_rate_fill_decision (BlnRateDecision *out, gint64 rpm, gint64 tpm, double r, double k);
