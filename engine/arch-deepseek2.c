/* arch-deepseek2.c — DeepSeek-V2 / V2-Lite / V3 / R1: multi-head latent
 * attention (MLA) and a mixture of experts.
 *
 * MLA. Each token stores only its normalised latent c (kv_lora_rank values)
 * and its rotated positional key k_pe (qk_rope_dim values) per layer. The
 * per-head keys and values are never built: with W_UK_h and W_UV_h the parts
 * of kv_b for head h,
 *   q_nope·(W_UK_h c) = (W_UK_h^T q_nope)·c      (absorbed into the query)
 *   Σ p_j W_UV_h c_j = W_UV_h (Σ p_j c_j)        (absorbed into the output)
 * so attention runs in latent space: score_j = (q_lat·c_j + q_pe·k_pe_j)·scale.
 * The cache (a contiguous context or paged blocks, see kv-cache.h) holds
 * only [c, k_pe] per token per layer; a batch may mix several sequences.
 *
 * MoE. The router scores experts (softmax for V2, sigmoid plus a correction
 * bias for V3), optionally restricts the choice to the best expert groups,
 * takes the top k, and mixes their SwiGLU outputs with the (optionally
 * renormalised, scaled) scores; shared experts always run.
 */
#include <math.h>
#include <string.h>

#include "bln-error.h"
#include "model-private.h"

/* The q_a / kv_a norms are built with the default epsilon in the reference. */
#define MLA_NORM_EPS 1e-6f

typedef struct {
  BlnContext *ctx;
  const BlnBatch *b;
  int layer;
  const float *q_lat;  /* [n][H][r] */
  const float *q_pe;   /* [n][H][rope] */
  float *o_lat;        /* [n][H][r] */
  float *scores;       /* [nth][max_len] */
} MlaJob;

/* One thread takes every nth (token, head) pair of the batch and attends in
 * latent space over the token's own sequence's cached latents. */
static void
mla_worker (void *p, int ith, int nth)
{
  MlaJob *job = p;
  const BlnBatch *b = job->b;
  BlnContextState *s = &job->ctx->s;
  const BlnHParams *hp = &s->model->hp;
  int H = hp->n_head, r = hp->kv_lora_rank, dr = hp->qk_rope_dim, L = hp->n_layer;
  size_t w = (size_t) r + dr;
  float scale = s->model->attn_scale;
  float *sc = job->scores + (size_t) ith * b->max_len;
  int item;

  for (item = ith; item < b->n_tokens * H; item += nth)
    {
      int t = item / H, len = b->pos[t] + 1, j, j0;
      const BlnKvView *kv = &b->kv[b->seq[t]];
      int bs = kv->block_size;
      const float *ql = job->q_lat + (size_t) item * r;
      const float *qp = job->q_pe + (size_t) item * dr;
      float *o = job->o_lat + (size_t) item * r;
      float mx = -INFINITY, sum = 0.0f;

      /* positions j0 .. j0 + bs - 1 are consecutive rows of one block */
      for (j0 = 0; j0 < len; j0 += bs)
        {
          const float *c = kv->k + bln_kv_row (kv, L, job->layer, j0) * w;
          for (j = j0; j < MIN (len, j0 + bs); j++, c += w)
            {
              sc[j] = (bln_cpu_dot (ql, c, r) + bln_cpu_dot (qp, c + r, dr)) * scale;
              mx = MAX (mx, sc[j]);
            }
        }
      for (j = 0; j < len; j++)
        {
          sc[j] = expf (sc[j] - mx);
          sum += sc[j];
        }
      memset (o, 0, r * sizeof (float));
      for (j0 = 0; j0 < len; j0 += bs)
        {
          const float *c = kv->k + bln_kv_row (kv, L, job->layer, j0) * w;
          for (j = j0; j < MIN (len, j0 + bs); j++, c += w)
            bln_cpu_axpy (o, sc[j] / sum, c, r);
        }
    }
}

/* Picks the experts of one token: @sel holds the scores used for choosing
 * (with the correction bias), @prob the ones used as weights. */
static void
route_token (const BlnHParams *hp, float *sel, const float *prob, int *idx, float *w)
{
  int E = hp->n_expert, K = hp->n_expert_used, G = hp->n_expert_groups;
  int per = E / G, k, e, gi;
  float sum = 0.0f;

  if (G > 1 && hp->n_expert_groups_used < G)
    {
      float gscore[BLN_MAX_EXPERTS];
      gboolean keep[BLN_MAX_EXPERTS] = { FALSE };

      for (gi = 0; gi < G; gi++)
        {
          const float *gs = sel + gi * per;
          if (hp->gating == BLN_GATING_SIGMOID)
            {
              /* V3: a group is as good as the sum of its two best experts */
              float b1 = -INFINITY, b2 = -INFINITY;
              for (e = 0; e < per; e++)
                if (gs[e] > b1)
                  b2 = b1, b1 = gs[e];
                else if (gs[e] > b2)
                  b2 = gs[e];
              gscore[gi] = per > 1 ? b1 + b2 : b1;
            }
          else
            {
              float b = -INFINITY;
              for (e = 0; e < per; e++)
                b = MAX (b, gs[e]);
              gscore[gi] = b;
            }
        }
      for (k = 0; k < hp->n_expert_groups_used; k++)
        {
          int best = -1;
          for (gi = 0; gi < G; gi++)
            if (!keep[gi] && (best < 0 || gscore[gi] > gscore[best]))
              best = gi;
          keep[best] = TRUE;
        }
      for (gi = 0; gi < G; gi++)
        if (!keep[gi])
          for (e = 0; e < per; e++)
            sel[gi * per + e] = -INFINITY;
    }

  for (k = 0; k < K; k++)
    {
      int best = -1;
      for (e = 0; e < E; e++)
        {
          gboolean taken = FALSE;
          int j;
          for (j = 0; j < k; j++)
            taken |= idx[j] == e;
          if (!taken && (best < 0 || sel[e] > sel[best]))
            best = e;
        }
      idx[k] = best;
      w[k] = prob[best];
      sum += w[k];
    }
  for (k = 0; k < K; k++)
    {
      if (hp->expert_weights_norm)
        w[k] /= sum + 1e-20f;
      w[k] *= hp->expert_weights_scale;
    }
}

static gboolean
moe (BlnContext *ctx, const BlnLayer *L, const float *h, int n, float *out, GError **error)
{
  const BlnModel *m = ctx->s.model;
  const BlnHParams *hp = &m->hp;
  int d = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used, t, e, k, i;
  g_autofree float *logits = g_try_new (float, (size_t) n * E);
  g_autofree float *prob = g_try_new (float, E);
  g_autofree int *idx = g_try_new (int, (size_t) n * K);
  g_autofree float *wt = g_try_new (float, (size_t) n * K);
  g_autofree int *rows = g_try_new (int, n);
  g_autofree float *rw = g_try_new (float, n);
  float *xin, *y;

  if (!logits || !prob || !idx || !wt || !rows || !rw)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory in MoE routing");
      return FALSE;
    }
  if (!bln_linear (ctx, L->ffn_gate_inp, NULL, h, n, logits, error))
    return FALSE;
  for (t = 0; t < n; t++)
    {
      float *lg = logits + (size_t) t * E;
      if (hp->gating == BLN_GATING_SIGMOID)
        for (e = 0; e < E; e++)
          prob[e] = 1.0f / (1.0f + expf (-lg[e]));
      else
        {
          memcpy (prob, lg, E * sizeof (float));
          bln_cpu_softmax (prob, E);
        }
      /* selection scores reuse the logits row */
      for (e = 0; e < E; e++)
        lg[e] = prob[e] + (L->exp_probs_b ? ((const float *) L->exp_probs_b->data)[e] : 0.0f);
      route_token (hp, lg, prob, idx + (size_t) t * K, wt + (size_t) t * K);
    }

  /* shared experts on every token, or zero */
  if (L->shexp_gate != NULL)
    {
      if (!bln_swiglu (ctx, L->shexp_gate, L->shexp_up, L->shexp_down, h, n, out, error))
        return FALSE;
    }
  else
    memset (out, 0, (size_t) n * d * sizeof (float));

  xin = bln_ctx_buf (ctx, 3, (size_t) n * d, error);
  y = bln_ctx_buf (ctx, 4, (size_t) n * d, error);
  if (xin == NULL || y == NULL)
    return FALSE;
  /* each expert runs once over the tokens routed to it */
  for (e = 0; e < E; e++)
    {
      int cnt = 0;
      for (t = 0; t < n; t++)
        for (k = 0; k < K; k++)
          if (idx[(size_t) t * K + k] == e)
            {
              rows[cnt] = t;
              rw[cnt] = wt[(size_t) t * K + k];
              memcpy (xin + (size_t) cnt * d, h + (size_t) t * d, d * sizeof (float));
              cnt++;
            }
      if (cnt == 0)
        continue;
      if (!bln_swiglu (ctx, &L->exp_gate[e], &L->exp_up[e], &L->exp_down[e], xin, cnt, y, error))
        return FALSE;
      for (i = 0; i < cnt; i++)
        {
          float *o = out + (size_t) rows[i] * d;
          const float *yy = y + (size_t) i * d;
          int j;
          for (j = 0; j < d; j++)
            o[j] += rw[i] * yy[j];
        }
    }
  return TRUE;
}

gboolean
bln_arch_deepseek2_forward (BlnContext *ctx, const BlnBatch *b, GError **error)
{
  BlnContextState *s = &ctx->s;
  const BlnModel *m = s->model;
  const BlnHParams *hp = &m->hp;
  int d = hp->n_embd, H = hp->n_head, r = hp->kv_lora_rank;
  int nope = hp->qk_nope_dim, dr = hp->qk_rope_dim, dk = nope + dr, dv = hp->head_dim_v;
  int n = b->n_tokens, nth = bln_pool_n_threads (s->pool);
  size_t kw = (size_t) r + dr;
  int qa_dim = hp->q_lora_rank > 0 ? hp->q_lora_rank : 1;
  size_t big = MAX ((size_t) n * H * r, (size_t) n * H * dk);
  float *x, *h, *q, *qa, *kva, *qlat, *olat, *att, *tmp, *scores, *gath, *gout;
  int il, t, hh, i;

  x = bln_ctx_buf (ctx, 0, (size_t) n * d, error);
  h = bln_ctx_buf (ctx, 1, (size_t) n * d, error);
  q = bln_ctx_buf (ctx, 2, (size_t) n * H * dk, error);
  qa = bln_ctx_buf (ctx, 10, (size_t) n * MAX (qa_dim, r + dr), error);
  qlat = bln_ctx_buf (ctx, 5, big, error);
  olat = bln_ctx_buf (ctx, 6, (size_t) n * H * r + (size_t) n * H * dr, error);
  att = bln_ctx_buf (ctx, 9, (size_t) nth * b->max_len + (size_t) n * H * dv
                     + (size_t) n * MAX (MAX (nope, r), dv) * 2 + (size_t) n * d, error);
  if (!x || !h || !q || !qa || !qlat || !olat || !att)
    return FALSE;
  /* carve the last buffer: scores, attention output, gather/scatter, residual tmp */
  scores = att;
  att = scores + (size_t) nth * b->max_len;
  gath = att + (size_t) n * H * dv;
  gout = gath + (size_t) n * MAX (MAX (nope, r), dv);
  tmp = gout + (size_t) n * MAX (MAX (nope, r), dv);
  kva = qa;

  if (!bln_cpu_get_rows (m->tok_embd, b->ids, n, x, error))
    return FALSE;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      float *qpe = olat + (size_t) n * H * r;
      MlaJob job;

      for (t = 0; t < n; t++)
        bln_cpu_rmsnorm (h + (size_t) t * d, x + (size_t) t * d, L->attn_norm->data, d,
                     hp->norm_eps);

      /* queries */
      if (hp->q_lora_rank > 0)
        {
          if (!bln_linear (ctx, L->wq_a, NULL, h, n, qa, error))
            return FALSE;
          for (t = 0; t < n; t++)
            bln_cpu_rmsnorm (qa + (size_t) t * qa_dim, qa + (size_t) t * qa_dim, L->q_a_norm->data,
                         qa_dim, MLA_NORM_EPS);
          if (!bln_linear (ctx, L->wq_b, NULL, qa, n, q, error))
            return FALSE;
        }
      else if (!bln_linear (ctx, L->wq, NULL, h, n, q, error))
        return FALSE;

      /* latent and positional key, straight into the cache */
      if (!bln_linear (ctx, L->wkv_a, NULL, h, n, kva, error))
        return FALSE;
      for (t = 0; t < n; t++)
        {
          const float *src = kva + (size_t) t * (r + dr);
          const BlnKvView *kv = &b->kv[b->seq[t]];
          float *dst = kv->k + bln_kv_row (kv, hp->n_layer, il, b->pos[t]) * kw;
          bln_cpu_rmsnorm (dst, src, L->kv_a_norm->data, r, MLA_NORM_EPS);
          memcpy (dst + r, src + r, dr * sizeof (float));
          bln_rope_apply (m, dst + r, dr, b->pos[t]);
          for (hh = 0; hh < H; hh++)
            {
              float *qh = q + ((size_t) t * H + hh) * dk;
              bln_rope_apply (m, qh + nope, dr, b->pos[t]);
              memcpy (qpe + ((size_t) t * H + hh) * dr, qh + nope, dr * sizeof (float));
            }
        }

      /* absorb W_UK into the queries, head by head */
      for (hh = 0; hh < H; hh++)
        {
          for (t = 0; t < n; t++)
            memcpy (gath + (size_t) t * nope, q + ((size_t) t * H + hh) * dk,
                    nope * sizeof (float));
          if (!bln_cpu_matmul (s->pool, &L->k_b[hh], gath, n, gout, error))
            return FALSE;
          for (t = 0; t < n; t++)
            memcpy (qlat + ((size_t) t * H + hh) * r, gout + (size_t) t * r, r * sizeof (float));
        }

      job.ctx = ctx;
      job.b = b;
      job.layer = il;
      job.q_lat = qlat;
      job.q_pe = qpe;
      job.o_lat = olat;
      job.scores = scores;
      bln_pool_run (s->pool, mla_worker, &job);

      /* W_UV out of latent space, head by head */
      for (hh = 0; hh < H; hh++)
        {
          for (t = 0; t < n; t++)
            memcpy (gath + (size_t) t * r, olat + ((size_t) t * H + hh) * r, r * sizeof (float));
          if (!bln_cpu_matmul (s->pool, &L->v_b[hh], gath, n, gout, error))
            return FALSE;
          for (t = 0; t < n; t++)
            memcpy (att + ((size_t) t * H + hh) * dv, gout + (size_t) t * dv,
                    dv * sizeof (float));
        }
      if (!bln_linear (ctx, L->wo, NULL, att, n, tmp, error))
        return FALSE;
      for (i = 0; i < n * d; i++)
        x[i] += tmp[i];

      /* feed-forward: dense or experts */
      for (t = 0; t < n; t++)
        bln_cpu_rmsnorm (h + (size_t) t * d, x + (size_t) t * d, L->ffn_norm->data, d,
                     hp->norm_eps);
      if (L->ffn_gate_inp != NULL)
        {
          if (!moe (ctx, L, h, n, tmp, error))
            return FALSE;
        }
      else if (!bln_swiglu (ctx, L->ffn_gate, L->ffn_up, L->ffn_down, h, n, tmp, error))
        return FALSE;
      for (i = 0; i < n * d; i++)
        x[i] += tmp[i];
    }

  return bln_output_logits_rows (ctx, x, b->out_rows, b->n_out, b->logits, error);
}
