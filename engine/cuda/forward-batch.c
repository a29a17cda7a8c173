/* cuda/forward-batch.c — batched steps over the paged device pool (see
 * forward-batch.h). The projections, norms and SwiGLU are forward.c's
 * (forward-private.h); what differs from a single context is where K and V
 * go and come from: kernels/paged.h, per token position and block table.
 */
#include <string.h>
#include <cublas_v2.h>

#include "bln-error.h"
#include "cpu/cpu.h"
#include "cuda.h"
#include "flash.h"
#include "forward-batch.h"
#include "forward-private.h"
#include "kernels.h"
#include "ops.h"
#include "paged.h"
#include "sample-compact.h"

/* The workspace is a CUDA context of this many positions: the scratch is
 * sized for chunks of up to this many tokens (fewer when memory is short,
 * see bln_cuda_plan). Its own KV cache is never used. */
#define WORKSPACE_CTX 512
/* Rows of logits per output projection (c->logits holds this many); with
 * the F16 tensor-core kernel, up to MMF_LOGIT_ROWS into b->logits (one pass
 * over the output matrix instead of one per 8 rows). */
#define LOGIT_ROWS BLN_CUDA_MATVEC_MAX_TOK
#define MMF_LOGIT_ROWS 64

struct _BlnCudaBatch {
  BlnModel *model;
  BlnCudaCtx *c;            /* workspace: stream, cuBLAS, scratch, pinned host rows */
  BlnCudaBuffer *pool;      /* K rows, then V rows */
  void *k_pool, *v_pool;
  int n_blocks, block_size;
  int kv_f16;
  size_t elem;
  BlnCudaBuffer *meta;      /* int32: positions, table offsets, logit rows, tables */
  BlnCudaBuffer *part;      /* attention split scratch */
  BlnCudaBuffer *logits;    /* logits of up to MMF_LOGIT_ROWS rows (tensor-core path) */
  float *h_logits;          /* pinned staging for the logits (h_logits_cap floats) */
  size_t h_logits_cap;
  /* compact sampling: the rows a step kept on the device, the kernel's
   * inputs, outputs and scratch, and the pinned copy of the outputs */
  BlnCudaBuffer *kept;
  int n_kept;
  BlnCudaBuffer *cmp_in, *cmp_out, *cmp_scratch;
  void *h_cmp;
  size_t h_cmp_cap;
  /* BALEEN_BATCH_PROFILE=1: where a step's time goes, printed on free */
  gboolean profile;
  cudaEvent_t ev[3];
  guint64 prof_steps, prof_tokens;
  double prof_host_ms, prof_layers_ms, prof_logits_ms, prof_total_ms;
};

static size_t
align256 (size_t n)
{
  return (n + 255) & ~(size_t) 255;
}

BlnCudaBatch *
bln_cuda_batch_new (BlnModel *model, int n_blocks, int block_size, const BlnContextOptions *opts,
                    GError **error)
{
  const BlnHParams *hp = &model->hp;
  BlnCudaBatch *b;
  size_t elem, k_bytes, v_bytes;

  if (hp->arch != BLN_ARCH_LLAMA && hp->arch != BLN_ARCH_QWEN2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "batched decoding on the GPU runs llama and qwen2 models, not %s yet",
                   model->arch_name ? model->arch_name : "this architecture");
      return NULL;
    }
  if (opts->kv_bits != 16 && opts->kv_bits != 32)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "KV cache bits must be 16 or 32, not %d",
                   opts->kv_bits);
      return NULL;
    }
  if (n_blocks < 1 || block_size < 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "a KV pool of %d blocks of %d positions",
                   n_blocks, block_size);
      return NULL;
    }
  elem = (size_t) opts->kv_bits / 8;
  k_bytes = align256 ((size_t) n_blocks * hp->n_layer * block_size * hp->n_head_kv
                      * hp->head_dim_k * elem);
  v_bytes = (size_t) n_blocks * hp->n_layer * block_size * hp->n_head_kv * hp->head_dim_v * elem;

  b = g_new0 (BlnCudaBatch, 1);
  b->model = model;
  b->n_blocks = n_blocks;
  b->block_size = block_size;
  b->kv_f16 = opts->kv_bits == 16;
  b->elem = elem;
  /* the workspace first: it checks the GPU and the architecture's shapes
   * and uploads the weights; the pool takes what the budget asks of the
   * rest */
  b->c = bln_cuda_ctx_new (model, WORKSPACE_CTX, opts, error);
  if (b->c == NULL)
    {
      g_free (b);
      return NULL;
    }
  b->pool = bln_cuda_buffer_new (k_bytes + v_bytes, error);
  if (b->pool == NULL)
    {
      bln_cuda_batch_free (b);
      return NULL;
    }
  b->k_pool = b->pool->ptr;
  b->v_pool = (uint8_t *) b->pool->ptr + k_bytes;
  if (g_strcmp0 (g_getenv ("BALEEN_BATCH_PROFILE"), "1") == 0)
    {
      int i;

      b->profile = TRUE;
      for (i = 0; i < 3; i++)
        if (cudaEventCreate (&b->ev[i]) != cudaSuccess)
          {
            (void) cudaGetLastError ();
            b->profile = FALSE;
          }
    }
  return b;
}

void
bln_cuda_batch_free (BlnCudaBatch *b)
{
  if (b == NULL)
    return;
  if (b->c != NULL)
    {
      (void) cudaSetDevice (b->c->device);
      (void) cudaStreamSynchronize (b->c->stream);
    }
  if (b->profile && b->prof_steps > 0)
    g_printerr ("baleen: batched GPU decode steps: %" G_GUINT64_FORMAT " steps, %" G_GUINT64_FORMAT
                " tokens; per step %.3f ms in all: host (tables, embeddings, launches, copies "
                "out) %.3f ms, GPU layers %.3f ms, GPU logits %.3f ms\n", b->prof_steps,
                b->prof_tokens, b->prof_total_ms / b->prof_steps,
                b->prof_host_ms / b->prof_steps, b->prof_layers_ms / b->prof_steps,
                b->prof_logits_ms / b->prof_steps);
  if (b->profile)
    for (int i = 0; i < 3; i++)
      if (b->ev[i] != NULL)
        (void) cudaEventDestroy (b->ev[i]);
  bln_cuda_buffer_free (b->pool);
  bln_cuda_buffer_free (b->meta);
  bln_cuda_buffer_free (b->part);
  bln_cuda_buffer_free (b->logits);
  if (b->h_logits != NULL)
    (void) cudaFreeHost (b->h_logits);
  bln_cuda_buffer_free (b->kept);
  bln_cuda_buffer_free (b->cmp_in);
  bln_cuda_buffer_free (b->cmp_out);
  bln_cuda_buffer_free (b->cmp_scratch);
  if (b->h_cmp != NULL)
    (void) cudaFreeHost (b->h_cmp);
  bln_cuda_ctx_free (b->c);
  (void) cudaGetLastError ();
  g_free (b);
}

size_t
bln_cuda_batch_elem_bytes (const BlnCudaBatch *b)
{
  return b->elem;
}

int
bln_cuda_batch_rows (const BlnCudaBatch *b)
{
  return b->c->sp.rows;
}

float *
bln_cuda_batch_logits_buffer (BlnCudaBatch *b, size_t n_floats)
{
  size_t cap;

  if (b->h_logits != NULL && b->h_logits_cap >= n_floats)
    return b->h_logits;
  /* no copy is in flight between steps: the last one synchronised */
  if (b->h_logits != NULL)
    (void) cudaFreeHost (b->h_logits);
  b->h_logits = NULL;
  b->h_logits_cap = 0;
  cap = MAX (n_floats + n_floats / 2, (size_t) 1 << 16);
  if (cudaSetDevice (b->c->device) != cudaSuccess
      || cudaHostAlloc ((void **) &b->h_logits, cap * sizeof (float), cudaHostAllocPortable)
           != cudaSuccess)
    {
      (void) cudaGetLastError ();
      b->h_logits = NULL;
      return NULL;
    }
  b->h_logits_cap = cap;
  return b->h_logits;
}

/* Makes *@buf hold at least @bytes (contents not kept). The stream is
 * drained before an old buffer is freed. */
static gboolean
ensure_buffer (BlnCudaBatch *b, BlnCudaBuffer **buf, size_t bytes, GError **error)
{
  if (*buf != NULL && (*buf)->size >= bytes)
    return TRUE;
  if (*buf != NULL)
    {
      if (!BLN_CUDA_CHECK (cudaStreamSynchronize (b->c->stream), error))
        return FALSE;
      g_clear_pointer (buf, bln_cuda_buffer_free);
    }
  bytes = align256 (MAX (bytes + bytes / 2, (size_t) 4096));
  *buf = bln_cuda_buffer_new (bytes, error);
  return *buf != NULL;
}

/* Quantised weights go through the matvec kernels, 8 rows at a time, up to
 * this many rows: each slice reads the quantised matrix once, where the
 * GEMM path first expands it to F16 (writing and reading 2 bytes a value).
 * On an H200 with a 7B Q4_K_M model an 8-row matvec pass took about 7 ms
 * and the GEMM path about 10 ms whatever the rows up to 64, so two slices
 * is where they meet. */
#define SLICE_MAX_ROWS 16

/* y (+)= x · Wᵀ for @n rows of x (dense, n_in a row) into rows @ldy floats
 * apart (0: n_out), @flags as bln_kernels_matvec_ex's: from
 * bln_cuda_mmf_min() rows of a quantised weight of a type it has, the F16
 * tensor-core kernel (see bln_cuda_mmf_enabled); else up to 8 rows one
 * matvec; more rows of a quantised weight, the int8 MMQ when
 * BALEEN_CUDA_MMQ=1 asks for it (see bln_cuda_mmq_enabled); else, up to
 * SLICE_MAX_ROWS rows, matvecs of 8 rows; else forward.c's GEMM path
 * (accumulating through c->tmp, so then y must be dense rows of at most
 * n_embd values). */
static gboolean
project (BlnCudaCtx *c, const BlnCudaTensor *w, const float *x, int n, float *y, int ldy,
         int flags, GError **error)
{
  int n_in = (int) w->n_in, n_out = (int) w->n_out, r;
  gboolean plain = w->type == BLN_TYPE_F16 || w->type == BLN_TYPE_BF16
                   || w->type == BLN_TYPE_F32;

  if (ldy == 0)
    ldy = n_out;
  /* tensor-core products (read x in float: XQ_READY does not apply) */
  if (!plain && n >= bln_cuda_mmf_min () && bln_cuda_mmf_enabled (w, n))
    return KCHECK (bln_kernels_mmf ((int) w->type, w->payload->ptr,
                                    w->header ? w->header->ptr : NULL, n_in, n_out, x, n, y, ldy,
                                    flags & BLN_KERNELS_MATVEC_ACCUMULATE, c->stream), error);
  if (n <= BLN_CUDA_MATVEC_MAX_TOK)
    return bln_cuda_mv (c, w, x, n, y, ldy, flags, error);
  if (!plain && bln_cuda_mmq_enabled (w->type, n))
    return KCHECK (bln_kernels_mmq ((int) w->type, w->payload->ptr,
                                    w->header ? w->header->ptr : NULL, n_in, n_out, x, n, y, ldy,
                                    flags & BLN_KERNELS_MATVEC_ACCUMULATE, c->stream), error);
  if (!plain && n <= SLICE_MAX_ROWS)
    {
      for (r = 0; r < n; r += BLN_CUDA_MATVEC_MAX_TOK)
        if (!bln_cuda_mv (c, w, x + (size_t) r * n_in, MIN (BLN_CUDA_MATVEC_MAX_TOK, n - r),
                          y + (size_t) r * ldy, ldy, flags & ~BLN_KERNELS_MATVEC_XQ_READY,
                          error))
          return FALSE;
      return TRUE;
    }
  if (flags & BLN_KERNELS_MATVEC_ACCUMULATE)
    {
      if (ldy != n_out || n_out > c->model->hp.n_embd)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "accumulating into strided rows");
          return FALSE;
        }
      return bln_cuda_linear (c, w, NULL, x, n, c->tmp, 0, error)
             && KCHECK (bln_kernels_add (y, c->tmp, (size_t) n * n_out, c->stream), error);
    }
  return bln_cuda_linear (c, w, NULL, x, n, y, ldy, error);
}

/* RMSNorm of the chunk's rows of c->x into c->h; for up to 8 rows also
 * rounded for the matvecs: returns the matvec flag that says so (or 0), or
 * -1 with @error. */
static int
norm_rows (BlnCudaCtx *c, const float *w, int n, GError **error)
{
  const BlnHParams *hp = &c->model->hp;

  if (n <= BLN_CUDA_MATVEC_MAX_TOK)
    return bln_cuda_norm_for_matvec (c, w, n, error);
  return KCHECK (bln_kernels_rmsnorm (c->x, w, c->h, n, hp->n_embd, hp->norm_eps, c->stream),
                 error) ? 0 : -1;
}

/* A run of a chunk's rows that the flash prefill attention serves: rows
 * row .. row + len - 1 are one sequence's positions pos0 .., its block
 * table at d_tab + tab_off. */
typedef struct {
  int row, len, pos0, tab_off;
} FlashRun;

/* Rows of a long run (one sequence's consecutive positions, adjacent in the
 * batch) from which the flash kernel takes its attention: prompt chunks,
 * not decode tokens. */
#define FLASH_RUN_MIN 16

/* The decoder layers for the @n tokens of a chunk, whose residual rows are
 * in c->x: token t at position d_pos[t], its sequence's table at d_tab +
 * d_toff[t]; @max_len bounds every d_pos[t] + 1. The attention of rows 0 ..
 * n_paged - 1 runs as the paged attention, that of the @n_runs @runs (the
 * rest of the rows) as the flash prefill kernel over the pool. The
 * projections as
 * project() says (up to 8 tokens exactly forward.c's decode: norms and
 * SwiGLU rounding once for the matvecs that follow, residual adds in the
 * matvec epilogue). */
static gboolean
enqueue_layers (BlnCudaBatch *b, int n, const int32_t *d_pos, const int32_t *d_toff,
                const int32_t *d_tab, int max_len, int window, int n_paged,
                const FlashRun *runs, int n_runs, GError **error)
{
  BlnCudaCtx *c = b->c;
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  const BlnCudaModel *cm = c->cm;
  int H = hp->n_head, Hkv = hp->n_head_kv;
  int dk = hp->head_dim_k, dv = hp->head_dim_v, ff = hp->n_ff, il, i, fl;
  const int acc = BLN_KERNELS_MATVEC_ACCUMULATE;
  float *q = c->qkv, *k = c->qkv + (size_t) H * dk, *v = c->qkv + (size_t) (H + Hkv) * dk;
  int j;

  for (il = 0; il < hp->n_layer; il++)
    {
      const CudaLayer *L = &cm->layers[il];

      /* attention: norm, q / k / v, rope and store, paged attention, output
       * projection into the residual */
      if ((fl = norm_rows (c, L->attn_norm, n, error)) < 0)
        return FALSE;
      for (i = 0; i < L->n_qkv; i++)
        if (!project (c, L->qkv[i], c->h, n, c->qkv + L->qkv_col[i], c->qkv_ld, fl, error))
          return FALSE;
      if (!KCHECK (bln_kernels_paged_rope_store (q, k, v, L->bq, L->bk, L->bv, n, c->qkv_ld,
                                                 d_pos, d_toff, d_tab, H, Hkv, dk, dv,
                                                 hp->rope_dim, hp->rope_neox, cm->inv_freq,
                                                 m->rope_attn_factor, b->k_pool, b->v_pool,
                                                 b->kv_f16, hp->n_layer, il, b->block_size,
                                                 c->stream), error)
          || (n_paged > 0
              && !KCHECK (bln_kernels_paged_attn (q, c->qkv_ld, n_paged, d_pos, d_toff, d_tab,
                                                  max_len, H, Hkv, dk, dv, m->attn_scale,
                                                  b->k_pool, b->v_pool, b->kv_f16, hp->n_layer,
                                                  il, b->block_size, window, b->part->ptr,
                                                  b->part->size, c->att, c->stream),
                          error)))
        return FALSE;
      for (j = 0; j < n_runs; j++)
        if (!KCHECK (bln_kernels_flash_prefill_paged (q + (size_t) runs[j].row * c->qkv_ld,
                                                      c->qkv_ld, runs[j].len, runs[j].pos0, H,
                                                      Hkv, dk, m->attn_scale, b->k_pool,
                                                      b->v_pool, d_tab + runs[j].tab_off,
                                                      hp->n_layer, il, b->block_size,
                                                      c->att + (size_t) runs[j].row * H * dv,
                                                      c->stream), error))
          return FALSE;
      if (!project (c, L->wo, c->att, n, c->x, 0, acc, error)
          || (fl = norm_rows (c, L->ffn_norm, n, error)) < 0)
        return FALSE;

      /* gate and up: stacked, row t holds gate then up (strides 2 ff); else
       * n rows of gate, then n rows of up (strides ff); SwiGLU; the down
       * projection into the residual */
      {
        const float *g = c->gu, *u = c->gu + ff;
        int gs = 2 * ff, us = 2 * ff, dfl = acc;

        if (L->wgu != NULL)
          {
            if (!project (c, L->wgu, c->h, n, c->gu, 0, fl, error))
              return FALSE;
          }
        else
          {
            float *up = c->gu + (size_t) n * ff;

            if (!project (c, L->wg, c->h, n, c->gu, 0, fl, error)
                || !project (c, L->wu, c->h, n, up, 0, fl, error))
              return FALSE;
            u = up;
            gs = us = ff;
          }
        if (n <= BLN_CUDA_MATVEC_MAX_TOK && ff % 32 == 0)
          {
            if (!KCHECK (bln_kernels_silu_mul_quant (g, gs, u, us, c->ffo, n, ff, c->stream),
                         error))
              return FALSE;
            dfl |= BLN_KERNELS_MATVEC_XQ_READY;
          }
        else if (!KCHECK (bln_kernels_silu_mul (g, gs, u, us, c->ffo, n, ff, c->stream), error))
          return FALSE;
        if (!project (c, L->wd, c->ffo, n, c->x, 0, dfl, error))
          return FALSE;
      }
    }
  return TRUE;
}

/* The logits of the chunk's rows d_rows[0..n_rows) (token indices of the
 * whole batch; the chunk starts at token @c0): gathered from c->x, final
 * norm, output projection, LOGIT_ROWS rows at a time, each row copied to
 * batch->logits row perm[j]. */
static gboolean
enqueue_logits (BlnCudaBatch *b, const BlnBatch *batch, const int32_t *d_rows, const int *perm,
                const int *kslot, int n_rows, int c0, GError **error)
{
  BlnCudaCtx *c = b->c;
  const BlnHParams *hp = &c->model->hp;
  size_t row_bytes = (size_t) hp->n_vocab * sizeof (float);
  const BlnCudaTensor *out = c->cm->output;
  int j0, j, run, per = LOGIT_ROWS;
  float *d_logits = c->logits;

  if (n_rows >= bln_cuda_mmf_min ()
      && bln_cuda_mmf_enabled (out, MIN (n_rows, MMF_LOGIT_ROWS)))
    {
      per = MIN (MMF_LOGIT_ROWS, c->sp.rows);
      if (!ensure_buffer (b, &b->logits, (size_t) per * row_bytes, error))
        return FALSE;
      d_logits = b->logits->ptr;
    }
  for (j0 = 0; j0 < n_rows; j0 += per)
    {
      int nr = MIN (per, n_rows - j0);

      if (!KCHECK (bln_kernels_gather_rows (c->x, hp->n_embd, d_rows + j0, c0, nr, c->tmp,
                                            c->stream), error)
          || !KCHECK (bln_kernels_rmsnorm (c->tmp, c->cm->output_norm, c->h, nr, hp->n_embd,
                                           hp->norm_eps, c->stream), error))
        return FALSE;
      if (d_logits != c->logits)
        {
          if (!KCHECK (bln_kernels_mmf ((int) out->type, out->payload->ptr, out->header->ptr,
                                        (int) out->n_in, (int) out->n_out, c->h, nr, d_logits,
                                        0, 0, c->stream), error))
            return FALSE;
        }
      else if (!bln_cuda_matvec (out, c->h, nr, d_logits, c->stream, error))
        return FALSE;
      /* one copy per run of rows that are consecutive in the destination:
       * the host rows, or the device rows kept for compact sampling */
      for (j = 0; j < nr; j += run)
        {
          int o = perm[j0 + j], ks = kslot != NULL ? kslot[o] : -1;

          for (run = 1; j + run < nr && perm[j0 + j + run] == o + run
                        && (kslot != NULL ? kslot[o + run] : -1) == (ks < 0 ? -1 : ks + run);
               run++)
            ;
          if (ks >= 0)
            {
              if (!BLN_CUDA_CHECK (cudaMemcpyAsync ((float *) b->kept->ptr
                                                      + (size_t) ks * hp->n_vocab,
                                                    d_logits + (size_t) j * hp->n_vocab,
                                                    (size_t) run * row_bytes,
                                                    cudaMemcpyDeviceToDevice, c->stream), error))
                return FALSE;
            }
          else if (!BLN_CUDA_CHECK (cudaMemcpyAsync (batch->logits + (size_t) o * hp->n_vocab,
                                                     d_logits + (size_t) j * hp->n_vocab,
                                                     (size_t) run * row_bytes,
                                                     cudaMemcpyDeviceToHost, c->stream), error))
            return FALSE;
        }
    }
  return TRUE;
}

/* Whether the flash prefill attention may serve the batch's long runs. */
static gboolean
flash_usable (const BlnCudaBatch *b, const BlnBatch *batch)
{
  const BlnHParams *hp = &b->model->hp;

  return b->kv_f16 && batch->window == 0 && bln_cuda_flash_prefill_enabled ()
         && bln_kernels_flash_prefill_supports (hp->n_head, hp->n_head_kv, hp->head_dim_k,
                                                hp->head_dim_v);
}

/* The batch's rows in the order they run: every row that is not part of a
 * long run first (decode tokens, short prompt pieces), in batch order, then
 * the long runs whole, in batch order, so that each chunk is the paged
 * attention's rows followed by runs for the flash kernel. Fills @ord (row
 * t' runs batch row ord[t']) and returns the number of rows before the
 * long runs, or -1 to keep the batch's own order: no long run, or a
 * sequence in more than one run (moving its later positions ahead of its
 * earlier ones could put them in an earlier chunk than the keys they
 * attend to; the scheduler gives a sequence one run a step). */
static int
long_runs_last (const BlnBatch *batch, int *ord)
{
  int n = batch->n_tokens, n_short = 0, k = 0, t, e;
  g_autofree gboolean *seen = g_new0 (gboolean, MAX (batch->n_seqs, 1));

  for (t = 0; t < n; t = e)
    {
      for (e = t + 1; e < n && batch->seq[e] == batch->seq[t]
                      && batch->pos[e] == batch->pos[e - 1] + 1; e++)
        ;
      if (batch->seq[t] < 0 || batch->seq[t] >= batch->n_seqs || seen[batch->seq[t]])
        return -1;
      seen[batch->seq[t]] = TRUE;
    }
  for (int pass = 0; pass < 2; pass++)
    for (t = 0; t < n; t = e)
      {
        for (e = t + 1; e < n && batch->seq[e] == batch->seq[t]
                        && batch->pos[e] == batch->pos[e - 1] + 1; e++)
          ;
        if ((e - t >= FLASH_RUN_MIN) == (pass == 1))
          for (int i = t; i < e; i++)
            ord[k++] = i;
        if (pass == 0 && e - t < FLASH_RUN_MIN)
          n_short += e - t;
      }
  return n_short == n ? -1 : n_short;
}

gboolean
bln_cuda_batch_forward (BlnCudaBatch *b, const BlnBatch *batch_in, GError **error)
{
  BlnCudaCtx *c = b->c;
  const BlnModel *m = b->model;
  const BlnHParams *hp = &m->hp;
  const BlnBatch *batch = batch_in;
  BlnBatch reordered;
  int n = batch_in->n_tokens, n_seqs = batch_in->n_seqs, bs = b->block_size;
  int rows = c->sp.rows, n_chunks, n_out, i, t, ch, n_short = -1;
  g_autofree int *ord = NULL, *inv = NULL;
  g_autofree int32_t *r_ids = NULL, *r_pos = NULL, *r_seq = NULL, *r_out = NULL;
  g_autofree FlashRun *runs = NULL;
  g_autofree int *need = NULL, *seq_off = NULL, *chunk_first = NULL, *perm = NULL;
  g_autofree int *chunk_len = NULL, *kslot = NULL;
  g_autofree int32_t *meta = NULL;
  int32_t *h_pos, *h_toff, *h_rows, *h_tab;
  const int32_t *d_meta;
  size_t n_tab = 0, n_meta, part_bytes = 0;
  gint64 t_start = g_get_monotonic_time ();
  double layers_ms = 0, logits_ms = 0;

  n_out = batch->logits != NULL ? batch->n_out : 0;
  if (n <= 0 || n_seqs <= 0 || n_out < 0 || batch->ids == NULL || batch->pos == NULL
      || batch->seq == NULL || batch->kv == NULL || (n_out > 0 && batch->out_rows == NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "an empty or incomplete batch");
      return FALSE;
    }
  /* prompt runs after the other rows (a copy of the batch in that order;
   * logit row i is still out_rows[i]'s, now at its new place) */
  if (flash_usable (b, batch) && n > FLASH_RUN_MIN)
    {
      ord = g_new (int, n);
      n_short = long_runs_last (batch, ord);
    }
  if (n_short >= 0)
    {
      inv = g_new (int, n);
      r_ids = g_new (int32_t, n);
      r_pos = g_new (int32_t, n);
      r_seq = g_new (int32_t, n);
      r_out = g_new (int32_t, MAX (n_out, 1));
      for (t = 0; t < n; t++)
        {
          r_ids[t] = batch->ids[ord[t]];
          r_pos[t] = batch->pos[ord[t]];
          r_seq[t] = batch->seq[ord[t]];
          inv[ord[t]] = t;
        }
      for (i = 0; i < n_out; i++)
        {
          int r = batch->out_rows[i];

          if (r < 0 || r >= n)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "logit row %d outside the batch",
                           r);
              return FALSE;
            }
          r_out[i] = inv[r];
        }
      reordered = *batch;
      reordered.ids = r_ids;
      reordered.pos = r_pos;
      reordered.seq = r_seq;
      reordered.out_rows = n_out > 0 ? r_out : batch->out_rows;
      batch = &reordered;
      runs = g_new (FlashRun, n);   /* at most one a row */
    }
  if (!BLN_CUDA_CHECK (cudaSetDevice (c->device), error))
    return FALSE;

  /* rows kept on the device for compact sampling: slots in out order */
  b->n_kept = 0;
  if (batch->keep != NULL && n_out > 0)
    {
      kslot = g_new (int, n_out);
      for (i = 0; i < n_out; i++)
        kslot[i] = batch->keep[i] ? b->n_kept++ : -1;
      if (b->n_kept == 0)
        g_clear_pointer (&kslot, g_free);
      else if (!ensure_buffer (b, &b->kept, (size_t) b->n_kept * hp->n_vocab * sizeof (float),
                               error))
        {
          b->n_kept = 0;
          return FALSE;
        }
    }

  /* table entries each sequence needs: through its furthest position */
  need = g_new0 (int, n_seqs);
  seq_off = g_new0 (int, n_seqs);
  for (t = 0; t < n; t++)
    {
      int s = batch->seq[t], p = batch->pos[t];

      if (s < 0 || s >= n_seqs || p < 0 || p >= G_MAXINT - bs)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "batch token %d: sequence %d or position %d out of range", t, s, p);
          return FALSE;
        }
      need[s] = MAX (need[s], p / bs + 1);
    }
  for (i = 0; i < n_seqs; i++)
    {
      seq_off[i] = (int) n_tab;
      n_tab += (size_t) need[i];
      if (n_tab > G_MAXINT / 4)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "block tables too long");
          return FALSE;
        }
    }

  /* chunks of `rows` tokens; the logit rows grouped by chunk (stable) */
  n_chunks = (n + rows - 1) / rows;
  chunk_first = g_new0 (int, n_chunks + 1);
  chunk_len = g_new0 (int, n_chunks);
  perm = g_new0 (int, MAX (n_out, 1));
  for (i = 0; i < n_out; i++)
    {
      int r = batch->out_rows[i];

      if (r < 0 || r >= n)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "logit row %d outside the batch", r);
          return FALSE;
        }
      chunk_len[r / rows]++;
    }
  for (ch = 0; ch < n_chunks; ch++)
    chunk_first[ch + 1] = chunk_first[ch] + chunk_len[ch];

  /* host metadata: positions, table offsets, grouped logit rows, tables */
  n_meta = 2 * (size_t) n + (size_t) n_out + n_tab;
  meta = g_try_new (int32_t, MAX (n_meta, 1));
  if (meta == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for a batch of %d tokens",
                   n);
      return FALSE;
    }
  h_pos = meta;
  h_toff = meta + n;
  h_rows = meta + 2 * (size_t) n;
  h_tab = h_rows + n_out;
  for (t = 0; t < n; t++)
    {
      h_pos[t] = batch->pos[t];
      h_toff[t] = seq_off[batch->seq[t]];
    }
  memset (chunk_len, 0, sizeof (int) * n_chunks);   /* now: rows placed per chunk */
  for (i = 0; i < n_out; i++)
    {
      int r = batch->out_rows[i], j;

      ch = r / rows;
      j = chunk_first[ch] + chunk_len[ch]++;
      h_rows[j] = r;
      perm[j] = i;
    }
  for (i = 0; i < n_seqs; i++)
    {
      const BlnKvView *kv = &batch->kv[i];

      if (need[i] > 0 && (kv->blocks == NULL || kv->block_size != bs))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "sequence %d of the batch has no table for this pool", i);
          return FALSE;
        }
      for (t = 0; t < need[i]; t++)
        {
          /* -1: a block given back to the sliding window (kv-cache.c); the
           * attention starts past it, so it stays -1 (a read would fault,
           * not return another sequence's rows) */
          if (kv->blocks[t] == -1 && batch->window > 0)
            {
              h_tab[seq_off[i] + t] = -1;
              continue;
            }
          if (kv->blocks[t] < 0 || kv->blocks[t] >= b->n_blocks)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                           "block %d of sequence %d is outside the pool", kv->blocks[t], i);
              return FALSE;
            }
          h_tab[seq_off[i] + t] = kv->blocks[t];
        }
    }

  /* device scratch: the metadata, and the attention splits of the largest
   * chunk */
  for (ch = 0; ch < n_chunks; ch++)
    {
      int c0 = ch * rows, nc = MIN (rows, n - c0), ml = 0;

      for (t = c0; t < c0 + nc; t++)
        ml = MAX (ml, batch->pos[t] + 1);
      part_bytes = MAX (part_bytes, bln_kernels_paged_attn_scratch (nc, hp->n_head,
                                                                    hp->n_head_kv,
                                                                    hp->head_dim_v, ml));
    }
  if (!ensure_buffer (b, &b->meta, n_meta * sizeof (int32_t), error)
      || !ensure_buffer (b, &b->part, part_bytes, error)
      || !BLN_CUDA_CHECK (cudaMemcpyAsync (b->meta->ptr, meta, n_meta * sizeof (int32_t),
                                           cudaMemcpyHostToDevice, c->stream), error))
    return FALSE;
  d_meta = b->meta->ptr;

  for (ch = 0; ch < n_chunks; ch++)
    {
      int c0 = ch * rows, nc = MIN (rows, n - c0), ml = 0, n_paged = nc, n_runs = 0;
      gboolean ok;

      for (t = c0; t < c0 + nc; t++)
        ml = MAX (ml, batch->pos[t] + 1);
      /* the long runs' pieces in this chunk (a run may cross chunks: its
       * earlier rows are in the cache by then) */
      if (n_short >= 0)
        {
          n_paged = CLAMP (n_short - c0, 0, nc);
          for (t = c0 + n_paged; t < c0 + nc; t++)
            if (t == c0 + n_paged || batch->seq[t] != batch->seq[t - 1]
                || batch->pos[t] != batch->pos[t - 1] + 1)
              runs[n_runs++] = (FlashRun) { t - c0, 1, batch->pos[t], seq_off[batch->seq[t]] };
            else
              runs[n_runs - 1].len++;
        }
      /* host_x is free: the stream was drained after the previous chunk */
      if (!bln_cpu_get_rows (m->tok_embd, batch->ids + c0, nc, c->host_x, error))
        return FALSE;
      ok = BLN_CUDA_CHECK (cudaMemcpyAsync (c->x, c->host_x,
                                            (size_t) nc * hp->n_embd * sizeof (float),
                                            cudaMemcpyHostToDevice, c->stream), error)
           && (!b->profile || BLN_CUDA_CHECK (cudaEventRecord (b->ev[0], c->stream), error))
           && enqueue_layers (b, nc, d_meta + c0, d_meta + n + c0,
                              d_meta + 2 * (size_t) n + n_out, ml, batch->window, n_paged, runs,
                              n_runs, error)
           && (!b->profile || BLN_CUDA_CHECK (cudaEventRecord (b->ev[1], c->stream), error))
           && (chunk_first[ch + 1] == chunk_first[ch]
               || enqueue_logits (b, batch, d_meta + 2 * (size_t) n + chunk_first[ch],
                                  perm + chunk_first[ch], kslot,
                                  chunk_first[ch + 1] - chunk_first[ch], c0, error))
           && (!b->profile || BLN_CUDA_CHECK (cudaEventRecord (b->ev[2], c->stream), error));
      if (!ok)
        {
          (void) cudaStreamSynchronize (c->stream);
          return FALSE;
        }
      if (!BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error))
        return FALSE;
      if (b->profile)
        {
          float ms1 = 0, ms2 = 0;

          (void) cudaEventElapsedTime (&ms1, b->ev[0], b->ev[1]);
          (void) cudaEventElapsedTime (&ms2, b->ev[1], b->ev[2]);
          layers_ms += ms1;
          logits_ms += ms2;
        }
    }
  if (b->profile && n == n_seqs)   /* decode steps only: one token a sequence */
    {
      double total = (g_get_monotonic_time () - t_start) / 1e3;

      b->prof_steps++;
      b->prof_tokens += (guint64) n;
      b->prof_total_ms += total;
      b->prof_host_ms += total - layers_ms - logits_ms;
      b->prof_layers_ms += layers_ms;
      b->prof_logits_ms += logits_ms;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* compact sampling                                                        */

G_STATIC_ASSERT (BLN_COMPACT_MAX_K == BLN_KERNELS_COMPACT_MAX_K);

gboolean
bln_cuda_batch_compact (BlnCudaBatch *b, int n_rows, int k, const float *temps,
                        const int32_t *hist_off, const int32_t *hist_ids, BlnCompactRow *rows,
                        GError **error)
{
  BlnCudaCtx *c = b->c;
  int V = c->model->hp.n_vocab, n_hist = hist_off != NULL ? hist_off[n_rows] : 0, r;
  size_t in_off_hist, in_ids, in_bytes, o_vals, o_stats, o_hist, out_bytes, scratch;
  char *din, *dout, *h;
  cudaError_t ke;

  g_return_val_if_fail (b != NULL && temps != NULL && rows != NULL, FALSE);
  if (n_rows <= 0 || n_rows > b->n_kept || k < 1 || k > BLN_KERNELS_COMPACT_MAX_K
      || (k & (k - 1)) != 0 || n_hist < 0 || (n_hist > 0 && hist_ids == NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "compact sampling: %d rows (%d kept), K %d, %d history ids", n_rows,
                   b->n_kept, k, n_hist);
      return FALSE;
    }

  /* inputs: temperatures, history offsets, history ids; outputs: ids,
   * values, stats, history values (one buffer each way, 256-byte parts) */
  in_off_hist = align256 ((size_t) n_rows * sizeof (float));
  in_ids = in_off_hist + align256 ((size_t) (n_rows + 1) * sizeof (int32_t));
  in_bytes = in_ids + align256 ((size_t) MAX (n_hist, 1) * sizeof (int32_t));
  o_vals = align256 ((size_t) n_rows * k * sizeof (int32_t));
  o_stats = o_vals + align256 ((size_t) n_rows * k * sizeof (float));
  o_hist = o_stats + align256 ((size_t) n_rows * sizeof (BlnCompactStats));
  out_bytes = o_hist + align256 ((size_t) MAX (n_hist, 1) * sizeof (float));
  scratch = bln_kernels_compact_scratch_bytes (n_rows, V);
  if (!BLN_CUDA_CHECK (cudaSetDevice (c->device), error)
      || !ensure_buffer (b, &b->cmp_in, in_bytes, error)
      || !ensure_buffer (b, &b->cmp_out, out_bytes, error)
      || !ensure_buffer (b, &b->cmp_scratch, scratch, error))
    return FALSE;
  if (b->h_cmp_cap < MAX (in_bytes, out_bytes))
    {
      if (b->h_cmp != NULL)
        (void) cudaFreeHost (b->h_cmp);
      b->h_cmp = NULL;
      b->h_cmp_cap = 0;
      if (!BLN_CUDA_CHECK (cudaHostAlloc (&b->h_cmp, MAX (in_bytes, out_bytes) * 2,
                                          cudaHostAllocPortable), error))
        {
          b->h_cmp = NULL;
          return FALSE;
        }
      b->h_cmp_cap = MAX (in_bytes, out_bytes) * 2;
    }
  h = b->h_cmp;
  din = b->cmp_in->ptr;
  dout = b->cmp_out->ptr;
  memcpy (h, temps, (size_t) n_rows * sizeof (float));
  if (hist_off != NULL)
    {
      memcpy (h + in_off_hist, hist_off, (size_t) (n_rows + 1) * sizeof (int32_t));
      if (n_hist > 0)
        memcpy (h + in_ids, hist_ids, (size_t) n_hist * sizeof (int32_t));
    }
  if (!BLN_CUDA_CHECK (cudaMemcpyAsync (din, h, in_bytes, cudaMemcpyHostToDevice, c->stream),
                       error))
    return FALSE;
  ke = bln_kernels_compact (b->kept->ptr, (size_t) V, n_rows, V, k, (const float *) din,
                            hist_off != NULL ? (const int32_t *) (din + in_off_hist) : NULL,
                            (const int32_t *) (din + in_ids), (int32_t *) dout,
                            (float *) (dout + o_vals), (BlnCompactStats *) (dout + o_stats),
                            (float *) (dout + o_hist), b->cmp_scratch->ptr, c->stream);
  /* the input copy reads h: wait for it before h takes the output */
  if (!BLN_CUDA_CHECK (ke, error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error)
      || !BLN_CUDA_CHECK (cudaMemcpyAsync (h, dout, out_bytes, cudaMemcpyDeviceToHost,
                                           c->stream), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error))
    {
      (void) cudaStreamSynchronize (c->stream);
      return FALSE;
    }
  for (r = 0; r < n_rows; r++)
    {
      const BlnCompactStats *st = (const BlnCompactStats *) (h + o_stats) + r;
      BlnCompactRow *row = &rows[r];

      memset (row, 0, sizeof *row);
      row->k = st->k;
      row->ids = (const int32_t *) h + (size_t) r * k;
      row->logits = (const float *) (h + o_vals) + (size_t) r * k;
      row->complete = st->n_valid <= k;
      row->next = st->next;
      row->raw_max = st->raw_max;
      row->raw_lse = st->raw_lse;
      row->t_max = st->t_max;
      row->t_sum = st->t_sum;
      if (hist_off != NULL)
        {
          row->hist = (const float *) (h + o_hist) + hist_off[r];
          row->n_hist = hist_off[r + 1] - hist_off[r];
        }
    }
  return TRUE;
}

gboolean
bln_cuda_batch_fetch_kept (BlnCudaBatch *b, int slot, float *dst, GError **error)
{
  BlnCudaCtx *c = b->c;
  size_t row_bytes = (size_t) c->model->hp.n_vocab * sizeof (float);

  g_return_val_if_fail (b != NULL && dst != NULL, FALSE);
  if (slot < 0 || slot >= b->n_kept)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "kept row %d of %d", slot, b->n_kept);
      return FALSE;
    }
  return BLN_CUDA_CHECK (cudaSetDevice (c->device), error)
         && BLN_CUDA_CHECK (cudaMemcpyAsync (dst, (const char *) b->kept->ptr
                                                    + (size_t) slot * row_bytes,
                                             row_bytes, cudaMemcpyDeviceToHost, c->stream),
                            error)
         && BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error);
}
