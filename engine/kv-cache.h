/* kv-cache.h — a paged KV cache shared by many sequences, with prefix reuse,
 * and the batched forward pass over it (CPU backend).
 *
 * Pool. One allocation, made once from a budget in bytes, cut into blocks of
 * @block_size token positions (16 by default). A block holds, for each of its
 * positions and each layer, the key and value rows of that token (llama and
 * qwen2: n_head_kv × head_dim floats each; deepseek2: the MLA latent and the
 * rotated positional key only, kv_lora_rank + qk_rope_dim floats, no V).
 * Each sequence (BlnKvSeq) has a block table: the block holding its positions
 * [i × block_size, (i + 1) × block_size) is table[i].
 *
 * Prefix sharing. When a sequence fills a block, the block is registered in a
 * hash table under a chain hash: h_i = H(h_{i-1}, the block's token ids), with
 * h_{-1} a fixed seed, so the hash names the whole prefix up to the block's
 * end, not just its own tokens. A new sequence whose prompt starts with the
 * same tokens walks the chain (bln_kv_seq_match_prefix) and takes references
 * to those blocks instead of computing them again. A full block is never
 * written again (a sequence only writes positions past its length, which lie
 * in its private last block), so sharing needs no copy-on-write. Each hit is
 * checked against the stored parent hash and token ids, so a wrong hit would
 * need two different prefixes with equal 64-bit chain hashes.
 *
 * Reference counts and eviction. A block is in one of three states: in use
 * (referenced by one or more sequences), cached (unreferenced but registered:
 * a prefix someone may ask for again), or free. Releasing a sequence drops its
 * references: registered blocks become cached and join the tail of an LRU
 * list, private partial blocks become free. Allocation takes a free block
 * first, then evicts the least recently released cached block (removing it
 * from the hash table). When neither exists, allocation fails and the caller
 * (the scheduler) preempts a sequence.
 *
 * Threads: a BlnKvCache and its sequences are used from one thread at a time
 * (the scheduler's thread); statistics are copied out by that thread.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "model.h"
#include "sampler.h"

G_BEGIN_DECLS

#define BLN_KV_BLOCK_SIZE_DEFAULT 16

typedef struct _BlnKvCache BlnKvCache;
typedef struct _BlnKvSeq BlnKvSeq;

typedef struct {
  int block_size;          /* token positions per block */
  int n_blocks;            /* blocks in the pool */
  int blocks_used;         /* referenced by at least one sequence */
  int blocks_cached;       /* unreferenced, holding a registered prefix (evictable) */
  int blocks_free;         /* neither */
  size_t bytes;            /* memory the pool takes */
  guint64 lookup_tokens;   /* tokens offered to bln_kv_seq_match_prefix() */
  guint64 hit_tokens;      /* of those, tokens found in the cache (misses: the rest) */
  guint64 evictions;       /* cached blocks evicted to make room */
  guint64 expired;         /* cached blocks freed by the TTL (bln_kv_cache_expire()) */
} BlnKvStats;

/* A monotonic clock in microseconds (g_get_monotonic_time() by default). */
typedef gint64 (*BlnKvClockFn) (gpointer data);

/* A pool for @model of as many blocks of @block_size positions (0: the
 * default) as fit in @budget_bytes, with a workspace for batched evaluation
 * on @pool (borrowed; both must outlive the cache). Fails with
 * BLN_ERROR_INVALID for a block size outside 1..4096 or a model on which the
 * batched CPU path does not run, BLN_ERROR_NOMEM when the budget does not
 * hold two blocks or the allocation fails. */
BlnKvCache *bln_kv_cache_new (BlnModel *model, BlnPool *pool, size_t budget_bytes,
                              int block_size, GError **error);

/* bln_kv_cache_new on the device @opts names (NULL: the CPU, F32 rows).
 * On the CPU opts->kv_bits 8 asks for the 8-bit pool: each K/V row is
 * stored as int8 values with one float scale per group of up to 32 values
 * within a head (the largest divisor of the head dim that is at most 32),
 * quantised as engine/quant.c's Q8_0 when a token's rows are written and
 * dequantised inside the attention loops; a block takes about 28% of the
 * F32 pool's bytes for head dims that are multiples of 32 (1 + 4/32 bytes
 * a value). It runs llama and qwen2 (BLN_ERROR_UNSUPPORTED for other
 * architectures, deepseek2's MLA latent included). opts->kv_bits 16 or 32
 * (or 0) give F32 rows on the CPU; other values fail with
 * BLN_ERROR_INVALID. For
 * BLN_DEVICE_CUDA the pool lives in GPU opts->gpu's memory, one allocation
 * of opts->kv_bits (16: F16, half the CPU pool's bytes per block; or 32)
 * bits per cached value, laid out in the same blocks and rows; block tables,
 * prefix sharing and the LRU stay on the host as on the CPU, and
 * bln_kv_eval() runs the batched CUDA forward pass
 * (engine/cuda/forward-batch.h), copying the wanted logits back as floats;
 * @pool may then be NULL. The budget counts the pool alone (the model's
 * weights and a workspace for 512-token chunks come on top). Fails as
 * bln_kv_cache_new, and with BLN_ERROR_UNSUPPORTED when this build has no
 * CUDA backend or the architecture has no batched GPU path yet (only llama
 * and qwen2 have), BLN_ERROR_BACKEND without a usable GPU, BLN_ERROR_NOMEM
 * when the pool does not fit on the device. */
BlnKvCache *bln_kv_cache_new_with_options (BlnModel *model, BlnPool *pool, size_t budget_bytes,
                                           int block_size, const BlnContextOptions *opts,
                                           GError **error);

/* Bits per cached value: 32 (F32 rows, the CPU default), 8 (the 8-bit CPU
 * pool) or, on the GPU, 16 or 32. */
int bln_kv_cache_kv_bits (const BlnKvCache *kv);

/* Where the cache's pool lives (and its batches run). */
BlnDevice bln_kv_cache_device (const BlnKvCache *kv);

/* Frees the pool. Every sequence must have been freed first (a live one is a
 * programming error, reported with g_critical and leaked). NULL is ignored. */
void bln_kv_cache_free (BlnKvCache *kv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnKvCache, bln_kv_cache_free)

BlnModel *bln_kv_cache_model (const BlnKvCache *kv);
int bln_kv_cache_block_size (const BlnKvCache *kv);
int bln_kv_cache_n_blocks (const BlnKvCache *kv);
/* Bytes one block takes (all layers, K and V; on the GPU at its element
 * size). */
size_t bln_kv_cache_block_bytes (const BlnKvCache *kv);
/* Bytes a block of @block_size positions (0: the default) would take for
 * @model, to size a budget before making the cache. */
size_t bln_kv_cache_block_bytes_for (const BlnModel *model, int block_size);
/* As bln_kv_cache_block_bytes_for() for a CPU pool of @kv_bits (8: int8
 * rows with their scales; anything else: F32). 0 when the 8-bit cache does
 * not take @model (not llama / qwen2, or head dims out of range). */
size_t bln_kv_cache_block_bytes_for_bits (const BlnModel *model, int block_size, int kv_bits);
/* Blocks that bln_kv_seq_reserve() could obtain now (free + cached). */
int bln_kv_cache_n_available (const BlnKvCache *kv);
/* Fills @stats with the current counts. */
void bln_kv_cache_get_stats (const BlnKvCache *kv, BlnKvStats *stats);
/* Evicts every cached (unreferenced) block: they become free and no prefix
 * matches them any more. Blocks in use are untouched (a prefix a running
 * sequence holds stays registered). Returns the number of blocks freed. */
int bln_kv_cache_drop_cached (BlnKvCache *kv);

/* Session TTL: a cached (unreferenced) block not used for @ttl_us
 * microseconds or more expires at the next bln_kv_cache_expire(). 0 (the
 * default) means never. Time is measured from the block's last release,
 * so a prefix that a new sequence takes again starts a new period. */
void bln_kv_cache_set_ttl (BlnKvCache *kv, gint64 ttl_us);
/* Replaces the clock used for the TTL (NULL: the default monotonic clock);
 * for tests. @clock must never go backwards. */
void bln_kv_cache_set_clock (BlnKvCache *kv, BlnKvClockFn clock, gpointer data);
/* The cache's clock now, in microseconds. */
gint64 bln_kv_cache_now (const BlnKvCache *kv);
/* Frees every cached block whose TTL has run out (nothing when the TTL is
 * 0); they no longer match any prefix. Returns the number freed. */
int bln_kv_cache_expire (BlnKvCache *kv);
/* When (on the cache's clock) the next cached block expires, or -1 when none
 * will (no TTL, or nothing cached). */
gint64 bln_kv_cache_next_expiry (const BlnKvCache *kv);

/* Prefix reuse policy. With @enabled FALSE no block is registered and
 * bln_kv_seq_match_prefix() finds nothing and counts no lookup (full blocks
 * become free when their sequence releases them); switching it off also
 * drops what is cached. With @enabled TRUE, @max_cached (> 0) bounds the
 * cached (unreferenced) blocks: a release beyond it evicts the least
 * recently released ones at once; 0 means no bound but the pool. The
 * default is enabled, no bound. */
void bln_kv_cache_set_prefix_cache (BlnKvCache *kv, gboolean enabled, int max_cached);

/* Sets the sliding attention window of every batch on @kv (tokens; 0: off,
 * the default): the token at position p attends to positions (p - @window,
 * p] only, as BlnContextOptions.sliding_window says, on the CPU and on a GPU
 * pool alike (kernels/paged.h). Memory follows: after
 * each bln_kv_eval() a sequence gives back the blocks that lie wholly before
 * the window of its next position (its block table keeps their slots, so
 * positions and bln_kv_seq_n_blocks() count them still; pool statistics do
 * not). A block shared with another sequence stays theirs; a registered one
 * is released as at bln_kv_seq_free() (cached for prefix reuse, evictable).
 * FALSE, with the window unchanged, as bln_sliding_window_check() fails (for
 * deepseek2, for a negative window), or with BLN_ERROR_INVALID
 * when it would change while sequences exist. */
gboolean bln_kv_cache_set_sliding_window (BlnKvCache *kv, int window, GError **error);
/* The window set above (0: off). */
int bln_kv_cache_sliding_window (const BlnKvCache *kv);

/* A new, empty sequence on @kv. Free it with bln_kv_seq_free(). */
BlnKvSeq *bln_kv_seq_new (BlnKvCache *kv);
/* Releases the sequence's blocks (full registered ones stay cached) and
 * frees it. NULL is ignored. */
void bln_kv_seq_free (BlnKvSeq *seq);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnKvSeq, bln_kv_seq_free)

/* Tokens whose keys and values the sequence holds (positions 0..len-1). */
int bln_kv_seq_length (const BlnKvSeq *seq);
/* The token ids of those positions (bln_kv_seq_length() of them), owned by
 * the sequence, valid until it changes. */
const int32_t *bln_kv_seq_tokens (const BlnKvSeq *seq);
/* Entries of the sequence's block table: the blocks it references, plus the
 * slots of those given back to a sliding window. */
int bln_kv_seq_n_blocks (const BlnKvSeq *seq);

/* Releases every block of the sequence and empties it (length 0); used to
 * preempt a sequence, and before reusing it for another prompt. */
void bln_kv_seq_reset (BlnKvSeq *seq);

/* For an empty sequence: attaches the longest chain of cached full blocks
 * that equals a prefix of @ids[0..n) and returns the number of tokens it
 * covers (a multiple of the block size, at most @n; 0 when the sequence is
 * not empty). The caller passes one token fewer than its prompt so that at
 * least the last prompt token is computed and yields logits. Counts the
 * lookup in the statistics. */
int bln_kv_seq_match_prefix (BlnKvSeq *seq, const int32_t *ids, int n);

/* Blocks the sequence would need to allocate to grow by @n tokens. */
int bln_kv_seq_blocks_needed (const BlnKvSeq *seq, int n);
/* Makes room for @n more tokens, allocating blocks (and evicting cached
 * ones) as needed. All or nothing: FALSE, with nothing allocated, when the
 * pool has too few blocks; the caller frees or preempts something. */
gboolean bln_kv_seq_reserve (BlnKvSeq *seq, int n);

/* What an item asks of its compact sampling record (see below). */
typedef struct {
  int k;                    /* record entries (bln_sampler_compact_k()) */
  float temperature;        /* the draw's temperature (<= 0: greedy) */
  const int32_t *hist;      /* the penalty history's distinct ids (bln_sampler_history()
                             * order), when the penalties are on; else NULL */
  int n_hist;
} BlnKvCompactAsk;

/* One sequence's part of a batch: @n (> 0) tokens @ids appended at the
 * sequence's next positions. When @logits is not NULL it receives the logits
 * of the last of them (n_vocab floats), or of each (n × n_vocab) when
 * @all_logits is TRUE. @compact (may be NULL): on a
 * GPU cache, for an item with @logits and not @all_logits, the row stays on
 * the device and a compact sampling record is made instead of the copy to
 * @logits (docs/GPU-SAMPLING.md): bln_kv_compact_row() gives it after the
 * step, bln_kv_fetch_logits() the full row when the record cannot decide.
 * On a CPU cache it is ignored (the logits are copied as usual). */
typedef struct {
  BlnKvSeq *seq;
  const int32_t *ids;
  int n;
  float *logits;
  gboolean all_logits;
  const BlnKvCompactAsk *compact;
} BlnKvBatchItem;

/* Runs one forward pass over the tokens of all @items at once (the weight
 * matmuls read each weight once for the whole batch; attention runs per
 * token over its own sequence's blocks), stores their keys and values, and
 * appends the tokens to their sequences; blocks that become full are
 * registered for prefix reuse. Room is reserved as by bln_kv_seq_reserve()
 * (a no-op when the caller reserved already). Fails, with every sequence's
 * length unchanged, with BLN_ERROR_INVALID for an empty item, an id outside
 * the vocabulary or a sequence listed twice, BLN_ERROR_NOMEM when the pool
 * has no room (BLN_ERROR_NOMEM also for scratch memory), or the backend's
 * error. */
gboolean bln_kv_eval (BlnKvCache *kv, const BlnKvBatchItem *items, int n_items,
                      GError **error);

/* After bln_kv_eval: TRUE when item @item got a compact record, *@row then
 * pointing into buffers owned by @kv (valid until the next bln_kv_eval);
 * FALSE when it did not (no ask, or a CPU cache: its logits are in
 * item->logits). */
gboolean bln_kv_compact_row (BlnKvCache *kv, int item, BlnCompactRow *row);

/* After bln_kv_eval: copies the full logits row of item @item, which got a
 * compact record, to @dst (n_vocab floats). FALSE with @error when it has
 * none (BLN_ERROR_INVALID) or on a CUDA failure. */
gboolean bln_kv_fetch_logits (BlnKvCache *kv, int item, float *dst, GError **error);

G_END_DECLS
