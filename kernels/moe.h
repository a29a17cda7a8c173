/* kernels/moe.h — the C entry points of the mixture-of-experts kernels
 * (moe.cu): the router and the weighted sum of the experts' outputs, for
 * deepseek2 models on the GPU. The experts' own products run through
 * bln_kernels_matvec_sel (kernels.h) with the expert ids the router leaves
 * on the device, so a CUDA graph captures the whole MoE layer.
 *
 * Each launcher checks its arguments, launches on @stream and returns
 * cudaGetLastError() (cudaErrorInvalidValue for bad arguments); none
 * synchronises or aborts.
 */
#pragma once

#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most routed experts the router takes. */
#define BLN_MOE_MAX_EXPERTS 512

/* How a model routes (engine/arch-deepseek2.c, route_token). */
typedef struct {
  int n_expert;        /* E, 1..BLN_MOE_MAX_EXPERTS */
  int n_used;          /* K experts per token, 1..E */
  int n_groups;        /* G expert groups (E a multiple of G); 1: no grouping */
  int n_groups_used;   /* groups kept per token, 1..G */
  int sigmoid;         /* 1: sigmoid scores (V3), 0: softmax (V2) */
  int norm;            /* 1: the K weights are divided by their sum */
  float scale;         /* then multiplied by this (routed_scaling_factor) */
} BlnMoeRouting;

/* Routes n_tok tokens: @logits holds [n_tok][E] router outputs, @bias E
 * selection biases (e_score_correction_bias) or NULL. Per token: scores =
 * softmax or sigmoid of the logits; selection scores = scores + bias; when
 * G > 1 and fewer groups are used than exist, only the n_groups_used groups
 * with the best group score survive (sigmoid: the sum of a group's two best
 * selection scores, softmax: its best one); then the K best selection scores
 * (ties to the lower expert id) give ids[t][k] and weights[t][k] = the
 * expert's score, optionally normalised, times scale. One warp per token;
 * the choice is the CPU's, exactly, when the logits are. */
cudaError_t bln_moe_route (const float *logits, int n_tok, const float *bias,
                           const BlnMoeRouting *rt, int32_t *ids, float *weights,
                           cudaStream_t stream);

/* x[t][i] += Σ_k weights[t K + k] * y[row (t K + k) * ldy + i] for t < n_tok,
 * i < d, where row (s) = rows[s], or s when @rows is NULL: the routed
 * experts' outputs (one row per selection, in selection order or permuted
 * by @rows) mixed into the residual stream, the K terms summed in order. */
cudaError_t bln_moe_combine (float *x, int d, int n_tok, int K, const float *y, int ldy,
                             const int32_t *rows, const float *weights, cudaStream_t stream);

/* out[j][i] = x[rows[j]][i] for j < n_rows, i < d: token rows gathered for
 * the experts (prefill, where each expert multiplies its rows at once). */
cudaError_t bln_moe_gather (const float *x, int d, const int32_t *rows, int n_rows, float *out,
                            cudaStream_t stream);

#ifdef __cplusplus
}
#endif
