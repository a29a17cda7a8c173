/* tensor.h — the engine's view of a weight tensor.
 *
 * A tensor is a typed, row-major block of memory with up to four dimensions,
 * ne[0] being the row length (GGUF / ggml order). Weights of a linear layer
 * with n_in inputs and n_out outputs have ne[0] = n_in and ne[1] = n_out, so
 * row r holds the weights of output r. The data is either borrowed (a file
 * mapping, which the model keeps alive) or owned (converted on load).
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "quant.h"

G_BEGIN_DECLS

typedef struct {
  char *name;            /* owned */
  BlnType type;
  int n_dims;
  int64_t ne[4];         /* unused dimensions are 1 */
  const void *data;
  size_t nbytes;
  void *owned;           /* non-NULL when the data was allocated for this tensor */
} BlnTensor;

/* Number of values (product of ne). */
static inline int64_t
bln_tensor_nelements (const BlnTensor *t)
{
  return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Bytes in one row (ne[0] values). */
size_t bln_tensor_row_bytes (const BlnTensor *t);

/* Frees what the tensor owns (name, owned data), leaving it zeroed. */
void bln_tensor_clear (BlnTensor *t);

G_END_DECLS
