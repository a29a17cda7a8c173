/* cuda/forward-private.h — what the files of the GPU forward pass share.
 *
 * forward.c holds the llama / qwen2 path, the memory plan and the contexts;
 * other architecture files (forward-deepseek2.c) reuse its weight upload,
 * projection and norm helpers through the declarations below. Nothing outside
 * engine/cuda/ includes this.
 */
#pragma once

#include <cublas_v2.h>

#include "cuda.h"
#include "forward.h"
#include "kernels.h"

G_BEGIN_DECLS

typedef struct {
  float *attn_norm, *ffn_norm;       /* device F32 */
  float *bq, *bk, *bv;               /* NULL when absent */
  /* q, k and v projections, stacked where their types allow: seg[i] writes
   * output columns col[i].. of the [n][H dk + Hkv dk + Hkv dv] qkv matrix */
  BlnCudaTensor *qkv[3];
  int qkv_col[3];
  int n_qkv;
  BlnCudaTensor *wo;
  BlnCudaTensor *wgu;                /* gate and up stacked (2 ff rows), or NULL */
  BlnCudaTensor *wg, *wu;            /* when they could not be stacked */
  BlnCudaTensor *wd;
} CudaLayer;

struct _BlnCudaModel {
  int device;
  int n_layer;
  CudaLayer *layers;
  float *output_norm;
  BlnCudaTensor *output;
  float *inv_freq;
  GPtrArray *tensors;     /* BlnCudaTensor *, owned */
  GPtrArray *buffers;     /* BlnCudaBuffer *, owned */
  size_t weight_bytes;
  /* deepseek2 (MLA, MoE) weights, forward-deepseek2.c; NULL for other
   * architectures */
  struct _BlnCudaDs2Model *ds2;
};

/* Scratch of a context, carved from one allocation. Sizes in bytes. */
typedef struct {
  size_t x, h, qkv, att, tmp, gu, ffo, logits, qkv16, act16, deq, scores, probs, part;
  size_t kdq;             /* 8-bit KV: one layer's K (then V) as F16 for prefill, or 0 */
  size_t total;
  int rows;               /* tokens per prefill chunk */
  int qblock;             /* query rows per attention block in prefill */
} ScratchPlan;

struct _BlnCudaCtx {
  BlnModel *model;
  BlnCudaModel *cm;
  int device;
  int n_ctx;
  gboolean kv_f16;         /* F16 cache, or F16 prefill buffers over an 8-bit cache */
  gboolean kv_q8;          /* 8-bit cache: int8 values, F16 scales per 32 (kernels/ops.h) */
  size_t kv_elem;          /* bytes per cached value (1 for the 8-bit cache) */
  cudaStream_t stream;
  cublasHandle_t blas;
  BlnCudaBuffer *k_cache, *v_cache, *scratch;
  ScratchPlan sp;
  float *x, *h, *qkv, *att, *tmp, *gu, *ffo, *logits;
  int qkv_ld;              /* floats per row of qkv */
  void *qkv16, *act16, *deq, *scores, *probs, *part, *kdq;
  float *host_x;           /* pinned, sp.rows rows of n_embd */
  BlnPool *pool;           /* the context's CPU threads (embedding rows) */
  int *h_pos, *d_pos;      /* the chunk's first position: pinned, and on the device */
  float *h_logits;         /* pinned, one row of n_vocab */
  /* CUDA graphs of the decode step for 1..BLN_CUDA_MATVEC_MAX_TOK tokens,
   * captured on first use */
  cudaGraphExec_t graphs[BLN_CUDA_MATVEC_MAX_TOK + 1];
  /* the same, with the logits left on the device for the GPU sampler */
  cudaGraphExec_t graphs_dev[BLN_CUDA_MATVEC_MAX_TOK + 1];
  struct _BlnCudaSampler *sampler;   /* made on first use */
  gboolean no_graphs;      /* BALEEN_CUDA_GRAPHS=0, or a capture failed */
  /* deepseek2 state of the context (forward-deepseek2.c), else NULL */
  struct _BlnCudaDs2Ctx *ds2;
};

/* Whether prefill attention may use the flash kernels (kernels/flash.h):
 * BALEEN_CUDA_FLASH_PREFILL is not "0". Read once. */
gboolean bln_cuda_flash_prefill_enabled (void);

/* Whether the switch @name is on: on unless the variable is "0"; *@state
 * (-1 at first) keeps the answer, so the variable is read once. */
gboolean bln_cuda_env_on (const char *name, int *state);

/* Checks a cuBLAS status: FALSE with @error (BLN_ERROR_NOMEM for an
 * allocation failure, else BLN_ERROR_BACKEND) naming @what. */
gboolean bln_cuda_blas_check (cublasStatus_t st, const char *what, GError **error);

/* Checks a kernel launcher's cudaError_t. */
#define KCHECK(call, error) bln_cuda_check ((call), #call, G_STRFUNC, (error))

/* TRUE when the matvec kernels read @t as stored (type and shape). */
gboolean bln_cuda_layer_type_ok (const BlnTensor *t);
/* Bytes @t takes once uploaded (as stored, or as F32 when the kernels cannot
 * read its type). */
size_t bln_cuda_dev_bytes (const BlnTensor *t);
/* A host F32 copy of @t (g_free it), NULL with @error. */
float *bln_cuda_dequant_host (const BlnTensor *t, GError **error);
/* A small F32 vector (norm weights, biases) on the device, owned by @cm;
 * NULL for a NULL @t (no error) or with @error. */
float *bln_cuda_upload_vec (BlnCudaModel *cm, const BlnTensor *t, GError **error);
/* A weight matrix on the device, owned by @cm (F32 when the kernels cannot
 * read its type); NULL with @error. */
BlnCudaTensor *bln_cuda_upload_matrix (BlnCudaModel *cm, const BlnTensor *t, GError **error);
/* t[0..n) stacked into one matrix when they share type and width; NULL
 * without an error when they cannot be, NULL with @error on failure. */
BlnCudaTensor *bln_cuda_upload_stacked (BlnCudaModel *cm, const BlnTensor *const *t, int n,
                                        GError **error);
/* y[n][ldy] = x[n][n_in] · Wᵀ (+ bias), any n: the matvec kernels up to
 * BLN_CUDA_MATVEC_MAX_TOK rows; beyond, quantised weights through the
 * tensor-core MMQ when bln_cuda_mmq_enabled says so, else cuBLAS (weights
 * expanded to F16 into c->deq). @ldy 0 means n_out. */
gboolean bln_cuda_linear (BlnCudaCtx *c, const BlnCudaTensor *w, const float *bias,
                          const float *x, int n, float *y, int ldy, GError **error);
/* Whether bln_cuda_linear would run the product of @n rows with @w on
 * cuBLAS over 16-bit activations (converted into c->act16): 0 when it wants
 * F16 activations (F16 or quantised weights), 1 for BF16 (BF16 weights), -1
 * when it reads the float rows instead (n <= BLN_CUDA_MATVEC_MAX_TOK, the
 * MMF or MMQ kernels, F32 weights). A producer may then write c->act16
 * itself (bln_kernels_rmsnorm_f16, bln_kernels_silu_mul_f16) and call
 * bln_cuda_linear_x16. */
int bln_cuda_linear_act16 (const BlnCudaTensor *w, int n);
/* bln_cuda_linear's cuBLAS branch on the activations the caller left in
 * c->act16 (n rows of w->n_in values, of the type bln_cuda_linear_act16
 * names; c->act16 holds n × max (n_embd, n_ff) of them): y[n][ldy] =
 * act16 · Wᵀ, or y += act16 · Wᵀ with @accumulate (cuBLAS beta = 1: each
 * float32 sum added to y once, as bln_kernels_add would). No bias. @ldy 0
 * means n_out. FALSE with @error (BLN_ERROR_INVALID) when
 * bln_cuda_linear_act16 says -1, or on a CUDA / cuBLAS failure. */
gboolean bln_cuda_linear_x16 (BlnCudaCtx *c, const BlnCudaTensor *w, int n, float *y, int ldy,
                              gboolean accumulate, GError **error);
/* Whether n token rows of a @type weight go through bln_kernels_mmq
 * (opt-in: BALEEN_CUDA_MMQ=1; BALEEN_CUDA_MMQ_MAX=N limits it to n <= N). */
gboolean bln_cuda_mmq_enabled (BlnType type, int n);
gboolean bln_cuda_mmf_enabled (const BlnCudaTensor *w, int n);
int bln_cuda_mmf_min (void);
/* y = W x for n <= BLN_CUDA_MATVEC_MAX_TOK rows, with kernels.h matvec
 * flags. */
gboolean bln_cuda_mv (BlnCudaCtx *c, const BlnCudaTensor *w, const float *x, int n, float *y,
                      int ldy, int flags, GError **error);
/* RMSNorm of c->x (n rows) with weights @w into c->h, also rounded for the
 * matvecs when the width allows: returns that matvec flag (or 0), or -1 with
 * @error. */
int bln_cuda_norm_for_matvec (BlnCudaCtx *c, const float *w, int n, GError **error);

G_END_DECLS
