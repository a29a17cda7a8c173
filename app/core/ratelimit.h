/* ratelimit.h — token-bucket rate limits per API key and per client address.
 *
 * Each bucket name (e.g. "key:12" or "addr:10.0.0.7") has two buckets: one of
 * requests per minute and one of tokens per minute. A bucket holds at most its
 * per-minute limit and refills continuously at limit/60 per second; a request
 * is let through when both hold enough, and then takes one request and its
 * estimated tokens. Tokens used beyond the estimate are charged afterwards.
 *
 * Two backends with the same arithmetic: in-process (the default) and Redis
 * (ratelimit-redis.c, one atomic Lua script per decision, using the Redis
 * server's clock) so that several baleen-server replicas share their limits.
 * A limiter is thread-safe.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  gboolean allowed;
  double retry_after_s;      /* refused: seconds until the request would pass; else 0 */
  gint64 limit_requests;     /* 0 when requests are not limited */
  gint64 remaining_requests;
  double reset_requests_s;   /* seconds until the request bucket is full again */
  gint64 limit_tokens;       /* 0 when tokens are not limited */
  gint64 remaining_tokens;
  double reset_tokens_s;
} BlnRateDecision;

typedef struct _BlnRateLimiter BlnRateLimiter;

/* bln_rate_limiter_new_memory: an in-process limiter. Free with
 * bln_rate_limiter_free. */
BlnRateLimiter *bln_rate_limiter_new_memory (void);

/* bln_rate_limiter_new_redis:
 * A limiter keeping its buckets in the Redis server at @url
 * ("redis://HOST[:PORT]", port 6379 by default), under keys starting with
 * @prefix (NULL: "baleen:rl:"). Connects at once; later connection failures
 * are reported by each check, which reconnects on its next call. NULL with
 * @error set when the URL is bad, the server cannot be reached, or Baleen was
 * built without hiredis (BLN_ERROR_UNSUPPORTED).
 */
BlnRateLimiter *bln_rate_limiter_new_redis (const char *url, const char *prefix,
                                            GError **error);

/* bln_rate_limiter_free: frees @rl (closing its connection). NULL is ignored. */
void bln_rate_limiter_free (BlnRateLimiter *rl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnRateLimiter, bln_rate_limiter_free)

/* bln_rate_limiter_check:
 * Decides whether one request of about @tokens tokens may pass for @bucket,
 * with limits @rpm requests and @tpm tokens per minute (0: that dimension is
 * unlimited). A request larger than @tpm needs a full token bucket. On a pass
 * the request and its tokens are taken. Fills @out; returns FALSE with @error
 * set only when the backend fails (Redis unreachable): the caller then applies
 * its failure policy.
 */
gboolean bln_rate_limiter_check (BlnRateLimiter *rl, const char *bucket, gint64 rpm,
                                 gint64 tpm, gint64 tokens, BlnRateDecision *out,
                                 GError **error);

/* bln_rate_limiter_charge:
 * Takes @tokens more tokens from @bucket's token bucket (limit @tpm; nothing
 * happens when it is 0), e.g. the completion tokens once an answer is done.
 * The bucket may go negative, down to -@tpm, delaying the next requests.
 * FALSE with @error set when the backend fails.
 */
gboolean bln_rate_limiter_charge (BlnRateLimiter *rl, const char *bucket, gint64 tpm,
                                  gint64 tokens, GError **error);

/* bln_rate_limiter_set_clock:
 * Replaces the in-process limiter's clock (microseconds) for tests; NULL
 * restores the monotonic clock. No effect on the Redis backend, which uses
 * the server's clock.
 */
void bln_rate_limiter_set_clock (BlnRateLimiter *rl, gint64 (*now_us) (gpointer),
                                 gpointer data);

/* bln_rate_decision_headers:
 * The response headers for @d as a NULL-terminated array of alternating
 * names and values (new, free with g_strfreev): x-ratelimit-limit-requests,
 * x-ratelimit-remaining-requests, x-ratelimit-reset-requests (a duration such
 * as "1s" or "6m0s") and the same for tokens, for the dimensions that are
 * limited, plus Retry-After (whole seconds, rounded up) when refused.
 */
char **bln_rate_decision_headers (const BlnRateDecision *d);

G_END_DECLS
