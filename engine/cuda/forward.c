/* cuda/forward.c — llama / qwen2 decoders on the GPU (see forward.h). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <cublas_v2.h>

#include "bln-error.h"
#include "cpu/cpu.h"
#include "cuda.h"
#include "forward-deepseek2.h"
#include "flash.h"
#include "forward-private.h"
#include "kernels.h"
#include "ops.h"
#include "quant.h"
#include "sample.h"

/* Tokens per prefill chunk: quantised weights are expanded to F16 once per
 * chunk, so longer chunks prefill faster; the plan takes the longest of these
 * whose scratch fits (and never longer than the context). */
static const int prefill_chunks[] = { 2048, 512, 128 };
/* Budget for the attention scores of one query block (F32 scores plus the
 * probabilities): bounds the prefill scratch whatever the context size. */
#define SCORES_BUDGET ((size_t) 256 << 20)
/* Rows of logits computed per output matvec when every row is wanted. */
#define LOGIT_ROWS BLN_CUDA_MATVEC_MAX_TOK

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */

gboolean
bln_cuda_blas_check (cublasStatus_t st, const char *what, GError **error)
{
  if (st == CUBLAS_STATUS_SUCCESS)
    return TRUE;
  g_set_error (error, BLN_ERROR,
               st == CUBLAS_STATUS_ALLOC_FAILED ? BLN_ERROR_NOMEM : BLN_ERROR_BACKEND,
               "cuBLAS %s failed: %s", what, cublasGetStatusString (st));
  return FALSE;
}

gboolean
bln_cuda_layer_type_ok (const BlnTensor *t)
{
  BlnSplitLayout l;

  return bln_kernels_split_layout ((int) t->type, &l) && t->ne[0] % l.block_values == 0
         && t->ne[0] <= INT_MAX && t->ne[1] * t->ne[2] * t->ne[3] <= INT_MAX;
}

/* Bytes a weight takes once uploaded: as stored when the kernels read its
 * type and shape, else as F32 (the fallback conversion). */
size_t
bln_cuda_dev_bytes (const BlnTensor *t)
{
  int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
  size_t rb = 0;

  if (bln_cuda_layer_type_ok (t) && bln_type_row_bytes (t->type, t->ne[0], &rb))
    return rb * (size_t) (n / t->ne[0]);
  return (size_t) n * sizeof (float);
}

/* A host F32 copy of @t (caller frees), NULL with @error. */
float *
bln_cuda_dequant_host (const BlnTensor *t, GError **error)
{
  int64_t rows = t->ne[1] * t->ne[2] * t->ne[3], r;
  size_t rb = 0;
  float *out;

  if (!bln_type_row_bytes (t->type, t->ne[0], &rb) || rb * (size_t) rows > t->nbytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor %s: inconsistent size",
                   t->name ? t->name : "?");
      return NULL;
    }
  out = g_try_malloc ((size_t) rows * (size_t) t->ne[0] * sizeof (float));
  if (out == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of host memory converting %s",
                   t->name ? t->name : "?");
      return NULL;
    }
  for (r = 0; r < rows; r++)
    if (!bln_dequantize_row (t->type, (const uint8_t *) t->data + (size_t) r * rb,
                             out + (size_t) r * t->ne[0], t->ne[0]))
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "tensor %s: type %s",
                     t->name ? t->name : "?", bln_type_name (t->type));
        g_free (out);
        return NULL;
      }
  return out;
}

/* A small F32 vector (norm weights, biases) on the device. */
float *
bln_cuda_upload_vec (BlnCudaModel *cm, const BlnTensor *t, GError **error)
{
  g_autofree float *host = NULL;
  BlnCudaBuffer *b;
  size_t n;

  if (t == NULL)
    return NULL;
  host = bln_cuda_dequant_host (t, error);
  if (host == NULL)
    return NULL;
  n = (size_t) (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
  b = bln_cuda_buffer_new_from_host (host, n * sizeof (float), error);
  if (b == NULL)
    return NULL;
  g_ptr_array_add (cm->buffers, b);
  cm->weight_bytes += n * sizeof (float);
  return b->ptr;
}

/* Uploads a weight matrix; one the kernels cannot read goes up as F32. */
BlnCudaTensor *
bln_cuda_upload_matrix (BlnCudaModel *cm, const BlnTensor *t, GError **error)
{
  BlnCudaTensor *ct;

  if (bln_cuda_layer_type_ok (t))
    ct = bln_cuda_tensor_upload (t, error);
  else
    {
      g_autofree float *host = bln_cuda_dequant_host (t, error);
      BlnTensor tmp;

      if (host == NULL)
        return NULL;
      g_debug ("%s: %s with rows of %" G_GINT64_FORMAT " goes to the GPU as F32",
               t->name ? t->name : "?", bln_type_name (t->type), t->ne[0]);
      tmp = *t;
      tmp.type = BLN_TYPE_F32;
      tmp.data = host;
      tmp.nbytes = (size_t) (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * sizeof (float);
      ct = bln_cuda_tensor_upload (&tmp, error);
    }
  if (ct == NULL)
    return NULL;
  g_ptr_array_add (cm->tensors, ct);
  cm->weight_bytes += ct->gguf_bytes;
  return ct;
}

/* Tensors t[0..n) stacked into one matrix (rows one after another) when they
 * share type and width: one matvec / one GEMM instead of several. NULL
 * without an error when they cannot be stacked. */
BlnCudaTensor *
bln_cuda_upload_stacked (BlnCudaModel *cm, const BlnTensor *const *t, int n, GError **error)
{
  g_autofree uint8_t *host = NULL;
  BlnCudaTensor *ct;
  BlnTensor tmp;
  size_t total = 0, off = 0;
  int i;

  for (i = 0; i < n; i++)
    {
      if (t[i]->type != t[0]->type || t[i]->ne[0] != t[0]->ne[0] || !bln_cuda_layer_type_ok (t[i])
          || t[i]->ne[2] * t[i]->ne[3] != 1)
        return NULL;
      total += bln_cuda_dev_bytes (t[i]);
    }
  host = g_try_malloc (total);
  if (host == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of host memory stacking %s",
                   t[0]->name ? t[0]->name : "?");
      return NULL;
    }
  tmp = *t[0];
  tmp.ne[1] = 0;
  for (i = 0; i < n; i++)
    {
      memcpy (host + off, t[i]->data, bln_cuda_dev_bytes (t[i]));
      off += bln_cuda_dev_bytes (t[i]);
      tmp.ne[1] += t[i]->ne[1];
    }
  tmp.data = host;
  tmp.nbytes = total;
  ct = bln_cuda_tensor_upload (&tmp, error);
  if (ct == NULL)
    return NULL;
  g_ptr_array_add (cm->tensors, ct);
  cm->weight_bytes += ct->gguf_bytes;
  return ct;
}

/* The q, k, v projections of a layer: all three stacked, or q and k with v
 * apart (Q4_K_M gives v more bits in some layers), or each alone. */
static gboolean
upload_qkv (BlnCudaModel *cm, const BlnLayer *L, CudaLayer *C, GError **error)
{
  const BlnTensor *t[3] = { L->wq, L->wk, L->wv };
  GError *local = NULL;
  int i, col = 0;

  C->n_qkv = 0;
  if ((C->qkv[0] = bln_cuda_upload_stacked (cm, t, 3, &local)) != NULL)
    {
      C->n_qkv = 1;
      C->qkv_col[0] = 0;
      return TRUE;
    }
  if (local == NULL && (C->qkv[0] = bln_cuda_upload_stacked (cm, t, 2, &local)) != NULL)
    {
      C->qkv_col[0] = 0;
      C->qkv_col[1] = (int) (t[0]->ne[1] + t[1]->ne[1]);
      C->n_qkv = 2;
      return (C->qkv[1] = bln_cuda_upload_matrix (cm, t[2], error)) != NULL;
    }
  if (local != NULL)
    {
      g_propagate_error (error, local);
      return FALSE;
    }
  for (i = 0; i < 3; i++)
    {
      C->qkv_col[i] = col;
      col += (int) t[i]->ne[1];
      if ((C->qkv[i] = bln_cuda_upload_matrix (cm, t[i], error)) == NULL)
        return FALSE;
    }
  C->n_qkv = 3;
  return TRUE;
}

static void
free_tensor (gpointer p)
{
  bln_cuda_tensor_free (p);
}

static void
free_buffer (gpointer p)
{
  bln_cuda_buffer_free (p);
}

void
bln_cuda_model_free (BlnCudaModel *cm)
{
  if (cm == NULL)
    return;
  (void) cudaSetDevice (cm->device);
  g_clear_pointer (&cm->tensors, g_ptr_array_unref);
  g_clear_pointer (&cm->buffers, g_ptr_array_unref);
  bln_cuda_ds2_model_free (cm->ds2);
  g_free (cm->layers);
  g_free (cm);
}

static gboolean
check_arch (const BlnModel *m, GError **error)
{
  const BlnHParams *hp = &m->hp;

  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    return bln_cuda_ds2_check (m, error);
  if (hp->arch != BLN_ARCH_LLAMA && hp->arch != BLN_ARCH_QWEN2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%s models do not run on the GPU yet (MLA and MoE kernels are in progress)",
                   m->arch_name);
      return FALSE;
    }
  if (hp->head_dim_k > 256 || hp->head_dim_v > 256 || hp->n_head % hp->n_head_kv != 0
      || hp->rope_dim > hp->head_dim_k)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "head sizes %d/%d are beyond the GPU attention kernels (at most 256)",
                   hp->head_dim_k, hp->head_dim_v);
      return FALSE;
    }
  return TRUE;
}

static BlnCudaModel *
model_upload (BlnModel *m, int device, GError **error)
{
  const BlnHParams *hp = &m->hp;
  BlnCudaModel *cm = g_new0 (BlnCudaModel, 1);
  BlnCudaBuffer *fb;
  int il;

  cm->device = device;
  cm->n_layer = hp->n_layer;
  cm->layers = g_new0 (CudaLayer, hp->n_layer);
  cm->tensors = g_ptr_array_new_with_free_func (free_tensor);
  cm->buffers = g_ptr_array_new_with_free_func (free_buffer);

  /* deepseek2's layers: forward-deepseek2.c */
  if (hp->arch == BLN_ARCH_DEEPSEEK2 && !bln_cuda_ds2_upload (m, cm, error))
    goto fail;
  for (il = 0; il < hp->n_layer && hp->arch != BLN_ARCH_DEEPSEEK2; il++)
    {
      const BlnLayer *L = &m->layers[il];
      CudaLayer *C = &cm->layers[il];
      GError *local = NULL;

      if (!(C->attn_norm = bln_cuda_upload_vec (cm, L->attn_norm, error))
          || !(C->ffn_norm = bln_cuda_upload_vec (cm, L->ffn_norm, error))
          || (L->bq && !(C->bq = bln_cuda_upload_vec (cm, L->bq, error)))
          || (L->bk && !(C->bk = bln_cuda_upload_vec (cm, L->bk, error)))
          || (L->bv && !(C->bv = bln_cuda_upload_vec (cm, L->bv, error)))
          || !upload_qkv (cm, L, C, error)
          || !(C->wo = bln_cuda_upload_matrix (cm, L->wo, error))
          || !(C->wd = bln_cuda_upload_matrix (cm, L->ffn_down, error)))
        goto fail;
      {
        const BlnTensor *gu[2] = { L->ffn_gate, L->ffn_up };
        C->wgu = bln_cuda_upload_stacked (cm, gu, 2, &local);
      }
      if (local != NULL)
        {
          g_propagate_error (error, local);
          goto fail;
        }
      if (C->wgu == NULL
          && (!(C->wg = bln_cuda_upload_matrix (cm, L->ffn_gate, error))
              || !(C->wu = bln_cuda_upload_matrix (cm, L->ffn_up, error))))
        goto fail;
    }
  if (!(cm->output_norm = bln_cuda_upload_vec (cm, m->output_norm, error))
      || !(cm->output = bln_cuda_upload_matrix (cm, m->output, error)))
    goto fail;
  fb = bln_cuda_buffer_new_from_host (m->rope_inv_freq, (size_t) MAX (hp->rope_dim / 2, 1)
                                      * sizeof (float), error);
  if (fb == NULL)
    goto fail;
  g_ptr_array_add (cm->buffers, fb);
  cm->inv_freq = fb->ptr;
  return cm;

fail:
  bln_cuda_model_free (cm);
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* memory plan                                                             */

static size_t
model_weight_bytes (const BlnModel *m)
{
  const BlnHParams *hp = &m->hp;
  size_t sum = 0;
  int il;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      sum += bln_cuda_dev_bytes (L->wq) + bln_cuda_dev_bytes (L->wk) + bln_cuda_dev_bytes (L->wv)
             + bln_cuda_dev_bytes (L->wo) + bln_cuda_dev_bytes (L->ffn_gate)
             + bln_cuda_dev_bytes (L->ffn_up) + bln_cuda_dev_bytes (L->ffn_down);
      sum += (size_t) 2 * hp->n_embd * sizeof (float);
      sum += ((size_t) hp->n_head + 2 * hp->n_head_kv) * hp->head_dim_k * sizeof (float);
    }
  return sum + bln_cuda_dev_bytes (m->output) + (size_t) hp->n_embd * sizeof (float);
}

/* The largest quantised layer weight, in values (the F16 expansion scratch
 * of prefill; F16, BF16 and F32 weights need none). The output matrix is
 * never expanded: its rows go through the matvec. */
static size_t
max_expand_values (const BlnModel *m)
{
  size_t best = 0;
  int il;

  for (il = 0; il < m->hp.n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      const BlnTensor *ws[] = { L->wq, L->wk, L->wv, L->wo, L->ffn_gate, L->ffn_up,
                                L->ffn_down };
      guint i;

      for (i = 0; i < G_N_ELEMENTS (ws); i++)
        {
          const BlnTensor *t = ws[i];
          size_t n = (size_t) (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
          gboolean plain = !bln_cuda_layer_type_ok (t) || t->type == BLN_TYPE_F32
                           || t->type == BLN_TYPE_F16 || t->type == BLN_TYPE_BF16;
          /* stacked groups expand together: count q+k+v and gate+up whole */
          if (t == L->wq)
            n = (size_t) (L->wq->ne[0] * (L->wq->ne[1] + L->wk->ne[1] + L->wv->ne[1]));
          if (t == L->ffn_gate)
            n = (size_t) (L->ffn_gate->ne[0] * (L->ffn_gate->ne[1] + L->ffn_up->ne[1]));
          if (!plain)
            best = MAX (best, n);
        }
    }
  return best;
}

static size_t
align256 (size_t n)
{
  return (n + 255) & ~(size_t) 255;
}

/* Whether the prefill attention may run as one flash kernel
 * (kernels/flash.h) where it serves the shape: BALEEN_CUDA_FLASH_PREFILL=0
 * keeps the cuBLAS path below. Read once. */
gboolean
bln_cuda_flash_prefill_enabled (void)
{
  static int state = -1;

  return bln_cuda_env_on ("BALEEN_CUDA_FLASH_PREFILL", &state);
}

gboolean
bln_cuda_env_on (const char *name, int *state)
{
  if (*state < 0)
    *state = g_strcmp0 (g_getenv (name), "0") != 0;
  return *state == 1;
}

/* Whether the flash kernel serves @m's prefill attention over a cache of
 * @kv_elem bytes a value (F16, or the F16 copies of the 8-bit cache; not
 * F32) on the current device: then no score buffers are planned. */
static gboolean
flash_serves (const BlnModel *m, size_t kv_elem)
{
  const BlnHParams *hp = &m->hp;

  return kv_elem != 4 && bln_cuda_flash_prefill_enabled ()
         && bln_kernels_flash_prefill_supports (hp->n_head, hp->n_head_kv, hp->head_dim_k,
                                                hp->head_dim_v);
}

/* @kv_elem: bytes per cached value (1: the 8-bit cache, whose prefill
 * buffers are F16). */
static void
scratch_plan (const BlnModel *m, int n_ctx, size_t kv_elem, int chunk, ScratchPlan *sp)
{
  const BlnHParams *hp = &m->hp;
  size_t rows = (size_t) MAX (MIN (chunk, n_ctx), BLN_CUDA_MATVEC_MAX_TOK), f = sizeof (float);
  size_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;
  size_t d = hp->n_embd, ff = hp->n_ff;
  size_t max_in = MAX (MAX (d, ff), H * dv);
  size_t per_row_scores;
  gboolean q8 = kv_elem == 1;

  if (q8)
    kv_elem = 2;
  memset (sp, 0, sizeof *sp);
  sp->rows = (int) rows;
  sp->x = align256 (rows * d * f);
  sp->h = align256 (rows * d * f);
  sp->qkv = align256 (rows * ((H + Hkv) * dk + Hkv * dv) * f);
  sp->att = align256 (rows * H * dv * f);
  sp->tmp = align256 (rows * d * f);
  sp->gu = align256 (rows * 2 * ff * f);
  sp->ffo = align256 (rows * ff * f);
  sp->logits = align256 ((size_t) LOGIT_ROWS * hp->n_vocab * f);
  sp->qkv16 = align256 (rows * H * dk * kv_elem);
  /* the activations of a cuBLAS product as F16 / BF16: bln_cuda_linear's
   * conversion, or the prefill's RMSNorms (n_embd wide) and SwiGLU (n_ff)
   * writing them directly; max_in covers both */
  sp->act16 = align256 (rows * max_in * 2);
  sp->deq = align256 (max_expand_values (m) * 2);
  /* scores (F32) and probabilities (KV type) of one query block, unless
   * the flash kernel serves the attention */
  per_row_scores = H * (size_t) n_ctx * (f + kv_elem);
  sp->qblock = (int) CLAMP (SCORES_BUDGET / MAX (per_row_scores, 1), 1, rows);
  if (!flash_serves (m, q8 ? 1 : kv_elem))
    {
      sp->scores = align256 ((size_t) sp->qblock * H * n_ctx * f);
      sp->probs = align256 ((size_t) sp->qblock * H * n_ctx * kv_elem);
    }
  sp->part = align256 (bln_kernels_attn_decode_scratch (BLN_CUDA_MATVEC_MAX_TOK, (int) H,
                                                        (int) Hkv, (int) dv));
  sp->kdq = q8 ? 2 * align256 ((size_t) n_ctx * Hkv * MAX (dk, dv) * 2) : 0;
  sp->total = sp->x + sp->h + sp->qkv + sp->att + sp->tmp + sp->gu + sp->ffo
              + sp->logits + sp->qkv16 + sp->act16 + sp->deq + sp->scores + sp->probs
              + sp->part + sp->kdq;
}

/* Bytes of one layer's K (head_dim = dk) or V (dv) cache; for the 8-bit
 * cache (kv_elem 1) the int8 values, then their F16 scales (one per 32),
 * rounded up to 256 bytes. */
static size_t
kv_layer (const BlnModel *m, int n_ctx, size_t kv_elem, int head_dim)
{
  size_t rows = (size_t) n_ctx * m->hp.n_head_kv;

  if (kv_elem == 1)
    return align256 (rows * head_dim + rows * (head_dim / 32) * 2);
  return rows * head_dim * kv_elem;
}

/* Bytes of the K (head_dim = dk) or V (dv) cache of all layers. */
static size_t
kv_plane (const BlnModel *m, int n_ctx, size_t kv_elem, int head_dim)
{
  if (m->hp.arch == BLN_ARCH_DEEPSEEK2)   /* its latent cache is c->ds2's */
    return 0;
  return (size_t) m->hp.n_layer * kv_layer (m, n_ctx, kv_elem, head_dim);
}

static size_t
kv_bytes (const BlnModel *m, int n_ctx, size_t kv_elem)
{
  return kv_plane (m, n_ctx, kv_elem, m->hp.head_dim_k)
         + kv_plane (m, n_ctx, kv_elem, m->hp.head_dim_v);
}

gboolean
bln_cuda_plan (const BlnModel *model, int n_ctx, int kv_bits, BlnCudaPlan *plan,
               GError **error)
{
  ScratchPlan sp;
  size_t kv_elem = kv_bits == 32 ? 4 : kv_bits == 8 ? 1 : 2;

  memset (plan, 0, sizeof *plan);
  if (!check_arch (model, error))
    return FALSE;
  if (model->hp.arch == BLN_ARCH_DEEPSEEK2)
    return bln_cuda_ds2_plan (model, n_ctx, kv_bits, plan, error);
  plan->weight_bytes = model->cuda ? model->cuda->weight_bytes : model_weight_bytes (model);
  plan->kv_bytes = kv_bytes (model, n_ctx, kv_elem);
  /* the longest prefill chunk that fits; the shortest when none does */
  for (guint i = 0; i < G_N_ELEMENTS (prefill_chunks); i++)
    {
      scratch_plan (model, n_ctx, kv_elem, prefill_chunks[i], &sp);
      plan->scratch_bytes = sp.total;
      plan->prefill_chunk = sp.rows;
      plan->fits = bln_cuda_estimate (model->cuda ? 0 : plan->weight_bytes, plan->kv_bytes,
                                      plan->scratch_bytes, &plan->free_bytes);
      if (plan->fits)
        break;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* contexts                                                                */

void
bln_cuda_ctx_free (BlnCudaCtx *c)
{
  if (c == NULL)
    return;
  (void) cudaSetDevice (c->device);
  if (c->stream)
    (void) cudaStreamSynchronize (c->stream);
  for (int i = 0; i <= BLN_CUDA_MATVEC_MAX_TOK; i++)
    {
      if (c->graphs[i])
        (void) cudaGraphExecDestroy (c->graphs[i]);
      if (c->graphs_dev[i])
        (void) cudaGraphExecDestroy (c->graphs_dev[i]);
    }
  bln_cuda_sampler_free (c->sampler);
  if (c->blas)
    (void) cublasDestroy (c->blas);
  if (c->h_pos)
    (void) cudaFreeHost (c->h_pos);
  if (c->h_logits)
    (void) cudaFreeHost (c->h_logits);
  if (c->d_pos)
    (void) cudaFree (c->d_pos);
  if (c->stream)
    (void) cudaStreamDestroy (c->stream);
  if (c->host_x)
    (void) cudaFreeHost (c->host_x);
  bln_cuda_buffer_free (c->k_cache);
  bln_cuda_buffer_free (c->v_cache);
  bln_cuda_buffer_free (c->scratch);
  bln_cuda_ds2_ctx_free (c->ds2);
  (void) cudaGetLastError ();
  g_free (c);
}

static char *
human_bytes (size_t n)
{
  return g_format_size_full (n, G_FORMAT_SIZE_IEC_UNITS);
}

BlnCudaCtx *
bln_cuda_ctx_new (BlnModel *model, int n_ctx, const BlnContextOptions *opts, GError **error)
{
  g_autofree char *why = NULL;
  BlnCudaCtx *c;
  BlnCudaPlan plan;
  uint8_t *p;
  size_t kv_elem = opts->kv_bits == 32 ? 4 : opts->kv_bits == 8 ? 1 : 2;
  const BlnHParams *mhp = &model->hp;

  if (opts->kv_bits != 16 && opts->kv_bits != 32 && opts->kv_bits != 8)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "KV cache bits must be 8, 16 or 32, not %d", opts->kv_bits);
      return NULL;
    }
  if (opts->kv_bits == 8
      && (mhp->arch == BLN_ARCH_DEEPSEEK2 || mhp->head_dim_k != mhp->head_dim_v
          || (mhp->head_dim_k != 64 && mhp->head_dim_k != 128 && mhp->head_dim_k != 256)))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the 8-bit KV cache needs equal K and V head dims of 64, 128 or 256 (not "
                   "MLA); use 16 bits");
      return NULL;
    }
  if (!bln_cuda_available (&why))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "no usable GPU: %s", why);
      return NULL;
    }
  if (!check_arch (model, error)
      || !BLN_CUDA_CHECK (cudaSetDevice (opts->gpu), error))
    return NULL;

  /* the plan first: nothing is allocated when it does not fit */
  g_mutex_lock (&model->cuda_lock);
  if (!bln_cuda_plan (model, n_ctx, opts->kv_bits, &plan, error))
    {
      g_mutex_unlock (&model->cuda_lock);
      return NULL;
    }
  if (!plan.fits)
    {
      g_autofree char *w = human_bytes (model->cuda ? 0 : plan.weight_bytes);
      g_autofree char *kv = human_bytes (plan.kv_bytes);
      g_autofree char *sc = human_bytes (plan.scratch_bytes);
      g_autofree char *fr = human_bytes (plan.free_bytes);
      g_mutex_unlock (&model->cuda_lock);
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "the model does not fit on the GPU: weights %s + KV cache %s (%d tokens) + "
                   "scratch %s, but only %s are free; use a smaller context, a smaller "
                   "quantization (e.g. Q4_K_M), or the CPU",
                   w, kv, n_ctx, sc, fr);
      return NULL;
    }
  if (model->cuda == NULL)
    {
      model->cuda = model_upload (model, opts->gpu, error);
      if (model->cuda == NULL)
        {
          g_mutex_unlock (&model->cuda_lock);
          return NULL;
        }
    }
  else if (model->cuda->device != opts->gpu)
    {
      g_mutex_unlock (&model->cuda_lock);
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the model is already loaded on GPU %d", model->cuda->device);
      return NULL;
    }
  g_mutex_unlock (&model->cuda_lock);

  c = g_new0 (BlnCudaCtx, 1);
  c->model = model;
  c->cm = model->cuda;
  c->device = opts->gpu;
  c->n_ctx = n_ctx;
  c->kv_f16 = kv_elem <= 2;
  c->kv_q8 = kv_elem == 1;
  c->kv_elem = kv_elem;
  c->no_graphs = g_strcmp0 (g_getenv ("BALEEN_CUDA_GRAPHS"), "0") == 0;
  c->qkv_ld = (model->hp.n_head + model->hp.n_head_kv) * model->hp.head_dim_k
              + model->hp.n_head_kv * model->hp.head_dim_v;
  if (model->hp.arch == BLN_ARCH_DEEPSEEK2)
    bln_cuda_ds2_scratch_plan (model, n_ctx, kv_elem, plan.prefill_chunk, &c->sp);
  else
    scratch_plan (model, n_ctx, kv_elem, plan.prefill_chunk, &c->sp);
  if (!BLN_CUDA_CHECK (cudaStreamCreateWithFlags (&c->stream, cudaStreamNonBlocking), error)
      || !bln_cuda_blas_check (cublasCreate (&c->blas), "create", error)
      || !bln_cuda_blas_check (cublasSetStream (c->blas, c->stream), "set stream", error)
      || !(c->k_cache = bln_cuda_buffer_new (kv_plane (model, n_ctx, kv_elem,
                                                       model->hp.head_dim_k), error))
      || !(c->v_cache = bln_cuda_buffer_new (kv_plane (model, n_ctx, kv_elem,
                                                       model->hp.head_dim_v), error))
      || !(c->scratch = bln_cuda_buffer_new (c->sp.total, error))
      || !BLN_CUDA_CHECK (cudaMallocHost ((void **) &c->host_x, (size_t) c->sp.rows
                                          * model->hp.n_embd * sizeof (float)), error)
      || !BLN_CUDA_CHECK (cudaMallocHost ((void **) &c->h_pos, sizeof (int)), error)
      || !BLN_CUDA_CHECK (cudaMallocHost ((void **) &c->h_logits,
                                          (size_t) model->hp.n_vocab * sizeof (float)), error)
      || !BLN_CUDA_CHECK (cudaMalloc ((void **) &c->d_pos, sizeof (int)), error))
    {
      bln_cuda_ctx_free (c);
      return NULL;
    }
  p = c->scratch->ptr;
#define CARVE(field, type) (c->field = (type) p, p += c->sp.field)
  CARVE (x, float *);
  CARVE (h, float *);
  CARVE (qkv, float *);
  CARVE (att, float *);
  CARVE (tmp, float *);
  CARVE (gu, float *);
  CARVE (ffo, float *);
  CARVE (logits, float *);
  CARVE (qkv16, void *);
  CARVE (act16, void *);
  CARVE (deq, void *);
  CARVE (scores, void *);
  CARVE (probs, void *);
  CARVE (part, void *);
  CARVE (kdq, void *);
#undef CARVE
  /* the decode attention's split counters start at 0 (see ops.h) */
  if (c->sp.part > 0 && !BLN_CUDA_CHECK (cudaMemset (c->part, 0, c->sp.part), error))
    {
      bln_cuda_ctx_free (c);
      return NULL;
    }
  if (model->hp.arch == BLN_ARCH_DEEPSEEK2 && !bln_cuda_ds2_ctx_init (c, error))
    {
      bln_cuda_ctx_free (c);
      return NULL;
    }
  return c;
}

/* ---------------------------------------------------------------------- */
/* the step                                                                */

/* Whether products of quantised type @type with @n token rows go through the
 * tensor-core MMQ (kernels/mmq.cu) rather than dequantisation to F16 and
 * cuBLAS (or, in forward-batch.c, the matvec in slices): only when
 * BALEEN_CUDA_MMQ=1 asks for it and the kernels have the type on this GPU,
 * and then for n <= BALEEN_CUDA_MMQ_MAX when that is set (read once per
 * process). Off by default: on an H200 (session 5) the first MMQ passed its
 * tests but lost to the F16 path at every size (Q4_K 3584 x 3584: 0.87x at
 * 8 rows, 0.18x at 2048; the 7B prefill 22.3k -> 5.3k tok/s, batch-128
 * decode 3.4k -> 2.7k tok/s). */
gboolean
bln_cuda_mmq_enabled (BlnType type, int n)
{
  static int state = -1;   /* -1 unread, 0 off, 1 on */
  static long max_n = G_MAXINT;

  if (state < 0)
    {
      const char *on = g_getenv ("BALEEN_CUDA_MMQ");
      const char *mx = g_getenv ("BALEEN_CUDA_MMQ_MAX");

      if (mx != NULL && *mx != '\0')
        {
          char *end = NULL;
          long v = strtol (mx, &end, 10);
          if (end != mx && *end == '\0' && v >= 0)
            max_n = v;
        }
      state = on != NULL && strcmp (on, "1") == 0 ? 1 : 0;
    }
  return state == 1 && n <= max_n && bln_kernels_mmq_supports ((int) type);
}

static long
env_long (const char *name, long dflt)
{
  const char *v = g_getenv (name);
  char *end = NULL;
  long r;

  if (v == NULL || *v == '\0')
    return dflt;
  r = strtol (v, &end, 10);
  return end != v && *end == '\0' && r >= 0 ? r : dflt;
}

/* Whether products of quantised type @type with @n token rows go through
 * the F16 tensor-core kernel that decodes the weights in registers
 * (kernels/mmf.cu): for the types it has on this GPU, rows a multiple of
 * 256 values and n up to
 * BALEEN_CUDA_MMF_MAX (default 128; above that dequantisation to F16 and
 * cuBLAS, which won from 512 rows on an H200 in session 6: Q4_K 18944 x
 * 3584 at 128 rows 105 against 138 us, at 512 rows 326 against 198 us);
 * BALEEN_CUDA_MMF=0 turns it off. Read once per process. Takes precedence
 * over BALEEN_CUDA_MMQ=1. The single-context path keeps the matvec up to 8
 * rows; the batched path from bln_cuda_mmf_min() rows. */
gboolean
bln_cuda_mmf_enabled (const BlnCudaTensor *w, int n)
{
  static int state = -1;
  static long max_n;

  if (state < 0)
    {
      const char *on = g_getenv ("BALEEN_CUDA_MMF");

      max_n = env_long ("BALEEN_CUDA_MMF_MAX", 128);
      state = on != NULL && strcmp (on, "0") == 0 ? 0 : 1;
    }
  /* the kernel takes rows of whole 256-value units */
  return state == 1 && n <= max_n && w->n_in % 256 == 0 && w->header != NULL
         && bln_kernels_mmf_supports ((int) w->type);
}

/* The fewest token rows the batched path sends through the F16 tensor-core
 * kernel instead of the 8-bit matvec: BALEEN_CUDA_MMF_MIN, default 8 (H200,
 * session 6, 7B Q4_K_M batched decode: at 8 sequences 1,264 against 965
 * tok/s, at 2 and 4 the matvec was faster). Read once. */
int
bln_cuda_mmf_min (void)
{
  static long min_n = -1;

  if (min_n < 0)
    min_n = env_long ("BALEEN_CUDA_MMF_MIN", 8);
  return (int) min_n;
}

/* The type of activations bln_cuda_linear converts x to for @w and @n rows
 * (its cuBLAS F16 / BF16 branch): 1 for BF16 (BF16 weights), 0 for F16
 * (F16 and quantised weights, expanded to F16), -1 when another branch reads
 * the float rows (the matvec, MMF, MMQ, F32 weights). The order of the tests
 * is bln_cuda_linear's. */
int
bln_cuda_linear_act16 (const BlnCudaTensor *w, int n)
{
  if (n <= BLN_CUDA_MATVEC_MAX_TOK || bln_cuda_mmf_enabled (w, n)
      || bln_cuda_mmq_enabled (w->type, n) || w->type == BLN_TYPE_F32)
    return -1;
  return w->type == BLN_TYPE_BF16 ? 1 : 0;
}

/* The cuBLAS branch's product of the activations already in c->act16 (of
 * the type bln_cuda_linear_act16 names): y = act16 · Wᵀ + beta y, beta 0
 * or 1. */
static gboolean
linear_gemm16 (BlnCudaCtx *c, const BlnCudaTensor *w, int n, float *y, int ldy, float beta,
               GError **error)
{
  const float one = 1.0f;
  int n_in = (int) w->n_in, n_out = (int) w->n_out;
  gboolean bf16 = w->type == BLN_TYPE_BF16;
  const void *wp = w->payload->ptr;

  if (w->type != BLN_TYPE_F16 && !bf16)
    {
      if (!KCHECK (bln_kernels_dequant_f16 ((int) w->type, w->payload->ptr,
                                            w->header ? w->header->ptr : NULL, n_in, n_out,
                                            c->deq, c->stream), error))
        return FALSE;
      wp = c->deq;
    }
  return bln_cuda_blas_check (cublasGemmEx (c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in,
                                            &one, wp, bf16 ? CUDA_R_16BF : CUDA_R_16F, n_in,
                                            c->act16, bf16 ? CUDA_R_16BF : CUDA_R_16F, n_in,
                                            &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                                            CUBLAS_GEMM_DEFAULT), "gemm", error);
}

/* y[n][n_out] = x[n][n_in] · Wᵀ (+ bias) */
gboolean
bln_cuda_linear (BlnCudaCtx *c, const BlnCudaTensor *w, const float *bias, const float *x,
                 int n, float *y, int ldy, GError **error)
{
  const float one = 1.0f, zero = 0.0f;
  int n_in = (int) w->n_in, n_out = (int) w->n_out;

  if (ldy == 0)
    ldy = n_out;
  if (n <= BLN_CUDA_MATVEC_MAX_TOK)
    {
      if (!KCHECK (bln_kernels_matvec_ex ((int) w->type, w->payload->ptr,
                                          w->header ? w->header->ptr : NULL, n_in, n_out, x, n,
                                          y, ldy, 0, c->stream), error))
        return FALSE;
    }
  else if (bln_cuda_mmf_enabled (w, n))
    {
      if (!KCHECK (bln_kernels_mmf ((int) w->type, w->payload->ptr,
                                    w->header ? w->header->ptr : NULL, n_in, n_out, x, n, y, ldy,
                                    0, c->stream), error))
        return FALSE;
    }
  else if (bln_cuda_mmq_enabled (w->type, n))
    {
      if (!KCHECK (bln_kernels_mmq ((int) w->type, w->payload->ptr,
                                    w->header ? w->header->ptr : NULL, n_in, n_out, x, n, y, ldy,
                                    0, c->stream), error))
        return FALSE;
    }
  else if (w->type == BLN_TYPE_F32)
    {
      if (!bln_cuda_blas_check (cublasSgemm (c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in,
                                             &one, w->payload->ptr, n_in, x, n_in, &zero, y,
                                             ldy), "sgemm", error))
        return FALSE;
    }
  else if (!KCHECK (bln_kernels_convert (x, c->act16, (size_t) n * n_in,
                                         w->type == BLN_TYPE_BF16, c->stream), error)
           || !linear_gemm16 (c, w, n, y, ldy, zero, error))
    return FALSE;
  if (bias != NULL && (ldy != n_out
                       || !KCHECK (bln_kernels_add_bias (y, bias, n, n_out, c->stream), error)))
    {
      if (ldy != n_out)
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "bias with a strided output");
      return FALSE;
    }
  return TRUE;
}

gboolean
bln_cuda_linear_x16 (BlnCudaCtx *c, const BlnCudaTensor *w, int n, float *y, int ldy,
                     gboolean accumulate, GError **error)
{
  if (bln_cuda_linear_act16 (w, n) < 0 || (size_t) n * w->n_in * 2 > c->sp.act16)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "%s: the product of %d rows does not run on 16-bit activations in c->act16",
                   G_STRFUNC, n);
      return FALSE;
    }
  return linear_gemm16 (c, w, n, y, ldy == 0 ? (int) w->n_out : ldy, accumulate ? 1.0f : 0.0f,
                        error);
}

/* Bytes of the int8 values of one layer's 8-bit K (head_dim dk) or V (dv)
 * cache: its F16 scales start there. */
static size_t
q8_vals (const BlnCudaCtx *c, int head_dim)
{
  return (size_t) c->n_ctx * c->model->hp.n_head_kv * head_dim;
}

/* Prefill attention of layer @il for n tokens at pos0 (q_kv holds the rotated
 * queries in the cache's type): over an F16 cache (or the F16 copies of an
 * 8-bit one), one flash kernel where it serves the heads; else per query
 * block, scores = K·q on cuBLAS (one strided batch per position in the head
 * group, batched over KV heads), the masked softmax, then V·p into att. */
static gboolean
attn_prefill (BlnCudaCtx *c, const void *kc, const void *vc, int n, int pos0, GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  int H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;
  int group = H / Hkv, q0, j;
  cudaDataType_t kvt = c->kv_f16 ? CUDA_R_16F : CUDA_R_32F;
  size_t es = c->kv_f16 ? 2 : 4;   /* F16 copies over an 8-bit cache */
  const float one = 1.0f, zero = 0.0f;

  if (c->kv_q8)
    {
      /* the positions so far as F16, for cuBLAS */
      void *kd = c->kdq, *vd = (uint8_t *) c->kdq + c->sp.kdq / 2;
      size_t rows = (size_t) (pos0 + n) * Hkv;

      if (!KCHECK (bln_kernels_kv_dequant_q8 (kc, (const uint8_t *) kc + q8_vals (c, dk), rows,
                                              dk, kd, c->stream), error)
          || !KCHECK (bln_kernels_kv_dequant_q8 (vc, (const uint8_t *) vc + q8_vals (c, dv),
                                                 rows, dv, vd, c->stream), error))
        return FALSE;
      kc = kd;
      vc = vd;
    }
  if (flash_serves (c->model, c->kv_elem))
    return KCHECK (bln_kernels_flash_prefill (c->qkv16, n, pos0, H, Hkv, dk,
                                              c->model->attn_scale, kc, vc, c->att, c->stream),
                   error);
  for (q0 = 0; q0 < n; q0 += c->sp.qblock)
    {
      int nq = MIN (c->sp.qblock, n - q0);
      int n_kv = pos0 + q0 + nq;
      long long sstride = (long long) nq * n_kv;

      for (j = 0; j < group; j++)
        if (!bln_cuda_blas_check (cublasGemmStridedBatchedEx (
                             c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_kv, nq, dk, &one,
                             kc, kvt, Hkv * dk, dk,
                             (const uint8_t *) c->qkv16 + ((size_t) q0 * H + j) * dk * es, kvt,
                             H * dk, (long long) group * dk, &zero,
                             (float *) c->scores + (size_t) j * sstride, CUDA_R_32F, n_kv,
                             group * sstride, Hkv, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         "attention scores", error))
          return FALSE;
      if (!KCHECK (bln_kernels_softmax_causal (c->scores, c->probs, c->kv_f16, H, nq, n_kv,
                                               pos0 + q0, c->model->attn_scale, c->stream),
                   error))
        return FALSE;
      for (j = 0; j < group; j++)
        if (!bln_cuda_blas_check (cublasGemmStridedBatchedEx (
                             c->blas, CUBLAS_OP_N, CUBLAS_OP_N, dv, nq, n_kv, &one,
                             vc, kvt, Hkv * dv, dv,
                             (const uint8_t *) c->probs + (size_t) j * sstride * es, kvt, n_kv,
                             group * sstride, &zero,
                             c->att + ((size_t) q0 * H + j) * dv, CUDA_R_32F, H * dv,
                             (long long) group * dv, Hkv, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT),
                         "attention mix", error))
          return FALSE;
    }
  return TRUE;
}

/* Biases and RoPE of layer @L's n tokens, K and V into the layer's caches
 * @kc / @vc (the 8-bit cache: quantised by a second kernel), the rotated
 * queries into @q_kv (F16 or F32, may be NULL). */
static gboolean
rope_store_layer (BlnCudaCtx *c, const CudaLayer *L, int n, uint8_t *kc, uint8_t *vc,
                  void *q_kv, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  int H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;

  if (!KCHECK (bln_kernels_rope_store (c->qkv, c->qkv + H * dk, c->qkv + (H + Hkv) * dk, L->bq,
                                       L->bk, L->bv, n, c->qkv_ld, c->d_pos, H, Hkv, dk, dv,
                                       hp->rope_dim, hp->rope_neox, c->cm->inv_freq,
                                       m->rope_attn_factor, c->kv_q8 ? NULL : kc,
                                       c->kv_q8 ? NULL : vc, c->kv_f16, q_kv, c->stream),
               error))
    return FALSE;
  return !c->kv_q8
         || KCHECK (bln_kernels_kv_store_q8 (c->qkv + H * dk, c->qkv + (H + Hkv) * dk, n,
                                             c->qkv_ld, c->d_pos, Hkv, dk, dv, kc,
                                             kc + q8_vals (c, dk), vc, vc + q8_vals (c, dv),
                                             c->stream), error);
}

/* Whether one-token decode steps over an F16 / F32 cache rotate, store and
 * attend in one kernel (bln_kernels_attn_decode_rope) instead of
 * bln_kernels_rope_store then the decode attention: on unless
 * BALEEN_CUDA_ROPE_ATTN=0 (read once). Both give the same bits. */
static gboolean
rope_attn_enabled (void)
{
  static int state = -1;

  return bln_cuda_env_on ("BALEEN_CUDA_ROPE_ATTN", &state);
}

/* Biases, RoPE, the KV store and the attention of layer @L's n decode
 * tokens into c->att; *@rounded says whether the attention also left its
 * output rounded for the output matvec. One kernel where
 * rope_attn_enabled() and the fused kernel serves the step, else two (three
 * over the 8-bit cache). */
static gboolean
decode_attention (BlnCudaCtx *c, const CudaLayer *L, int n, uint8_t *kc, uint8_t *vc,
                  int *rounded, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  int H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;

  *rounded = 0;
  if (n == 1 && !c->kv_q8 && rope_attn_enabled ()
      && bln_kernels_attn_decode_rope_supports (H, Hkv, dk, dv, hp->rope_dim, kc, vc))
    return KCHECK (bln_kernels_attn_decode_rope (c->qkv, c->qkv + H * dk,
                                                 c->qkv + (H + Hkv) * dk, L->bq, L->bk, L->bv,
                                                 c->d_pos, H, Hkv, dk, dv, hp->rope_dim,
                                                 hp->rope_neox, c->cm->inv_freq,
                                                 m->rope_attn_factor, m->attn_scale, kc, vc,
                                                 c->kv_f16, c->part, c->att, rounded,
                                                 c->stream), error);
  if (!rope_store_layer (c, L, n, kc, vc, NULL, error))
    return FALSE;
  if (c->kv_q8)
    return KCHECK (bln_kernels_attn_decode_q8 (c->qkv, c->qkv_ld, n, c->d_pos, H, Hkv, dk,
                                               m->attn_scale, kc, kc + q8_vals (c, dk), vc,
                                               vc + q8_vals (c, dv), c->part, c->att,
                                               c->stream), error);
  return KCHECK (bln_kernels_attn_decode_round (c->qkv, c->qkv_ld, n, c->d_pos, H, Hkv, dk, dv,
                                                m->attn_scale, kc, vc, c->kv_f16, c->part,
                                                c->att, rounded, c->stream), error);
}

/* y = W x for n <= BLN_CUDA_MATVEC_MAX_TOK rows, with kernels/kernels.h
 * matvec flags (accumulate, activations already rounded). */
gboolean
bln_cuda_mv (BlnCudaCtx *c, const BlnCudaTensor *w, const float *x, int n, float *y, int ldy,
             int flags, GError **error)
{
  return KCHECK (bln_kernels_matvec_ex ((int) w->type, w->payload->ptr,
                                        w->header ? w->header->ptr : NULL, (int) w->n_in,
                                        (int) w->n_out, x, n, y, ldy, flags, c->stream), error);
}

/* RMSNorm into c->h; also rounds it for the matvecs when the width allows.
 * Returns the matvec flag that says so (or 0), or -1 with @error. */
int
bln_cuda_norm_for_matvec (BlnCudaCtx *c, const float *w, int n, GError **error)
{
  const BlnHParams *hp = &c->model->hp;

  if (hp->n_embd % 32 == 0)
    return KCHECK (bln_kernels_rmsnorm_quant (c->x, w, c->h, n, hp->n_embd, hp->norm_eps,
                                              c->stream), error)
           ? BLN_KERNELS_MATVEC_XQ_READY : -1;
  return KCHECK (bln_kernels_rmsnorm (c->x, w, c->h, n, hp->n_embd, hp->norm_eps, c->stream),
                 error) ? 0 : -1;
}

/* The layers for n <= BLN_CUDA_MATVEC_MAX_TOK tokens (decode): matvecs, with
 * the norms and SwiGLU rounding the activations once for the matvecs that
 * follow them and the output projections adding into the residual stream.
 * Only kernels: a CUDA graph can capture it. */
static gboolean
enqueue_decode_layers (BlnCudaCtx *c, int n, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  const BlnCudaModel *cm = c->cm;
  int ff = hp->n_ff, il, fl, i, rounded;
  size_t k_layer = kv_layer (m, c->n_ctx, c->kv_elem, hp->head_dim_k);
  size_t v_layer = kv_layer (m, c->n_ctx, c->kv_elem, hp->head_dim_v);
  const int acc = BLN_KERNELS_MATVEC_ACCUMULATE;

  if (c->ds2 != NULL)
    return bln_cuda_ds2_decode_layers (c, n, error);

  for (il = 0; il < hp->n_layer; il++)
    {
      const CudaLayer *L = &cm->layers[il];
      uint8_t *kc = (uint8_t *) c->k_cache->ptr + (size_t) il * k_layer;
      uint8_t *vc = (uint8_t *) c->v_cache->ptr + (size_t) il * v_layer;

      if ((fl = bln_cuda_norm_for_matvec (c, L->attn_norm, n, error)) < 0)
        return FALSE;
      for (i = 0; i < L->n_qkv; i++)
        if (!bln_cuda_mv (c, L->qkv[i], c->h, n, c->qkv + L->qkv_col[i], c->qkv_ld, fl, error))
          return FALSE;
      /* the attention may leave its output rounded for the output matvec */
      if (!decode_attention (c, L, n, kc, vc, &rounded, error)
          || !bln_cuda_mv (c, L->wo, c->att, n, c->x, 0,
                           acc | (rounded ? BLN_KERNELS_MATVEC_XQ_READY : 0), error)
          || (fl = bln_cuda_norm_for_matvec (c, L->ffn_norm, n, error)) < 0)
        return FALSE;
      if (L->wgu != NULL)
        {
          if (!bln_cuda_mv (c, L->wgu, c->h, n, c->gu, 0, fl, error))
            return FALSE;
        }
      else if (!bln_cuda_mv (c, L->wg, c->h, n, c->gu, 0, fl, error)
               || !bln_cuda_mv (c, L->wu, c->h, n, c->gu + (size_t) n * ff, 0, fl, error))
        return FALSE;
      /* stacked: row t holds gate then up (stride 2 ff); separate: n rows of
       * gate, then n rows of up (stride ff) */
      {
        const float *g = c->gu, *u = c->gu + ff;
        int gs = 2 * ff, us = 2 * ff;

        if (L->wgu == NULL)
          {
            u = c->gu + (size_t) n * ff;
            gs = us = ff;
          }
        if (ff % 32 == 0)
          {
            if (!KCHECK (bln_kernels_silu_mul_quant (g, gs, u, us, c->ffo, n, ff, c->stream),
                         error)
                || !bln_cuda_mv (c, L->wd, c->ffo, n, c->x, 0, acc | BLN_KERNELS_MATVEC_XQ_READY,
                            error))
              return FALSE;
          }
        else if (!KCHECK (bln_kernels_silu_mul (g, gs, u, us, c->ffo, n, ff, c->stream), error)
                 || !bln_cuda_mv (c, L->wd, c->ffo, n, c->x, 0, acc, error))
          return FALSE;
      }
    }
  return TRUE;
}

/* Whether the prefill layers let the producers of cuBLAS's 16-bit
 * activations write them directly (bln_kernels_rmsnorm_f16,
 * bln_kernels_silu_mul_f16) and add the output and down projections into
 * the residual by cuBLAS (beta = 1), instead of float rows, conversion
 * passes and bln_kernels_add: the same bits, fewer passes over memory.
 * BALEEN_CUDA_PREFILL_FUSED=0 restores the separate kernels, to compare.
 * Read once. */
static gboolean
prefill_fused (void)
{
  static int state = -1;

  return bln_cuda_env_on ("BALEEN_CUDA_PREFILL_FUSED", &state);
}

/* The 16-bit activation type (bln_cuda_linear_act16) that those of the @nw
 * weights @ws whose products run on cuBLAS share, -1 when none do; sets
 * *@need_float when some read the float rows. Weights wanting F16 and BF16
 * both: -1 and *@need_float, all through bln_cuda_linear (its conversions
 * would overwrite each other's c->act16). */
static int
shared_act16 (BlnCudaTensor *const *ws, int nw, int n, gboolean *need_float)
{
  int t = -1, i;

  *need_float = FALSE;
  for (i = 0; i < nw; i++)
    {
      int ti = bln_cuda_linear_act16 (ws[i], n);

      if (ti < 0)
        *need_float = TRUE;
      else if (t < 0)
        t = ti;
      else if (t != ti)
        {
          *need_float = TRUE;
          return -1;
        }
    }
  return t;
}

/* RMSNorm of the n rows of c->x with @norm, then ys[i][n][ldy] = norm ·
 * ws[i]ᵀ for the @nw weights. Fused: the norm writes the 16-bit activations
 * of the cuBLAS products itself (and c->h only when another product reads
 * floats). The other products, and all of them unfused, go through
 * bln_cuda_linear on c->h. */
static gboolean
norm_project (BlnCudaCtx *c, const float *norm, BlnCudaTensor *const *ws, float *const *ys,
              int ldy, int nw, int n, GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  gboolean need_float = TRUE;
  int t = prefill_fused () ? shared_act16 (ws, nw, n, &need_float) : -1, i;

  if (t < 0)
    {
      if (!KCHECK (bln_kernels_rmsnorm (c->x, norm, c->h, n, hp->n_embd, hp->norm_eps,
                                        c->stream), error))
        return FALSE;
    }
  else if (!KCHECK (bln_kernels_rmsnorm_f16 (c->x, norm, need_float ? c->h : NULL, c->act16, n,
                                             hp->n_embd, hp->norm_eps, t, c->stream), error))
    return FALSE;
  for (i = 0; i < nw; i++)
    {
      gboolean ok;

      if (t >= 0 && bln_cuda_linear_act16 (ws[i], n) == t)
        ok = bln_cuda_linear_x16 (c, ws[i], n, ys[i], ldy, FALSE, error);
      else
        ok = bln_cuda_linear (c, ws[i], NULL, c->h, n, ys[i], ldy, error);
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

/* c->x += @x · Wᵀ for n rows (the output projection): fused and on cuBLAS,
 * the conversion then a product that adds into c->x (beta = 1, each float
 * sum added once, as bln_kernels_add adds it); otherwise the product into
 * c->tmp and bln_kernels_add. */
static gboolean
project_residual (BlnCudaCtx *c, const BlnCudaTensor *w, const float *x, int n, GError **error)
{
  int t = prefill_fused () ? bln_cuda_linear_act16 (w, n) : -1;

  if (t >= 0)
    return KCHECK (bln_kernels_convert (x, c->act16, (size_t) n * w->n_in, t, c->stream), error)
           && bln_cuda_linear_x16 (c, w, n, c->x, 0, TRUE, error);
  return bln_cuda_linear (c, w, NULL, x, n, c->tmp, 0, error)
         && KCHECK (bln_kernels_add (c->x, c->tmp, (size_t) n * c->model->hp.n_embd, c->stream),
                    error);
}

/* SwiGLU of the gate and up rows (g, u, their strides) and the down
 * projection added into c->x: fused and on cuBLAS, the SwiGLU writes the
 * 16-bit activations and the product adds into c->x; otherwise c->ffo,
 * c->tmp and bln_kernels_add. */
static gboolean
swiglu_down (BlnCudaCtx *c, const BlnCudaTensor *wd, const float *g, const float *u, int stride,
             int n, GError **error)
{
  int ff = c->model->hp.n_ff;
  int t = prefill_fused () ? bln_cuda_linear_act16 (wd, n) : -1;

  if (t >= 0)
    return KCHECK (bln_kernels_silu_mul_f16 (g, stride, u, stride, c->act16, n, ff, t,
                                             c->stream), error)
           && bln_cuda_linear_x16 (c, wd, n, c->x, 0, TRUE, error);
  return KCHECK (bln_kernels_silu_mul (g, stride, u, stride, c->ffo, n, ff, c->stream), error)
         && project_residual (c, wd, c->ffo, n, error);
}

/* The layers for a prefill chunk (n > BLN_CUDA_MATVEC_MAX_TOK): tensor-core
 * products on cuBLAS. */
static gboolean
enqueue_prefill_layers (BlnCudaCtx *c, int n, int pos0, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  const BlnCudaModel *cm = c->cm;
  int dk = hp->head_dim_k, dv = hp->head_dim_v, ff = hp->n_ff, il, i;
  size_t k_layer = kv_layer (m, c->n_ctx, c->kv_elem, dk);
  size_t v_layer = kv_layer (m, c->n_ctx, c->kv_elem, dv);

  if (c->ds2 != NULL)
    return bln_cuda_ds2_prefill_layers (c, n, pos0, error);

  for (il = 0; il < hp->n_layer; il++)
    {
      const CudaLayer *L = &cm->layers[il];
      uint8_t *kc = (uint8_t *) c->k_cache->ptr + (size_t) il * k_layer;
      uint8_t *vc = (uint8_t *) c->v_cache->ptr + (size_t) il * v_layer;
      float *qkv_out[3];

      for (i = 0; i < L->n_qkv; i++)
        qkv_out[i] = c->qkv + L->qkv_col[i];
      if (!norm_project (c, L->attn_norm, L->qkv, qkv_out, c->qkv_ld, L->n_qkv, n, error)
          || !rope_store_layer (c, L, n, kc, vc, c->qkv16, error)
          || !attn_prefill (c, kc, vc, n, pos0, error)
          || !project_residual (c, L->wo, c->att, n, error))
        return FALSE;
      /* stacked: row t holds gate then up (stride 2 ff); separate: n rows of
       * gate, then n rows of up (stride ff) */
      if (L->wgu != NULL)
        {
          BlnCudaTensor *ws[1] = { L->wgu };
          float *ys[1] = { c->gu };

          if (!norm_project (c, L->ffn_norm, ws, ys, 0, 1, n, error)
              || !swiglu_down (c, L->wd, c->gu, c->gu + ff, 2 * ff, n, error))
            return FALSE;
        }
      else
        {
          BlnCudaTensor *ws[2] = { L->wg, L->wu };
          float *ys[2] = { c->gu, c->gu + (size_t) n * ff };

          if (!norm_project (c, L->ffn_norm, ws, ys, 0, 2, n, error)
              || !swiglu_down (c, L->wd, ys[0], ys[1], ff, n, error))
            return FALSE;
        }
    }
  return TRUE;
}

/* Passed as the logits destination: the last row's logits stay in
 * c->logits on the device (for the GPU sampler). */
static float dev_logits_marker;
#define DEV_LOGITS (&dev_logits_marker)

/* Output norm and projection of rows [first, first + nr), nr <= LOGIT_ROWS,
 * into c->logits and copied to @dst (host), unless @dst is DEV_LOGITS. */
static gboolean
enqueue_logits (BlnCudaCtx *c, int first, int nr, float *dst, GError **error)
{
  const BlnHParams *hp = &c->model->hp;

  return KCHECK (bln_kernels_rmsnorm (c->x + (size_t) first * hp->n_embd, c->cm->output_norm,
                                      c->h, nr, hp->n_embd, hp->norm_eps, c->stream), error)
         && bln_cuda_matvec (c->cm->output, c->h, nr, c->logits, c->stream, error)
         && (dst == DEV_LOGITS
             || BLN_CUDA_CHECK (cudaMemcpyAsync (dst, c->logits,
                                                 (size_t) nr * hp->n_vocab * sizeof (float),
                                                 cudaMemcpyDeviceToHost, c->stream), error));
}

/* The inputs of a step: embeddings (already in host_x) and position. */
static gboolean
enqueue_inputs (BlnCudaCtx *c, int n, GError **error)
{
  return BLN_CUDA_CHECK (cudaMemcpyAsync (c->x, c->host_x,
                                          (size_t) n * c->model->hp.n_embd * sizeof (float),
                                          cudaMemcpyHostToDevice, c->stream), error)
         && BLN_CUDA_CHECK (cudaMemcpyAsync (c->d_pos, c->h_pos, sizeof (int),
                                             cudaMemcpyHostToDevice, c->stream), error);
}

/* A decode step of n tokens whose last row's logits are wanted, through the
 * step's CUDA graph (captured on first use: inputs, layers, logits into
 * h_logits, or left on the device when @dev). FALSE without @error when
 * graphs are off or the capture failed: the caller runs the step eagerly. */
static gboolean
decode_graph (BlnCudaCtx *c, int n, gboolean dev, gboolean *ran, GError **error)
{
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  cudaGraphExec_t *slot = dev ? &c->graphs_dev[n] : &c->graphs[n];
  GError *local = NULL;
  gboolean ok;

  *ran = FALSE;
  if (c->no_graphs)
    return TRUE;
  if (*slot == NULL)
    {
      if (!BLN_CUDA_CHECK (cudaStreamBeginCapture (c->stream, cudaStreamCaptureModeThreadLocal),
                           error))
        return FALSE;
      ok = enqueue_inputs (c, n, &local) && enqueue_decode_layers (c, n, &local)
           && enqueue_logits (c, n - 1, 1, dev ? DEV_LOGITS : c->h_logits, &local);
      if (cudaStreamEndCapture (c->stream, &g) != cudaSuccess || !ok
          || cudaGraphInstantiate (&exec, g, 0) != cudaSuccess)
        {
          (void) cudaGetLastError ();
          g_debug ("CUDA graph capture failed (%s); running steps eagerly",
                   local ? local->message : "instantiate");
          g_clear_error (&local);
          if (g)
            (void) cudaGraphDestroy (g);
          c->no_graphs = TRUE;
          return TRUE;
        }
      (void) cudaGraphDestroy (g);
      *slot = exec;
    }
  if (!BLN_CUDA_CHECK (cudaGraphLaunch (*slot, c->stream), error))
    return FALSE;
  *ran = TRUE;
  return TRUE;
}

typedef struct {
  const BlnTensor *w;
  const int32_t *ids;
  int n;
  float *out;
  gboolean failed;
} RowsJob;

static void
rows_worker (void *p, int ith, int nth)
{
  RowsJob *job = p;
  int a = (int) ((int64_t) job->n * ith / nth), b = (int) ((int64_t) job->n * (ith + 1) / nth);

  if (b > a && !bln_cpu_get_rows (job->w, job->ids + a, b - a,
                                  job->out + (size_t) a * job->w->ne[0], NULL))
    job->failed = TRUE;
}

/* The embedding rows of @ids into host_x, dequantised on the host (the table
 * stays in the mapped file), over the context's threads for a long prompt. */
static gboolean
embed_rows (BlnCudaCtx *c, const int32_t *ids, int n, GError **error)
{
  RowsJob job = { c->model->tok_embd, ids, n, c->host_x, FALSE };

  if (n < 64 || c->pool == NULL || bln_pool_n_threads (c->pool) < 2)
    return bln_cpu_get_rows (job.w, ids, n, c->host_x, error);
  bln_pool_run (c->pool, rows_worker, &job);
  if (job.failed)   /* say which row, as the serial path does */
    return bln_cpu_get_rows (job.w, ids, n, c->host_x, error);
  return TRUE;
}

/* One chunk of n <= sp.rows tokens at position pos0. Logits of rows
 * [first, n) go to @logits (rows of n_vocab) when @logits is not NULL; with
 * DEV_LOGITS (first == n - 1) the last row's stay in c->logits and the
 * stream may still be running on return (the GPU sampler follows on it). */
static gboolean
run_chunk (BlnCudaCtx *c, const int32_t *ids, int n, int pos0, float *logits, int first,
           GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  gboolean decode = n <= BLN_CUDA_MATVEC_MAX_TOK, ran = FALSE;
  int r;

  /* host_x and h_pos are free: the stream was synchronised at the end of
   * every chunk */
  if (!embed_rows (c, ids, n, error))
    return FALSE;
  *c->h_pos = pos0;

  if (decode && logits != NULL && first == n - 1)
    {
      if (!decode_graph (c, n, logits == DEV_LOGITS, &ran, error))
        return FALSE;
      if (ran && logits == DEV_LOGITS)
        return TRUE;
      if (ran)
        {
          if (!BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error))
            return FALSE;
          memcpy (logits, c->h_logits, (size_t) hp->n_vocab * sizeof (float));
          return TRUE;
        }
    }

  if (!enqueue_inputs (c, n, error)
      || !(decode ? enqueue_decode_layers (c, n, error)
                  : enqueue_prefill_layers (c, n, pos0, error)))
    return FALSE;
  if (logits != NULL)
    for (r = first; r < n; r += LOGIT_ROWS)
      {
        int nr = MIN (LOGIT_ROWS, n - r);
        if (!enqueue_logits (c, r, nr, logits + (size_t) (r - first) * hp->n_vocab, error))
          return FALSE;
      }
  return BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error);
}

gboolean
bln_cuda_ctx_eval (BlnContext *ctx, const int32_t *ids, int n, float *logits,
                   gboolean all_logits, GError **error)
{
  BlnCudaCtx *c = ctx->s.cuda;
  int n_vocab = c->model->hp.n_vocab, done, nc;

  if (!BLN_CUDA_CHECK (cudaSetDevice (c->device), error))
    return FALSE;
  c->pool = ctx->s.pool;
  for (done = 0; done < n; done += nc)
    {
      float *out = NULL;
      int first = 0;

      nc = MIN (c->sp.rows, n - done);
      if (logits != NULL && all_logits)
        out = logits + (size_t) done * n_vocab;
      else if (logits != NULL && done + nc == n)
        {
          out = logits;
          first = nc - 1;
        }
      if (!run_chunk (c, ids + done, nc, ctx->s.n_past + done, out, first, error))
        return FALSE;
    }
  ctx->s.n_past += n;
  return TRUE;
}

gboolean
bln_cuda_ctx_eval_sample (BlnContext *ctx, const int32_t *ids, int n, BlnSampler *sampler,
                          int32_t *id_out, BlnLogprob *top, int n_top, GError **error)
{
  BlnCudaCtx *c = ctx->s.cuda;
  int done, nc;

  if (!BLN_CUDA_CHECK (cudaSetDevice (c->device), error))
    return FALSE;
  if (c->sampler == NULL
      && (c->sampler = bln_cuda_sampler_new (c->model->hp.n_vocab, error)) == NULL)
    return FALSE;
  c->pool = ctx->s.pool;
  for (done = 0; done < n; done += nc)
    {
      nc = MIN (c->sp.rows, n - done);
      if (!run_chunk (c, ids + done, nc, ctx->s.n_past + done,
                      done + nc == n ? DEV_LOGITS : NULL, nc - 1, error))
        {
          (void) cudaStreamSynchronize (c->stream);
          return FALSE;
        }
    }
  ctx->s.n_past += n;
  /* synchronises the stream before it returns, success or not */
  return bln_cuda_sample (c->sampler, c->stream, c->logits, sampler, id_out, top, n_top, error);
}
