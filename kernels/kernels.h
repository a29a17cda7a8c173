/* kernels/kernels.h — the C entry points of the CUDA kernels.
 *
 * Everything here is callable from C (engine/cuda/). Each launcher checks its
 * arguments, launches on the given stream and returns cudaGetLastError(): it
 * never synchronises and never aborts. Errors of the kernel itself surface at
 * the next synchronising call, as usual in CUDA.
 *
 * The weight layout the matvec kernels read ("split blocks"). A GGUF block is
 * cut in two: its bulk quants (the payload, a multiple of 16 bytes) and the
 * rest (the header: scales, minimums, high bits). All payloads of a tensor are
 * stored one after another in one buffer, row by row and block by block, and
 * all headers likewise in a second buffer. Payloads are then 16-byte aligned
 * whatever the GGUF block size (34 bytes for Q8_0, 210 for Q6_K...), so every
 * thread can read its share with one 16-byte load. The cut, per type
 * (payload = bytes [pay_off, pay_off + pay_bytes) of the block; header = the
 * other bytes, in their original order):
 *
 *   type   block  pay_off pay_bytes header
 *   Q8_0     34      2       32      d
 *   Q4_0     18      2       16      d
 *   Q4_1     20      4       16      d, m
 *   Q5_0     22      6       16      d, qh
 *   Q5_1     24      8       16      d, m, qh
 *   Q4_K    144     16      128      d, dmin, 4 x (sc, sc, mn, mn) (20 bytes, repacked)
 *   Q5_K    176     48      128      d, dmin, scales[12], qh[32]
 *   Q6_K    210      0      192      8 x scale pairs, d  (payload = ql, qh; repacked)
 *   F16      16      0       16      -                   (a "block" = 8 values)
 *   BF16     16      0       16      -
 *   F32      16      0       16      -                   (a "block" = 4 values)
 *
 * Q4_K's header is not copied but repacked: its twelve bytes of packed 6-bit
 * scales and mins become sixteen bytes, one per sub-block, after d and dmin,
 * grouped by the sub-block pairs a 16-byte payload unit touches: bytes
 * 4 + 4g .. 7 + 4g hold scale 2g, scale 2g + 1, min 2g, min 2g + 1 — 2.8%
 * more bytes per block, no bit unpacking in the kernels' inner loop, and one
 * aligned 4-byte load per unit (hdr_bytes is then 20, not block_bytes -
 * pay_bytes). Q6_K's sixteen int8 scales are reordered (same size) so that
 * the two a unit s needs, scale[8 (s / 4) + s % 4] and the one four places
 * later, are bytes 2s and 2s + 1; d follows as in GGUF.
 *
 * bln_kernels_split_layout() returns that table; engine/cuda/backend.c uses it
 * to repack on upload.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int block_values;   /* values per (possibly pseudo-) block */
  int block_bytes;    /* bytes per block in the GGUF layout */
  int pay_off;        /* where the payload starts inside a GGUF block */
  int pay_bytes;      /* payload bytes per block (multiple of 16) */
  int hdr_bytes;      /* header bytes per block = block_bytes - pay_bytes */
} BlnSplitLayout;

/* Fills @out with the split layout of GGUF type id @type and returns 1, or
 * returns 0 when the matvec kernels do not handle @type. */
int bln_kernels_split_layout (int type, BlnSplitLayout *out);

/* The most token rows one matvec launch handles. */
#define BLN_KERNELS_MATVEC_MAX_TOK 8

/* y[t * n_out + r] = sum_k W[r][k] * x[t * n_in + k] for t < n_tok.
 *
 * @payload, @header: the split-block weights (see above) of an n_out × n_in
 * matrix of GGUF type @type; @header may be NULL for F16 / BF16. @d_x holds
 * n_tok rows of n_in floats, @d_y receives n_tok rows of n_out floats (it must
 * not overlap @d_x). 1 <= n_tok <= BLN_KERNELS_MATVEC_MAX_TOK, n_in a multiple
 * of the block size. Returns cudaErrorInvalidValue for bad arguments or an
 * unsupported type, else the launch's error code.
 *
 * F16 / BF16 multiply with the float activations. The quantised types first
 * round the activations to 8 bits in blocks of 32 (scale amax / 127, round to
 * nearest, as the CPU backend does), into a scratch buffer that is one per
 * device: two such calls must not run concurrently on different streams of
 * one device. Each output is then within sum |w| * amax(block) / 254 (plus
 * float32 rounding) of the exact product. */
cudaError_t bln_kernels_matvec (int type, const void *payload, const void *header,
                                int n_in, int n_out, const float *d_x, int n_tok,
                                float *d_y, cudaStream_t stream);

/* Flags of bln_kernels_matvec_ex. */
enum {
  /* y += W x instead of y = W x (a residual add in the epilogue) */
  BLN_KERNELS_MATVEC_ACCUMULATE = 1,
  /* the 8-bit scratch already holds x rounded (bln_kernels_rmsnorm_quant or
   * bln_kernels_silu_mul_quant wrote it, or an earlier matvec of the same x
   * on the same stream, with nothing rounding other activations since):
   * quantised types skip their rounding pass. d_x must still hold x in
   * float for the float types. */
  BLN_KERNELS_MATVEC_XQ_READY = 2,
};

/* The device addresses of the 8-bit activation scratch the matvec kernels
 * read under BLN_KERNELS_MATVEC_XQ_READY (values q, per-32 scales d and
 * sums s, in the layout of device-util.cuh's xq_store32), so that kernels
 * in other files can leave their output rounded there; max_values is the
 * longest row (per token, up to BLN_KERNELS_MATVEC_MAX_TOK tokens). */
typedef struct {
  void *q, *d, *s;
  int max_values;
} BlnKernelsXq;

cudaError_t bln_kernels_xq_scratch (BlnKernelsXq *xq);

/* bln_kernels_matvec with output rows @ldy floats apart (0: n_out; so that
 * several matvecs can fill the columns of one wider matrix) and @flags
 * (above). */
cudaError_t bln_kernels_matvec_ex (int type, const void *payload, const void *header, int n_in,
                                   int n_out, const float *d_x, int n_tok, float *d_y, int ldy,
                                   int flags, cudaStream_t stream);

/* Expert matvecs (MoE decode): for each selection i < @n_sel,
 *   y[i * ldy + r] = W_e[r] . x[t] for r < n_out,  e = d_expert[i],
 *   t = d_tok[i] (or i when @d_tok is NULL),
 * where the weights hold @n_expert experts of n_out × n_in stacked row-wise
 * (a GGUF [n_in, n_out, n_expert] tensor in the split layout) and @d_x holds
 * @n_x_rows rows of n_in floats. The selections live on the device, so a
 * CUDA graph can capture the call with the router's output unknown; an
 * expert id outside [0, n_expert) is clamped (never an out-of-bounds read).
 * Flags as bln_kernels_matvec_ex: XQ_READY means all n_x_rows rows are
 * already rounded in the scratch. n_x_rows * n_in may reach
 * BLN_KERNELS_MATVEC_MAX_TOK * 65536 values on the 8-bit path; @ldy 0 means
 * n_out; n_sel <= 65535. */
cudaError_t bln_kernels_matvec_sel (int type, const void *payload, const void *header, int n_in,
                                    int n_out, int n_expert, const float *d_x, int n_x_rows,
                                    const int32_t *d_expert, const int32_t *d_tok, int n_sel,
                                    float *d_y, int ldy, int flags, cudaStream_t stream);

/* RMSNorm of n_rows (<= BLN_KERNELS_MATVEC_MAX_TOK) rows of d values (d a
 * multiple of 32), as bln_kernels_rmsnorm (kernels/ops.h), that also leaves
 * the result rounded in the 8-bit scratch, ready for matvecs with
 * BLN_KERNELS_MATVEC_XQ_READY. @y must not overlap @x. */
cudaError_t bln_kernels_rmsnorm_quant (const float *x, const float *w, float *y, int n_rows,
                                       int d, float eps, cudaStream_t stream);

/* bln_kernels_silu_mul (kernels/ops.h) for n_rows <= BLN_KERNELS_MATVEC_MAX_TOK
 * rows, ff a multiple of 32, that also rounds the result into the scratch. */
cudaError_t bln_kernels_silu_mul_quant (const float *g, int g_stride, const float *u,
                                        int u_stride, float *out, int n_rows, int ff,
                                        cudaStream_t stream);

/* Expands an n_out × n_in matrix of quantised GGUF type @type (split blocks,
 * as above) into row-major F16 at @out (n_out * n_in halves), for the
 * prefill path's tensor-core products. F16, BF16 and F32 are not handled
 * (cuBLAS reads them as they are). Returns cudaErrorInvalidValue for bad
 * arguments or such a type. */
cudaError_t bln_kernels_dequant_f16 (int type, const void *payload, const void *header,
                                     int n_in, int n_out, void *out, cudaStream_t stream);

/* Quantised matrix product on int8 tensor cores (kernels/mmq.cu), for more
 * token rows than the matvec takes: y[t * ldy + r] (+)= sum_k W[r][k] *
 * x[t * n_in + k] for t < n_tok, r < n_out. Same split-block weights as
 * bln_kernels_matvec; the activations are rounded as there (8 bits per 32
 * values), so the same error bound holds. @ldy 0 means n_out; @flags:
 * BLN_KERNELS_MATVEC_ACCUMULATE (XQ_READY is ignored: x is always read in
 * float and rounded into this file's own scratch, grown on demand — one per
 * device, so calls on different streams must not overlap, and the first
 * call of a new largest size should not be inside a graph capture).
 * Returns cudaErrorNotSupported for a type it lacks (Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K are handled) or a GPU older than sm_80, so
 * that callers fall back; cudaErrorInvalidValue for bad arguments. With few
 * output tiles (few tokens or rows) it splits the sum over K and adds the
 * parts with atomics: the last bits of y may then vary between runs. Not
 * used unless BALEEN_CUDA_MMQ=1: correct on an H200 but slower than the
 * F16 path so far (docs/BENCHMARKS.md, session 5). */
cudaError_t bln_kernels_mmq (int type, const void *payload, const void *header, int n_in,
                             int n_out, const float *x, int n_tok, float *y, int ldy, int flags,
                             cudaStream_t stream);

/* Quantised weights times F16 activations on the F16 tensor cores
 * (kernels/mmf.cu), for batched decode (9 .. a few hundred token rows):
 * y[t * ldy + r] (+)= sum_k W[r][k] * x[t * n_in + k]. Same split-block
 * weights and arguments as bln_kernels_mmq; each weight byte is read once
 * per 64 tokens and expanded to F16 in registers (the scales applied in
 * F16), x is rounded to F16 — the precision class of the dequantise +
 * cuBLAS path. Deterministic (a split K is summed in a fixed order). Uses a
 * per-device scratch grown on demand (calls on different streams must not
 * overlap; the first call of a new largest size should not be inside a
 * graph capture). Returns cudaErrorNotSupported for a type it lacks (it
 * has Q4_K, Q6_K, Q8_0) or a GPU older than sm_80, cudaErrorInvalidValue
 * for bad arguments (n_in must be a multiple of 256). */
int bln_kernels_mmf_supports (int type);
cudaError_t bln_kernels_mmf (int type, const void *payload, const void *header, int n_in,
                             int n_out, const float *x, int n_tok, float *y, int ldy, int flags,
                             cudaStream_t stream);

/* 1 when bln_kernels_mmq handles GGUF type @type on the current device. */
int bln_kernels_mmq_supports (int type);

#ifdef __cplusplus
}
#endif
