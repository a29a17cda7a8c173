/* cuda/cuda.h — the CUDA backend: devices, device memory, decode matvec.
 *
 * Host-side C over the CUDA runtime API. Every CUDA call is checked; a
 * failure becomes a GError in the BLN_ERROR domain (BLN_ERROR_BACKEND, or
 * BLN_ERROR_NOMEM for an out-of-memory) whose message carries the CUDA error
 * string. Nothing here aborts: no driver or no GPU is a FALSE answer with a
 * reason, and the caller falls back to the CPU backend.
 *
 * Functions that take a device work on the calling thread's current device
 * (cudaSetDevice); this first increment uses device 0 unless told otherwise.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#include "../tensor.h"

G_BEGIN_DECLS

/* Checks the result of a CUDA runtime call: on failure sets @error (may be
 * NULL) to "<what> failed in <where>: <CUDA error string> (<error name>)" and
 * returns FALSE; on success returns TRUE and leaves @error alone. Also clears
 * the runtime's last-error state so a later cudaGetLastError() does not report
 * the same failure again. Use it through BLN_CUDA_CHECK. */
gboolean bln_cuda_check (cudaError_t rc, const char *what, const char *where, GError **error);

/* if (!BLN_CUDA_CHECK (cudaMalloc (&p, n), error)) goto fail; */
#define BLN_CUDA_CHECK(call, error) bln_cuda_check ((call), #call, G_STRFUNC, (error))

/* TRUE when the CUDA driver is installed and at least one CUDA device is
 * visible. Otherwise FALSE, and *@why (when @why is not NULL) receives a
 * newly allocated sentence saying why (no driver, driver too old for this
 * runtime, no device...), for the user and for test skips; free it with
 * g_free. Never aborts; safe to call repeatedly (the answer is cached). */
gboolean bln_cuda_available (char **why);

typedef struct {
  int device;              /* ordinal */
  char name[256];          /* "NVIDIA H200" */
  int cc_major, cc_minor;  /* compute capability, 9.0 for Hopper */
  int n_sm;                /* multiprocessors */
  size_t total_mem;        /* bytes of device memory */
  size_t free_mem;         /* bytes free when asked */
  size_t l2_bytes;         /* L2 cache size */
  int mem_bus_bits;        /* memory bus width */
  size_t smem_per_block_optin;  /* the most shared memory a block may opt in to */
} BlnCudaDeviceInfo;

/* Fills @out with the properties of device @device. Makes @device the
 * calling thread's current device (it creates the CUDA context on first use).
 * FALSE with @error when there is no such device or the driver fails. */
gboolean bln_cuda_device_info (int device, BlnCudaDeviceInfo *out, GError **error);

/* A device allocation. */
typedef struct {
  void *ptr;      /* device pointer, 256-byte aligned; NULL when size is 0 */
  size_t size;    /* bytes */
} BlnCudaBuffer;

/* Allocates @size bytes of device memory. Returns a new buffer to free with
 * bln_cuda_buffer_free, or NULL with @error (BLN_ERROR_NOMEM when the device
 * is out of memory). The memory is not initialised. */
BlnCudaBuffer *bln_cuda_buffer_new (size_t size, GError **error);

/* Allocates a buffer and copies @size bytes from host memory @data into it
 * (synchronously). NULL with @error on failure, with nothing left allocated. */
BlnCudaBuffer *bln_cuda_buffer_new_from_host (const void *data, size_t size, GError **error);

/* Frees the device memory and the struct. NULL is ignored. */
void bln_cuda_buffer_free (BlnCudaBuffer *buf);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnCudaBuffer, bln_cuda_buffer_free)

/* A weight matrix on the device, in the layout the matvec kernels read: GGUF
 * blocks split into a payload buffer (bulk quants, 16-byte aligned per unit)
 * and a header buffer (scales...), see kernels/kernels.h. */
typedef struct {
  BlnType type;
  int64_t n_in;            /* values per row (ne[0]) */
  int64_t n_out;           /* rows (ne[1] * ne[2] * ne[3]) */
  size_t gguf_bytes;       /* bytes of the tensor in GGUF layout (what decode streams) */
  BlnCudaBuffer *payload;  /* owned */
  BlnCudaBuffer *header;   /* owned; NULL for F16 / BF16 */
} BlnCudaTensor;

/* TRUE when bln_cuda_tensor_upload and bln_cuda_matvec handle tensors of
 * type @type (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K). */
gboolean bln_cuda_matvec_supports (BlnType type);

/* Copies the weight tensor @t (host memory, GGUF layout) to the device in
 * the split layout. Returns a new tensor to free with bln_cuda_tensor_free,
 * or NULL with @error: BLN_ERROR_UNSUPPORTED for a type the kernels do not
 * handle, BLN_ERROR_INVALID for a shape they cannot take (n_in not a
 * multiple of the block size, sizes past INT_MAX, t->nbytes too small),
 * BLN_ERROR_NOMEM / BLN_ERROR_BACKEND from CUDA. Synchronous; uses a
 * temporary host buffer of the tensor's size. */
BlnCudaTensor *bln_cuda_tensor_upload (const BlnTensor *t, GError **error);

/* Frees the device memory and the struct. NULL is ignored. */
void bln_cuda_tensor_free (BlnCudaTensor *t);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnCudaTensor, bln_cuda_tensor_free)

/* The most token rows bln_cuda_matvec takes in one call. */
#define BLN_CUDA_MATVEC_MAX_TOK 8

/* d_y[t * n_out + r] = sum_k W[r][k] * d_x[t * n_in + k] for t < @n_tok, on
 * @stream (0: the legacy default stream), W = @w. @d_x and @d_y are device
 * pointers; @d_x must be 16-byte aligned (cudaMalloc memory is) and must not
 * overlap @d_y. @n_tok is 1..BLN_CUDA_MATVEC_MAX_TOK; a caller with more rows
 * calls again per slice (prefill will use a tensor-core path). Asynchronous:
 * FALSE with @error only for bad arguments or a failed launch; faults inside
 * the kernel surface at the next synchronising call. */
gboolean bln_cuda_matvec (const BlnCudaTensor *w, const float *d_x, int n_tok, float *d_y,
                          cudaStream_t stream, GError **error);

/* The memory plan: TRUE when @weight_bytes + @kv_bytes + @scratch fit in the
 * current device's free memory, leaving a reserve for the CUDA context,
 * cuBLAS workspaces and fragmentation (max (512 MiB, 2% of total)). When
 * @free_out is not NULL it receives the free bytes the answer was based on
 * (0 when there is no usable device, which answers FALSE). The sum
 * saturates instead of overflowing. Cheap; the GUI may call it before a load. */
gboolean bln_cuda_estimate (size_t weight_bytes, size_t kv_bytes, size_t scratch,
                            size_t *free_out);

/* Measures the current device's memory bandwidth: a device-to-device copy of
 * 1 GiB, repeated, timed with CUDA events; *@bytes_per_s receives the bytes
 * read plus written per second (the rate a bandwidth-bound kernel can reach).
 * Needs 2 GiB of free device memory for a moment. FALSE with @error when the
 * GPU fails. */
gboolean bln_cuda_copy_rate (double *bytes_per_s, GError **error);

/* The reserve bln_cuda_estimate keeps back on a device of @total_mem bytes. */
size_t bln_cuda_reserve_bytes (size_t total_mem);

G_END_DECLS
