/* arch-llama.c — the forward pass of llama-style decoders: llama (DeepSeek
 * LLM and Coder 1.x, R1-Distill-Llama, SmolLM2) and qwen2 (R1-Distill-Qwen),
 * which differ only in q/k/v biases and the rotary layout.
 *
 * Per layer: x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x)), then
 * x += Wd · (silu(Wg·n(x)) * Wu·n(x)), with RMSNorm n(). Keys are cached
 * after rotation; attention is causal over the cache with grouped KV heads,
 * limited to the last `window` positions when the batch has a sliding window
 * (the rule of HF transformers' sliding-window attention; RoPE positions stay
 * absolute).
 *
 * One pass may hold tokens of several sequences (a BlnBatch): the weight
 * matmuls run over all of them at once, so the weights are read once per
 * step, while attention runs per token over its own sequence's cache blocks.
 */
#include <math.h>
#include <string.h>

#include "bln-error.h"
#include "model-private.h"

typedef struct {
  BlnContext *ctx;
  const BlnBatch *b;
  int layer;
  const float *q;    /* [n][H*dk] */
  float *out;        /* [n][H*dv] */
  float *scores;     /* [nth][max_len] */
} AttnJob;

/* attn_worker's loop for one (token, head) pair over an 8-bit cache: each
 * position's key (then value) slice of head @kvh is dequantised into a
 * stack row and used as the F32 path uses the cached one. */
static void
attn_q8 (const BlnKvView *kv, const BlnHParams *hp, int layer, int lo, int len, int kvh,
         const float *q, float *o, float *sc, float scale)
{
  float row[BLN_KV_Q8_MAX_HEAD_DIM];
  int dk = hp->head_dim_k, dv = hp->head_dim_v, L = hp->n_layer, j;
  size_t kw = (size_t) hp->n_head_kv * dk, vw = (size_t) hp->n_head_kv * dv;
  float mx = -INFINITY, sum = 0.0f;

  for (j = lo; j < len; j++)
    {
      size_t r = bln_kv_row (kv, L, layer, j);

      bln_kv_q8_load (row, kv->k8 + r * kw + (size_t) kvh * dk,
                      kv->ks + r * (kw / kv->gk) + (size_t) kvh * (dk / kv->gk), dk, kv->gk);
      sc[j] = bln_cpu_dot (q, row, dk) * scale;
      mx = MAX (mx, sc[j]);
    }
  for (j = lo; j < len; j++)
    {
      sc[j] = expf (sc[j] - mx);
      sum += sc[j];
    }
  memset (o, 0, dv * sizeof (float));
  for (j = lo; j < len; j++)
    {
      size_t r = bln_kv_row (kv, L, layer, j);

      bln_kv_q8_load (row, kv->v8 + r * vw + (size_t) kvh * dv,
                      kv->vs + r * (vw / kv->gv) + (size_t) kvh * (dv / kv->gv), dv, kv->gv);
      bln_cpu_axpy (o, sc[j] / sum, row, dv);
    }
}

/* One thread takes every nth (token, head) pair of the batch. Scores are
 * computed over the positions the token may see in its own sequence's
 * blocks, soft-maxed, and used to mix the values. */
static void
attn_worker (void *p, int ith, int nth)
{
  AttnJob *job = p;
  const BlnBatch *b = job->b;
  BlnContextState *s = &job->ctx->s;
  const BlnHParams *hp = &s->model->hp;
  int H = hp->n_head, group = hp->n_head / hp->n_head_kv, L = hp->n_layer;
  int dk = hp->head_dim_k, dv = hp->head_dim_v;
  size_t kw = (size_t) hp->n_head_kv * dk, vw = (size_t) hp->n_head_kv * dv;
  float scale = s->model->attn_scale;
  float *sc = job->scores + (size_t) ith * b->max_len;
  int item;

  for (item = ith; item < b->n_tokens * H; item += nth)
    {
      int t = item / H, h = item % H, kvh = h / group;
      const BlnKvView *kv = &b->kv[b->seq[t]];
      int lo = bln_batch_first_pos (b, t), len = b->pos[t] + 1, bs = kv->block_size, j, j0;
      const float *q = job->q + (size_t) t * H * dk + (size_t) h * dk;
      float *o = job->out + (size_t) t * H * dv + (size_t) h * dv;
      float mx = -INFINITY, sum = 0.0f;

      if (kv->k8 != NULL)
        {
          attn_q8 (kv, hp, job->layer, lo, len, kvh, q, o, sc, scale);
          continue;
        }
      /* positions MAX (j0, lo) .. j0 + bs - 1 are consecutive rows of one
       * block; blocks wholly before @lo are never read (a sliding window
       * may have released them) */
      for (j0 = lo - lo % bs; j0 < len; j0 += bs)
        {
          int js = MAX (j0, lo);
          const float *k = kv->k + bln_kv_row (kv, L, job->layer, js) * kw + (size_t) kvh * dk;
          for (j = js; j < MIN (len, j0 + bs); j++, k += kw)
            {
              sc[j] = bln_cpu_dot (q, k, dk) * scale;
              mx = MAX (mx, sc[j]);
            }
        }
      for (j = lo; j < len; j++)
        {
          sc[j] = expf (sc[j] - mx);
          sum += sc[j];
        }
      memset (o, 0, dv * sizeof (float));
      for (j0 = lo - lo % bs; j0 < len; j0 += bs)
        {
          int js = MAX (j0, lo);
          const float *v = kv->v + bln_kv_row (kv, L, job->layer, js) * vw + (size_t) kvh * dv;
          for (j = js; j < MIN (len, j0 + bs); j++, v += vw)
            bln_cpu_axpy (o, sc[j] / sum, v, dv);
        }
    }
}

gboolean
bln_arch_llama_forward (BlnContext *ctx, const BlnBatch *b, GError **error)
{
  BlnContextState *s = &ctx->s;
  const BlnModel *m = s->model;
  const BlnHParams *hp = &m->hp;
  int d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, n = b->n_tokens;
  int dk = hp->head_dim_k, dv = hp->head_dim_v, nth = bln_pool_n_threads (s->pool);
  size_t kw = (size_t) Hkv * dk, vw = (size_t) Hkv * dv;
  float *x, *h, *q, *k, *v, *att, *tmp, *scores;
  int il, t, hh, i;

  x = bln_ctx_buf (ctx, 0, (size_t) n * d, error);
  h = bln_ctx_buf (ctx, 1, (size_t) n * d, error);
  q = bln_ctx_buf (ctx, 2, (size_t) n * H * dk, error);
  k = bln_ctx_buf (ctx, 3, (size_t) n * kw, error);
  v = bln_ctx_buf (ctx, 4, (size_t) n * vw, error);
  att = bln_ctx_buf (ctx, 5, (size_t) n * H * dv, error);
  tmp = bln_ctx_buf (ctx, 6, (size_t) n * d, error);
  scores = bln_ctx_buf (ctx, 9, (size_t) nth * b->max_len, error);
  if (!x || !h || !q || !k || !v || !att || !tmp || !scores)
    return FALSE;

  if (!bln_cpu_get_rows (m->tok_embd, b->ids, n, x, error))
    return FALSE;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
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
          const BlnKvView *kv = &b->kv[b->seq[t]];
          size_t row = bln_kv_row (kv, hp->n_layer, il, b->pos[t]);

          for (hh = 0; hh < H; hh++)
            bln_rope_apply (m, q + ((size_t) t * H + hh) * dk, hp->rope_dim, b->pos[t]);
          for (hh = 0; hh < Hkv; hh++)
            bln_rope_apply (m, k + ((size_t) t * Hkv + hh) * dk, hp->rope_dim, b->pos[t]);
          if (kv->k8 != NULL)
            {
              bln_kv_q8_store (kv->k8 + row * kw, kv->ks + row * (kw / kv->gk),
                               k + (size_t) t * kw, kw, kv->gk);
              bln_kv_q8_store (kv->v8 + row * vw, kv->vs + row * (vw / kv->gv),
                               v + (size_t) t * vw, vw, kv->gv);
              continue;
            }
          memcpy (kv->k + row * kw, k + (size_t) t * kw, kw * sizeof (float));
          memcpy (kv->v + row * vw, v + (size_t) t * vw, vw * sizeof (float));
        }

      job.ctx = ctx;
      job.b = b;
      job.layer = il;
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

  return bln_output_logits_rows (ctx, x, b->out_rows, b->n_out, b->logits, error);
}
