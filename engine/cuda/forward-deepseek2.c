/* cuda/forward-deepseek2.c — deepseek2 (MLA + MoE) decoder layers on the GPU
 * (see forward-deepseek2.h; engine/arch-deepseek2.c is the CPU reference). */
#include <string.h>

#include "bln-error.h"
#include "forward-deepseek2.h"
#include "mla.h"
#include "moe.h"
#include "ops.h"

/* The q_a / kv_a norms use the reference's default epsilon (as the CPU). */
#define MLA_NORM_EPS 1e-6f
/* Token rows of one step of the layers. */
#define STEP_ROWS BLN_CUDA_MATVEC_MAX_TOK

typedef struct {
  float *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm;
  BlnCudaTensor *wq;               /* without q compression (V2-Lite), else NULL */
  BlnCudaTensor *wq_a, *wq_b;
  BlnCudaTensor *wkv_a;
  BlnCudaTensor *k_b;              /* H heads of r rows x nope (W_UK^T), stacked */
  BlnCudaTensor *v_b;              /* H heads of dv rows x r (W_UV), stacked */
  BlnCudaTensor *wo;
  /* the dense feed-forward, or the shared experts of a MoE layer (NULL:
   * none); gate and up stacked in wgu, or apart in wg, wu */
  BlnCudaTensor *wgu, *wg, *wu, *wd;
  int ff;
  /* routed experts */
  gboolean moe;
  BlnCudaTensor *router;           /* E rows of n_embd */
  float *exp_bias;                 /* NULL when absent */
  BlnCudaTensor *exp_gu;           /* E x (gate ff rows, then up ff rows), or NULL */
  BlnCudaTensor *exp_g, *exp_u;    /* E x ff rows each, when not interleaved */
  BlnCudaTensor *exp_d;            /* E x n_embd rows of ff */
} Ds2Layer;

struct _BlnCudaDs2Model {
  int n_layer;
  Ds2Layer *layers;
};

struct _BlnCudaDs2Ctx {
  BlnCudaBuffer *cache;            /* [layer][n_ctx][r + dr] */
  BlnCudaBuffer *buf;              /* the scratch below, carved */
  size_t cache_layer;              /* bytes of one layer's cache */
  /* decode: STEP_ROWS token rows */
  float *qa, *qan, *q, *kva, *q_nope, *q_cat, *o_lat, *att;
  float *rlog, *gu, *act, *egu, *eact, *ey, *ew;
  int32_t *eid;
  int32_t *head_ids;               /* i % H for i < STEP_ROWS H */
  int32_t *tok_ids;                /* i / K for i < STEP_ROWS K */
  void *part;                      /* bln_mla_decode scratch */
  /* prefill: up to rows token rows (the prefill chunk) */
  int rows;
  float *ph, *pqa, *pqan, *pq, *pkva, *pq_nope, *pq_cat, *po_lat, *patt, *ptmp;
  void *pq_kv;                     /* q_cat in the cache's type */
  float *prlog, *pew, *pxg, *pegu, *peact, *pey, *pgu, *pact;
  int32_t *peid;
  int32_t *pperm;                  /* gathered row -> token, slot -> gathered row,
                                    * gathered row -> expert (3 x rows K) */
  int32_t *h_eid, *h_perm;         /* pinned: rows K, 3 rows K */
  int *d_pos_arr;                  /* prefill in steps (BALEEN_CUDA_DS2_PREFILL=steps) */
  int *h_pos_arr;                  /* pinned */
  int n_pos_arr;
  gboolean prefill_steps;
};

/* ---------------------------------------------------------------------- */
/* shapes                                                                  */

gboolean
bln_cuda_ds2_check (const BlnModel *m, GError **error)
{
  const BlnHParams *hp = &m->hp;
  int r = hp->kv_lora_rank, dr = hp->qk_rope_dim, E = hp->n_expert, K = hp->n_expert_used;
  int G = MAX (hp->n_expert_groups, 1), Gu = hp->n_expert_groups_used;

  if (r < 1 || r > BLN_MLA_MAX_RANK || dr < 2 || dr % 2 != 0 || r + dr > BLN_MLA_MAX_ROW
      || hp->rope_dim != dr || hp->qk_nope_dim < 1 || hp->head_dim_v < 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "MLA with a latent rank of %d and a rope width of %d is beyond the GPU "
                   "kernels (at most %d, and %d values per cached token)",
                   r, dr, BLN_MLA_MAX_RANK, BLN_MLA_MAX_ROW);
      return FALSE;
    }
  if ((size_t) hp->n_head * STEP_ROWS > 65535)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%d attention heads are beyond the GPU kernels", hp->n_head);
      return FALSE;
    }
  if (E > 0
      && (E > BLN_MOE_MAX_EXPERTS || K < 1 || K > E || (size_t) K * STEP_ROWS > 65535
          || E % G != 0 || Gu < 1 || Gu > G || (Gu < G && Gu * (E / G) < K)
          || hp->n_ff_expert < 1))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "MoE routing of %d experts (%d used, %d of %d groups) is beyond the GPU "
                   "kernels (at most %d experts)", E, K, Gu, G, BLN_MOE_MAX_EXPERTS);
      return FALSE;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* upload                                                                  */

/* t[0..n) stacked into one F32 matrix: the fallback for types (or mixes of
 * types) the matvec kernels cannot read stacked. */
static BlnCudaTensor *
upload_stack_f32 (BlnCudaModel *cm, const BlnTensor *const *t, int n, GError **error)
{
  g_autofree float *host = NULL;
  BlnCudaTensor *ct;
  BlnTensor tmp;
  int64_t rows = 0, done = 0;
  int i;

  for (i = 0; i < n; i++)
    {
      if (t[i]->ne[0] != t[0]->ne[0])
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor %s: rows of %" G_GINT64_FORMAT
                       " values, %" G_GINT64_FORMAT " expected", t[i]->name ? t[i]->name : "?",
                       t[i]->ne[0], t[0]->ne[0]);
          return NULL;
        }
      rows += t[i]->ne[1] * t[i]->ne[2] * t[i]->ne[3];
    }
  host = g_try_malloc ((size_t) rows * (size_t) t[0]->ne[0] * sizeof (float));
  if (host == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of host memory converting %s",
                   t[0]->name ? t[0]->name : "?");
      return NULL;
    }
  for (i = 0; i < n; i++)
    {
      g_autofree float *part = bln_cuda_dequant_host (t[i], error);
      int64_t ri = t[i]->ne[1] * t[i]->ne[2] * t[i]->ne[3];

      if (part == NULL)
        return NULL;
      memcpy (host + (size_t) done * t[0]->ne[0], part,
              (size_t) ri * (size_t) t[0]->ne[0] * sizeof (float));
      done += ri;
    }
  g_debug ("%s and %d more go to the GPU stacked as F32", t[0]->name ? t[0]->name : "?", n - 1);
  tmp = *t[0];
  tmp.type = BLN_TYPE_F32;
  tmp.n_dims = 2;
  tmp.ne[1] = rows;
  tmp.ne[2] = tmp.ne[3] = 1;
  tmp.data = host;
  tmp.nbytes = (size_t) rows * (size_t) t[0]->ne[0] * sizeof (float);
  tmp.owned = NULL;
  ct = bln_cuda_tensor_upload (&tmp, error);
  if (ct == NULL)
    return NULL;
  g_ptr_array_add (cm->tensors, ct);
  cm->weight_bytes += ct->gguf_bytes;
  return ct;
}

/* t[0..n) as one matrix, in their own type when the kernels read it. */
static BlnCudaTensor *
upload_stack (BlnCudaModel *cm, const BlnTensor *const *t, int n, GError **error)
{
  GError *local = NULL;
  BlnCudaTensor *ct = bln_cuda_upload_stacked (cm, t, n, &local);

  if (ct != NULL)
    return ct;
  if (local != NULL)
    {
      g_propagate_error (error, local);
      return NULL;
    }
  return upload_stack_f32 (cm, t, n, error);
}

/* n views of an array of BlnTensor (per head, per expert), interleaved
 * with a second one when @b is not NULL: a0, b0, a1, b1... */
static const BlnTensor **
views (const BlnTensor *a, const BlnTensor *b, int n)
{
  const BlnTensor **v = g_new (const BlnTensor *, (size_t) n * (b ? 2 : 1));
  int i;

  for (i = 0; i < n; i++)
    {
      if (b != NULL)
        {
          v[2 * i] = &a[i];
          v[2 * i + 1] = &b[i];
        }
      else
        v[i] = &a[i];
    }
  return v;
}

/* A SwiGLU block's weights: gate and up stacked when they can be. */
static gboolean
upload_swiglu (BlnCudaModel *cm, const BlnTensor *g, const BlnTensor *u, const BlnTensor *d,
               Ds2Layer *C, GError **error)
{
  const BlnTensor *gu[2] = { g, u };
  GError *local = NULL;

  C->ff = (int) g->ne[1];
  C->wgu = bln_cuda_upload_stacked (cm, gu, 2, &local);
  if (local != NULL)
    {
      g_propagate_error (error, local);
      return FALSE;
    }
  if (C->wgu == NULL
      && (!(C->wg = bln_cuda_upload_matrix (cm, g, error))
          || !(C->wu = bln_cuda_upload_matrix (cm, u, error))))
    return FALSE;
  return (C->wd = bln_cuda_upload_matrix (cm, d, error)) != NULL;
}

static gboolean
upload_experts (BlnCudaModel *cm, const BlnModel *m, const BlnLayer *L, Ds2Layer *C,
                GError **error)
{
  int E = m->hp.n_expert;
  g_autofree const BlnTensor **gu = views (L->exp_gate, L->exp_up, E);
  g_autofree const BlnTensor **g = views (L->exp_gate, NULL, E);
  g_autofree const BlnTensor **u = views (L->exp_up, NULL, E);
  g_autofree const BlnTensor **d = views (L->exp_down, NULL, E);
  GError *local = NULL;

  C->moe = TRUE;
  if (!(C->router = bln_cuda_upload_matrix (cm, L->ffn_gate_inp, error))
      || (L->exp_probs_b != NULL
          && !(C->exp_bias = bln_cuda_upload_vec (cm, L->exp_probs_b, error))))
    return FALSE;
  C->exp_gu = bln_cuda_upload_stacked (cm, gu, 2 * E, &local);
  if (local != NULL)
    {
      g_propagate_error (error, local);
      return FALSE;
    }
  if (C->exp_gu == NULL
      && (!(C->exp_g = upload_stack (cm, g, E, error))
          || !(C->exp_u = upload_stack (cm, u, E, error))))
    return FALSE;
  if (!(C->exp_d = upload_stack (cm, d, E, error)))
    return FALSE;
  if (L->shexp_gate != NULL)
    return upload_swiglu (cm, L->shexp_gate, L->shexp_up, L->shexp_down, C, error);
  return TRUE;
}

void
bln_cuda_ds2_model_free (struct _BlnCudaDs2Model *dm)
{
  if (dm == NULL)
    return;
  g_free (dm->layers);
  g_free (dm);
}

gboolean
bln_cuda_ds2_upload (BlnModel *m, BlnCudaModel *cm, GError **error)
{
  const BlnHParams *hp = &m->hp;
  struct _BlnCudaDs2Model *dm = g_new0 (struct _BlnCudaDs2Model, 1);
  int il, H = hp->n_head;

  dm->n_layer = hp->n_layer;
  dm->layers = g_new0 (Ds2Layer, hp->n_layer);
  cm->ds2 = dm;
  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      Ds2Layer *C = &dm->layers[il];
      g_autofree const BlnTensor **kb = views (L->k_b, NULL, H);
      g_autofree const BlnTensor **vb = views (L->v_b, NULL, H);

      if (!(C->attn_norm = bln_cuda_upload_vec (cm, L->attn_norm, error))
          || !(C->ffn_norm = bln_cuda_upload_vec (cm, L->ffn_norm, error))
          || !(C->kv_a_norm = bln_cuda_upload_vec (cm, L->kv_a_norm, error))
          || !(C->wkv_a = bln_cuda_upload_matrix (cm, L->wkv_a, error))
          || !(C->wo = bln_cuda_upload_matrix (cm, L->wo, error))
          || !(C->k_b = upload_stack (cm, kb, H, error))
          || !(C->v_b = upload_stack (cm, vb, H, error)))
        return FALSE;
      if (L->wq_a != NULL)
        {
          if (!(C->q_a_norm = bln_cuda_upload_vec (cm, L->q_a_norm, error))
              || !(C->wq_a = bln_cuda_upload_matrix (cm, L->wq_a, error))
              || !(C->wq_b = bln_cuda_upload_matrix (cm, L->wq_b, error)))
            return FALSE;
        }
      else if (!(C->wq = bln_cuda_upload_matrix (cm, L->wq, error)))
        return FALSE;
      if (L->ffn_gate_inp != NULL)
        {
          if (!upload_experts (cm, m, L, C, error))
            return FALSE;
        }
      else if (!upload_swiglu (cm, L->ffn_gate, L->ffn_up, L->ffn_down, C, error))
        return FALSE;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* memory plan                                                             */

static size_t
sum_dev_bytes (const BlnTensor *t, int n)
{
  size_t s = 0;
  int i;

  for (i = 0; t != NULL && i < n; i++)
    s += bln_cuda_dev_bytes (&t[i]);
  return s;
}

static size_t
vec_bytes (const BlnTensor *t)
{
  return t ? (size_t) (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * sizeof (float) : 0;
}

static size_t
weight_bytes (const BlnModel *m)
{
  const BlnHParams *hp = &m->hp;
  size_t s = 0;
  int il;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      const BlnTensor *mats[] = { L->wq, L->wq_a, L->wq_b, L->wkv_a, L->wo, L->ffn_gate,
                                  L->ffn_up, L->ffn_down, L->ffn_gate_inp, L->shexp_gate,
                                  L->shexp_up, L->shexp_down };
      guint i;

      for (i = 0; i < G_N_ELEMENTS (mats); i++)
        if (mats[i] != NULL)
          s += bln_cuda_dev_bytes (mats[i]);
      s += vec_bytes (L->attn_norm) + vec_bytes (L->ffn_norm) + vec_bytes (L->q_a_norm)
           + vec_bytes (L->kv_a_norm) + vec_bytes (L->exp_probs_b);
      s += sum_dev_bytes (L->k_b, hp->n_head) + sum_dev_bytes (L->v_b, hp->n_head);
      if (L->ffn_gate_inp != NULL)
        s += sum_dev_bytes (L->exp_gate, hp->n_expert) + sum_dev_bytes (L->exp_up, hp->n_expert)
             + sum_dev_bytes (L->exp_down, hp->n_expert);
    }
  return s + bln_cuda_dev_bytes (m->output) + vec_bytes (m->output_norm)
         + (size_t) MAX (hp->rope_dim / 2, 1) * sizeof (float);
}

static size_t
align256 (size_t n)
{
  return (n + 255) & ~(size_t) 255;
}

/* The most bytes of attention scores (F32) plus probabilities of one query
 * block of the prefill attention, whatever the context length. */
#define SCORES_BUDGET ((size_t) 256 << 20)

/* The layers' scratch, in carving order, for prefill chunks of @rows
 * tokens; with @d NULL only the sum. */
static size_t
ctx_scratch (const BlnModel *m, int rows, size_t kv_elem, struct _BlnCudaDs2Ctx *d,
             uint8_t *base)
{
  const BlnHParams *hp = &m->hp;
  size_t M = STEP_ROWS, R = (size_t) rows, H = hp->n_head, r = hp->kv_lora_rank;
  size_t dr = hp->qk_rope_dim, W = r + dr, nope = hp->qk_nope_dim, dv = hp->head_dim_v;
  size_t dk = nope + dr, E = MAX (hp->n_expert, 1), K = MAX (hp->n_expert_used, 1);
  size_t ffe = MAX (hp->n_ff_expert, 1), d_ = hp->n_embd;
  size_t ff = MAX ((size_t) MAX (hp->n_ff, 1), ffe * MAX (hp->n_expert_shared, 1));
  size_t qa = MAX (hp->q_lora_rank, 1), f = sizeof (float), i4 = sizeof (int32_t), off = 0;
  size_t n_pos = R / M + 1;

#define PART(field, type, bytes)                                  \
  G_STMT_START {                                                  \
    if (d != NULL)                                                \
      d->field = (type) (base + off);                             \
    off += align256 (bytes);                                      \
  } G_STMT_END
  PART (qa, float *, M * qa * f);
  PART (qan, float *, M * qa * f);
  PART (q, float *, M * H * dk * f);
  PART (kva, float *, M * W * f);
  PART (q_nope, float *, M * H * nope * f);
  PART (q_cat, float *, M * H * W * f);
  PART (o_lat, float *, M * H * r * f);
  PART (att, float *, M * H * dv * f);
  PART (rlog, float *, M * E * f);
  PART (gu, float *, M * 2 * ff * f);
  PART (act, float *, M * ff * f);
  PART (egu, float *, M * K * 2 * ffe * f);
  PART (eact, float *, M * K * ffe * f);
  PART (ey, float *, M * K * d_ * f);
  PART (ew, float *, M * K * f);
  PART (eid, int32_t *, M * K * i4);
  PART (head_ids, int32_t *, M * H * i4);
  PART (tok_ids, int32_t *, M * K * i4);
  PART (part, void *, bln_mla_decode_scratch ((int) M, (int) H, (int) r));
  PART (ph, float *, R * d_ * f);
  PART (pqa, float *, R * qa * f);
  PART (pqan, float *, R * qa * f);
  PART (pq, float *, R * H * dk * f);
  PART (pkva, float *, R * W * f);
  PART (pq_nope, float *, R * H * nope * f);
  PART (pq_cat, float *, R * H * W * f);
  PART (pq_kv, void *, kv_elem == 2 ? R * H * W * kv_elem : 0);
  PART (po_lat, float *, R * H * r * f);
  PART (patt, float *, R * H * dv * f);
  PART (ptmp, float *, R * d_ * f);
  PART (prlog, float *, R * E * f);
  PART (pew, float *, R * K * f);
  PART (peid, int32_t *, R * K * i4);
  PART (pperm, int32_t *, 3 * R * K * i4);
  PART (pxg, float *, R * K * d_ * f);
  PART (pegu, float *, R * K * 2 * ffe * f);
  PART (peact, float *, R * K * ffe * f);
  PART (pey, float *, R * K * d_ * f);
  PART (pgu, float *, R * 2 * ff * f);
  PART (pact, float *, R * ff * f);
  PART (d_pos_arr, int *, n_pos * sizeof (int));
#undef PART
  return off;
}

/* Values of @t that the prefill expands to F16 (quantised types only). */
static size_t
expand_values (const BlnTensor *t, int times)
{
  if (t == NULL || !bln_cuda_layer_type_ok (t) || t->type == BLN_TYPE_F32
      || t->type == BLN_TYPE_F16 || t->type == BLN_TYPE_BF16)
    return 0;
  return (size_t) (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * (size_t) times;
}

/* The largest F16 expansion of a prefill product, in values: one matrix, a
 * stacked gate and up, all heads of W_UK^T or W_UV, or one expert's gate
 * and up. */
static size_t
max_expand (const BlnModel *m)
{
  const BlnHParams *hp = &m->hp;
  size_t best = 0;
  int il;

  for (il = 0; il < hp->n_layer; il++)
    {
      const BlnLayer *L = &m->layers[il];
      size_t v[] = { expand_values (L->wq, 1), expand_values (L->wq_a, 1),
                     expand_values (L->wq_b, 1), expand_values (L->wkv_a, 1),
                     expand_values (L->wo, 1), expand_values (L->ffn_gate, 2),
                     expand_values (L->ffn_down, 1), expand_values (L->shexp_gate, 2),
                     expand_values (L->shexp_down, 1),
                     L->k_b ? expand_values (&L->k_b[0], hp->n_head) : 0,
                     L->v_b ? expand_values (&L->v_b[0], hp->n_head) : 0,
                     L->exp_gate ? expand_values (&L->exp_gate[0], 2) : 0,
                     L->exp_down ? expand_values (&L->exp_down[0], 1) : 0 };
      guint i;

      for (i = 0; i < G_N_ELEMENTS (v); i++)
        best = MAX (best, v[i]);
    }
  return best;
}

void
bln_cuda_ds2_scratch_plan (const BlnModel *m, int n_ctx, size_t kv_elem, int chunk,
                           ScratchPlan *sp)
{
  const BlnHParams *hp = &m->hp;
  size_t rows = (size_t) MAX (MIN (chunk, n_ctx), STEP_ROWS), f = sizeof (float);
  size_t H = hp->n_head, per_row_scores = H * (size_t) n_ctx * (f + kv_elem);
  size_t max_in = MAX (MAX (hp->n_embd, hp->q_lora_rank), hp->n_head * hp->head_dim_v);

  max_in = MAX (max_in, (size_t) MAX (hp->n_ff, hp->n_ff_expert * MAX (hp->n_expert_shared, 1)));
  max_in = MAX (max_in, H * MAX (hp->qk_nope_dim, hp->kv_lora_rank));
  memset (sp, 0, sizeof *sp);
  sp->rows = (int) rows;
  sp->x = align256 (rows * hp->n_embd * f);
  sp->h = align256 ((size_t) STEP_ROWS * hp->n_embd * f);
  sp->logits = align256 ((size_t) STEP_ROWS * hp->n_vocab * f);
  /* the F16 activations of the cuBLAS products: n rows of the widest input,
   * or the experts' gathered rows */
  sp->act16 = align256 (MAX (rows * max_in,
                             rows * MAX (hp->n_expert_used, 1)
                             * (size_t) MAX (hp->n_embd, hp->n_ff_expert)) * 2);
  sp->deq = align256 (max_expand (m) * 2);
  sp->qblock = (int) CLAMP (SCORES_BUDGET / MAX (per_row_scores, 1), 1, rows);
  sp->scores = align256 ((size_t) sp->qblock * H * n_ctx * f);
  sp->probs = align256 ((size_t) sp->qblock * H * n_ctx * kv_elem);
  sp->total = sp->x + sp->h + sp->logits + sp->act16 + sp->deq + sp->scores + sp->probs;
}

static size_t
cache_bytes (const BlnModel *m, int n_ctx, size_t kv_elem)
{
  const BlnHParams *hp = &m->hp;

  return (size_t) hp->n_layer * n_ctx * (size_t) (hp->kv_lora_rank + hp->qk_rope_dim) * kv_elem;
}

/* Pinned host memory of a context: the MoE choices of a prefill chunk and
 * the positions of its steps. */
static size_t
pinned_ints (const BlnModel *m, int rows)
{
  return (size_t) 4 * rows * MAX (m->hp.n_expert_used, 1) + (size_t) rows / STEP_ROWS + 1;
}

gboolean
bln_cuda_ds2_plan (const BlnModel *m, int n_ctx, int kv_bits, BlnCudaPlan *plan,
                   GError **error)
{
  static const int chunks[] = { 2048, 512, 128 };
  size_t kv_elem = kv_bits == 32 ? 4 : 2;
  ScratchPlan sp;
  guint i;

  memset (plan, 0, sizeof *plan);
  if (!bln_cuda_ds2_check (m, error))
    return FALSE;
  plan->weight_bytes = m->cuda ? m->cuda->weight_bytes : weight_bytes (m);
  plan->kv_bytes = cache_bytes (m, n_ctx, kv_elem);
  /* the longest prefill chunk that fits; the shortest when none does */
  for (i = 0; i < G_N_ELEMENTS (chunks); i++)
    {
      bln_cuda_ds2_scratch_plan (m, n_ctx, kv_elem, chunks[i], &sp);
      plan->scratch_bytes = sp.total + ctx_scratch (m, sp.rows, kv_elem, NULL, NULL);
      plan->prefill_chunk = sp.rows;
      plan->fits = bln_cuda_estimate (m->cuda ? 0 : plan->weight_bytes, plan->kv_bytes,
                                      plan->scratch_bytes, &plan->free_bytes);
      if (plan->fits)
        break;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* contexts                                                                */

void
bln_cuda_ds2_ctx_free (struct _BlnCudaDs2Ctx *d)
{
  if (d == NULL)
    return;
  if (d->h_eid)
    (void) cudaFreeHost (d->h_eid);
  bln_cuda_buffer_free (d->cache);
  bln_cuda_buffer_free (d->buf);
  g_free (d);
}

gboolean
bln_cuda_ds2_ctx_init (BlnCudaCtx *c, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  struct _BlnCudaDs2Ctx *d = g_new0 (struct _BlnCudaDs2Ctx, 1);
  int H = hp->n_head, K = MAX (hp->n_expert_used, 1), R = c->sp.rows, i;
  g_autofree int32_t *heads = g_new (int32_t, (size_t) STEP_ROWS * H);
  g_autofree int32_t *toks = g_new (int32_t, (size_t) STEP_ROWS * K);
  int32_t *pinned = NULL;

  c->ds2 = d;
  d->rows = R;
  d->cache_layer = cache_bytes (m, c->n_ctx, c->kv_elem) / (size_t) hp->n_layer;
  d->n_pos_arr = R / STEP_ROWS + 1;
  /* the expert gather takes at most 65,535 rows at once */
  d->prefill_steps = g_strcmp0 (g_getenv ("BALEEN_CUDA_DS2_PREFILL"), "steps") == 0
                     || (size_t) R * K > 65535;
  for (i = 0; i < STEP_ROWS * H; i++)
    heads[i] = i % H;
  for (i = 0; i < STEP_ROWS * K; i++)
    toks[i] = i / K;
  if (!(d->cache = bln_cuda_buffer_new (cache_bytes (m, c->n_ctx, c->kv_elem), error))
      || !(d->buf = bln_cuda_buffer_new (ctx_scratch (m, R, c->kv_elem, NULL, NULL), error))
      || !BLN_CUDA_CHECK (cudaMallocHost ((void **) &pinned,
                                          pinned_ints (m, R) * sizeof (int32_t)), error))
    return FALSE;
  ctx_scratch (m, R, c->kv_elem, d, d->buf->ptr);
  d->h_eid = pinned;
  d->h_perm = pinned + (size_t) R * K;
  d->h_pos_arr = pinned + (size_t) 4 * R * K;
  return BLN_CUDA_CHECK (cudaMemcpy (d->head_ids, heads, (size_t) STEP_ROWS * H
                                     * sizeof (int32_t), cudaMemcpyHostToDevice), error)
         && BLN_CUDA_CHECK (cudaMemcpy (d->tok_ids, toks, (size_t) STEP_ROWS * K
                                        * sizeof (int32_t), cudaMemcpyHostToDevice), error);
}

/* ---------------------------------------------------------------------- */
/* the layers                                                              */

/* RMSNorm of n rows of @x into c->h, rounded for the matvecs when the
 * width allows: returns that matvec flag (or 0), or -1 with @error. */
static int
norm_rows (BlnCudaCtx *c, const float *x, const float *w, int n, GError **error)
{
  const BlnHParams *hp = &c->model->hp;

  if (hp->n_embd % 32 == 0)
    return KCHECK (bln_kernels_rmsnorm_quant (x, w, c->h, n, hp->n_embd, hp->norm_eps,
                                              c->stream), error)
           ? BLN_KERNELS_MATVEC_XQ_READY : -1;
  return KCHECK (bln_kernels_rmsnorm (x, w, c->h, n, hp->n_embd, hp->norm_eps, c->stream), error)
         ? 0 : -1;
}

/* Per-head (or per-expert) matvecs with the selections on the device. */
static gboolean
mv_sel (BlnCudaCtx *c, const BlnCudaTensor *w, int n_groups, const float *x, int n_x_rows,
        const int32_t *ids, const int32_t *tok, int n_sel, float *y, int ldy, int flags,
        GError **error)
{
  return KCHECK (bln_kernels_matvec_sel ((int) w->type, w->payload->ptr,
                                         w->header ? w->header->ptr : NULL, (int) w->n_in,
                                         (int) (w->n_out / n_groups), n_groups, x, n_x_rows,
                                         ids, tok, n_sel, y, ldy, flags, c->stream), error);
}

/* x += down (silu (gate h) * up h) for n rows of c->h (rounded when @fl
 * says so): the dense feed-forward or the shared experts. */
static gboolean
swiglu (BlnCudaCtx *c, const Ds2Layer *L, float *x, int n, int fl, GError **error)
{
  struct _BlnCudaDs2Ctx *d = c->ds2;
  const int acc = BLN_KERNELS_MATVEC_ACCUMULATE;
  int ff = L->ff;

  if (L->wgu != NULL)
    {
      if (!bln_cuda_mv (c, L->wgu, c->h, n, d->gu, 0, fl, error))
        return FALSE;
    }
  else if (!bln_cuda_mv (c, L->wg, c->h, n, d->gu, 2 * ff, fl, error)
           || !bln_cuda_mv (c, L->wu, c->h, n, d->gu + ff, 2 * ff, fl, error))
    return FALSE;
  if (ff % 32 == 0)
    return KCHECK (bln_kernels_silu_mul_quant (d->gu, 2 * ff, d->gu + ff, 2 * ff, d->act, n, ff,
                                               c->stream), error)
           && bln_cuda_mv (c, L->wd, d->act, n, x, 0, acc | BLN_KERNELS_MATVEC_XQ_READY, error);
  return KCHECK (bln_kernels_silu_mul (d->gu, 2 * ff, d->gu + ff, 2 * ff, d->act, n, ff,
                                       c->stream), error)
         && bln_cuda_mv (c, L->wd, d->act, n, x, 0, acc, error);
}

/* The MoE feed-forward of n rows of c->h, added into @x: the router and its
 * choices stay on the device. */
static gboolean
moe (BlnCudaCtx *c, const Ds2Layer *L, float *x, int n, int fl, GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int E = hp->n_expert, K = hp->n_expert_used, ffe = hp->n_ff_expert, ns = n * K;
  BlnMoeRouting rt;

  rt.n_expert = E;
  rt.n_used = K;
  rt.n_groups = MAX (hp->n_expert_groups, 1);
  rt.n_groups_used = MAX (hp->n_expert_groups_used, 1);
  rt.sigmoid = hp->gating == BLN_GATING_SIGMOID;
  rt.norm = hp->expert_weights_norm != FALSE;
  rt.scale = hp->expert_weights_scale;

  /* the router's matrix is F32: it leaves the rounded h alone */
  if (!bln_cuda_mv (c, L->router, c->h, n, d->rlog, 0, 0, error)
      || !KCHECK (bln_moe_route (d->rlog, n, L->exp_bias, &rt, d->eid, d->ew, c->stream), error))
    return FALSE;
  if (L->exp_gu != NULL)
    {
      if (!mv_sel (c, L->exp_gu, E, c->h, n, d->eid, d->tok_ids, ns, d->egu, 0, fl, error))
        return FALSE;
    }
  else if (!mv_sel (c, L->exp_g, E, c->h, n, d->eid, d->tok_ids, ns, d->egu, 2 * ffe, fl, error)
           || !mv_sel (c, L->exp_u, E, c->h, n, d->eid, d->tok_ids, ns, d->egu + ffe, 2 * ffe, fl,
                       error))
    return FALSE;
  /* the shared experts round their own activations: after the routed
   * gate / up products have used h's */
  if (L->wd != NULL && !swiglu (c, L, x, n, fl, error))
    return FALSE;
  if (ns <= BLN_KERNELS_MATVEC_MAX_TOK && ffe % 32 == 0)
    {
      /* one token: the SwiGLU also rounds the routed activations */
      if (!KCHECK (bln_kernels_silu_mul_quant (d->egu, 2 * ffe, d->egu + ffe, 2 * ffe, d->eact,
                                               ns, ffe, c->stream), error)
          || !mv_sel (c, L->exp_d, E, d->eact, ns, d->eid, NULL, ns, d->ey, 0,
                      BLN_KERNELS_MATVEC_XQ_READY, error))
        return FALSE;
    }
  else if (!KCHECK (bln_kernels_silu_mul (d->egu, 2 * ffe, d->egu + ffe, 2 * ffe, d->eact, ns,
                                          ffe, c->stream), error)
           || !mv_sel (c, L->exp_d, E, d->eact, ns, d->eid, NULL, ns, d->ey, 0, 0, error))
    return FALSE;
  return KCHECK (bln_moe_combine (x, hp->n_embd, n, K, d->ey, hp->n_embd, NULL, d->ew,
                                  c->stream),
                 error);
}

/* All layers for n <= STEP_ROWS token rows at @x, positions *d_pos... */
static gboolean
layers (BlnCudaCtx *c, float *x, int n, const int *d_pos, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  const struct _BlnCudaDs2Model *dm = c->cm->ds2;
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int H = hp->n_head, r = hp->kv_lora_rank, dr = hp->qk_rope_dim, W = r + dr;
  int nope = hp->qk_nope_dim, dv = hp->head_dim_v, dk = nope + dr, il, fl, rq, ro;
  int qa_dim = hp->q_lora_rank;

  for (il = 0; il < hp->n_layer; il++)
    {
      const Ds2Layer *L = &dm->layers[il];
      void *cache = (uint8_t *) d->cache->ptr + (size_t) il * d->cache_layer;

      if ((fl = norm_rows (c, x, L->attn_norm, n, error)) < 0)
        return FALSE;
      if (L->wq_a != NULL)
        {
          int fq = 0;

          if (!bln_cuda_mv (c, L->wq_a, c->h, n, d->qa, 0, fl, error)
              || !bln_cuda_mv (c, L->wkv_a, c->h, n, d->kva, 0, fl, error))
            return FALSE;
          if (qa_dim % 32 == 0)
            {
              if (!KCHECK (bln_kernels_rmsnorm_quant (d->qa, L->q_a_norm, d->qan, n, qa_dim,
                                                      MLA_NORM_EPS, c->stream), error))
                return FALSE;
              fq = BLN_KERNELS_MATVEC_XQ_READY;
            }
          else if (!KCHECK (bln_kernels_rmsnorm (d->qa, L->q_a_norm, d->qan, n, qa_dim,
                                                 MLA_NORM_EPS, c->stream), error))
            return FALSE;
          if (!bln_cuda_mv (c, L->wq_b, d->qan, n, d->q, 0, fq, error))
            return FALSE;
        }
      else if (!bln_cuda_mv (c, L->wq, c->h, n, d->q, 0, fl, error)
               || !bln_cuda_mv (c, L->wkv_a, c->h, n, d->kva, 0, fl, error))
        return FALSE;

      /* latent and positional key into the cache, the query split into
       * its absorbed (q_nope -> q_lat by W_UK^T) and rotated parts */
      /* (the store and the attention leave q_nope and o_lat rounded for
       * the matvecs that follow them where they can: rq, ro) */
      if (!KCHECK (bln_mla_store_round (d->kva, W, d->q, H * dk, n, d_pos, H, r, dr, nope,
                                        L->kv_a_norm, MLA_NORM_EPS, c->cm->inv_freq,
                                        m->rope_attn_factor, hp->rope_neox, cache, c->kv_f16,
                                        d->q_nope, d->q_cat, &rq, c->stream), error)
          || !mv_sel (c, L->k_b, H, d->q_nope, n * H, d->head_ids, NULL, n * H, d->q_cat, W,
                      rq ? BLN_KERNELS_MATVEC_XQ_READY : 0, error)
          || !KCHECK (bln_mla_decode_round (d->q_cat, n, d_pos, H, r, dr, m->attn_scale, cache,
                                            c->kv_f16, d->part, d->o_lat, &ro, c->stream), error)
          || !mv_sel (c, L->v_b, H, d->o_lat, n * H, d->head_ids, NULL, n * H, d->att, dv,
                      ro ? BLN_KERNELS_MATVEC_XQ_READY : 0, error)
          || !bln_cuda_mv (c, L->wo, d->att, n, x, 0, BLN_KERNELS_MATVEC_ACCUMULATE, error))
        return FALSE;

      if ((fl = norm_rows (c, x, L->ffn_norm, n, error)) < 0)
        return FALSE;
      if (L->moe)
        {
          if (!moe (c, L, x, n, fl, error))
            return FALSE;
        }
      else if (!swiglu (c, L, x, n, fl, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
bln_cuda_ds2_decode_layers (BlnCudaCtx *c, int n, GError **error)
{
  return layers (c, c->x, n, c->d_pos, error);
}

/* A prefill chunk as consecutive steps of STEP_ROWS tokens, each through
 * all layers before the next (its keys are then in the cache): slow, but it
 * runs only the decode path's kernels (BALEEN_CUDA_DS2_PREFILL=steps). */
static gboolean
prefill_steps (BlnCudaCtx *c, int n, int pos0, GError **error)
{
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int n_steps = (n + STEP_ROWS - 1) / STEP_ROWS, s;

  if (n_steps > d->n_pos_arr)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "prefill chunk of %d tokens", n);
      return FALSE;
    }
  /* h_pos_arr is free: run_chunk synchronises the stream after each chunk */
  for (s = 0; s < n_steps; s++)
    d->h_pos_arr[s] = pos0 + s * STEP_ROWS;
  if (!BLN_CUDA_CHECK (cudaMemcpyAsync (d->d_pos_arr, d->h_pos_arr, (size_t) n_steps * sizeof (int),
                                        cudaMemcpyHostToDevice, c->stream), error))
    return FALSE;
  for (s = 0; s < n_steps; s++)
    if (!layers (c, c->x + (size_t) s * STEP_ROWS * c->model->hp.n_embd,
                 MIN (STEP_ROWS, n - s * STEP_ROWS), d->d_pos_arr + s, error))
      return FALSE;
  return TRUE;
}

/* Group @g of @n_groups stacked in @w (an expert, a head) as a tensor of its
 * own: the same buffers, offset (the split layout keeps rows in order). */
static void
group_view (const BlnCudaTensor *w, int n_groups, int g, BlnCudaTensor *v, BlnCudaBuffer *pay,
            BlnCudaBuffer *hdr)
{
  BlnSplitLayout l;
  int64_t rows = w->n_out / n_groups;
  size_t nb, first;

  (void) bln_kernels_split_layout ((int) w->type, &l);
  nb = (size_t) (w->n_in / l.block_values);
  first = (size_t) g * (size_t) rows * nb;
  *v = *w;
  v->n_out = rows;
  v->gguf_bytes = w->gguf_bytes / (size_t) n_groups;
  pay->ptr = (uint8_t *) w->payload->ptr + first * (size_t) l.pay_bytes;
  pay->size = (size_t) rows * nb * (size_t) l.pay_bytes;
  v->payload = pay;
  v->header = NULL;
  if (w->header != NULL)
    {
      hdr->ptr = (uint8_t *) w->header->ptr + first * (size_t) l.hdr_bytes;
      hdr->size = (size_t) rows * nb * (size_t) l.hdr_bytes;
      v->header = hdr;
    }
}

/* y[(t H + h) ldy + o] = Σ_i W_h[o][i] x[(t H + h) n_in + i] for n tokens
 * and the H groups (heads) stacked in @w: one strided batch of cuBLAS
 * products (F32 as stored, else on F16 / BF16 operands). */
static gboolean
linear_heads (BlnCudaCtx *c, const BlnCudaTensor *w, int H, const float *x, int n, float *y,
              int ldy, GError **error)
{
  const float one = 1.0f, zero = 0.0f;
  int n_in = (int) w->n_in, n_out = (int) (w->n_out / H);
  const void *a = w->payload->ptr, *b = x;
  cudaDataType_t t = CUDA_R_32F;

  if (w->type != BLN_TYPE_F32)
    {
      gboolean bf16 = w->type == BLN_TYPE_BF16;

      if (w->type != BLN_TYPE_F16 && !bf16)
        {
          if (!KCHECK (bln_kernels_dequant_f16 ((int) w->type, w->payload->ptr,
                                                w->header ? w->header->ptr : NULL, n_in,
                                                (int) w->n_out, c->deq, c->stream), error))
            return FALSE;
          a = c->deq;
        }
      if (!KCHECK (bln_kernels_convert (x, c->act16, (size_t) n * H * n_in, bf16, c->stream),
                   error))
        return FALSE;
      b = c->act16;
      t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    }
  return bln_cuda_blas_check (cublasGemmStridedBatchedEx (
                                c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in, &one,
                                a, t, n_in, (long long) n_out * n_in,
                                b, t, H * n_in, (long long) n_in, &zero,
                                y, CUDA_R_32F, H * ldy, (long long) ldy, H,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                              "per-head products", error);
}

/* Absorbed attention of the chunk's n queries (pq_cat, [n][H][W]) over
 * cache rows 0 .. pos0 + t, per query block: scores = Q · [c, k_pe]ᵀ (one
 * product per head, the cache shared by all: batch stride 0), the masked
 * softmax, then o_lat = P · c. */
static gboolean
attn_prefill (BlnCudaCtx *c, const void *cache, int n, int pos0, GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int H = hp->n_head, r = hp->kv_lora_rank, W = r + hp->qk_rope_dim, q0;
  cudaDataType_t kvt = c->kv_f16 ? CUDA_R_16F : CUDA_R_32F;
  const uint8_t *q = (const uint8_t *) d->pq_cat;
  const float one = 1.0f, zero = 0.0f;

  if (c->kv_f16)
    {
      if (!KCHECK (bln_kernels_convert (d->pq_cat, d->pq_kv, (size_t) n * H * W, 0, c->stream),
                   error))
        return FALSE;
      q = d->pq_kv;
    }
  for (q0 = 0; q0 < n; q0 += c->sp.qblock)
    {
      int nq = MIN (c->sp.qblock, n - q0), n_kv = pos0 + q0 + nq;
      long long sstride = (long long) nq * n_kv;

      if (!bln_cuda_blas_check (cublasGemmStridedBatchedEx (
                                  c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_kv, nq, W, &one,
                                  cache, kvt, W, 0,
                                  q + (size_t) q0 * H * W * c->kv_elem, kvt, H * W, (long long) W,
                                  &zero, c->scores, CUDA_R_32F, n_kv, sstride, H,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                "MLA scores", error)
          || !KCHECK (bln_kernels_softmax_causal (c->scores, c->probs, c->kv_f16, H, nq, n_kv,
                                                  pos0 + q0, c->model->attn_scale, c->stream),
                      error)
          || !bln_cuda_blas_check (cublasGemmStridedBatchedEx (
                                     c->blas, CUBLAS_OP_N, CUBLAS_OP_N, r, nq, n_kv, &one,
                                     cache, kvt, W, 0,
                                     c->probs, kvt, n_kv, sstride, &zero,
                                     d->po_lat + (size_t) q0 * H * r, CUDA_R_32F, H * r,
                                     (long long) r, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                   "MLA mix", error))
        return FALSE;
    }
  return TRUE;
}

/* x += down (silu (gate h) * up h) for the chunk's n rows of ph. */
static gboolean
swiglu_prefill (BlnCudaCtx *c, const Ds2Layer *L, int n, GError **error)
{
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int ff = L->ff, dm = c->model->hp.n_embd;

  if (L->wgu != NULL)
    {
      if (!bln_cuda_linear (c, L->wgu, NULL, d->ph, n, d->pgu, 0, error))
        return FALSE;
    }
  else if (!bln_cuda_linear (c, L->wg, NULL, d->ph, n, d->pgu, 2 * ff, error)
           || !bln_cuda_linear (c, L->wu, NULL, d->ph, n, d->pgu + ff, 2 * ff, error))
    return FALSE;
  return KCHECK (bln_kernels_silu_mul (d->pgu, 2 * ff, d->pgu + ff, 2 * ff, d->pact, n, ff,
                                       c->stream), error)
         && bln_cuda_linear (c, L->wd, NULL, d->pact, n, d->ptmp, 0, error)
         && KCHECK (bln_kernels_add (c->x, d->ptmp, (size_t) n * dm, c->stream), error);
}

/* One expert's product over its @cnt gathered rows (from row @off): a
 * selection matvec for a few rows (the whole stack, the expert's id on the
 * device), else cuBLAS on a view of the expert. */
static gboolean
expert_linear (BlnCudaCtx *c, const BlnCudaTensor *w, int E, int e, const float *x, int off,
               int cnt, float *y, int ldy, GError **error)
{
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int R = d->rows, K = MAX (c->model->hp.n_expert_used, 1);
  BlnCudaTensor v;
  BlnCudaBuffer pay, hdr;

  if (cnt <= STEP_ROWS)
    return mv_sel (c, w, E, x + (size_t) off * w->n_in, cnt, d->pperm + (size_t) 2 * R * K + off,
                   NULL, cnt, y + (size_t) off * ldy, ldy, 0, error);
  group_view (w, E, e, &v, &pay, &hdr);
  return bln_cuda_linear (c, &v, NULL, x + (size_t) off * w->n_in, cnt, y + (size_t) off * ldy,
                          ldy, error);
}

/* The MoE feed-forward of the chunk's n rows of ph, added into x: the
 * router on the device, its choices copied back, the tokens gathered
 * expert by expert, each expert's rows multiplied at once. */
static gboolean
moe_prefill (BlnCudaCtx *c, const Ds2Layer *L, int n, GError **error)
{
  const BlnHParams *hp = &c->model->hp;
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int E = hp->n_expert, K = hp->n_expert_used, ffe = hp->n_ff_expert, dm = hp->n_embd;
  int ns = n * K, R = d->rows, e, s;
  int count[BLN_MOE_MAX_EXPERTS], start[BLN_MOE_MAX_EXPERTS + 1], fill[BLN_MOE_MAX_EXPERTS];
  int32_t *rows_h = d->h_perm, *inv_h = d->h_perm + (size_t) R * K;
  int32_t *exp_h = d->h_perm + (size_t) 2 * R * K;
  BlnMoeRouting rt;

  rt.n_expert = E;
  rt.n_used = K;
  rt.n_groups = MAX (hp->n_expert_groups, 1);
  rt.n_groups_used = MAX (hp->n_expert_groups_used, 1);
  rt.sigmoid = hp->gating == BLN_GATING_SIGMOID;
  rt.norm = hp->expert_weights_norm != FALSE;
  rt.scale = hp->expert_weights_scale;
  if (!bln_cuda_linear (c, L->router, NULL, d->ph, n, d->prlog, 0, error)
      || !KCHECK (bln_moe_route (d->prlog, n, L->exp_bias, &rt, d->peid, d->pew, c->stream),
                  error)
      || (L->wd != NULL && !swiglu_prefill (c, L, n, error))
      || !BLN_CUDA_CHECK (cudaMemcpyAsync (d->h_eid, d->peid, (size_t) ns * sizeof (int32_t),
                                           cudaMemcpyDeviceToHost, c->stream), error)
      || !BLN_CUDA_CHECK (cudaStreamSynchronize (c->stream), error))
    return FALSE;

  /* rows sorted by expert: rows_h[j] = the token of gathered row j,
   * inv_h[slot] = the gathered row of selection slot, exp_h[j] = its expert */
  memset (count, 0, sizeof count);
  for (s = 0; s < ns; s++)
    {
      if (d->h_eid[s] < 0 || d->h_eid[s] >= E)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "MoE router chose expert %d of %d",
                       d->h_eid[s], E);
          return FALSE;
        }
      count[d->h_eid[s]]++;
    }
  start[0] = 0;
  for (e = 0; e < E; e++)
    {
      start[e + 1] = start[e] + count[e];
      fill[e] = start[e];
    }
  for (s = 0; s < ns; s++)
    {
      int j = fill[d->h_eid[s]]++;
      rows_h[j] = s / K;
      inv_h[s] = j;
      exp_h[j] = d->h_eid[s];
    }
  /* the three tables sit R K apart on both sides */
  if (!BLN_CUDA_CHECK (cudaMemcpyAsync (d->pperm, d->h_perm, (size_t) 3 * R * K * sizeof (int32_t),
                                        cudaMemcpyHostToDevice, c->stream), error)
      || !KCHECK (bln_moe_gather (d->ph, dm, d->pperm, ns, d->pxg, c->stream), error))
    return FALSE;
  for (e = 0; e < E; e++)
    {
      if (count[e] == 0)
        continue;
      if (L->exp_gu != NULL)
        {
          if (!expert_linear (c, L->exp_gu, E, e, d->pxg, start[e], count[e], d->pegu, 2 * ffe,
                              error))
            return FALSE;
        }
      else if (!expert_linear (c, L->exp_g, E, e, d->pxg, start[e], count[e], d->pegu, 2 * ffe,
                               error)
               || !expert_linear (c, L->exp_u, E, e, d->pxg, start[e], count[e], d->pegu + ffe,
                                  2 * ffe, error))
        return FALSE;
    }
  if (!KCHECK (bln_kernels_silu_mul (d->pegu, 2 * ffe, d->pegu + ffe, 2 * ffe, d->peact, ns, ffe,
                                     c->stream), error))
    return FALSE;
  for (e = 0; e < E; e++)
    if (count[e] > 0
        && !expert_linear (c, L->exp_d, E, e, d->peact, start[e], count[e], d->pey, dm, error))
      return FALSE;
  return KCHECK (bln_moe_combine (c->x, dm, n, K, d->pey, dm, d->pperm + (size_t) R * K, d->pew,
                                  c->stream), error);
}

gboolean
bln_cuda_ds2_prefill_layers (BlnCudaCtx *c, int n, int pos0, GError **error)
{
  const BlnModel *m = c->model;
  const BlnHParams *hp = &m->hp;
  const struct _BlnCudaDs2Model *dm = c->cm->ds2;
  struct _BlnCudaDs2Ctx *d = c->ds2;
  int H = hp->n_head, r = hp->kv_lora_rank, dr = hp->qk_rope_dim, W = r + dr;
  int nope = hp->qk_nope_dim, dv = hp->head_dim_v, dk = nope + dr, D = hp->n_embd, il;

  if (d->prefill_steps)
    return prefill_steps (c, n, pos0, error);
  if (n > d->rows)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "prefill chunk of %d tokens", n);
      return FALSE;
    }
  for (il = 0; il < hp->n_layer; il++)
    {
      const Ds2Layer *L = &dm->layers[il];
      void *cache = (uint8_t *) d->cache->ptr + (size_t) il * d->cache_layer;

      if (!KCHECK (bln_kernels_rmsnorm (c->x, L->attn_norm, d->ph, n, D, hp->norm_eps,
                                        c->stream), error))
        return FALSE;
      if (L->wq_a != NULL)
        {
          if (!bln_cuda_linear (c, L->wq_a, NULL, d->ph, n, d->pqa, 0, error)
              || !bln_cuda_linear (c, L->wkv_a, NULL, d->ph, n, d->pkva, 0, error)
              || !KCHECK (bln_kernels_rmsnorm (d->pqa, L->q_a_norm, d->pqan, n, hp->q_lora_rank,
                                               MLA_NORM_EPS, c->stream), error)
              || !bln_cuda_linear (c, L->wq_b, NULL, d->pqan, n, d->pq, 0, error))
            return FALSE;
        }
      else if (!bln_cuda_linear (c, L->wq, NULL, d->ph, n, d->pq, 0, error)
               || !bln_cuda_linear (c, L->wkv_a, NULL, d->ph, n, d->pkva, 0, error))
        return FALSE;
      /* c->d_pos holds pos0 (the chunk's inputs) */
      if (!KCHECK (bln_mla_store (d->pkva, W, d->pq, H * dk, n, c->d_pos, H, r, dr, nope,
                                  L->kv_a_norm, MLA_NORM_EPS, c->cm->inv_freq,
                                  m->rope_attn_factor, hp->rope_neox, cache, c->kv_f16,
                                  d->pq_nope, d->pq_cat, c->stream), error)
          || !linear_heads (c, L->k_b, H, d->pq_nope, n, d->pq_cat, W, error)
          || !attn_prefill (c, cache, n, pos0, error)
          || !linear_heads (c, L->v_b, H, d->po_lat, n, d->patt, dv, error)
          || !bln_cuda_linear (c, L->wo, NULL, d->patt, n, d->ptmp, 0, error)
          || !KCHECK (bln_kernels_add (c->x, d->ptmp, (size_t) n * D, c->stream), error)
          || !KCHECK (bln_kernels_rmsnorm (c->x, L->ffn_norm, d->ph, n, D, hp->norm_eps,
                                           c->stream), error))
        return FALSE;
      if (L->moe)
        {
          if (!moe_prefill (c, L, n, error))
            return FALSE;
        }
      else if (!swiglu_prefill (c, L, n, error))
        return FALSE;
    }
  return TRUE;
}
