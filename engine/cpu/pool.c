/* cpu/pool.c — a persistent thread pool with a cheap synchronous run.
 *
 * Decoding one token calls the matmul a few hundred times, each for tens of
 * microseconds, so waking the workers must cost far less than that. Workers
 * spin on a generation counter for a while after each job (a new job usually
 * arrives within microseconds) and only then sleep on a condition variable.
 * The caller runs share 0 itself and spins until the workers report done.
 *
 * The hand-over is a Dekker pattern on two sequentially consistent atomics:
 * the caller bumps `gen` then reads `n_sleeping`; a worker going to sleep
 * bumps `n_sleeping` then re-reads `gen` under the mutex. One of the two
 * always sees the other, so no wake-up is lost.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause ()
#else
#define cpu_relax() do { } while (0)
#endif

#include "../bln-error.h"
#include "vecdot.h"

/* Some tens of microseconds of spinning (pause is 10-140 cycles) before a worker sleeps. */
#define SPIN_ITERS 4000

typedef struct {
  BlnPool *pool;
  int ith;
  pthread_t thread;
} Worker;

struct _BlnPool {
  int n_threads;
  Worker *workers;          /* n_threads - 1 of them */
  int n_started;

  atomic_uint gen;          /* bumped once per job */
  atomic_int pending;       /* workers still running the current job */
  atomic_int n_sleeping;
  atomic_bool quit;
  BlnPoolFn fn;
  void *ctx;

  pthread_mutex_t mutex;
  pthread_cond_t cond;

  void *scratch;            /* for bln_pool_scratch */
  size_t scratch_size;
};

static void *
worker_main (void *data)
{
  Worker *w = data;
  BlnPool *pool = w->pool;
  /* gen is 0 until the first job; reading it here instead could skip a job
   * posted before this thread got to run */
  unsigned seen = 0;

  for (;;)
    {
      unsigned g = atomic_load (&pool->gen);

      for (int i = 0; g == seen && i < SPIN_ITERS; i++)
        {
          cpu_relax ();
          g = atomic_load (&pool->gen);
        }
      if (g == seen)
        {
          pthread_mutex_lock (&pool->mutex);
          atomic_fetch_add (&pool->n_sleeping, 1);
          while ((g = atomic_load (&pool->gen)) == seen && !atomic_load (&pool->quit))
            pthread_cond_wait (&pool->cond, &pool->mutex);
          atomic_fetch_sub (&pool->n_sleeping, 1);
          pthread_mutex_unlock (&pool->mutex);
        }
      if (atomic_load (&pool->quit))
        break;
      seen = g;
      pool->fn (pool->ctx, w->ith, pool->n_threads);
      atomic_fetch_sub_explicit (&pool->pending, 1, memory_order_release);
    }
  return NULL;
}

static int
online_cpus (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : n > 256 ? 256 : (int) n;
}

BlnPool *
bln_pool_new (int n_threads, GError **error)
{
  BlnPool *pool;

  g_return_val_if_fail (n_threads >= 0, NULL);
  if (n_threads == 0)
    n_threads = online_cpus ();
  if (n_threads > 1024)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "too many threads (%d)", n_threads);
      return NULL;
    }

  pool = g_new0 (BlnPool, 1);
  pool->n_threads = n_threads;
  atomic_init (&pool->gen, 0);
  atomic_init (&pool->pending, 0);
  atomic_init (&pool->n_sleeping, 0);
  atomic_init (&pool->quit, FALSE);
  pthread_mutex_init (&pool->mutex, NULL);
  pthread_cond_init (&pool->cond, NULL);
  pool->workers = g_new0 (Worker, n_threads);
  for (int i = 1; i < n_threads; i++)
    {
      Worker *w = &pool->workers[i - 1];
      int rc;

      w->pool = pool;
      w->ith = i;
      rc = pthread_create (&w->thread, NULL, worker_main, w);
      if (rc != 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "cannot start a worker thread: %s",
                       g_strerror (rc));
          bln_pool_free (pool);
          return NULL;
        }
      pool->n_started++;
    }
  return pool;
}

void
bln_pool_free (BlnPool *pool)
{
  if (pool == NULL)
    return;
  pthread_mutex_lock (&pool->mutex);
  atomic_store (&pool->quit, TRUE);
  atomic_fetch_add (&pool->gen, 1);
  pthread_cond_broadcast (&pool->cond);
  pthread_mutex_unlock (&pool->mutex);
  for (int i = 0; i < pool->n_started; i++)
    pthread_join (pool->workers[i].thread, NULL);
  pthread_mutex_destroy (&pool->mutex);
  pthread_cond_destroy (&pool->cond);
  free (pool->scratch);
  g_free (pool->workers);
  g_free (pool);
}

int
bln_pool_n_threads (const BlnPool *pool)
{
  g_return_val_if_fail (pool != NULL, 1);
  return pool->n_threads;
}

void
bln_pool_run (BlnPool *pool, BlnPoolFn fn, void *ctx)
{
  int spins = 0;

  g_return_if_fail (pool != NULL && fn != NULL);
  if (pool->n_threads == 1)
    {
      fn (ctx, 0, 1);
      return;
    }
  pool->fn = fn;
  pool->ctx = ctx;
  atomic_store (&pool->pending, pool->n_threads - 1);
  atomic_fetch_add (&pool->gen, 1);
  if (atomic_load (&pool->n_sleeping) > 0)
    {
      pthread_mutex_lock (&pool->mutex);
      pthread_cond_broadcast (&pool->cond);
      pthread_mutex_unlock (&pool->mutex);
    }

  fn (ctx, 0, pool->n_threads);

  /* Spin, then yield: on an oversubscribed machine a worker may need our CPU. */
  while (atomic_load_explicit (&pool->pending, memory_order_acquire) > 0)
    {
      if (++spins < SPIN_ITERS)
        cpu_relax ();
      else
        sched_yield ();
    }
}

void *
bln_pool_scratch (BlnPool *pool, size_t size, GError **error)
{
  void *p = NULL;

  if (size <= pool->scratch_size)
    return pool->scratch;
  /* grow by half again, to avoid a reallocation per slightly longer prompt */
  if (size < G_MAXSIZE / 2)
    size += size / 2;
  size = (size + 63) & ~(size_t) 63;
  if (posix_memalign (&p, 64, size) != 0 || p == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "cannot allocate %" G_GSIZE_FORMAT " bytes of matmul scratch", size);
      return NULL;
    }
  free (pool->scratch);
  pool->scratch = p;
  pool->scratch_size = size;
  return p;
}
