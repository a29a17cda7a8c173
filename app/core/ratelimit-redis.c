/* ratelimit-redis.c — the token buckets kept in Redis, shared by replicas.
 *
 * One Lua script makes each decision atomically on the server: it reads both
 * buckets, refills them by the time passed on the server's clock (so replicas
 * with skewed clocks agree), takes the request when both suffice, writes the
 * levels back and lets idle buckets expire.
 */
#include "ratelimit.h"

#include <string.h>

#include "bln-error.h"
#include "ratelimit-private.h"

#ifndef BALEEN_HAVE_HIREDIS

BlnRateLimiter *
bln_rate_limiter_new_redis (const char *url, const char *prefix, GError **error)
{
  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
               "this Baleen was built without hiredis: Redis rate limits are unavailable");
  return NULL;
}

#else

#include <hiredis.h>
#include <stdlib.h>

/* KEYS: request bucket, token bucket. ARGV: rpm, tpm, cost, mode (0 check,
 * 1 charge). Returns {allowed, request level, token level, retry seconds},
 * numbers as strings because Redis truncates Lua numbers to integers. */
static const char script[] =
  "local t = redis.call('TIME')\n"
  "local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
  "local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
  "local cost, mode = tonumber(ARGV[3]), ARGV[4]\n"
  "local function level(key, cap)\n"
  "  if cap <= 0 then return nil end\n"
  "  local v = redis.call('HMGET', key, 'l', 'ts')\n"
  "  local l, ts = tonumber(v[1]), tonumber(v[2])\n"
  "  if l == nil or ts == nil then return cap end\n"
  "  return math.min(cap, l + math.max(0, now - ts) * cap / 60)\n"
  "end\n"
  "local function save(key, l)\n"
  "  if l == nil then return end\n"
  "  redis.call('HSET', key, 'l', string.format('%.17g', l), 'ts', string.format('%.17g', now))\n"
  "  redis.call('EXPIRE', key, 120)\n"
  "end\n"
  "local r, k = level(KEYS[1], rpm), level(KEYS[2], tpm)\n"
  "local ok, wait = 1, 0\n"
  "if mode == '1' then\n"
  "  if k then k = math.max(-tpm, k - cost) end\n"
  "else\n"
  "  local need = 0\n"
  "  if k then need = math.min(cost, tpm) end\n"
  "  if (r and r < 1) or (k and k < need) then\n"
  "    ok = 0\n"
  "    if r and r < 1 then wait = math.max(wait, (1 - r) * 60 / rpm) end\n"
  "    if k and k < need then wait = math.max(wait, (need - k) * 60 / tpm) end\n"
  "  else\n"
  "    if r then r = r - 1 end\n"
  "    if k then k = k - need end\n"
  "  end\n"
  "end\n"
  "save(KEYS[1], r)\n"
  "save(KEYS[2], k)\n"
  "return {ok, string.format('%.17g', r or -1), string.format('%.17g', k or -1),\n"
  "        string.format('%.17g', wait)}\n";

typedef struct {
  GMutex lock;
  redisContext *ctx;   /* NULL while disconnected */
  char *host;
  int port;
  char *prefix;
  char *sha;           /* SHA-1 of the script, for EVALSHA */
} Redis;

static gboolean
parse_url (const char *url, char **host, int *port, GError **error)
{
  const char *p;
  const char *colon;
  char *end = NULL;

  if (!url || !g_str_has_prefix (url, "redis://"))
    goto bad;
  p = url + strlen ("redis://");
  colon = strrchr (p, ':');
  if (strchr (p, '/') || strchr (p, '@'))
    goto bad;
  if (colon)
    {
      long n = strtol (colon + 1, &end, 10);
      if (colon == p || *end || n <= 0 || n > 65535)
        goto bad;
      *host = g_strndup (p, colon - p);
      *port = (int) n;
    }
  else
    {
      if (!*p)
        goto bad;
      *host = g_strdup (p);
      *port = 6379;
    }
  return TRUE;
bad:
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
               "bad Redis URL '%s' (expected redis://HOST[:PORT])", url ? url : "");
  return FALSE;
}

static gboolean
ensure_connected (Redis *r, GError **error)
{
  struct timeval tv = { 2, 0 };

  if (r->ctx && !r->ctx->err)
    return TRUE;
  if (r->ctx)
    redisFree (r->ctx);
  r->ctx = redisConnectWithTimeout (r->host, r->port, tv);
  if (!r->ctx || r->ctx->err)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot reach Redis at %s:%d: %s", r->host,
                   r->port, r->ctx ? r->ctx->errstr : "out of memory");
      if (r->ctx)
        redisFree (r->ctx);
      r->ctx = NULL;
      return FALSE;
    }
  redisSetTimeout (r->ctx, tv);
  return TRUE;
}

static double
reply_number (const redisReply *e)
{
  if (e->type == REDIS_REPLY_INTEGER)
    return (double) e->integer;
  if (e->type == REDIS_REPLY_STRING)
    return g_ascii_strtod (e->str, NULL);
  return 0;
}

static gboolean
redis_decide (BlnRateLimiter *rl, const char *bucket, gint64 rpm, gint64 tpm, gint64 cost,
              int mode, BlnRateDecision *out, GError **error)
{
  Redis *r = rl->impl;
  g_autofree char *kr = g_strconcat (r->prefix, bucket, ":r", NULL);
  g_autofree char *kt = g_strconcat (r->prefix, bucket, ":t", NULL);
  char srpm[32], stpm[32], scost[32], smode[4];
  redisReply *rep = NULL;
  gboolean ok = FALSE;

  g_snprintf (srpm, sizeof srpm, "%" G_GINT64_FORMAT, rpm);
  g_snprintf (stpm, sizeof stpm, "%" G_GINT64_FORMAT, tpm);
  g_snprintf (scost, sizeof scost, "%" G_GINT64_FORMAT, cost);
  g_snprintf (smode, sizeof smode, "%d", mode);

  g_mutex_lock (&r->lock);
  if (!ensure_connected (r, error))
    goto out;
  rep = redisCommand (r->ctx, "EVALSHA %s 2 %s %s %s %s %s %s", r->sha, kr, kt, srpm, stpm,
                      scost, smode);
  if (rep && rep->type == REDIS_REPLY_ERROR && g_str_has_prefix (rep->str, "NOSCRIPT"))
    {
      freeReplyObject (rep);
      rep = redisCommand (r->ctx, "EVAL %s 2 %s %s %s %s %s %s", script, kr, kt, srpm, stpm,
                          scost, smode);
    }
  if (!rep)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "Redis at %s:%d failed: %s", r->host,
                   r->port, r->ctx->errstr);
      redisFree (r->ctx);
      r->ctx = NULL;
      goto out;
    }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "Redis rate-limit script failed: %s",
                   rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
      goto out;
    }
  memset (out, 0, sizeof *out);
  out->allowed = reply_number (rep->element[0]) != 0;
  out->retry_after_s = reply_number (rep->element[3]);
  bln_rate_fill_decision (out, rpm, tpm, reply_number (rep->element[1]),
                          reply_number (rep->element[2]));
  ok = TRUE;
out:
  if (rep)
    freeReplyObject (rep);
  g_mutex_unlock (&r->lock);
  return ok;
}

static void
redis_destroy (BlnRateLimiter *rl)
{
  Redis *r = rl->impl;

  if (r->ctx)
    redisFree (r->ctx);
  g_free (r->host);
  g_free (r->prefix);
  g_free (r->sha);
  g_mutex_clear (&r->lock);
  g_free (r);
}

static const BlnRateBackend redis_backend = { redis_decide, redis_destroy };

BlnRateLimiter *
bln_rate_limiter_new_redis (const char *url, const char *prefix, GError **error)
{
  Redis *r = g_new0 (Redis, 1);
  BlnRateLimiter *rl;

  g_mutex_init (&r->lock);
  if (!parse_url (url, &r->host, &r->port, error) || !ensure_connected (r, error))
    {
      g_free (r->host);
      g_mutex_clear (&r->lock);
      g_free (r);
      return NULL;
    }
  r->prefix = g_strdup (prefix ? prefix : "baleen:rl:");
  r->sha = g_compute_checksum_for_string (G_CHECKSUM_SHA1, script, -1);
  rl = g_new0 (BlnRateLimiter, 1);
  rl->backend = &redis_backend;
  rl->impl = r;
  return rl;
}

#endif /* BALEEN_HAVE_HIREDIS */
