/* cuda/backend.c — device discovery, error mapping, device memory, weight
 * upload and the memory plan of the CUDA backend. */
#include <limits.h>
#include <string.h>

#include "../bln-error.h"
#include "cuda.h"
#include "kernels.h"

gboolean
bln_cuda_check (cudaError_t rc, const char *what, const char *where, GError **error)
{
  if (rc == cudaSuccess)
    return TRUE;
  /* Reset the non-sticky last-error state; sticky errors (a faulted
   * context) keep failing later calls, which is what we want. */
  (void) cudaGetLastError ();
  g_set_error (error, BLN_ERROR,
               rc == cudaErrorMemoryAllocation ? BLN_ERROR_NOMEM : BLN_ERROR_BACKEND,
               "%s failed in %s: %s (%s)", what, where,
               cudaGetErrorString (rc), cudaGetErrorName (rc));
  return FALSE;
}

/* Probed once: the first cudaGetDeviceCount loads the driver, and asking
 * again would not change the answer within a process. */
static gsize probe_done;
static gboolean probe_ok;
static char *probe_why;

static void
probe (void)
{
  int count = 0;
  cudaError_t rc;

  rc = cudaGetDeviceCount (&count);
  if (rc != cudaSuccess)
    {
      const char *hint;

      (void) cudaGetLastError ();
      switch (rc)
        {
        case cudaErrorNoDevice:
          hint = "no CUDA-capable GPU is visible";
          break;
        case cudaErrorInsufficientDriver:
          hint = "the NVIDIA driver is missing or older than this build's CUDA runtime";
          break;
        default:
          hint = "the CUDA driver could not be initialised";
          break;
        }
      probe_why = g_strdup_printf ("%s: %s (%s)", hint, cudaGetErrorString (rc),
                                   cudaGetErrorName (rc));
      probe_ok = FALSE;
    }
  else if (count < 1)
    {
      probe_why = g_strdup ("no CUDA-capable GPU is visible (device count 0)");
      probe_ok = FALSE;
    }
  else
    probe_ok = TRUE;
}

gboolean
bln_cuda_available (char **why)
{
  if (g_once_init_enter (&probe_done))
    {
      probe ();
      g_once_init_leave (&probe_done, 1);
    }
  if (why)
    *why = probe_ok ? NULL : g_strdup (probe_why);
  return probe_ok;
}

gboolean
bln_cuda_device_info (int device, BlnCudaDeviceInfo *out, GError **error)
{
  struct cudaDeviceProp prop;
  size_t free_b = 0, total_b = 0;
  g_autofree char *why = NULL;

  g_return_val_if_fail (out != NULL, FALSE);

  if (!bln_cuda_available (&why))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_BACKEND, "No CUDA device: %s", why);
      return FALSE;
    }
  if (!BLN_CUDA_CHECK (cudaGetDeviceProperties (&prop, device), error)
      || !BLN_CUDA_CHECK (cudaSetDevice (device), error)
      || !BLN_CUDA_CHECK (cudaMemGetInfo (&free_b, &total_b), error))
    return FALSE;

  memset (out, 0, sizeof *out);
  out->device = device;
  g_strlcpy (out->name, prop.name, sizeof out->name);
  out->cc_major = prop.major;
  out->cc_minor = prop.minor;
  out->n_sm = prop.multiProcessorCount;
  out->total_mem = total_b;
  out->free_mem = free_b;
  out->l2_bytes = prop.l2CacheSize > 0 ? (size_t) prop.l2CacheSize : 0;
  out->mem_bus_bits = prop.memoryBusWidth;
  out->smem_per_block_optin = prop.sharedMemPerBlockOptin;
  return TRUE;
}

BlnCudaBuffer *
bln_cuda_buffer_new (size_t size, GError **error)
{
  g_autofree BlnCudaBuffer *buf = g_new0 (BlnCudaBuffer, 1);

  if (size > 0 && !BLN_CUDA_CHECK (cudaMalloc (&buf->ptr, size), error))
    {
      g_prefix_error (error, "Allocating %" G_GSIZE_FORMAT " bytes on the GPU: ", size);
      return NULL;
    }
  buf->size = size;
  return g_steal_pointer (&buf);
}

BlnCudaBuffer *
bln_cuda_buffer_new_from_host (const void *data, size_t size, GError **error)
{
  g_autoptr (BlnCudaBuffer) buf = NULL;

  g_return_val_if_fail (data != NULL || size == 0, NULL);

  buf = bln_cuda_buffer_new (size, error);
  if (!buf)
    return NULL;
  if (size > 0
      && !BLN_CUDA_CHECK (cudaMemcpy (buf->ptr, data, size, cudaMemcpyHostToDevice), error))
    return NULL;
  return g_steal_pointer (&buf);
}

void
bln_cuda_buffer_free (BlnCudaBuffer *buf)
{
  if (!buf)
    return;
  if (buf->ptr)
    (void) cudaFree (buf->ptr);  /* nothing useful to do with an error here */
  g_free (buf);
}

gboolean
bln_cuda_matvec_supports (BlnType type)
{
  return bln_kernels_split_layout ((int) type, NULL) != 0;
}

/* Q4_K's header for the kernels (kernels/kernels.h): d and dmin as they are,
 * then the 6-bit scales and mins of the eight sub-blocks, one byte each,
 * grouped by sub-block pairs. The
 * GGUF packing: for j < 4, scale j is the low 6 bits of byte j and min j the
 * low 6 bits of byte j + 4; for j >= 4, scale j is the low nibble of byte
 * j + 4 with the top 2 bits of byte j - 4 above it, and min j the high nibble
 * of byte j + 4 with the top 2 bits of byte j above it. */
static void
repack_q4_k_header (const uint8_t *blk, uint8_t *h)
{
  const uint8_t *sc = blk + 4;
  uint8_t s6[8], m6[8];
  int j;

  memcpy (h, blk, 4);
  for (j = 0; j < 8; j++)
    {
      if (j < 4)
        {
          s6[j] = sc[j] & 63;
          m6[j] = sc[j + 4] & 63;
        }
      else
        {
          s6[j] = (uint8_t) ((sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4));
          m6[j] = (uint8_t) ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4));
        }
    }
  /* grouped by sub-block pair g: scale 2g, scale 2g + 1, min 2g, min 2g + 1 */
  for (j = 0; j < 4; j++)
    {
      h[4 + 4 * j] = s6[2 * j];
      h[5 + 4 * j] = s6[2 * j + 1];
      h[6 + 4 * j] = m6[2 * j];
      h[7 + 4 * j] = m6[2 * j + 1];
    }
}

/* Q6_K's header for the kernels: the sixteen scales reordered so that unit
 * s (0..7; 16 values of half s / 4 and the 16 values 64 positions later)
 * finds its two at bytes 2s and 2s + 1, then d. */
static void
repack_q6_k_header (const uint8_t *blk, uint8_t *h)
{
  const uint8_t *sc = blk + 192;
  int s;

  for (s = 0; s < 8; s++)
    {
      h[2 * s] = sc[8 * (s / 4) + s % 4];
      h[2 * s + 1] = sc[8 * (s / 4) + s % 4 + 4];
    }
  memcpy (h + 16, blk + 208, 2);
}

BlnCudaTensor *
bln_cuda_tensor_upload (const BlnTensor *t, GError **error)
{
  BlnSplitLayout l;
  g_autoptr (BlnCudaTensor) ct = NULL;
  g_autofree uint8_t *pay = NULL;
  g_autofree uint8_t *hdr = NULL;
  int64_t n_out, n_blocks;
  size_t row_bytes = 0, gguf_bytes;
  const uint8_t *src;

  g_return_val_if_fail (t != NULL, NULL);

  if (!bln_kernels_split_layout ((int) t->type, &l))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "Tensor %s: type %s has no CUDA matvec kernel",
                   t->name ? t->name : "?", bln_type_name (t->type));
      return NULL;
    }
  n_out = t->ne[1] * t->ne[2] * t->ne[3];
  if (t->ne[0] <= 0 || n_out <= 0 || t->ne[0] > INT_MAX || n_out > INT_MAX
      || t->ne[0] % l.block_values != 0
      || !bln_type_row_bytes (t->type, t->ne[0], &row_bytes)
      || row_bytes > G_MAXSIZE / (size_t) n_out)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "Tensor %s: shape %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
                   " cannot go to the CUDA matvec (row length must be a multiple of %d)",
                   t->name ? t->name : "?", t->ne[0], n_out, l.block_values);
      return NULL;
    }
  gguf_bytes = row_bytes * (size_t) n_out;
  if (!t->data || t->nbytes < gguf_bytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "Tensor %s: %" G_GSIZE_FORMAT " bytes of data, %" G_GSIZE_FORMAT " needed",
                   t->name ? t->name : "?", t->nbytes, gguf_bytes);
      return NULL;
    }

  /* gguf_bytes = n_blocks * block_bytes, so the split buffers fit too. */
  n_blocks = (int64_t) (gguf_bytes / (size_t) l.block_bytes);
  src = t->data;
  ct = g_new0 (BlnCudaTensor, 1);
  ct->type = t->type;
  ct->n_in = t->ne[0];
  ct->n_out = n_out;
  ct->gguf_bytes = gguf_bytes;

  if (l.hdr_bytes == 0)
    {
      /* F16 / BF16: the GGUF layout is already the kernel's layout. */
      ct->payload = bln_cuda_buffer_new_from_host (src, gguf_bytes, error);
      if (!ct->payload)
        return NULL;
      return g_steal_pointer (&ct);
    }

  pay = g_try_malloc ((size_t) n_blocks * (size_t) l.pay_bytes);
  /* 16 spare zero bytes: the pipelined matvec copies headers in aligned
   * 4-byte words and may read up to 3 bytes past the last one */
  hdr = g_try_malloc0 ((size_t) n_blocks * (size_t) l.hdr_bytes + 16);
  if (!pay || !hdr)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                   "Tensor %s: out of host memory repacking %" G_GSIZE_FORMAT " bytes",
                   t->name ? t->name : "?", gguf_bytes);
      return NULL;
    }
  for (int64_t b = 0; b < n_blocks; b++)
    {
      const uint8_t *blk = src + (size_t) b * (size_t) l.block_bytes;
      uint8_t *h = hdr + (size_t) b * (size_t) l.hdr_bytes;
      size_t tail = (size_t) (l.block_bytes - l.pay_off - l.pay_bytes);

      memcpy (pay + (size_t) b * (size_t) l.pay_bytes, blk + l.pay_off, (size_t) l.pay_bytes);
      if (t->type == BLN_TYPE_Q4_K)
        repack_q4_k_header (blk, h);
      else if (t->type == BLN_TYPE_Q6_K)
        repack_q6_k_header (blk, h);
      else
        {
          memcpy (h, blk, (size_t) l.pay_off);
          memcpy (h + l.pay_off, blk + l.pay_off + l.pay_bytes, tail);
        }
    }

  ct->payload = bln_cuda_buffer_new_from_host (pay, (size_t) n_blocks * (size_t) l.pay_bytes,
                                               error);
  if (!ct->payload)
    return NULL;
  ct->header = bln_cuda_buffer_new_from_host (hdr, (size_t) n_blocks * (size_t) l.hdr_bytes
                                                   + 16, error);
  if (!ct->header)
    return NULL;
  return g_steal_pointer (&ct);
}

void
bln_cuda_tensor_free (BlnCudaTensor *t)
{
  if (!t)
    return;
  bln_cuda_buffer_free (t->payload);
  bln_cuda_buffer_free (t->header);
  g_free (t);
}

size_t
bln_cuda_reserve_bytes (size_t total_mem)
{
  size_t two_percent = total_mem / 50;
  size_t floor_b = (size_t) 512 << 20;

  return MAX (two_percent, floor_b);
}

static size_t
sat_add (size_t a, size_t b)
{
  return a > G_MAXSIZE - b ? G_MAXSIZE : a + b;
}

gboolean
bln_cuda_estimate (size_t weight_bytes, size_t kv_bytes, size_t scratch, size_t *free_out)
{
  size_t free_b = 0, total_b = 0, need;

  if (free_out)
    *free_out = 0;
  if (!bln_cuda_available (NULL))
    return FALSE;
  if (cudaMemGetInfo (&free_b, &total_b) != cudaSuccess)
    {
      (void) cudaGetLastError ();
      return FALSE;
    }
  if (free_out)
    *free_out = free_b;
  need = sat_add (sat_add (sat_add (weight_bytes, kv_bytes), scratch),
                  bln_cuda_reserve_bytes (total_b));
  return need <= free_b;
}

gboolean
bln_cuda_copy_rate (double *bytes_per_s, GError **error)
{
  const size_t size = (size_t) 1 << 30;
  const int reps = 10;
  g_autoptr (BlnCudaBuffer) a = NULL;
  g_autoptr (BlnCudaBuffer) b = NULL;
  cudaEvent_t e0 = NULL, e1 = NULL;
  float ms = 0.0f;
  gboolean ok = FALSE;
  int i;

  *bytes_per_s = 0.0;
  if (!(a = bln_cuda_buffer_new (size, error)) || !(b = bln_cuda_buffer_new (size, error))
      || !BLN_CUDA_CHECK (cudaMemset (a->ptr, 1, size), error)
      || !BLN_CUDA_CHECK (cudaEventCreate (&e0), error)
      || !BLN_CUDA_CHECK (cudaEventCreate (&e1), error)
      /* once untimed: the first copy pays for page mapping */
      || !BLN_CUDA_CHECK (cudaMemcpy (b->ptr, a->ptr, size, cudaMemcpyDeviceToDevice), error)
      || !BLN_CUDA_CHECK (cudaEventRecord (e0, 0), error))
    goto out;
  for (i = 0; i < reps; i++)
    if (!BLN_CUDA_CHECK (cudaMemcpyAsync (i % 2 ? a->ptr : b->ptr, i % 2 ? b->ptr : a->ptr, size,
                                          cudaMemcpyDeviceToDevice, 0), error))
      goto out;
  if (!BLN_CUDA_CHECK (cudaEventRecord (e1, 0), error)
      || !BLN_CUDA_CHECK (cudaEventSynchronize (e1), error)
      || !BLN_CUDA_CHECK (cudaEventElapsedTime (&ms, e0, e1), error))
    goto out;
  *bytes_per_s = 2.0 * (double) size * reps / (ms / 1e3);
  ok = TRUE;
out:
  if (e0)
    (void) cudaEventDestroy (e0);
  if (e1)
    (void) cudaEventDestroy (e1);
  return ok;
}
