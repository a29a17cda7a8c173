/* kv-cache.c — the paged KV pool, its prefix hash table, and batched
 * evaluation over it. The design is described in kv-cache.h.
 */
#include <math.h>
#include <string.h>

#include "baleen-config.h"
#include "bln-error.h"
#include "kv-cache.h"
#include "model-private.h"
#if BALEEN_HAVE_CUDA
#include "cuda/forward-batch.h"
#endif

#define NO_BLOCK (-1)
#define CHAIN_SEED G_GUINT64_CONSTANT (0x6a09e667f3bcc909)

typedef struct {
  int ref;                 /* sequences referencing the block */
  gboolean registered;     /* in the hash table (its tokens are a known prefix) */
  guint64 hash;            /* chain hash, the table's key when registered */
  guint64 parent;          /* chain hash of the previous block */
  int lru_prev, lru_next;  /* LRU list of cached blocks (ref 0, registered) */
  gint64 released_us;      /* when it joined the LRU (the cache's clock) */
} Block;

struct _BlnKvCache {
  BlnModel *model;
  BlnContext *ws;          /* scratch buffers and the thread pool (CPU pool) */
  struct _BlnCudaBatch *gpu; /* the pool on the GPU and its forward pass, or NULL */
  BlnPool *pool;           /* borrowed, may be NULL on the GPU */
  int block_size;
  int n_blocks;
  size_t k_width, v_width; /* values per row */
  size_t elem;             /* bytes per value: 4 on the CPU, 2 or 4 on the GPU */
  float *k, *v;            /* [block][layer][slot][width]; NULL on the GPU and when 8-bit */
  /* the 8-bit CPU pool: int8 values in the rows above ([block][layer][slot][width]),
   * and one float scale per group of gk (K) or gv (V) values of a row */
  gboolean q8;
  int gk, gv;
  int8_t *k8, *v8;
  float *ks, *vs;
  Block *blocks;
  int32_t *block_tokens;   /* [block][block_size]: ids of registered blocks */
  int *free_stack;
  int n_free;
  int lru_head, lru_tail;  /* head: least recently released */
  int n_cached;
  GHashTable *table;       /* &Block.hash -> block index + 1 */
  int n_seqs;
  guint64 lookup_tokens, hit_tokens, evictions;
  gboolean no_prefix;      /* prefix reuse off: nothing registered, nothing looked up */
  int max_cached;          /* cached blocks kept at most (0: no bound) */
  gint64 ttl_us;           /* cached blocks unused this long expire (0: never) */
  BlnKvClockFn clock;      /* microseconds, monotonic */
  gpointer clock_data;
  guint64 expired;         /* blocks freed by bln_kv_cache_expire() */
  int window;              /* sliding attention window in tokens (0: off) */
  /* compact sampling records of the last bln_kv_eval: item -> kept slot
   * (-1: none), and the records by slot */
  int *cmp_slot;
  int cmp_n_items;
  BlnCompactRow *cmp_rows;
};

struct _BlnKvSeq {
  BlnKvCache *kv;
  GArray *table;           /* int32_t block indices */
  GArray *hashes;          /* guint64 chain hash of each full block */
  GArray *tokens;          /* int32_t ids of positions 0..len-1 */
  guint released;          /* table entries 0..released-1 are NO_BLOCK: they lay wholly
                            * before the sliding window and were given back */
};

/* ---------------------------------------------------------------------- */
/* hashing                                                                 */

static guint64
mix64 (guint64 x)
{
  /* splitmix64's finaliser: every input bit affects every output bit */
  x ^= x >> 30;
  x *= G_GUINT64_CONSTANT (0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= G_GUINT64_CONSTANT (0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

static guint64
chain_hash (guint64 parent, const int32_t *ids, int n)
{
  guint64 h = mix64 (parent ^ CHAIN_SEED);
  int i;

  for (i = 0; i < n; i++)
    h = mix64 (h ^ ((guint64) (guint32) ids[i] | ((guint64) i << 32)));
  return h;
}

/* ---------------------------------------------------------------------- */
/* block states                                                            */

static void
lru_remove (BlnKvCache *kv, int b)
{
  Block *bl = &kv->blocks[b];

  if (bl->lru_prev != NO_BLOCK)
    kv->blocks[bl->lru_prev].lru_next = bl->lru_next;
  else
    kv->lru_head = bl->lru_next;
  if (bl->lru_next != NO_BLOCK)
    kv->blocks[bl->lru_next].lru_prev = bl->lru_prev;
  else
    kv->lru_tail = bl->lru_prev;
  bl->lru_prev = bl->lru_next = NO_BLOCK;
  kv->n_cached--;
}

static void
lru_append (BlnKvCache *kv, int b)
{
  Block *bl = &kv->blocks[b];

  bl->lru_prev = kv->lru_tail;
  bl->lru_next = NO_BLOCK;
  if (kv->lru_tail != NO_BLOCK)
    kv->blocks[kv->lru_tail].lru_next = b;
  else
    kv->lru_head = b;
  kv->lru_tail = b;
  kv->n_cached++;
}

static void
unregister (BlnKvCache *kv, int b)
{
  Block *bl = &kv->blocks[b];

  if (bl->registered)
    {
      g_hash_table_remove (kv->table, &bl->hash);
      bl->registered = FALSE;
    }
}

/* Over the prefix cache's bound: the least recently released blocks go. */
static void
trim_cached (BlnKvCache *kv)
{
  while (kv->max_cached > 0 && kv->n_cached > kv->max_cached)
    {
      int b = kv->lru_head;

      lru_remove (kv, b);
      unregister (kv, b);
      kv->free_stack[kv->n_free++] = b;
      kv->evictions++;
    }
}

static void
block_unref (BlnKvCache *kv, int b)
{
  Block *bl = &kv->blocks[b];

  g_assert (bl->ref > 0);
  if (--bl->ref > 0)
    return;
  if (kv->no_prefix)
    unregister (kv, b);   /* registered before the prefix cache was switched off */
  if (bl->registered)
    {
      /* appended in release order, so the LRU is also sorted by this stamp
       * and expiry only ever looks at its head */
      bl->released_us = kv->clock (kv->clock_data);
      lru_append (kv, b);
    }
  else
    kv->free_stack[kv->n_free++] = b;
  trim_cached (kv);
}

/* A block for writing: a free one, else the least recently used cached one. */
static int
block_alloc (BlnKvCache *kv)
{
  int b;

  if (kv->n_free > 0)
    b = kv->free_stack[--kv->n_free];
  else if (kv->lru_head != NO_BLOCK)
    {
      b = kv->lru_head;
      lru_remove (kv, b);
      unregister (kv, b);
      kv->evictions++;
    }
  else
    return NO_BLOCK;
  kv->blocks[b].ref = 1;
  return b;
}

static gint64
monotonic_clock (gpointer data)
{
  (void) data;
  return g_get_monotonic_time ();
}

static int
lookup (BlnKvCache *kv, guint64 hash, guint64 parent, const int32_t *ids)
{
  gpointer v = g_hash_table_lookup (kv->table, &hash);
  int b;

  if (v == NULL)
    return NO_BLOCK;
  b = GPOINTER_TO_INT (v) - 1;
  if (kv->blocks[b].parent != parent
      || memcmp (kv->block_tokens + (size_t) b * kv->block_size, ids,
                 (size_t) kv->block_size * sizeof (int32_t)) != 0)
    return NO_BLOCK;
  return b;
}

/* ---------------------------------------------------------------------- */
/* 8-bit rows                                                              */

int
bln_kv_q8_group (int dim)
{
  int g;

  for (g = MIN (dim, BLN_KV_Q8_GROUP); g > 1; g--)
    if (dim % g == 0)
      return g;
  return 1;
}

void
bln_kv_q8_store (int8_t *q, float *scales, const float *x, size_t n, int group)
{
  size_t i, j;

  for (i = 0; i < n; i += group, scales++)
    {
      float amax = 0.0f, d, id;

      for (j = 0; j < (size_t) group; j++)
        amax = MAX (amax, fabsf (x[i + j]));
      /* as engine/quant.c's Q8_0: d = amax / 127, round to nearest (half away
       * from zero); the scale stays a float here */
      d = amax / 127.0f;
      id = d == 0.0f ? 0.0f : 1.0f / d;
      for (j = 0; j < (size_t) group; j++)
        q[i + j] = (int8_t) roundf (x[i + j] * id);
      *scales = d;
    }
}

void
bln_kv_q8_load (float *y, const int8_t *q, const float *scales, size_t n, int group)
{
  size_t i, j;

  for (i = 0; i < n; i += group, scales++)
    {
      float d = *scales;

      for (j = 0; j < (size_t) group; j++)
        y[i + j] = (float) q[i + j] * d;
    }
}

/* Bytes of one block of @block_size positions: F32 rows, or 8-bit ones with
 * their scales. */
static size_t
block_bytes_of (const BlnHParams *hp, int block_size, size_t kw, size_t vw, gboolean q8,
                int gk, int gv)
{
  size_t row = q8 ? kw + kw / gk * sizeof (float) + (vw ? vw + vw / gv * sizeof (float) : 0)
                  : (kw + vw) * sizeof (float);

  return (size_t) hp->n_layer * block_size * row;
}

/* ---------------------------------------------------------------------- */
/* the pool                                                                */

BlnKvCache *
bln_kv_cache_new (BlnModel *model, BlnPool *pool, size_t budget_bytes, int block_size,
                  GError **error)
{
  return bln_kv_cache_new_with_options (model, pool, budget_bytes, block_size, NULL, error);
}

BlnKvCache *
bln_kv_cache_new_with_options (BlnModel *model, BlnPool *pool, size_t budget_bytes,
                               int block_size, const BlnContextOptions *opts, GError **error)
{
  const BlnHParams *hp;
  BlnKvCache *kv;
  size_t block_bytes, n, elem = sizeof (float);
  gboolean on_gpu = opts != NULL && opts->device == BLN_DEVICE_CUDA;
  gboolean q8 = !on_gpu && opts != NULL && opts->kv_bits == 8;
  int i;

  g_return_val_if_fail (model != NULL && (pool != NULL || on_gpu), NULL);

  hp = bln_model_hparams (model);
  if (on_gpu)
    {
#if BALEEN_HAVE_CUDA
      if (opts->kv_bits != 16 && opts->kv_bits != 32)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "KV cache bits must be 16 or 32, not %d", opts->kv_bits);
          return NULL;
        }
      if (hp->arch != BLN_ARCH_LLAMA && hp->arch != BLN_ARCH_QWEN2)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "a paged KV cache on the GPU runs llama and qwen2 models, not %s yet",
                       model->arch_name ? model->arch_name : "this architecture");
          return NULL;
        }
      elem = (size_t) opts->kv_bits / 8;
#else
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "this build has no CUDA backend");
      return NULL;
#endif
    }
  if (!on_gpu && opts != NULL && opts->kv_bits != 8 && opts->kv_bits != 16
      && opts->kv_bits != 32 && opts->kv_bits != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "KV cache bits must be 8 or 32 on the CPU, not %d", opts->kv_bits);
      return NULL;
    }
  if (q8 && hp->arch != BLN_ARCH_LLAMA && hp->arch != BLN_ARCH_QWEN2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the 8-bit KV cache runs llama and qwen2 models, not %s yet",
                   model->arch_name ? model->arch_name : "this architecture");
      return NULL;
    }
  if (q8 && (hp->head_dim_k <= 0 || hp->head_dim_v <= 0
             || hp->head_dim_k > BLN_KV_Q8_MAX_HEAD_DIM
             || hp->head_dim_v > BLN_KV_Q8_MAX_HEAD_DIM))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the 8-bit KV cache needs head dims of 1..%d (not %d and %d)",
                   BLN_KV_Q8_MAX_HEAD_DIM, hp->head_dim_k, hp->head_dim_v);
      return NULL;
    }
  if (block_size == 0)
    block_size = BLN_KV_BLOCK_SIZE_DEFAULT;
  if (block_size < 1 || block_size > 4096)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "KV block size %d is outside 1..4096", block_size);
      return NULL;
    }
  kv = g_new0 (BlnKvCache, 1);
  kv->model = model;
  kv->pool = pool;
  kv->block_size = block_size;
  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    {
      kv->k_width = (size_t) hp->kv_lora_rank + hp->qk_rope_dim;
      kv->v_width = 0;
    }
  else
    {
      kv->k_width = (size_t) hp->n_head_kv * hp->head_dim_k;
      kv->v_width = (size_t) hp->n_head_kv * hp->head_dim_v;
    }
  kv->elem = elem;
  kv->q8 = q8;
  if (q8)
    {
      kv->gk = bln_kv_q8_group (hp->head_dim_k);
      kv->gv = bln_kv_q8_group (hp->head_dim_v);
      block_bytes = block_bytes_of (hp, block_size, kv->k_width, kv->v_width, TRUE, kv->gk,
                                    kv->gv);
    }
  else
    block_bytes = (size_t) hp->n_layer * block_size * (kv->k_width + kv->v_width) * elem;
  n = budget_bytes / block_bytes;
  if (n < 2 || n > G_MAXINT / 2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "a KV budget of %zu bytes holds %zu blocks of %zu bytes; at least 2 are "
                   "needed", budget_bytes, n, block_bytes);
      g_free (kv);
      return NULL;
    }
  kv->n_blocks = (int) n;
#if BALEEN_HAVE_CUDA
  if (on_gpu)
    {
      kv->gpu = bln_cuda_batch_new (model, kv->n_blocks, block_size, opts, error);
      if (kv->gpu == NULL)
        {
          g_free (kv);
          return NULL;
        }
    }
#endif
  /* calloc: pages are only touched when a block is first written */
  if (q8)
    {
      size_t rows = n * hp->n_layer * block_size;

      kv->k8 = g_try_malloc0 (rows * kv->k_width);
      kv->v8 = g_try_malloc0 (rows * kv->v_width);
      kv->ks = g_try_new0 (float, rows * (kv->k_width / kv->gk));
      kv->vs = g_try_new0 (float, rows * (kv->v_width / kv->gv));
    }
  else if (!on_gpu)
    {
      kv->k = g_try_malloc0 (n * hp->n_layer * block_size * kv->k_width * sizeof (float));
      kv->v = kv->v_width ? g_try_malloc0 (n * hp->n_layer * block_size * kv->v_width
                                           * sizeof (float)) : NULL;
    }
  kv->blocks = g_try_new0 (Block, n);
  kv->block_tokens = g_try_new0 (int32_t, n * block_size);
  kv->free_stack = g_try_new (int, n);
  if ((!on_gpu && !q8 && (kv->k == NULL || (kv->v_width && kv->v == NULL)))
      || (q8 && (kv->k8 == NULL || kv->v8 == NULL || kv->ks == NULL || kv->vs == NULL))
      || kv->blocks == NULL
      || kv->block_tokens == NULL || kv->free_stack == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "cannot allocate a KV pool of %zu blocks (%.1f MiB)", n,
                   n * block_bytes / 1048576.0);
#if BALEEN_HAVE_CUDA
      bln_cuda_batch_free (kv->gpu);
#endif
      g_free (kv->k);
      g_free (kv->v);
      g_free (kv->k8);
      g_free (kv->v8);
      g_free (kv->ks);
      g_free (kv->vs);
      g_free (kv->blocks);
      g_free (kv->block_tokens);
      g_free (kv->free_stack);
      g_free (kv);
      return NULL;
    }
  /* the stack pops block 0 first */
  for (i = 0; i < kv->n_blocks; i++)
    {
      kv->free_stack[i] = kv->n_blocks - 1 - i;
      kv->blocks[i].lru_prev = kv->blocks[i].lru_next = NO_BLOCK;
    }
  kv->n_free = kv->n_blocks;
  kv->lru_head = kv->lru_tail = NO_BLOCK;
  kv->clock = monotonic_clock;
  kv->table = g_hash_table_new (g_int64_hash, g_int64_equal);
  if (!on_gpu)
    kv->ws = bln_context_new_workspace (model, pool);
  return kv;
}

void
bln_kv_cache_free (BlnKvCache *kv)
{
  if (kv == NULL)
    return;
  if (kv->n_seqs > 0)
    {
      g_critical ("bln_kv_cache_free: %d sequences still use the cache", kv->n_seqs);
      return;
    }
  g_hash_table_destroy (kv->table);
  bln_context_free (kv->ws);
#if BALEEN_HAVE_CUDA
  bln_cuda_batch_free (kv->gpu);
#endif
  g_free (kv->k);
  g_free (kv->v);
  g_free (kv->k8);
  g_free (kv->v8);
  g_free (kv->ks);
  g_free (kv->vs);
  g_free (kv->blocks);
  g_free (kv->block_tokens);
  g_free (kv->free_stack);
  g_free (kv->cmp_slot);
  g_free (kv->cmp_rows);
  g_free (kv);
}

BlnModel *
bln_kv_cache_model (const BlnKvCache *kv)
{
  return kv->model;
}

int
bln_kv_cache_block_size (const BlnKvCache *kv)
{
  return kv->block_size;
}

int
bln_kv_cache_n_blocks (const BlnKvCache *kv)
{
  return kv->n_blocks;
}

size_t
bln_kv_cache_block_bytes (const BlnKvCache *kv)
{
  if (kv->q8)
    return block_bytes_of (bln_model_hparams (kv->model), kv->block_size, kv->k_width,
                           kv->v_width, TRUE, kv->gk, kv->gv);
  return (size_t) bln_model_hparams (kv->model)->n_layer * kv->block_size
         * (kv->k_width + kv->v_width) * kv->elem;
}

BlnDevice
bln_kv_cache_device (const BlnKvCache *kv)
{
  return kv->gpu != NULL ? BLN_DEVICE_CUDA : BLN_DEVICE_CPU;
}

size_t
bln_kv_cache_block_bytes_for (const BlnModel *model, int block_size)
{
  return bln_model_kv_bytes_per_token (model)
         * (size_t) (block_size > 0 ? block_size : BLN_KV_BLOCK_SIZE_DEFAULT);
}

int
bln_kv_cache_kv_bits (const BlnKvCache *kv)
{
  return kv->q8 ? 8 : (int) kv->elem * 8;
}

size_t
bln_kv_cache_block_bytes_for_bits (const BlnModel *model, int block_size, int kv_bits)
{
  const BlnHParams *hp = bln_model_hparams (model);
  size_t kw, vw;

  if (kv_bits != 8)
    return bln_kv_cache_block_bytes_for (model, block_size);
  if ((hp->arch != BLN_ARCH_LLAMA && hp->arch != BLN_ARCH_QWEN2) || hp->head_dim_k <= 0
      || hp->head_dim_v <= 0 || hp->head_dim_k > BLN_KV_Q8_MAX_HEAD_DIM
      || hp->head_dim_v > BLN_KV_Q8_MAX_HEAD_DIM)
    return 0;
  kw = (size_t) hp->n_head_kv * hp->head_dim_k;
  vw = (size_t) hp->n_head_kv * hp->head_dim_v;
  return block_bytes_of (hp, block_size > 0 ? block_size : BLN_KV_BLOCK_SIZE_DEFAULT, kw, vw,
                         TRUE, bln_kv_q8_group (hp->head_dim_k),
                         bln_kv_q8_group (hp->head_dim_v));
}

int
bln_kv_cache_n_available (const BlnKvCache *kv)
{
  return kv->n_free + kv->n_cached;
}

void
bln_kv_cache_get_stats (const BlnKvCache *kv, BlnKvStats *st)
{
  memset (st, 0, sizeof *st);
  st->block_size = kv->block_size;
  st->n_blocks = kv->n_blocks;
  st->blocks_free = kv->n_free;
  st->blocks_cached = kv->n_cached;
  st->blocks_used = kv->n_blocks - kv->n_free - kv->n_cached;
  st->bytes = (size_t) kv->n_blocks * bln_kv_cache_block_bytes (kv);
  st->lookup_tokens = kv->lookup_tokens;
  st->hit_tokens = kv->hit_tokens;
  st->evictions = kv->evictions;
  st->expired = kv->expired;
}

int
bln_kv_cache_drop_cached (BlnKvCache *kv)
{
  int n = 0;

  while (kv->lru_head != NO_BLOCK)
    {
      int b = kv->lru_head;

      lru_remove (kv, b);
      unregister (kv, b);
      kv->free_stack[kv->n_free++] = b;
      n++;
    }
  return n;
}

void
bln_kv_cache_set_ttl (BlnKvCache *kv, gint64 ttl_us)
{
  g_return_if_fail (kv != NULL && ttl_us >= 0);

  kv->ttl_us = ttl_us;
}

void
bln_kv_cache_set_clock (BlnKvCache *kv, BlnKvClockFn clock, gpointer data)
{
  g_return_if_fail (kv != NULL);

  kv->clock = clock != NULL ? clock : monotonic_clock;
  kv->clock_data = clock != NULL ? data : NULL;
}

gint64
bln_kv_cache_now (const BlnKvCache *kv)
{
  return kv->clock (kv->clock_data);
}

int
bln_kv_cache_expire (BlnKvCache *kv)
{
  gint64 now;
  int n = 0;

  g_return_val_if_fail (kv != NULL, 0);
  if (kv->ttl_us <= 0)
    return 0;
  now = kv->clock (kv->clock_data);
  while (kv->lru_head != NO_BLOCK && now - kv->blocks[kv->lru_head].released_us >= kv->ttl_us)
    {
      int b = kv->lru_head;

      lru_remove (kv, b);
      unregister (kv, b);
      kv->free_stack[kv->n_free++] = b;
      n++;
    }
  kv->expired += (guint64) n;
  return n;
}

gint64
bln_kv_cache_next_expiry (const BlnKvCache *kv)
{
  g_return_val_if_fail (kv != NULL, -1);
  if (kv->ttl_us <= 0 || kv->lru_head == NO_BLOCK)
    return -1;
  return kv->blocks[kv->lru_head].released_us + kv->ttl_us;
}

gboolean
bln_kv_cache_set_sliding_window (BlnKvCache *kv, int window, GError **error)
{
  g_return_val_if_fail (kv != NULL, FALSE);

  if (!bln_sliding_window_check (kv->model, window,
                                 kv->gpu != NULL ? BLN_DEVICE_CUDA : BLN_DEVICE_CPU, TRUE,
                                 error))
    return FALSE;
  if (kv->n_seqs > 0 && window != kv->window)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the sliding window can only change while the cache has no sequence");
      return FALSE;
    }
  kv->window = window;
  return TRUE;
}

int
bln_kv_cache_sliding_window (const BlnKvCache *kv)
{
  g_return_val_if_fail (kv != NULL, 0);
  return kv->window;
}

void
bln_kv_cache_set_prefix_cache (BlnKvCache *kv, gboolean enabled, int max_cached)
{
  g_return_if_fail (kv != NULL && max_cached >= 0);

  kv->no_prefix = !enabled;
  kv->max_cached = enabled ? max_cached : 0;
  if (!enabled)
    bln_kv_cache_drop_cached (kv);
  trim_cached (kv);
}

/* ---------------------------------------------------------------------- */
/* sequences                                                               */

BlnKvSeq *
bln_kv_seq_new (BlnKvCache *kv)
{
  BlnKvSeq *seq = g_new0 (BlnKvSeq, 1);

  seq->kv = kv;
  seq->table = g_array_new (FALSE, FALSE, sizeof (int32_t));
  seq->hashes = g_array_new (FALSE, FALSE, sizeof (guint64));
  seq->tokens = g_array_new (FALSE, FALSE, sizeof (int32_t));
  kv->n_seqs++;
  return seq;
}

void
bln_kv_seq_reset (BlnKvSeq *seq)
{
  guint i;

  /* release the newest blocks first, so the LRU evicts a chain's tail before
   * its head (a head without its tail is still useful, a tail alone is not) */
  for (i = seq->table->len; i > seq->released; i--)
    block_unref (seq->kv, g_array_index (seq->table, int32_t, i - 1));
  seq->released = 0;
  g_array_set_size (seq->table, 0);
  g_array_set_size (seq->hashes, 0);
  g_array_set_size (seq->tokens, 0);
}

void
bln_kv_seq_free (BlnKvSeq *seq)
{
  if (seq == NULL)
    return;
  bln_kv_seq_reset (seq);
  seq->kv->n_seqs--;
  g_array_unref (seq->table);
  g_array_unref (seq->hashes);
  g_array_unref (seq->tokens);
  g_free (seq);
}

int
bln_kv_seq_length (const BlnKvSeq *seq)
{
  return (int) seq->tokens->len;
}

const int32_t *
bln_kv_seq_tokens (const BlnKvSeq *seq)
{
  return (const int32_t *) seq->tokens->data;
}

int
bln_kv_seq_n_blocks (const BlnKvSeq *seq)
{
  return (int) seq->table->len;
}

int
bln_kv_seq_match_prefix (BlnKvSeq *seq, const int32_t *ids, int n)
{
  BlnKvCache *kv = seq->kv;
  int bs = kv->block_size, i, n_full;
  guint64 parent = 0;

  if (seq->tokens->len > 0 || n <= 0 || kv->no_prefix)
    return 0;
  kv->lookup_tokens += n;
  n_full = n / bs;
  for (i = 0; i < n_full; i++)
    {
      const int32_t *blk = ids + (size_t) i * bs;
      guint64 h = chain_hash (parent, blk, bs);
      int b = lookup (kv, h, parent, blk);

      if (b == NO_BLOCK)
        break;
      if (kv->blocks[b].ref++ == 0)
        lru_remove (kv, b);
      g_array_append_val (seq->table, b);
      g_array_append_val (seq->hashes, h);
      g_array_append_vals (seq->tokens, blk, bs);
      parent = h;
    }
  kv->hit_tokens += (guint64) i * bs;
  return i * bs;
}

int
bln_kv_seq_blocks_needed (const BlnKvSeq *seq, int n)
{
  int bs = seq->kv->block_size;
  int64_t need = ((int64_t) seq->tokens->len + n + bs - 1) / bs - seq->table->len;

  return need > 0 ? (int) MIN (need, G_MAXINT) : 0;
}

gboolean
bln_kv_seq_reserve (BlnKvSeq *seq, int n)
{
  BlnKvCache *kv = seq->kv;
  int need = bln_kv_seq_blocks_needed (seq, n), i;

  if (need > kv->n_free + kv->n_cached)
    return FALSE;
  for (i = 0; i < need; i++)
    {
      int b = block_alloc (kv);
      g_assert (b != NO_BLOCK);
      g_array_append_val (seq->table, b);
    }
  return TRUE;
}

/* After tokens were appended: registers the blocks they filled. A block
 * whose prefix is already registered (another sequence computed the same
 * tokens at the same time) stays private and is freed with its sequence. */
static void
register_full_blocks (BlnKvSeq *seq)
{
  BlnKvCache *kv = seq->kv;
  int bs = kv->block_size;
  guint n_full = seq->tokens->len / bs;

  while (seq->hashes->len < n_full)
    {
      guint i = seq->hashes->len;
      const int32_t *blk = (const int32_t *) seq->tokens->data + (size_t) i * bs;
      guint64 parent = i > 0 ? g_array_index (seq->hashes, guint64, i - 1) : 0;
      guint64 h = chain_hash (parent, blk, bs);
      int b = g_array_index (seq->table, int32_t, i);
      Block *bl = &kv->blocks[b];

      g_array_append_val (seq->hashes, h);
      if (kv->no_prefix || bl->registered || g_hash_table_contains (kv->table, &h))
        continue;
      bl->registered = TRUE;
      bl->hash = h;
      bl->parent = parent;
      memcpy (kv->block_tokens + (size_t) b * bs, blk, (size_t) bs * sizeof (int32_t));
      g_hash_table_insert (kv->table, &bl->hash, GINT_TO_POINTER (b + 1));
    }
}

/* With a sliding window of W, the next token (position len) attends from
 * len - W + 1 on, and every later one from further on: blocks wholly before
 * that are dead for this sequence and are given back. The sequence drops its
 * reference only; a block shared with another sequence stays theirs, and a
 * registered one goes to the LRU as any released block does, so a later
 * request with the same prefix can still find it. Called after
 * register_full_blocks(), so every such block is full and hashed already. */
static void
release_before_window (BlnKvSeq *seq)
{
  BlnKvCache *kv = seq->kv;
  int first = (int) seq->tokens->len - kv->window + 1;
  guint dead;

  if (kv->window <= 0 || first <= 0)
    return;
  dead = MIN ((guint) (first / kv->block_size), seq->table->len);
  for (; seq->released < dead; seq->released++)
    {
      int32_t *b = &g_array_index (seq->table, int32_t, seq->released);

      block_unref (kv, *b);
      *b = NO_BLOCK;
    }
}

/* ---------------------------------------------------------------------- */
/* batched evaluation                                                      */

/* The logits rows of a step copied to their items, items spread over the
 * pool's threads (a GPU step of 128 sequences brings back 78 MB for a
 * 152k-token vocabulary). */
typedef struct {
  const BlnKvBatchItem *items;
  const size_t *src_row;   /* first row of each item in logits */
  const float *logits;
  int n_items, n_vocab;
  const gboolean *kept;    /* per item: the row stayed on the device */
} CopyJob;

static void
copy_worker (void *p, int ith, int nth)
{
  CopyJob *job = p;
  int a = (int) ((int64_t) job->n_items * ith / nth);
  int b = (int) ((int64_t) job->n_items * (ith + 1) / nth), i;

  for (i = a; i < b; i++)
    {
      const BlnKvBatchItem *it = &job->items[i];

      if (it->logits != NULL && !job->kept[i])
        memcpy (it->logits, job->logits + job->src_row[i] * job->n_vocab,
                (size_t) (it->all_logits ? it->n : 1) * job->n_vocab * sizeof (float));
    }
}

#if BALEEN_HAVE_CUDA
/* The compact records of the kept rows (slots in item order), one launch. */
static gboolean
compact_records (BlnKvCache *kv, const BlnKvBatchItem *items, int n_items,
                 const gboolean *kept, int n_kept, GError **error)
{
  g_autofree float *temps = g_new (float, n_kept);
  g_autofree int32_t *hist_off = g_new (int32_t, n_kept + 1);
  g_autoptr (GArray) hist = g_array_new (FALSE, FALSE, sizeof (int32_t));
  int i, slot = 0, k = 1;
  gboolean any_hist = FALSE;

  kv->cmp_slot = g_new (int, n_items);
  kv->cmp_n_items = n_items;
  kv->cmp_rows = g_renew (BlnCompactRow, kv->cmp_rows, n_kept);
  for (i = 0; i < n_items; i++)
    {
      const BlnKvCompactAsk *a = items[i].compact;

      kv->cmp_slot[i] = kept[i] ? slot : -1;
      if (!kept[i])
        continue;
      temps[slot] = a->temperature;
      hist_off[slot] = (int32_t) hist->len;
      if (a->hist != NULL && a->n_hist > 0)
        {
          g_array_append_vals (hist, a->hist, (guint) a->n_hist);
          any_hist = TRUE;
        }
      k = MAX (k, a->k);
      slot++;
    }
  hist_off[slot] = (int32_t) hist->len;
  if (!bln_cuda_batch_compact (kv->gpu, n_kept, k, temps, any_hist ? hist_off : NULL,
                               (const int32_t *) (void *) hist->data, kv->cmp_rows, error))
    {
      g_clear_pointer (&kv->cmp_slot, g_free);
      kv->cmp_n_items = 0;
      return FALSE;
    }
  return TRUE;
}
#endif

gboolean
bln_kv_compact_row (BlnKvCache *kv, int item, BlnCompactRow *row)
{
  g_return_val_if_fail (kv != NULL && row != NULL, FALSE);
  if (kv->cmp_slot == NULL || item < 0 || item >= kv->cmp_n_items || kv->cmp_slot[item] < 0)
    return FALSE;
  *row = kv->cmp_rows[kv->cmp_slot[item]];
  return TRUE;
}

gboolean
bln_kv_fetch_logits (BlnKvCache *kv, int item, float *dst, GError **error)
{
  g_return_val_if_fail (kv != NULL && dst != NULL, FALSE);
  if (kv->cmp_slot == NULL || item < 0 || item >= kv->cmp_n_items || kv->cmp_slot[item] < 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "item %d kept no logits row", item);
      return FALSE;
    }
#if BALEEN_HAVE_CUDA
  return bln_cuda_batch_fetch_kept (kv->gpu, kv->cmp_slot[item], dst, error);
#else
  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "this build has no CUDA backend");
  return FALSE;
#endif
}

gboolean
bln_kv_eval (BlnKvCache *kv, const BlnKvBatchItem *items, int n_items, GError **error)
{
  const BlnHParams *hp = bln_model_hparams (kv->model);
  int n_vocab = hp->n_vocab, n_tok = 0, n_out = 0, max_len = 0, i, j, t;
  g_autofree int32_t *ids = NULL, *pos = NULL, *seqi = NULL, *rows = NULL;
  g_autofree BlnKvView *views = NULL;
  g_autofree float *own_logits = NULL;
  float *logits = NULL;    /* own_logits, or the GPU's pinned staging rows */
  g_autofree gboolean *kept = NULL, *keep = NULL;
  int n_kept = 0;
  BlnBatch b = { 0 };

  g_return_val_if_fail (kv != NULL && (items != NULL || n_items == 0), FALSE);

  if (n_items <= 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "an empty batch");
      return FALSE;
    }
  for (i = 0; i < n_items; i++)
    {
      const BlnKvBatchItem *it = &items[i];

      if (it->seq == NULL || it->seq->kv != kv || it->n <= 0 || it->ids == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "batch item %d has no tokens or a sequence of another cache", i);
          return FALSE;
        }
      if (it->n > G_MAXINT / 2 - n_tok
          || it->n > G_MAXINT / 2 - (int) it->seq->tokens->len)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "batch too large");
          return FALSE;
        }
      for (j = 0; j < i; j++)
        if (items[j].seq == it->seq)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                         "a sequence appears twice in one batch");
            return FALSE;
          }
      for (t = 0; t < it->n; t++)
        if (it->ids[t] < 0 || it->ids[t] >= n_vocab)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                         "token id %d is outside the vocabulary (0..%d)", it->ids[t],
                         n_vocab - 1);
            return FALSE;
          }
      n_tok += it->n;
      if (it->logits != NULL)
        n_out += it->all_logits ? it->n : 1;
      max_len = MAX (max_len, (int) it->seq->tokens->len + it->n);
    }
  for (i = 0; i < n_items; i++)
    if (!bln_kv_seq_reserve (items[i].seq, items[i].n))
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                     "the KV cache is full (%d blocks of %d tokens)", kv->n_blocks,
                     kv->block_size);
        return FALSE;
      }

  ids = g_try_new (int32_t, n_tok);
  pos = g_try_new (int32_t, n_tok);
  seqi = g_try_new (int32_t, n_tok);
  rows = g_try_new (int32_t, MAX (n_out, 1));
  views = g_try_new (BlnKvView, n_items);
  kept = g_new0 (gboolean, n_items);
  keep = g_new0 (gboolean, MAX (n_out, 1));
  g_clear_pointer (&kv->cmp_slot, g_free);
  kv->cmp_n_items = 0;
#if BALEEN_HAVE_CUDA
  if (kv->gpu != NULL && n_out > 0)
    logits = bln_cuda_batch_logits_buffer (kv->gpu, (size_t) n_out * n_vocab);
#endif
  if (logits == NULL && n_out > 0)
    logits = own_logits = g_try_new (float, (size_t) n_out * n_vocab);
  if (!ids || !pos || !seqi || !rows || !views || (n_out > 0 && !logits))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for a batch of %d tokens",
                   n_tok);
      return FALSE;
    }
  n_tok = n_out = 0;
  for (i = 0; i < n_items; i++)
    {
      const BlnKvBatchItem *it = &items[i];
      int len = (int) it->seq->tokens->len;

      views[i].k = kv->k;
      views[i].v = kv->v;
      views[i].k8 = kv->k8;
      views[i].v8 = kv->v8;
      views[i].ks = kv->ks;
      views[i].vs = kv->vs;
      views[i].gk = kv->gk;
      views[i].gv = kv->gv;
      views[i].blocks = (const int32_t *) it->seq->table->data;
      views[i].block_size = kv->block_size;
      for (t = 0; t < it->n; t++)
        {
          ids[n_tok] = it->ids[t];
          pos[n_tok] = len + t;
          seqi[n_tok] = i;
          if (it->logits != NULL && (it->all_logits || t == it->n - 1))
            {
              /* the GPU keeps a compact-sampling row on the device */
              kept[i] = kv->gpu != NULL && it->compact != NULL && !it->all_logits;
              keep[n_out] = kept[i];
              n_kept += kept[i];
              rows[n_out++] = n_tok;
            }
          n_tok++;
        }
    }
  b.n_tokens = n_tok;
  b.ids = ids;
  b.pos = pos;
  b.seq = seqi;
  b.kv = views;
  b.n_seqs = n_items;
  b.max_len = max_len;
  b.out_rows = rows;
  b.n_out = n_out;
  b.logits = logits;
  b.window = kv->window;
  b.keep = n_kept > 0 ? keep : NULL;
#if BALEEN_HAVE_CUDA
  if (kv->gpu != NULL)
    {
      if (!bln_cuda_batch_forward (kv->gpu, &b, error))
        return FALSE;
      if (n_kept > 0 && !compact_records (kv, items, n_items, kept, n_kept, error))
        return FALSE;
    }
  else
#endif
  if (!bln_model_forward_batch (kv->ws, &b, error))
    return FALSE;

  if (kv->gpu != NULL && kv->pool != NULL && n_items >= 4 && n_out > 0
      && bln_pool_n_threads (kv->pool) > 1)
    {
      g_autofree size_t *src_row = g_new (size_t, n_items);
      CopyJob job = { items, src_row, logits, n_items, n_vocab, kept };
      size_t r = 0;

      for (i = 0; i < n_items; i++)
        {
          src_row[i] = r;
          if (items[i].logits != NULL)
            r += items[i].all_logits ? (size_t) items[i].n : 1;
        }
      bln_pool_run (kv->pool, copy_worker, &job);
    }
  else
    {
      n_out = 0;
      for (i = 0; i < n_items; i++)
        {
          const BlnKvBatchItem *it = &items[i];

          if (it->logits != NULL)
            {
              int k = it->all_logits ? it->n : 1;
              if (!kept[i])
                memcpy (it->logits, logits + (size_t) n_out * n_vocab,
                        (size_t) k * n_vocab * sizeof (float));
              n_out += k;
            }
        }
    }
  for (i = 0; i < n_items; i++)
    {
      g_array_append_vals (items[i].seq->tokens, items[i].ids, items[i].n);
      register_full_blocks (items[i].seq);
      release_before_window (items[i].seq);
    }
  return TRUE;
}
