/* arch-llama.c — the forward pass of llama-style decoders: llama (DeepSeek
 * LLM and Coder 1.x, R1-Distill-Llama, SmolLM2) and qwen2 (R1-Distill-Qwen),
 * which differ only in q/k/v biases and the rotary layout.
 *
 * Per layer: x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x)), then
 * x += Wd · (silu(Wg·n(x)) * Wu·n(x)), with RMSNorm n(). Keys are cached
 * after rotation; attention is causal over the cache with grouped KV heads.
 */
#include <math.h>
#include <string.h>

#include "bln-error.h"
#include "model-private.h"

typedef struct {
  BlnContext *ctx;
  int layer;
  int n;             /* tokens in this batch */
  int pos0;          /* position of the first one */
  const float *q;    /* [n][H*dk] */
  float *out;        /* [n][H*dv] */
  float *scores;     /* [nth][n_ctx] */
} AttnJob;

/* One thread takes every nth (token, head) pair. Scores are computed for the
 * positions the token may see, soft-maxed, and used to mix the values. */
static void
attn_worker (void *p, int ith, int nth)
{
  AttnJob *job = p;
  BlnContextState *s = &job->ctx->s;
  const BlnHParams *hp = &s->model->hp;
  int H = hp->n_head, group = hp->n_head / hp->n_head_kv;
  int dk = hp->head_dim_k, dv = hp->head_dim_v;
  float scale = s->model->attn_scale;
  float *sc = job->scores + (size_t) ith * s->n_ctx;
  const float *kc = s->k_cache + (size_t) job->layer * s->n_ctx * s->k_width;
  const float *vc = s->v_cache + (size_t) job->layer * s->n_ctx * s->v_width;
  int item;

  for (item = ith; item < job->n * H; item += nth)
    {
      int t = item / H, h = item % H, kvh = h / group;
      int len = job->pos0 + t + 1, j;
      const float *q = job->q + (size_t) t * H * dk + (size_t) h * dk;
      float *o = job->out + (size_t) t * H * dv + (size_t) h * dv;
      float mx = -INFINITY, sum = 0.0f;

      for (j = 0; j < len; j++)
        {
          const float *k = kc + (size_t) j * s->k_width + (size_t) kvh * dk;
          sc[j] = bln_cpu_dot (q, k, dk) * scale;
          mx = MAX (mx, sc[j]);
        }
      for (j = 0; j < len; j++)
        {
          sc[j] = expf (sc[j] - mx);
          sum += sc[j];
        }
      memset (o, 0, dv * sizeof (float));
      for (j = 0; j < len; j++)
        {
          const float *v = vc + (size_t) j * s->v_width + (size_t) kvh * dv;
          bln_cpu_axpy (o, sc[j] / sum, v, dv);
        }
    }
}

gboolean
bln_arch_llama_forward (BlnContext *ctx, const int32_t *ids, int n, float *logits,
                        gboolean all_logits, GError **error)
{
  BlnContextState *s = &ctx->s;
  const BlnModel *m = s->model;
  const BlnHParams *hp = &m->hp;
  int d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv;
  int dk = hp->head_dim_k, dv = hp->head_dim_v;
  int pos0 = s->n_past, nth = bln_pool_n_threads (s->pool);
  float *x, *h, *q, *k, *v, *att, *tmp, *scores;
  int il, t, hh, i;

  x = bln_ctx_buf (ctx, 0, (size_t) n * d, error);
  h = bln_ctx_buf (ctx, 1, (size_t) n * d, error);
  q = bln_ctx_buf (ctx, 2, (size_t) n * H * dk, error);
  k = bln_ctx_buf (ctx, 3, (size_t) n * Hkv * dk, error);
  v = bln_ctx_buf (ctx, 4, (size_t) n * Hkv * dv, error);
  att = bln_ctx_buf (ctx, 5, (size_t) n * H * dv, error);
  tmp = bln_ctx_buf (ctx, 6, (size_t) n * d, error);
  scores = bln_ctx_buf (ctx, 9, (size_t) nth * s->n_ctx, error);
  if (!x || !h || !q || !k || !v || !att || !tmp || !scores)
    return FALSE;

  if (!bln_cpu_get_rows (m->tok_embd, ids, n, x, error))
    return FALSE;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      float *kc = s->k_cache + ((size_t) il * s->n_ctx + pos0) * s->k_width;
      float *vc = s->v_cache + ((size_t) il * s->n_ctx + pos0) * s->v_width;
      AttnJob job;

      for (t = 0; t < n; t++)
        bln_cpu_rmsnorm (h + (size_t) t * d, x + (size_t) t * d, L->attn_norm->data, d,
                     hp->norm_eps);
      if (!bln_linear (ctx, L->wq, L->bq, h, n, q, error)
          || !bln_linear (ctx, L->wk, L->bk, h, n, k, error)
          || !bln_linear (ctx, L->wv, L->bv, h, n, v, error))
        return FALSE;
      for (t = 0; t < n; t++)
        {
          for (hh = 0; hh < H; hh++)
            bln_rope_apply (m, q + ((size_t) t * H + hh) * dk, hp->rope_dim, pos0 + t);
          for (hh = 0; hh < Hkv; hh++)
            bln_rope_apply (m, k + ((size_t) t * Hkv + hh) * dk, hp->rope_dim, pos0 + t);
        }
      memcpy (kc, k, (size_t) n * Hkv * dk * sizeof (float));
      memcpy (vc, v, (size_t) n * Hkv * dv * sizeof (float));

      job.ctx = ctx;
      job.layer = il;
      job.n = n;
      job.pos0 = pos0;
      job.q = q;
      job.out = att;
      job.scores = scores;
      bln_pool_run (s->pool, attn_worker, &job);

      if (!bln_linear (ctx, L->wo, NULL, att, n, tmp, error))
        return FALSE;
      for (i = 0; i < n * d; i++)
        x[i] += tmp[i];

      for (t = 0; t < n; t++)
        bln_cpu_rmsnorm (h + (size_t) t * d, x + (size_t) t * d, L->ffn_norm->data, d,
                     hp->norm_eps);
      if (!bln_swiglu (ctx, L->ffn_gate, L->ffn_up, L->ffn_down, h, n, tmp, error))
        return FALSE;
      for (i = 0; i < n * d; i++)
        x[i] += tmp[i];
    }

  if (!bln_output_logits (ctx, x, n, logits, all_logits, error))
    return FALSE;
  s->n_past += n;
  return TRUE;
}
