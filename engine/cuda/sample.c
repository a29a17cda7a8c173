/* cuda/sample.c — the engine side of GPU sampling; see sample.h. */
#include <string.h>

#include "bln-error.h"
#include "cuda.h"
#include "sample.h"
#include "kernels/sample.h"

struct _BlnCudaSampler {
  int n_vocab;
  BlnCudaBuffer *scratch;       /* bln_kernels_sample's scratch */
  BlnCudaBuffer *hist;          /* (id, count) pairs, 2 n_vocab int32 */
  BlnCudaBuffer *result;        /* one BlnSampleResult */
  int32_t *h_hist;              /* pinned, 2 n_vocab */
  BlnSampleResult *h_result;    /* pinned */
  float *h_logits;              /* pinned, n_vocab; made on the first fallback */
  gboolean need_reset;          /* the scratch's state must be zeroed first */
  guint64 n_calls, n_fallbacks;
};

BlnCudaSampler *
bln_cuda_sampler_new (int n_vocab, GError **error)
{
  g_autoptr (BlnCudaSampler) gs = NULL;
  size_t bytes = bln_kernels_sample_scratch_bytes (n_vocab);
  void *p = NULL;

  if (bytes == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GPU sampler: vocabulary size %d outside 1..%d", n_vocab,
                   BLN_SAMPLE_MAX_VOCAB);
      return NULL;
    }
  gs = g_new0 (BlnCudaSampler, 1);
  gs->n_vocab = n_vocab;
  gs->scratch = bln_cuda_buffer_new (bytes, error);
  if (gs->scratch == NULL)
    return NULL;
  gs->hist = bln_cuda_buffer_new ((size_t) n_vocab * 2 * sizeof (int32_t), error);
  if (gs->hist == NULL)
    return NULL;
  gs->result = bln_cuda_buffer_new (sizeof (BlnSampleResult), error);
  if (gs->result == NULL)
    return NULL;
  if (!BLN_CUDA_CHECK (cudaMallocHost (&p, (size_t) n_vocab * 2 * sizeof (int32_t)), error))
    return NULL;
  gs->h_hist = p;
  p = NULL;
  if (!BLN_CUDA_CHECK (cudaMallocHost (&p, sizeof (BlnSampleResult)), error))
    return NULL;
  gs->h_result = p;
  if (!BLN_CUDA_CHECK (bln_kernels_sample_reset (gs->scratch->ptr, n_vocab, 0), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (0), error))
    return NULL;
  return g_steal_pointer (&gs);
}

void
bln_cuda_sampler_free (BlnCudaSampler *gs)
{
  if (gs == NULL)
    return;
  bln_cuda_buffer_free (gs->scratch);
  bln_cuda_buffer_free (gs->hist);
  bln_cuda_buffer_free (gs->result);
  if (gs->h_hist != NULL)
    (void) bln_cuda_check (cudaFreeHost (gs->h_hist), "cudaFreeHost", G_STRFUNC, NULL);
  if (gs->h_result != NULL)
    (void) bln_cuda_check (cudaFreeHost (gs->h_result), "cudaFreeHost", G_STRFUNC, NULL);
  if (gs->h_logits != NULL)
    (void) bln_cuda_check (cudaFreeHost (gs->h_logits), "cudaFreeHost", G_STRFUNC, NULL);
  g_free (gs);
}

guint64
bln_cuda_sampler_fallbacks (const BlnCudaSampler *gs)
{
  g_return_val_if_fail (gs != NULL, 0);
  return gs->n_fallbacks;
}

guint64
bln_cuda_sampler_calls (const BlnCudaSampler *gs)
{
  g_return_val_if_fail (gs != NULL, 0);
  return gs->n_calls;
}

gboolean
bln_cuda_sampler_poison (BlnCudaSampler *gs, GError **error)
{
  g_return_val_if_fail (gs != NULL, FALSE);
  if (!BLN_CUDA_CHECK (cudaMemset (gs->scratch->ptr, 0xff, gs->scratch->size), error)
      || !BLN_CUDA_CHECK (cudaMemset (gs->result->ptr, 0xff, gs->result->size), error)
      || !BLN_CUDA_CHECK (bln_kernels_sample_reset (gs->scratch->ptr, gs->n_vocab, 0), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (0), error))
    {
      gs->need_reset = TRUE;
      return FALSE;
    }
  gs->need_reset = FALSE;
  return TRUE;
}

/* The CPU sampler on a copy of the row. */
static gboolean
sample_on_cpu (BlnCudaSampler *gs, cudaStream_t stream, const float *d_logits,
               BlnSampler *sampler, int32_t *out_id, BlnLogprob *top, int n_top, GError **error)
{
  if (gs->h_logits == NULL)
    {
      void *p = NULL;

      if (!BLN_CUDA_CHECK (cudaMallocHost (&p, (size_t) gs->n_vocab * sizeof (float)), error))
        return FALSE;
      gs->h_logits = p;
    }
  if (!BLN_CUDA_CHECK (cudaMemcpyAsync (gs->h_logits, d_logits,
                                        (size_t) gs->n_vocab * sizeof (float),
                                        cudaMemcpyDeviceToHost, stream), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (stream), error))
    return FALSE;
  gs->n_fallbacks++;
  *out_id = bln_sampler_sample (sampler, gs->h_logits, top, n_top);
  return TRUE;
}

gboolean
bln_cuda_sample (BlnCudaSampler *gs, cudaStream_t stream, const float *d_logits,
                 BlnSampler *sampler, int32_t *out_id, BlnLogprob *top, int n_top,
                 GError **error)
{
  const BlnSamplerParams *prm;
  const BlnSampleResult *r;
  BlnSampleArgs args;
  int n_hist = 0;

  if (gs == NULL || d_logits == NULL || sampler == NULL || out_id == NULL || n_top < 0
      || bln_sampler_n_vocab (sampler) != gs->n_vocab)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GPU sampler: bad arguments (missing pointer, n_top < 0, or a sampler "
                   "for another vocabulary size)");
      return FALSE;
    }
  gs->n_calls++;
  if (top != NULL && n_top > BLN_CUDA_SAMPLE_MAX_TOP)
    return sample_on_cpu (gs, stream, d_logits, sampler, out_id, top, n_top, error);

  if (gs->need_reset)
    {
      if (!BLN_CUDA_CHECK (bln_kernels_sample_reset (gs->scratch->ptr, gs->n_vocab, stream),
                           error))
        return FALSE;
      gs->need_reset = FALSE;
    }

  prm = bln_sampler_params (sampler);
  if ((prm->repetition_penalty > 0.0f && prm->repetition_penalty != 1.0f)
      || prm->presence_penalty != 0.0f || prm->frequency_penalty != 0.0f)
    {
      const int32_t *ids, *counts;
      int n = bln_sampler_history (sampler, &ids, &counts);

      for (int j = 0; j < n && j < gs->n_vocab; j++)
        {
          gs->h_hist[2 * j] = ids[j];
          gs->h_hist[2 * j + 1] = counts[ids[j]];
        }
      n_hist = MIN (n, gs->n_vocab);
      if (n_hist > 0
          && !BLN_CUDA_CHECK (cudaMemcpyAsync (gs->hist->ptr, gs->h_hist,
                                               (size_t) n_hist * 2 * sizeof (int32_t),
                                               cudaMemcpyHostToDevice, stream), error))
        goto fail;
    }

  memset (&args, 0, sizeof args);
  args.temperature = prm->temperature;
  args.top_p = prm->top_p;
  args.min_p = prm->min_p;
  args.top_k = prm->top_k;
  args.repetition_penalty = prm->repetition_penalty;
  args.presence_penalty = prm->presence_penalty;
  args.frequency_penalty = prm->frequency_penalty;
  args.u = bln_sampler_peek_uniform (sampler);
  args.n_top = top != NULL ? n_top : -1;

  if (!BLN_CUDA_CHECK (bln_kernels_sample (d_logits, gs->n_vocab, gs->hist->ptr, n_hist, &args,
                                           gs->scratch->ptr, gs->result->ptr, stream), error)
      || !BLN_CUDA_CHECK (cudaMemcpyAsync (gs->h_result, gs->result->ptr,
                                           sizeof (BlnSampleResult), cudaMemcpyDeviceToHost,
                                           stream), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (stream), error))
    goto fail;

  r = gs->h_result;
  if (r->status == BLN_SAMPLE_FALLBACK)
    return sample_on_cpu (gs, stream, d_logits, sampler, out_id, top, n_top, error);
  if (r->status != BLN_SAMPLE_OK || r->id < 0 || r->id >= gs->n_vocab || r->n_survivors < 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND,
                   "GPU sampler: inconsistent result (status %d, id %d, %d survivors)",
                   r->status, r->id, r->n_survivors);
      goto fail;
    }
  if (r->n_survivors > 1)
    bln_sampler_skip_uniform (sampler);
  *out_id = r->id;
  if (top != NULL)
    {
      top[0].id = r->id;
      top[0].logprob = r->logprob;
      for (int i = 0; i < n_top; i++)
        {
          top[1 + i].id = r->top_id[i];
          top[1 + i].logprob = r->top_logprob[i];
        }
    }
  return TRUE;

fail:
  gs->need_reset = TRUE;
  return FALSE;
}
