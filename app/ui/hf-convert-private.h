/* hf-convert-private.h — what hf-convert.c shares with the per-architecture
 * parts of the conversion (hf-convert-deepseek2.c).
 *
 * A conversion is planned as a list of entries, one per GGUF tensor, each
 * saying where its rows come from in the HF folder; hf-convert.c then writes
 * them all the same way, row by row.
 */
#pragma once

#include <json-glib/json-glib.h>

#include "gguf-write.h"
#include "hfdir.h"
#include "quant.h"

G_BEGIN_DECLS

typedef enum {
  BLN_CONVERT_ROWS,     /* the rows of one HF tensor, reordered when permute_heads > 0 */
  BLN_CONVERT_GROUPED,  /* of each run of @group rows of @hf, the rows [@offset, @offset + @take) */
  BLN_CONVERT_STACK,    /* the rows of the tensors @parts, one after the other (MoE experts) */
  BLN_CONVERT_K_B,      /* MLA's W_UK per head, transposed: for head h, GGUF row c holds
                         * column c of the HF rows [h × @group, h × @group + @take) */
} BlnConvertSource;

typedef struct {
  char *gguf;               /* GGUF name */
  const char *hf;           /* HF name (owned by the folder); a stack's first part */
  BlnConvertSource source;
  GPtrArray *parts;         /* BLN_CONVERT_STACK: const char * HF names (owned by the folder) */
  int64_t group, offset, take;
  int permute_heads;        /* > 0: reorder rows for GGUF's rotary layout with this many heads */
  int n_dims;
  int64_t ne[4];            /* the GGUF shape, row length first */
  BlnType type;             /* stored as */
  int order;                /* 0 token_embd, 1 blocks, 2 output */
  int block;
} BlnConvertEntry;

/* A new entry for GGUF tensor @gguf (copied) reading @hf, shape @ne (@n_dims
 * of them; the rest 1), source BLN_CONVERT_ROWS, block and order from the
 * GGUF name. Free with bln_convert_entry_free(). */
BlnConvertEntry *bln_convert_entry_new (const char *gguf, const char *hf, int n_dims,
                                        const int64_t *ne);
void bln_convert_entry_free (gpointer entry);

/* The dimensions a tensor of shape @ne has (trailing 1s dropped, at least 1). */
int bln_convert_n_dims (const int64_t *ne);

/* deepseek2 (HF model_type deepseek_v2 / deepseek_v3): appends to @entries
 * the GGUF tensors llama.cpp's converter writes for the folder @hf (MLA's
 * attn_kv_b split into attn_k_b and attn_v_b, the experts stacked into
 * ffn_*_exps), without storage types. Fails with BLN_ERROR_UNSUPPORTED for
 * a tensor or layout it does not convert, BLN_ERROR_CORRUPT for shapes that
 * disagree with config.json. */
gboolean bln_convert_plan_deepseek2 (BlnHfDir *hf, GPtrArray *entries, GError **error);

/* deepseek2: the architecture's hyper-parameters (deepseek2.*), as
 * llama.cpp's converter writes them. */
gboolean bln_convert_metadata_deepseek2 (BlnGgufWriter *w, BlnHfDir *hf, gint64 n_vocab,
                                         GError **error);

G_END_DECLS
