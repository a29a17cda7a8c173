/* test-ratelimit.c — token buckets: the in-process limiter on a controlled
 * clock, the response headers, thread safety, and the Redis backend against a
 * real redis-server started here on a free port, with two limiter instances
 * (two "replicas") sharing one bucket. */
#include <gio/gio.h>
#include <glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "bln-error.h"
#include "ratelimit.h"

static gint64 fake_now;

static gint64
fake_clock (gpointer data)
{
  return fake_now;
}

static const char *
header (char **h, const char *name)
{
  for (guint i = 0; h && h[i] && h[i + 1]; i += 2)
    if (g_ascii_strcasecmp (h[i], name) == 0)
      return h[i + 1];
  return NULL;
}

static void
test_requests (void)
{
  g_autoptr (BlnRateLimiter) rl = bln_rate_limiter_new_memory ();
  BlnRateDecision d;
  g_auto (GStrv) h = NULL;

  fake_now = 1000000000;
  bln_rate_limiter_set_clock (rl, fake_clock, NULL);
  for (int i = 0; i < 3; i++)
    {
      g_assert_true (bln_rate_limiter_check (rl, "key:1", 3, 0, 0, &d, NULL));
      g_assert_true (d.allowed);
      g_assert_cmpint (d.remaining_requests, ==, 2 - i);
    }
  g_assert_true (bln_rate_limiter_check (rl, "key:1", 3, 0, 0, &d, NULL));
  g_assert_false (d.allowed);
  g_assert_cmpfloat_with_epsilon (d.retry_after_s, 20.0, 1e-6); /* 60 s / 3 per token */
  h = bln_rate_decision_headers (&d);
  g_assert_cmpstr (header (h, "Retry-After"), ==, "20");
  g_assert_cmpstr (header (h, "x-ratelimit-limit-requests"), ==, "3");
  g_assert_cmpstr (header (h, "x-ratelimit-remaining-requests"), ==, "0");
  g_assert_cmpstr (header (h, "x-ratelimit-reset-requests"), ==, "1m0s");
  g_assert_null (header (h, "x-ratelimit-limit-tokens"));

  /* another bucket is independent */
  g_assert_true (bln_rate_limiter_check (rl, "addr:10.0.0.1", 3, 0, 0, &d, NULL));
  g_assert_true (d.allowed);

  /* half the wait: still refused, the rest of the wait reported */
  fake_now += 10 * G_USEC_PER_SEC;
  g_assert_true (bln_rate_limiter_check (rl, "key:1", 3, 0, 0, &d, NULL));
  g_assert_false (d.allowed);
  g_assert_cmpfloat_with_epsilon (d.retry_after_s, 10.0, 1e-6);
  fake_now += 10 * G_USEC_PER_SEC;
  g_assert_true (bln_rate_limiter_check (rl, "key:1", 3, 0, 0, &d, NULL));
  g_assert_true (d.allowed);

  /* unlimited */
  g_assert_true (bln_rate_limiter_check (rl, "key:2", 0, 0, 1000000, &d, NULL));
  g_assert_true (d.allowed);
}

static void
test_tokens (void)
{
  g_autoptr (BlnRateLimiter) rl = bln_rate_limiter_new_memory ();
  BlnRateDecision d;
  g_auto (GStrv) h = NULL;

  fake_now = 5000000000;
  bln_rate_limiter_set_clock (rl, fake_clock, NULL);
  g_assert_true (bln_rate_limiter_check (rl, "k", 0, 100, 60, &d, NULL));
  g_assert_true (d.allowed);
  g_assert_cmpint (d.remaining_tokens, ==, 40);
  g_assert_true (bln_rate_limiter_check (rl, "k", 0, 100, 60, &d, NULL));
  g_assert_false (d.allowed);
  g_assert_cmpfloat_with_epsilon (d.retry_after_s, 12.0, 1e-6); /* 20 tokens at 100/min */
  h = bln_rate_decision_headers (&d);
  g_assert_cmpstr (header (h, "x-ratelimit-remaining-tokens"), ==, "40");
  g_assert_cmpstr (header (h, "x-ratelimit-reset-tokens"), ==, "36s");
  g_assert_cmpstr (header (h, "Retry-After"), ==, "12");

  /* the answer used 90 more tokens than estimated: the bucket goes into
   * debt, delaying the next request */
  g_assert_true (bln_rate_limiter_charge (rl, "k", 100, 90, NULL));
  g_assert_true (bln_rate_limiter_check (rl, "k", 0, 100, 1, &d, NULL));
  g_assert_false (d.allowed);
  g_assert_cmpfloat_with_epsilon (d.retry_after_s, 30.6, 1e-6); /* from -50 to 1 */
  g_assert_cmpint (d.remaining_tokens, ==, 0);

  /* a request larger than the whole limit passes on a full bucket */
  fake_now += 120 * G_USEC_PER_SEC;
  g_assert_true (bln_rate_limiter_check (rl, "k", 0, 100, 500, &d, NULL));
  g_assert_true (d.allowed);
  g_assert_cmpint (d.remaining_tokens, ==, 0);
}

static void
test_durations (void)
{
  BlnRateDecision d = { 0 };
  g_auto (GStrv) h = NULL;

  d.allowed = TRUE;
  d.limit_requests = 10;
  d.reset_requests_s = 0.25;
  d.limit_tokens = 10;
  d.reset_tokens_s = 7.5;
  h = bln_rate_decision_headers (&d);
  g_assert_cmpstr (header (h, "x-ratelimit-reset-requests"), ==, "250ms");
  g_assert_cmpstr (header (h, "x-ratelimit-reset-tokens"), ==, "7.5s");
  g_assert_null (header (h, "Retry-After"));
}

static gpointer
hammer (gpointer data)
{
  BlnRateLimiter *rl = data;
  gint allowed = 0;

  for (int i = 0; i < 200; i++)
    {
      BlnRateDecision d;
      bln_rate_limiter_check (rl, "shared", 100, 0, 0, &d, NULL);
      allowed += d.allowed;
    }
  return GINT_TO_POINTER (allowed);
}

static void
test_threads (void)
{
  g_autoptr (BlnRateLimiter) rl = bln_rate_limiter_new_memory ();
  GThread *t[8];
  gint total = 0;

  fake_now = 9000000000;
  bln_rate_limiter_set_clock (rl, fake_clock, NULL); /* frozen: no refill */
  for (int i = 0; i < 8; i++)
    t[i] = g_thread_new ("hammer", hammer, rl);
  for (int i = 0; i < 8; i++)
    total += GPOINTER_TO_INT (g_thread_join (t[i]));
  g_assert_cmpint (total, ==, 100);
}

/* ---- Redis --------------------------------------------------------------- */

typedef struct {
  GPid pid;
  int port;
  char *url;
} RedisServer;

static int
free_port (void)
{
  g_autoptr (GSocket) s = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                                        G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) a = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;

  g_assert_true (g_socket_bind (s, a, TRUE, NULL));
  bound = g_socket_get_local_address (s, NULL);
  return g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
}

static gboolean
redis_start (RedisServer *rs)
{
  g_autofree char *bin = g_find_program_in_path ("redis-server");
  g_autofree char *port = NULL;
  g_autoptr (GError) error = NULL;

  if (!bin)
    {
      g_test_skip ("redis-server is not installed (tools/setup-deps.sh installs it)");
      return FALSE;
    }
  rs->port = free_port ();
  port = g_strdup_printf ("%d", rs->port);
  {
    const char *argv[] = { bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                           NULL };
    g_assert_true (g_spawn_async (NULL, (char **) argv, NULL,
                                  G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                                  NULL, NULL, &rs->pid, &error));
  }
  g_assert_no_error (error);
  rs->url = g_strdup_printf ("redis://127.0.0.1:%d", rs->port);
  /* wait until it accepts connections (at most 10 s) */
  for (int i = 0; i < 200; i++)
    {
      g_autoptr (GError) e = NULL;
      BlnRateLimiter *probe = bln_rate_limiter_new_redis (rs->url, "probe:", &e);
      if (probe)
        {
          bln_rate_limiter_free (probe);
          return TRUE;
        }
      g_usleep (50000);
    }
  g_error ("redis-server did not start on port %d", rs->port);
  return FALSE;
}

static void
redis_stop (RedisServer *rs)
{
  int status;

  kill (rs->pid, SIGTERM);
  waitpid (rs->pid, &status, 0);
  g_spawn_close_pid (rs->pid);
  g_free (rs->url);
}

static void
test_redis_shared (void)
{
  RedisServer rs = { 0 };
  g_autoptr (GError) error = NULL;
  BlnRateLimiter *a, *b, *other;
  BlnRateDecision d;
  int allowed = 0;

  if (!redis_start (&rs))
    return;
  a = bln_rate_limiter_new_redis (rs.url, "t:", &error);
  g_assert_no_error (error);
  b = bln_rate_limiter_new_redis (rs.url, "t:", &error);
  other = bln_rate_limiter_new_redis (rs.url, "elsewhere:", &error);
  g_assert_no_error (error);

  /* two replicas alternate on one key: together they get the limit, once */
  for (int i = 0; i < 10; i++)
    {
      g_assert_true (bln_rate_limiter_check (i % 2 ? a : b, "key:7", 5, 0, 0, &d, &error));
      g_assert_no_error (error);
      allowed += d.allowed;
      if (!d.allowed)
        {
          g_assert_cmpfloat (d.retry_after_s, >, 0.0);
          g_assert_cmpfloat (d.retry_after_s, <=, 12.0);
          g_assert_cmpint (d.remaining_requests, ==, 0);
        }
    }
  g_assert_cmpint (allowed, ==, 5);

  /* another prefix is another set of buckets */
  g_assert_true (bln_rate_limiter_check (other, "key:7", 5, 0, 0, &d, &error));
  g_assert_true (d.allowed);

  /* tokens: one replica charges, the other sees it */
  g_assert_true (bln_rate_limiter_check (a, "key:8", 0, 1000, 400, &d, &error));
  g_assert_true (d.allowed);
  g_assert_cmpint (d.remaining_tokens, >=, 599);
  g_assert_cmpint (d.remaining_tokens, <=, 601);
  g_assert_true (bln_rate_limiter_charge (b, "key:8", 1000, 500, &error));
  g_assert_true (bln_rate_limiter_check (b, "key:8", 0, 1000, 400, &d, &error));
  g_assert_false (d.allowed);
  g_assert_cmpint (d.remaining_tokens, <=, 101);
  g_assert_no_error (error);

  /* the server goes away: checks fail with an error instead of guessing */
  redis_stop (&rs);
  g_assert_false (bln_rate_limiter_check (a, "key:9", 5, 0, 0, &d, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  bln_rate_limiter_free (a);
  bln_rate_limiter_free (b);
  bln_rate_limiter_free (other);

  /* nothing listening, and a bad URL */
  g_assert_null (bln_rate_limiter_new_redis (rs.url ? "redis://127.0.0.1:1" : NULL, NULL,
                                             &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  g_assert_null (bln_rate_limiter_new_redis ("http://x", NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/RateLimit/requests", test_requests);
  g_test_add_func ("/Baleen/RateLimit/tokens", test_tokens);
  g_test_add_func ("/Baleen/RateLimit/durations", test_durations);
  g_test_add_func ("/Baleen/RateLimit/threads", test_threads);
#ifdef BALEEN_HAVE_HIREDIS
  g_test_add_func ("/Baleen/RateLimit/redis-shared", test_redis_shared);
#endif
  return g_test_run ();
}
