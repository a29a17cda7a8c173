/* cuda-test-util.h — shared by the GPU tests. Header-only. */
#pragma once

#include <glib.h>
#include "cuda/cuda.h"

/* TRUE when a usable GPU is present; otherwise marks the current test
 * skipped, with the reason, and returns FALSE. */
static inline gboolean
need_gpu (void)
{
  g_autofree char *why = NULL;

  if (bln_cuda_available (&why))
    return TRUE;
  g_test_skip (why);
  return FALSE;
}
