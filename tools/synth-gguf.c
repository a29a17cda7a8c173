/* synth-gguf.c — writes GGUF files with seeded random weights in the real shapes,
 * tensor names and metadata that llama.cpp's converter (convert_hf_to_gguf.py)
 * and quantizer (llama-quantize) produce for a few DeepSeek-family models, for
 * GPU/CPU benchmarks without downloading the real weights.
 *
 *   synth-gguf --model r1-qwen-7b --type q4_k_m --out r1-7b-q4km.gguf --threads 16
 *
 * The file is streamed: weights are generated and quantised in row chunks by a
 * thread pool and written in order, so memory use stays at a few hundred MiB
 * whatever the model size. See tools/README.md.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <zlib.h>

#include "bln-error.h"
#include "gguf-write.h"
#include "quant.h"

/* ------------------------------------------------------------------------ */
/* Model descriptions (from each model's public config.json) */

typedef struct {
  const char *id;
  const char *arch;           /* GGUF architecture name */
  const char *name;           /* general.name as the converter derives it */
  const char *basename, *finetune, *size_label;
  int n_vocab, n_embd, n_layer, n_ff, n_head, n_head_kv, n_ctx;
  double rope_theta, eps;
  gboolean tied;
  /* deepseek2 only */
  int q_lora, kv_lora, nope, rope_dim, v_dim;
  int n_expert, n_expert_used, n_shared, n_ff_exp, n_dense_lead, n_group, n_group_used;
  double expert_scale;
  double yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale_all_dim;
  int yarn_orig_ctx;
  /* tokenizer */
  const char *pre;
  gboolean add_bos;
  int bos, eos;
} ModelSpec;

static const ModelSpec models[] = {
  {
    .id = "r1-qwen-7b", .arch = "qwen2", .name = "DeepSeek R1 Distill Qwen 7B",
    .basename = "DeepSeek-R1-Distill-Qwen", .finetune = "", .size_label = "7B",
    .n_vocab = 152064, .n_embd = 3584, .n_layer = 28, .n_ff = 18944, .n_head = 28,
    .n_head_kv = 4, .n_ctx = 131072, .rope_theta = 10000.0, .eps = 1e-6, .tied = FALSE,
    .pre = "deepseek-r1-qwen", .add_bos = TRUE, .bos = 151646, .eos = 151643,
  },
  {
    .id = "r1-qwen-1.5b", .arch = "qwen2", .name = "DeepSeek R1 Distill Qwen 1.5B",
    .basename = "DeepSeek-R1-Distill-Qwen", .finetune = "", .size_label = "1.5B",
    .n_vocab = 151936, .n_embd = 1536, .n_layer = 28, .n_ff = 8960, .n_head = 12,
    .n_head_kv = 2, .n_ctx = 131072, .rope_theta = 10000.0, .eps = 1e-6, .tied = FALSE,
    .pre = "deepseek-r1-qwen", .add_bos = TRUE, .bos = 151646, .eos = 151643,
  },
  {
    .id = "v2-lite", .arch = "deepseek2", .name = "DeepSeek V2 Lite Chat",
    .basename = "DeepSeek-V2-Lite", .finetune = "Chat", .size_label = "64x1.5B",
    .n_vocab = 102400, .n_embd = 2048, .n_layer = 27, .n_ff = 10944, .n_head = 16,
    .n_head_kv = 16, .n_ctx = 163840, .rope_theta = 10000.0, .eps = 1e-6, .tied = FALSE,
    .q_lora = 0, .kv_lora = 512, .nope = 128, .rope_dim = 64, .v_dim = 128,
    .n_expert = 64, .n_expert_used = 6, .n_shared = 2, .n_ff_exp = 1408, .n_dense_lead = 1,
    .n_group = 1, .n_group_used = 1, .expert_scale = 1.0,
    .yarn_factor = 40.0, .yarn_beta_fast = 32.0, .yarn_beta_slow = 1.0,
    .yarn_mscale_all_dim = 0.707, .yarn_orig_ctx = 4096,
    .pre = "deepseek-llm", .add_bos = TRUE, .bos = 100000, .eos = 100001,
  },
};

/* Chat templates written for this tool: the DeepSeek-R1 turn markers and the
 * DeepSeek-V2 "User:/Assistant:" format. */
static const char r1_template[] =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
  "{{ bos_token }}"
  "{% for message in messages %}"
  "{% if message['role'] == 'system' %}{{ message['content'] }}"
  "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
  "{% elif message['role'] == 'assistant' %}"
  "{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
  "{% endif %}{% endfor %}"
  "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}";

static const char v2_template[] =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
  "{{ bos_token }}"
  "{% for message in messages %}"
  "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
  "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
  "{% elif message['role'] == 'assistant' %}"
  "{{ 'Assistant: ' + message['content'] + eos_token }}"
  "{% endif %}{% endfor %}"
  "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/* ------------------------------------------------------------------------ */
/* Tensor list */

typedef enum { KIND_NORM, KIND_BIAS, KIND_MATRIX, KIND_ROUTER } Kind;

typedef struct {
  char name[64];
  int n_dims;
  int64_t ne[4];
  Kind kind;
  BlnType type;
  int layer;        /* -1 outside the blocks */
  guint64 hash;     /* seeds the tensor's random stream */
} TSpec;

typedef enum { OUT_BF16, OUT_Q8_0, OUT_Q4_K_M } OutType;

static void
add_t (GArray *a, int layer, const char *suffix, Kind kind, int n_dims, int64_t ne0, int64_t ne1,
       int64_t ne2)
{
  TSpec t = { 0 };

  if (layer >= 0)
    g_snprintf (t.name, sizeof t.name, "blk.%d.%s", layer, suffix);
  else
    g_strlcpy (t.name, suffix, sizeof t.name);
  t.n_dims = n_dims;
  t.ne[0] = ne0, t.ne[1] = ne1, t.ne[2] = ne2, t.ne[3] = 1;
  for (int d = n_dims; d < 4; d++)
    t.ne[d] = 1;
  t.kind = kind;
  t.layer = layer;
  t.hash = g_str_hash (t.name) * 0x9E3779B97F4A7C15ull + (guint64) strlen (t.name);
  g_array_append_val (a, t);
}

/* llama-quantize walks the tensors ordered by block number (tensors outside the
 * blocks first), then by name; its counters depend on that order, and it writes
 * the output in it. We use the same order for every type. */
static int
tspec_cmp (gconstpointer pa, gconstpointer pb)
{
  const TSpec *a = pa, *b = pb;

  if (a->layer != b->layer)
    return a->layer < b->layer ? -1 : 1;
  return strcmp (a->name, b->name);
}

static GArray *
build_tensors (const ModelSpec *m)
{
  GArray *a = g_array_new (FALSE, TRUE, sizeof (TSpec));
  int64_t E = m->n_embd;

  add_t (a, -1, "token_embd.weight", KIND_MATRIX, 2, E, m->n_vocab, 1);
  add_t (a, -1, "output_norm.weight", KIND_NORM, 1, E, 1, 1);
  if (!m->tied)
    add_t (a, -1, "output.weight", KIND_MATRIX, 2, E, m->n_vocab, 1);

  for (int il = 0; il < m->n_layer; il++)
    {
      add_t (a, il, "attn_norm.weight", KIND_NORM, 1, E, 1, 1);
      add_t (a, il, "ffn_norm.weight", KIND_NORM, 1, E, 1, 1);
      if (g_str_equal (m->arch, "qwen2"))
        {
          int64_t hd = E / m->n_head, kv = hd * m->n_head_kv;
          add_t (a, il, "attn_q.weight", KIND_MATRIX, 2, E, E, 1);
          add_t (a, il, "attn_q.bias", KIND_BIAS, 1, E, 1, 1);
          add_t (a, il, "attn_k.weight", KIND_MATRIX, 2, E, kv, 1);
          add_t (a, il, "attn_k.bias", KIND_BIAS, 1, kv, 1, 1);
          add_t (a, il, "attn_v.weight", KIND_MATRIX, 2, E, kv, 1);
          add_t (a, il, "attn_v.bias", KIND_BIAS, 1, kv, 1, 1);
          add_t (a, il, "attn_output.weight", KIND_MATRIX, 2, E, E, 1);
          add_t (a, il, "ffn_gate.weight", KIND_MATRIX, 2, E, m->n_ff, 1);
          add_t (a, il, "ffn_up.weight", KIND_MATRIX, 2, E, m->n_ff, 1);
          add_t (a, il, "ffn_down.weight", KIND_MATRIX, 2, m->n_ff, E, 1);
          continue;
        }
      /* deepseek2 with MLA, in the converter's split k_b/v_b layout */
      {
        int64_t qk = m->nope + m->rope_dim;
        if (m->q_lora > 0)
          {
            add_t (a, il, "attn_q_a.weight", KIND_MATRIX, 2, E, m->q_lora, 1);
            add_t (a, il, "attn_q_a_norm.weight", KIND_NORM, 1, m->q_lora, 1, 1);
            add_t (a, il, "attn_q_b.weight", KIND_MATRIX, 2, m->q_lora, m->n_head * qk, 1);
          }
        else
          add_t (a, il, "attn_q.weight", KIND_MATRIX, 2, E, m->n_head * qk, 1);
        add_t (a, il, "attn_kv_a_mqa.weight", KIND_MATRIX, 2, E, m->kv_lora + m->rope_dim, 1);
        add_t (a, il, "attn_kv_a_norm.weight", KIND_NORM, 1, m->kv_lora, 1, 1);
        add_t (a, il, "attn_k_b.weight", KIND_MATRIX, 3, m->nope, m->kv_lora, m->n_head);
        add_t (a, il, "attn_v_b.weight", KIND_MATRIX, 3, m->kv_lora, m->v_dim, m->n_head);
        add_t (a, il, "attn_output.weight", KIND_MATRIX, 2, m->n_head * m->v_dim, E, 1);
        if (il < m->n_dense_lead)
          {
            add_t (a, il, "ffn_gate.weight", KIND_MATRIX, 2, E, m->n_ff, 1);
            add_t (a, il, "ffn_up.weight", KIND_MATRIX, 2, E, m->n_ff, 1);
            add_t (a, il, "ffn_down.weight", KIND_MATRIX, 2, m->n_ff, E, 1);
          }
        else
          {
            int64_t sh = (int64_t) m->n_ff_exp * m->n_shared;
            add_t (a, il, "ffn_gate_inp.weight", KIND_ROUTER, 2, E, m->n_expert, 1);
            add_t (a, il, "ffn_gate_exps.weight", KIND_MATRIX, 3, E, m->n_ff_exp, m->n_expert);
            add_t (a, il, "ffn_up_exps.weight", KIND_MATRIX, 3, E, m->n_ff_exp, m->n_expert);
            add_t (a, il, "ffn_down_exps.weight", KIND_MATRIX, 3, m->n_ff_exp, E, m->n_expert);
            add_t (a, il, "ffn_gate_shexp.weight", KIND_MATRIX, 2, E, sh, 1);
            add_t (a, il, "ffn_up_shexp.weight", KIND_MATRIX, 2, E, sh, 1);
            add_t (a, il, "ffn_down_shexp.weight", KIND_MATRIX, 2, sh, E, 1);
          }
      }
    }
  g_array_sort (a, tspec_cmp);
  return a;
}

static int
block_size (BlnType t)
{
  return bln_type_info (t)->block_size;
}

/* llama-quantize's "use_more_bits" layer pattern. */
static gboolean
use_more_bits (int i, int n)
{
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Types as the converter (--outtype bf16 / q8_0) or llama-quantize Q4_K_M
 * (starting from the bf16 file) assign them. */
static void
assign_types (GArray *a, const ModelSpec *m, OutType out)
{
  gboolean has_output = FALSE;
  int n_attn_v = 0, i_attn_v = 0, i_ffn_down = 0;

  for (guint i = 0; i < a->len; i++)
    {
      const TSpec *t = &g_array_index (a, TSpec, i);
      if (g_str_equal (t->name, "output.weight"))
        has_output = TRUE;
      if (strstr (t->name, "attn_v.weight") || strstr (t->name, "attn_kv_b.weight"))
        n_attn_v++;
    }

  for (guint i = 0; i < a->len; i++)
    {
      TSpec *t = &g_array_index (a, TSpec, i);
      BlnType ty;

      /* The converter keeps 1-D tensors, norms and the MoE router in F32;
       * llama-quantize leaves those alone. */
      if (t->n_dims == 1 || t->kind != KIND_MATRIX)
        {
          t->type = BLN_TYPE_F32;
          continue;
        }
      if (out == OUT_BF16)
        {
          t->type = BLN_TYPE_BF16;
          continue;
        }
      if (out == OUT_Q8_0)
        {
          /* the converter falls back to F16 when a row is not whole blocks */
          t->type = t->ne[0] % BLN_QK == 0 ? BLN_TYPE_Q8_0 : BLN_TYPE_F16;
          continue;
        }

      /* Q4_K_M: llama_tensor_get_type() */
      ty = BLN_TYPE_Q4_K;
      if (g_str_equal (t->name, "output.weight")
          || (!has_output && g_str_equal (t->name, "token_embd.weight")))
        ty = t->ne[0] % BLN_QK_K != 0 ? BLN_TYPE_Q8_0 : BLN_TYPE_Q6_K;
      else if (g_str_equal (t->name, "token_embd.weight"))
        ty = BLN_TYPE_Q4_K;
      else if (strstr (t->name, "attn_v.weight"))
        {
          if (use_more_bits (i_attn_v, n_attn_v))
            ty = BLN_TYPE_Q6_K;
          if (m->n_expert == 8)
            ty = BLN_TYPE_Q8_0;
          i_attn_v++;
        }
      else if (strstr (t->name, "attn_k.weight"))
        {
          if (m->n_expert == 8)
            ty = BLN_TYPE_Q8_0;
        }
      else if (strstr (t->name, "ffn_down"))
        {
          /* MoE models take the layer from the name, dense ones count */
          int il = m->n_expert > 1 ? t->layer : i_ffn_down;
          if (use_more_bits (il, m->n_layer))
            ty = BLN_TYPE_Q6_K;
          i_ffn_down++;
        }
      else if (strstr (t->name, "attn_output.weight"))
        {
          if (m->n_expert == 8)
            ty = BLN_TYPE_Q5_K;
        }
      /* rows that are not whole 256-blocks fall back */
      if (t->ne[0] % block_size (ty) != 0)
        {
          switch (ty)
            {
            case BLN_TYPE_Q4_K: ty = BLN_TYPE_Q5_0; break;
            case BLN_TYPE_Q5_K: ty = BLN_TYPE_Q5_1; break;
            case BLN_TYPE_Q6_K: ty = BLN_TYPE_Q8_0; break;
            default: break;
            }
          if (t->ne[0] % block_size (ty) != 0)
            ty = BLN_TYPE_F16;
        }
      t->type = ty;
    }
}

/* ------------------------------------------------------------------------ */
/* Random data */

static inline guint64
splitmix64 (guint64 *s)
{
  guint64 z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Fills one row: uniform values with the standard deviation of the usual
 * initialisations (1/sqrt(fan_in) for matrices), norms near 1, small biases. */
static void
gen_row (const TSpec *t, guint64 seed, int64_t row, float *dst)
{
  guint64 s = seed ^ t->hash ^ ((guint64) row * 0xD1B54A32D192ED03ull);
  int64_t n = t->ne[0];
  float scale, base = 0.0f;

  switch (t->kind)
    {
    case KIND_NORM: base = 1.0f, scale = 0.02f; break;
    case KIND_BIAS: scale = 0.02f * 1.7320508f; break;
    case KIND_ROUTER: scale = 3.0f / sqrtf ((float) n) * 1.7320508f; break;
    case KIND_MATRIX:
    default: scale = 1.0f / sqrtf ((float) n) * 1.7320508f; break;
    }
  for (int64_t i = 0; i + 1 < n; i += 2)
    {
      guint64 r = splitmix64 (&s);
      /* two 24-bit uniforms in [-1, 1) per draw */
      dst[i] = base + scale * ((float) (r & 0xFFFFFF) * (2.0f / 16777216.0f) - 1.0f);
      dst[i + 1] = base + scale * ((float) ((r >> 32) & 0xFFFFFF) * (2.0f / 16777216.0f) - 1.0f);
    }
  if (n % 2)
    dst[n - 1] = base + scale * ((float) (splitmix64 (&s) & 0xFFFFFF) * (2.0f / 16777216.0f) - 1.0f);
}

/* ------------------------------------------------------------------------ */
/* The producer pipeline */

/* A pool of quantised blocks: the default way to fill quantised tensors. The
 * quantisers work block by block, so a row assembled from pool blocks is the
 * exact quantisation of a random row whose blocks are drawn from the pool's
 * source values; this makes K-quant files about as fast to write as Q8_0. */
typedef struct {
  size_t block_bytes;
  int block_values;
  int64_t n_blocks;
  guint8 *data;
} Pool;

#define POOL_VALUES (1 << 18)

static void
pool_free (gpointer p)
{
  Pool *pool = p;

  g_free (pool->data);
  g_free (pool);
}

static Pool *
pool_new (const TSpec *t, guint64 seed)
{
  Pool *pool = g_new0 (Pool, 1);
  TSpec src = *t;
  int64_t rows = MAX (1, POOL_VALUES / t->ne[0]);
  size_t row_bytes;
  g_autofree float *row = g_new (float, t->ne[0]);

  src.hash ^= 0x5DEECE66Dull;
  bln_type_row_bytes (t->type, t->ne[0], &row_bytes);
  pool->block_values = bln_type_info (t->type)->block_size;
  pool->block_bytes = bln_type_info (t->type)->type_size;
  pool->n_blocks = rows * (t->ne[0] / pool->block_values);
  pool->data = g_malloc (row_bytes * (size_t) rows);
  for (int64_t r = 0; r < rows; r++)
    {
      gen_row (&src, seed, r, row);
      if (!bln_quantize_row (t->type, row, pool->data + (size_t) r * row_bytes, t->ne[0]))
        {
          pool_free (pool);
          return NULL;
        }
    }
  return pool;
}

typedef struct {
  const TSpec *t;
  const Pool *pool;   /* NULL: generate and quantise every row */
  int64_t row0, nrows;
  size_t row_bytes;
  guint8 *out;
  gboolean done, ok;
} Chunk;

typedef struct {
  guint64 seed;
  GMutex lock;
  GCond cond;
} Shared;

static Shared shared;

static void
chunk_work (gpointer data, gpointer user_data)
{
  Chunk *c = data;
  g_autofree float *row = g_new (float, c->t->ne[0]);
  gboolean ok = TRUE;

  (void) user_data;
  for (int64_t r = 0; r < c->nrows && ok; r++)
    {
      guint8 *dst = c->out + (size_t) r * c->row_bytes;
      if (c->pool != NULL)
        {
          const Pool *p = c->pool;
          guint64 s = shared.seed ^ c->t->hash ^ ((guint64) (c->row0 + r) * 0xD1B54A32D192ED03ull);
          int64_t nb = c->t->ne[0] / p->block_values;
          for (int64_t b = 0; b < nb; b++)
            memcpy (dst + (size_t) b * p->block_bytes,
                    p->data + (size_t) (splitmix64 (&s) % (guint64) p->n_blocks) * p->block_bytes,
                    p->block_bytes);
          continue;
        }
      gen_row (c->t, shared.seed, c->row0 + r, row);
      ok = bln_quantize_row (c->t->type, row, dst, c->t->ne[0]);
    }
  g_mutex_lock (&shared.lock);
  c->ok = ok;
  c->done = TRUE;
  g_cond_broadcast (&shared.cond);
  g_mutex_unlock (&shared.lock);
}

static gboolean
write_chunk_wait (BlnGgufWriter *w, Chunk *c, GError **error)
{
  gboolean ok;

  g_mutex_lock (&shared.lock);
  while (!c->done)
    g_cond_wait (&shared.cond, &shared.lock);
  g_mutex_unlock (&shared.lock);
  if (!c->ok)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "cannot quantise %s to %s",
                   c->t->name, bln_type_name (c->t->type));
      return FALSE;
    }
  ok = bln_gguf_writer_write (w, c->out, c->row_bytes * (size_t) c->nrows, error);
  return ok;
}

static void
chunk_free (Chunk *c)
{
  g_free (c->out);
  g_free (c);
}

static gboolean
write_all_data (BlnGgufWriter *w, GArray *ts, int threads, gboolean sparse, gboolean exact,
                GError **error)
{
  g_autoptr (GHashTable) pools = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                                        pool_free);
  GThreadPool *pool;
  GQueue q = G_QUEUE_INIT;
  guint max_inflight = (guint) threads * 3;
  gboolean ok = TRUE;
  gint64 t0 = g_get_monotonic_time ();
  uint64_t written = 0, total = 0;

  if (sparse)
    {
      for (guint i = 0; i < ts->len; i++)
        if (!bln_gguf_writer_skip_tensor (w, error))
          return FALSE;
      return TRUE;
    }
  for (guint i = 0; i < ts->len; i++)
    total += bln_gguf_writer_tensor_nbytes (w, i);

  pool = g_thread_pool_new (chunk_work, NULL, threads, TRUE, NULL);
  for (guint i = 0; i < ts->len && ok; i++)
    {
      const TSpec *t = &g_array_index (ts, TSpec, i);
      int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
      size_t row_bytes;
      /* about 1 M values per chunk */
      int64_t per = MAX (1, (1 << 20) / t->ne[0]);

      const Pool *tp = NULL;

      bln_type_row_bytes (t->type, t->ne[0], &row_bytes);
      if (!exact && t->type != BLN_TYPE_F32 && t->type != BLN_TYPE_F16
          && t->type != BLN_TYPE_BF16)
        {
          g_autofree char *key = g_strdup_printf ("%d:%" G_GINT64_FORMAT ":%d", (int) t->type,
                                                  t->ne[0], (int) t->kind);
          tp = g_hash_table_lookup (pools, key);
          if (tp == NULL)
            {
              Pool *np = pool_new (t, shared.seed);
              if (np == NULL)
                {
                  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "cannot quantise %s to %s",
                               t->name, bln_type_name (t->type));
                  ok = FALSE;
                  break;
                }
              g_hash_table_insert (pools, g_steal_pointer (&key), np);
              tp = np;
            }
        }
      for (int64_t r0 = 0; r0 < rows && ok; r0 += per)
        {
          Chunk *c = g_new0 (Chunk, 1);
          c->t = t;
          c->pool = tp;
          c->row0 = r0;
          c->nrows = MIN (per, rows - r0);
          c->row_bytes = row_bytes;
          c->out = g_malloc (row_bytes * (size_t) c->nrows);
          g_queue_push_tail (&q, c);
          g_thread_pool_push (pool, c, NULL);
          while (ok && g_queue_get_length (&q) >= max_inflight)
            {
              Chunk *h = g_queue_pop_head (&q);
              ok = write_chunk_wait (w, h, error);
              written += h->row_bytes * (size_t) h->nrows;
              chunk_free (h);
            }
        }
      if (isatty (2) && total > 0)
        fprintf (stderr, "\r%5.1f%%  %s            ", 100.0 * (double) written / (double) total,
                 t->name);
    }
  while (!g_queue_is_empty (&q))
    {
      Chunk *h = g_queue_pop_head (&q);
      if (ok)
        ok = write_chunk_wait (w, h, error);
      else
        {
          /* let the worker finish before freeing its buffer */
          g_mutex_lock (&shared.lock);
          while (!h->done)
            g_cond_wait (&shared.cond, &shared.lock);
          g_mutex_unlock (&shared.lock);
        }
      chunk_free (h);
    }
  g_thread_pool_free (pool, FALSE, TRUE);
  if (isatty (2))
    fprintf (stderr, "\r%*s\r", 60, "");
  if (ok)
    fprintf (stderr, "synth-gguf: wrote the weights in %.1f s\n",
             (double) (g_get_monotonic_time () - t0) / 1e6);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* Tokenizer */

/* GPT-2's reversible byte -> printable code point map. */
static gunichar
byte_char (int b)
{
  int n = 0;

  if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
    return (gunichar) b;
  for (int x = 0; x < b; x++)
    if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)))
      n++;
  return (gunichar) (256 + n);
}

typedef struct {
  GPtrArray *tokens;   /* char*, n_vocab entries */
  GArray *types;       /* int32 */
  GPtrArray *merges;   /* char* */
  int bos, eos;
  gboolean add_bos;
  char *chat_template;
} Vocab;

static void
vocab_free (Vocab *v)
{
  g_ptr_array_unref (v->tokens);
  g_array_unref (v->types);
  g_ptr_array_unref (v->merges);
  g_free (v->chat_template);
}

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

static void
vocab_init (Vocab *v, int n)
{
  v->tokens = g_ptr_array_new_full (n, g_free);
  v->types = g_array_new (FALSE, TRUE, sizeof (int32_t));
  v->merges = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_set_size (v->tokens, n);
  g_array_set_size (v->types, n);
}

static void
vocab_set (Vocab *v, int id, const char *s, int32_t type)
{
  g_free (v->tokens->pdata[id]);
  v->tokens->pdata[id] = g_strdup (s);
  g_array_index (v->types, int32_t, id) = type;
}

/* Unused ids become "[PAD<id>]", as the converter pads a vocabulary. */
static void
vocab_pad (Vocab *v)
{
  for (guint i = 0; i < v->tokens->len; i++)
    if (v->tokens->pdata[i] == NULL)
      {
        v->tokens->pdata[i] = g_strdup_printf ("[PAD%u]", i);
        g_array_index (v->types, int32_t, i) = TT_UNUSED;
      }
}

static void
synthetic_vocab (Vocab *v, const ModelSpec *m)
{
  char a[8], b[8], sp[8];
  int id = 0;

  vocab_init (v, m->n_vocab);
  for (int c = 0; c < 256; c++)
    {
      char s[8] = { 0 };
      g_unichar_to_utf8 (byte_char (c), s);
      vocab_set (v, id++, s, TT_NORMAL);
    }
  sp[g_unichar_to_utf8 (byte_char (' '), sp)] = '\0';
  for (int x = 'a'; x <= 'z'; x++)
    {
      a[0] = (char) x, a[1] = 0;
      v->tokens->pdata[id] = g_strconcat (sp, a, NULL);
      g_array_index (v->types, int32_t, id) = TT_NORMAL;
      id++;
      g_ptr_array_add (v->merges, g_strdup_printf ("%s %s", sp, a));
    }
  for (int x = 'a'; x <= 'z'; x++)
    for (int y = 'a'; y <= 'z'; y++)
      {
        a[0] = (char) x, a[1] = 0;
        b[0] = (char) y, b[1] = 0;
        v->tokens->pdata[id] = g_strdup_printf ("%s%s", a, b);
        g_array_index (v->types, int32_t, id) = TT_NORMAL;
        id++;
        g_ptr_array_add (v->merges, g_strdup_printf ("%s %s", a, b));
      }
  v->add_bos = m->add_bos;
  if (g_str_equal (m->arch, "qwen2"))
    {
      /* the R1-Distill-Qwen added tokens (special ones are CONTROL), at their
       * real ids unless --vocab made the vocabulary too small for that */
      int base = 151643 + 8 <= m->n_vocab ? 151643 : m->n_vocab - 8;
      vocab_set (v, base, "<｜end▁of▁sentence｜>", TT_CONTROL);
      vocab_set (v, base + 1, "<｜User｜>", TT_USER_DEFINED);
      vocab_set (v, base + 2, "<｜Assistant｜>", TT_USER_DEFINED);
      vocab_set (v, base + 3, "<｜begin▁of▁sentence｜>", TT_CONTROL);
      vocab_set (v, base + 4, "<|EOT|>", TT_USER_DEFINED);
      vocab_set (v, base + 5, "<think>", TT_USER_DEFINED);
      vocab_set (v, base + 6, "</think>", TT_USER_DEFINED);
      v->eos = base;
      v->bos = base + 3;
      v->chat_template = g_strdup (r1_template);
    }
  else
    {
      int base = 100000 + 2 <= m->n_vocab ? 100000 : m->n_vocab - 2;
      vocab_set (v, base, "<｜begin▁of▁sentence｜>", TT_CONTROL);
      vocab_set (v, base + 1, "<｜end▁of▁sentence｜>", TT_CONTROL);
      v->bos = base;
      v->eos = base + 1;
      v->chat_template = g_strdup (v2_template);
    }
  vocab_pad (v);
}

static char *
read_maybe_gz (const char *path, GError **error)
{
  gzFile f = gzopen (path, "rb");
  GString *s;
  char buf[65536];
  int n;

  if (f == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot open “%s”: %s", path,
                   g_strerror (errno));
      return NULL;
    }
  s = g_string_new (NULL);
  while ((n = gzread (f, buf, sizeof buf)) > 0)
    g_string_append_len (s, buf, n);
  if (n < 0 || s->len > (1u << 30))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot read “%s”", path);
      gzclose (f);
      g_string_free (s, TRUE);
      return NULL;
    }
  gzclose (f);
  return g_string_free (s, FALSE);
}

static const char *
token_content (JsonNode *n)
{
  if (n == NULL)
    return NULL;
  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    return json_node_get_string (n);
  if (JSON_NODE_HOLDS_OBJECT (n))
    return json_object_get_string_member_with_default (json_node_get_object (n), "content", NULL);
  return NULL;
}

static int
find_token (Vocab *v, const char *s)
{
  if (s == NULL)
    return -1;
  for (guint i = 0; i < v->tokens->len; i++)
    if (v->tokens->pdata[i] && strcmp (v->tokens->pdata[i], s) == 0)
      return (int) i;
  return -1;
}

/* A real HF tokenizer.json (optionally gzipped), padded to the model's vocab.
 * bos/eos/add_bos/chat_template come from a tokenizer_config.json next to it
 * when there is one. */
static gboolean
file_vocab (Vocab *v, const ModelSpec *m, const char *path, GError **error)
{
  g_autofree char *text = read_maybe_gz (path, error);
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *root, *model, *vocab;
  JsonArray *merges, *added;
  g_autoptr (GList) members = NULL;
  g_autofree char *dir = NULL, *cfg_path = NULL;

  if (text == NULL)
    return FALSE;
  if (!json_parser_load_from_data (p, text, -1, error))
    return FALSE;
  root = JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p))
    ? json_node_get_object (json_parser_get_root (p)) : NULL;
  model = root && json_object_has_member (root, "model")
    ? json_object_get_object_member (root, "model") : NULL;
  vocab = model && json_object_has_member (model, "vocab")
    ? json_object_get_object_member (model, "vocab") : NULL;
  if (vocab == NULL || !g_str_equal (json_object_get_string_member_with_default (model, "type",
                                                                                 ""), "BPE"))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: not a BPE tokenizer.json", path);
      return FALSE;
    }
  vocab_init (v, m->n_vocab);
  members = json_object_get_members (vocab);
  for (GList *l = members; l; l = l->next)
    {
      gint64 id = json_object_get_int_member (vocab, l->data);
      if (id < 0 || id >= m->n_vocab)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "%s: token id %" G_GINT64_FORMAT " does not fit the model's %d tokens",
                       path, id, m->n_vocab);
          return FALSE;
        }
      vocab_set (v, (int) id, l->data, TT_NORMAL);
    }
  added = json_object_has_member (root, "added_tokens")
    ? json_object_get_array_member (root, "added_tokens") : NULL;
  for (guint i = 0; added && i < json_array_get_length (added); i++)
    {
      JsonObject *o = json_array_get_object_element (added, i);
      gint64 id = json_object_get_int_member_with_default (o, "id", -1);
      const char *c = json_object_get_string_member_with_default (o, "content", NULL);
      if (id < 0 || id >= m->n_vocab || c == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "%s: added token %u does not fit the model's %d tokens", path, i,
                       m->n_vocab);
          return FALSE;
        }
      vocab_set (v, (int) id, c,
                 json_object_get_boolean_member_with_default (o, "special", FALSE)
                 ? TT_CONTROL : TT_USER_DEFINED);
    }
  merges = json_object_has_member (model, "merges")
    ? json_object_get_array_member (model, "merges") : NULL;
  for (guint i = 0; merges && i < json_array_get_length (merges); i++)
    {
      JsonNode *n = json_array_get_element (merges, i);
      if (JSON_NODE_HOLDS_ARRAY (n) && json_array_get_length (json_node_get_array (n)) == 2)
        g_ptr_array_add (v->merges,
                         g_strdup_printf ("%s %s",
                                          json_array_get_string_element (json_node_get_array (n), 0),
                                          json_array_get_string_element (json_node_get_array (n), 1)));
      else if (JSON_NODE_HOLDS_VALUE (n))
        g_ptr_array_add (v->merges, g_strdup (json_node_get_string (n)));
    }

  /* defaults: the model's usual specials when present in this vocabulary */
  v->add_bos = m->add_bos;
  v->bos = find_token (v, "<｜begin▁of▁sentence｜>");
  v->eos = find_token (v, "<｜end▁of▁sentence｜>");
  if (v->eos < 0)
    v->eos = find_token (v, "<|endoftext|>");
  dir = g_path_get_dirname (path);
  cfg_path = g_build_filename (dir, "tokenizer_config.json", NULL);
  if (g_file_test (cfg_path, G_FILE_TEST_EXISTS))
    {
      g_autoptr (JsonParser) cp = json_parser_new ();
      JsonObject *c;
      if (!json_parser_load_from_file (cp, cfg_path, error))
        return FALSE;
      c = json_node_get_object (json_parser_get_root (cp));
      if (json_object_has_member (c, "bos_token"))
        {
          int id = find_token (v, token_content (json_object_get_member (c, "bos_token")));
          v->bos = id >= 0 ? id : v->bos;
        }
      if (json_object_has_member (c, "eos_token"))
        {
          int id = find_token (v, token_content (json_object_get_member (c, "eos_token")));
          v->eos = id >= 0 ? id : v->eos;
        }
      v->add_bos = json_object_get_boolean_member_with_default (c, "add_bos_token", v->add_bos);
      if (json_object_has_member (c, "chat_template")
          && JSON_NODE_HOLDS_VALUE (json_object_get_member (c, "chat_template")))
        v->chat_template = g_strdup (json_object_get_string_member (c, "chat_template"));
    }
  if (v->bos < 0)
    v->add_bos = FALSE;
  if (v->chat_template == NULL)
    v->chat_template = g_strdup (g_str_equal (m->arch, "qwen2") ? r1_template : v2_template);
  vocab_pad (v);
  return TRUE;
}

/* ------------------------------------------------------------------------ */
/* Metadata */

#define CK(call) G_STMT_START { if (!(call)) return FALSE; } G_STMT_END

static gboolean
add_metadata (BlnGgufWriter *w, const ModelSpec *m, int n_layer, OutType out, Vocab *v,
              GError **error)
{
  const char *A = m->arch;
  uint32_t ftype = out == OUT_BF16 ? 32 : out == OUT_Q8_0 ? 7 : 15;
  g_autofree char *k = NULL;

#define KEY(suffix) (g_free (k), k = g_strdup_printf ("%s.%s", A, suffix))
  CK (bln_gguf_writer_add_string (w, "general.architecture", A, error));
  CK (bln_gguf_writer_add_string (w, "general.type", "model", error));
  CK (bln_gguf_writer_add_string (w, "general.name", m->name, error));
  if (m->finetune[0])
    CK (bln_gguf_writer_add_string (w, "general.finetune", m->finetune, error));
  CK (bln_gguf_writer_add_string (w, "general.basename", m->basename, error));
  CK (bln_gguf_writer_add_string (w, "general.size_label", m->size_label, error));
  CK (bln_gguf_writer_add_uint32 (w, KEY ("block_count"), (uint32_t) n_layer, error));
  CK (bln_gguf_writer_add_uint32 (w, KEY ("context_length"), (uint32_t) m->n_ctx, error));
  CK (bln_gguf_writer_add_uint32 (w, KEY ("embedding_length"), (uint32_t) m->n_embd, error));
  CK (bln_gguf_writer_add_uint32 (w, KEY ("feed_forward_length"), (uint32_t) m->n_ff, error));
  CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.head_count"), (uint32_t) m->n_head, error));
  /* deepseek2 with MLA is stored as multi-query attention over the latent */
  CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.head_count_kv"),
                                  g_str_equal (A, "deepseek2") ? 1 : (uint32_t) m->n_head_kv,
                                  error));
  CK (bln_gguf_writer_add_float32 (w, KEY ("rope.freq_base"), (float) m->rope_theta, error));
  CK (bln_gguf_writer_add_float32 (w, KEY ("attention.layer_norm_rms_epsilon"), (float) m->eps,
                                   error));
  if (g_str_equal (A, "deepseek2"))
    {
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_used_count"),
                                      (uint32_t) m->n_expert_used, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_group_count"), (uint32_t) m->n_group,
                                      error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_group_used_count"),
                                      (uint32_t) m->n_group_used, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("vocab_size"), (uint32_t) m->n_vocab, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("leading_dense_block_count"),
                                      (uint32_t) m->n_dense_lead, error));
      if (m->q_lora > 0)
        CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.q_lora_rank"), (uint32_t) m->q_lora,
                                        error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.kv_lora_rank"), (uint32_t) m->kv_lora,
                                      error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.key_length"),
                                      (uint32_t) (m->kv_lora + m->rope_dim), error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.value_length"), (uint32_t) m->kv_lora,
                                      error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.key_length_mla"),
                                      (uint32_t) (m->nope + m->rope_dim), error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("attention.value_length_mla"), (uint32_t) m->v_dim,
                                      error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_feed_forward_length"),
                                      (uint32_t) m->n_ff_exp, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_count"), (uint32_t) m->n_expert, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_shared_count"), (uint32_t) m->n_shared,
                                      error));
      CK (bln_gguf_writer_add_float32 (w, KEY ("expert_weights_scale"), (float) m->expert_scale,
                                       error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("expert_gating_func"), 1 /* softmax */, error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("rope.dimension_count"), (uint32_t) m->rope_dim,
                                      error));
      CK (bln_gguf_writer_add_string (w, KEY ("rope.scaling.type"), "yarn", error));
      CK (bln_gguf_writer_add_float32 (w, KEY ("rope.scaling.factor"), (float) m->yarn_factor,
                                       error));
      CK (bln_gguf_writer_add_uint32 (w, KEY ("rope.scaling.original_context_length"),
                                      (uint32_t) m->yarn_orig_ctx, error));
      CK (bln_gguf_writer_add_float32 (w, KEY ("rope.scaling.yarn_beta_fast"),
                                       (float) m->yarn_beta_fast, error));
      CK (bln_gguf_writer_add_float32 (w, KEY ("rope.scaling.yarn_beta_slow"),
                                       (float) m->yarn_beta_slow, error));
      CK (bln_gguf_writer_add_float32 (w, KEY ("rope.scaling.yarn_log_multiplier"),
                                       (float) (0.1 * m->yarn_mscale_all_dim), error));
    }
  CK (bln_gguf_writer_add_uint32 (w, "general.file_type", ftype, error));
  CK (bln_gguf_writer_add_uint32 (w, "general.quantization_version", 2, error));
#undef KEY

  CK (bln_gguf_writer_add_string (w, "tokenizer.ggml.model", "gpt2", error));
  CK (bln_gguf_writer_add_string (w, "tokenizer.ggml.pre", m->pre, error));
  CK (bln_gguf_writer_add_string_array (w, "tokenizer.ggml.tokens",
                                        (const char *const *) v->tokens->pdata, NULL,
                                        v->tokens->len, error));
  CK (bln_gguf_writer_add_array (w, "tokenizer.ggml.token_type", BLN_GGUF_INT32, v->types->data,
                                 v->types->len, error));
  CK (bln_gguf_writer_add_string_array (w, "tokenizer.ggml.merges",
                                        (const char *const *) v->merges->pdata, NULL,
                                        v->merges->len, error));
  if (v->bos >= 0)
    CK (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.bos_token_id", (uint32_t) v->bos, error));
  CK (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.eos_token_id", (uint32_t) v->eos, error));
  CK (bln_gguf_writer_add_uint32 (w, "tokenizer.ggml.padding_token_id", (uint32_t) v->eos,
                                  error));
  CK (bln_gguf_writer_add_bool (w, "tokenizer.ggml.add_bos_token", v->add_bos, error));
  CK (bln_gguf_writer_add_bool (w, "tokenizer.ggml.add_eos_token", FALSE, error));
  CK (bln_gguf_writer_add_string (w, "tokenizer.chat_template", v->chat_template, error));
  return TRUE;
}

/* ------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  g_autofree char *model_id = NULL, *type_s = NULL, *out_path = NULL, *tok_path = NULL;
  gint64 seed = 1;
  int layers = 0, threads = 0, vocab = 0;
  gboolean sparse = FALSE, exact = FALSE;
  GOptionEntry entries[] = {
    { "model", 0, 0, G_OPTION_ARG_STRING, &model_id, "r1-qwen-7b, r1-qwen-1.5b or v2-lite", "ID" },
    { "type", 0, 0, G_OPTION_ARG_STRING, &type_s, "bf16, q8_0 or q4_k_m (default q4_k_m)", "T" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_path, "Output GGUF file", "FILE" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Random seed (default 1)", "N" },
    { "layers", 0, 0, G_OPTION_ARG_INT, &layers, "Use N blocks instead of the model's", "N" },
    { "vocab", 0, 0, G_OPTION_ARG_INT, &vocab,
      "Use a vocabulary of N tokens instead of the model's (tests only: not a real shape)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Worker threads (default: all cores)", "N" },
    { "tokenizer", 0, 0, G_OPTION_ARG_FILENAME, &tok_path,
      "HF tokenizer.json[.gz] to embed (padded to the model's vocabulary)", "FILE" },
    { "exact", 0, 0, G_OPTION_ARG_NONE, &exact,
      "Quantise every row of random values (slow for k-quants) instead of drawing "
      "quantised blocks from a seeded pool", NULL },
    { "sparse", 0, 0, G_OPTION_ARG_NONE, &sparse,
      "Write no weight data (holes that read as zeros): layout tests only", NULL },
    { NULL }
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("- write a synthetic model as GGUF");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGgufWriter) w = NULL;
  g_autoptr (GArray) ts = NULL;
  ModelSpec m;
  const ModelSpec *spec = NULL;
  OutType out;
  Vocab v = { 0 };
  uint64_t per_token = 0;
  gboolean ok;

  g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, &argc, &argv, &error))
    {
      g_printerr ("synth-gguf: %s\n", error->message);
      return 2;
    }
  for (guint i = 0; model_id && i < G_N_ELEMENTS (models); i++)
    if (g_str_equal (models[i].id, model_id))
      spec = &models[i];
  if (spec == NULL || out_path == NULL)
    {
      g_printerr ("synth-gguf: give --model (r1-qwen-7b, r1-qwen-1.5b, v2-lite) and --out\n");
      return 2;
    }
  if (type_s == NULL || g_ascii_strcasecmp (type_s, "q4_k_m") == 0)
    out = OUT_Q4_K_M;
  else if (g_ascii_strcasecmp (type_s, "q8_0") == 0)
    out = OUT_Q8_0;
  else if (g_ascii_strcasecmp (type_s, "bf16") == 0)
    out = OUT_BF16;
  else
    {
      g_printerr ("synth-gguf: --type must be bf16, q8_0 or q4_k_m\n");
      return 2;
    }
  if (layers < 0 || layers > 1000 || threads < 0 || threads > 1024 || vocab < 0
      || (vocab > 0 && (vocab < 1024 || vocab > (1 << 22))))
    {
      g_printerr ("synth-gguf: bad --layers, --threads or --vocab (1024 to 4 M)\n");
      return 2;
    }
  m = *spec;
  if (layers > 0)
    m.n_layer = layers;
  if (vocab > 0)
    m.n_vocab = vocab;
  if (m.n_dense_lead > m.n_layer)
    m.n_dense_lead = m.n_layer;
  if (threads == 0)
    threads = (int) g_get_num_processors ();
  shared.seed = (guint64) seed * 0x2545F4914F6CDD1Dull + 0x1234567ull;

  if (tok_path ? !file_vocab (&v, &m, tok_path, &error) : (synthetic_vocab (&v, &m), FALSE))
    {
      g_printerr ("synth-gguf: %s\n", error->message);
      return 1;
    }

  ts = build_tensors (&m);
  assign_types (ts, &m, out);
  w = bln_gguf_writer_new (out_path, 32, &error);
  ok = w != NULL && add_metadata (w, &m, m.n_layer, out, &v, &error);
  for (guint i = 0; ok && i < ts->len; i++)
    {
      const TSpec *t = &g_array_index (ts, TSpec, i);
      ok = bln_gguf_writer_add_tensor (w, t->name, t->type, t->n_dims, t->ne, &error);
    }
  vocab_free (&v);
  if (ok)
    {
      /* weights read per decoded token: one embedding row, everything in the
       * blocks except the unused share of the routed experts, the output */
      for (guint i = 0; i < ts->len; i++)
        {
          const TSpec *t = &g_array_index (ts, TSpec, i);
          uint64_t nb = bln_gguf_writer_tensor_nbytes (w, i);
          if (g_str_equal (t->name, "token_embd.weight"))
            per_token += m.tied ? nb : nb / (uint64_t) t->ne[1];
          else if (strstr (t->name, "_exps.") != NULL)
            per_token += nb / (uint64_t) m.n_expert * (uint64_t) m.n_expert_used;
          else
            per_token += nb;
        }
      g_printerr ("synth-gguf: %s %s, %d layers, %u tensors, %.2f GiB -> %s\n", m.id,
                  out == OUT_BF16 ? "bf16" : out == OUT_Q8_0 ? "q8_0" : "q4_k_m", m.n_layer,
                  ts->len, (double) bln_gguf_writer_file_size (w) / (1 << 30), out_path);
      ok = write_all_data (w, ts, threads, sparse, exact, &error)
           && bln_gguf_writer_finish (w, &error);
    }
  if (!ok)
    {
      g_printerr ("synth-gguf: %s\n", error->message);
      return 1;
    }
  printf ("file_size_bytes %" G_GUINT64_FORMAT "\n", bln_gguf_writer_file_size (w));
  printf ("weight_bytes_per_token %" G_GUINT64_FORMAT "\n", per_token);
  return 0;
}
