#include <string.h>

#include "tensor.h"

size_t
bln_tensor_row_bytes (const BlnTensor *t)
{
  size_t bytes = 0;

  if (!bln_type_row_bytes (t->type, t->ne[0], &bytes))
    return 0;
  return bytes;
}

void
bln_tensor_clear (BlnTensor *t)
{
  g_free (t->name);
  g_free (t->owned);
  memset (t, 0, sizeof *t);
}
