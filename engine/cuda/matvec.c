/* cuda/matvec.c — the decode matvec entry point: argument checks and the
 * launch of kernels/matvec.cu, with CUDA failures turned into GErrors. */
#include <stdint.h>

#include "../bln-error.h"
#include "cuda.h"
#include "kernels.h"

G_STATIC_ASSERT (BLN_CUDA_MATVEC_MAX_TOK == BLN_KERNELS_MATVEC_MAX_TOK);

gboolean
bln_cuda_matvec (const BlnCudaTensor *w, const float *d_x, int n_tok, float *d_y,
                 cudaStream_t stream, GError **error)
{
  g_return_val_if_fail (w != NULL && w->payload != NULL, FALSE);

  if (!d_x || !d_y || n_tok < 1 || n_tok > BLN_CUDA_MATVEC_MAX_TOK)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "CUDA matvec: bad arguments (n_tok %d, must be 1..%d)", n_tok,
                   BLN_CUDA_MATVEC_MAX_TOK);
      return FALSE;
    }
  if (((uintptr_t) d_x & 15) != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "CUDA matvec: the activations must be 16-byte aligned");
      return FALSE;
    }
  return BLN_CUDA_CHECK (bln_kernels_matvec ((int) w->type, w->payload->ptr,
                                             w->header ? w->header->ptr : NULL,
                                             (int) w->n_in, (int) w->n_out, d_x, n_tok, d_y,
                                             stream),
                         error);
}
