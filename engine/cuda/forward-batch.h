/* cuda/forward-batch.h — the batched forward pass on the GPU over a paged
 * KV pool: what bln_kv_eval() (engine/kv-cache.c) runs for a cache made on a
 * CUDA device.
 *
 * A BlnCudaBatch owns the pool's device memory (K rows, then V rows, in one
 * cudaMalloc'd buffer, laid out as kernels/paged.h says: the same blocks and
 * rows as the CPU pool) and a workspace: a stream, a cuBLAS handle and
 * activation scratch for up to bln_cuda_batch_rows() tokens (a small CUDA
 * context of engine/cuda/forward.c, whose helpers it reuses). The block
 * bookkeeping (tables, prefix sharing, LRU) stays on the host in
 * kv-cache.c; each step uploads the tables of the sequences it touches.
 *
 * A step (bln_cuda_batch_forward) runs the tokens of a BlnBatch in chunks of
 * at most bln_cuda_batch_rows() tokens: embedding rows (on the host), per
 * layer RMSNorm, the q / k / v projections (matvec kernels for up to 8
 * tokens, F16 tensor-core GEMMs beyond), biases and RoPE at each token's own
 * position with its K / V written to its paged rows, paged attention (each
 * token over positions 0..pos of its own sequence, split over the sequence
 * with an online softmax), output projection and residual, SwiGLU, and for
 * the rows whose logits are wanted the final norm and the output projection,
 * copied back as floats.
 *
 * llama and qwen2 only: deepseek2 (MLA) is BLN_ERROR_UNSUPPORTED for now.
 * Compiled only in builds with the CUDA backend.
 */
#pragma once

#include <glib.h>
#include "model-private.h"
#include "sampler.h"

G_BEGIN_DECLS

typedef struct _BlnCudaBatch BlnCudaBatch;

/* Makes the device pool of @n_blocks blocks of @block_size positions for
 * @model on GPU opts->gpu, with opts->kv_bits (16 or 32) bits per cached
 * value, and the workspace (uploading the model's weights if no CUDA
 * context did yet). Fails with BLN_ERROR_UNSUPPORTED for an architecture
 * other than llama / qwen2 (or head sizes beyond the kernels),
 * BLN_ERROR_INVALID for bad sizes, BLN_ERROR_BACKEND without a usable GPU,
 * BLN_ERROR_NOMEM when the pool or the workspace does not fit. */
BlnCudaBatch *bln_cuda_batch_new (BlnModel *model, int n_blocks, int block_size,
                                  const BlnContextOptions *opts, GError **error);

/* Frees the pool and workspace (after the stream drained). NULL is ignored. */
void bln_cuda_batch_free (BlnCudaBatch *b);

/* Bytes of one cached value (2 or 4). */
size_t bln_cuda_batch_elem_bytes (const BlnCudaBatch *b);

/* Tokens per chunk of a step (the workspace's rows). */
int bln_cuda_batch_rows (const BlnCudaBatch *b);

/* Pinned host memory for at least @n_floats logits, owned by @b and valid
 * until the next call (the device copies into it directly, which pageable
 * memory makes several times slower); NULL when it cannot be allocated (the
 * caller then uses ordinary memory). */
float *bln_cuda_batch_logits_buffer (BlnCudaBatch *b, size_t n_floats);

/* One forward pass of @batch (see BlnBatch in model-private.h; the views'
 * k / v pointers are ignored, their block tables index this pool). Returns
 * when the logits are in batch->logits. The caller (bln_kv_eval) has
 * checked the ids and made room in every table. FALSE with @error
 * (BLN_ERROR_BACKEND for a CUDA failure, BLN_ERROR_NOMEM for scratch,
 * BLN_ERROR_INVALID for a batch that does not fit the pool); the cached
 * rows of the batch's positions are then unspecified. */
gboolean bln_cuda_batch_forward (BlnCudaBatch *b, const BlnBatch *batch, GError **error);

/* Compact sampling (docs/GPU-SAMPLING.md): after a bln_cuda_batch_forward
 * whose batch->keep kept @n_rows rows on the device, makes their compact
 * records with kernels/sample-compact.h in one launch and copies them back
 * (one copy, then waits). Row r has temperature @temps[r] and history ids
 * @hist_ids[hist_off[r] .. hist_off[r+1]) (@hist_off NULL: no histories);
 * @k is K (a power of two <= BLN_COMPACT_MAX_K). @rows[r] gets pointers into
 * buffers owned by @b, valid until the next forward or compact call.
 * FALSE with @error (BLN_ERROR_INVALID for bad sizes, BLN_ERROR_BACKEND /
 * BLN_ERROR_NOMEM from CUDA). */
gboolean bln_cuda_batch_compact (BlnCudaBatch *b, int n_rows, int k, const float *temps,
                                 const int32_t *hist_off, const int32_t *hist_ids,
                                 BlnCompactRow *rows, GError **error);

/* Copies kept row @slot of the last forward (n_vocab floats) to @dst and
 * waits. FALSE with @error for a slot out of range or a CUDA failure. */
gboolean bln_cuda_batch_fetch_kept (BlnCudaBatch *b, int slot, float *dst, GError **error);

G_END_DECLS
