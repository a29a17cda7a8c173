/* kernels/sample.h — token sampling on the GPU (sample.cu).
 *
 * The same steps, order and arithmetic as the CPU sampler (engine/sampler.h):
 * penalties, temperature, top-k, top-p, min-p, then one draw with a uniform
 * number that the caller takes from the CPU sampler's generator, so that both
 * samplers pick the same token for the same seed. Only a small result
 * (BlnSampleResult: the id, how many tokens survived, the top logprobs) needs
 * to be copied back. engine/cuda/sample.h wraps this for the engine; nothing
 * else should need to call it.
 *
 * How it works, over a logits row of n_vocab floats on the device:
 *   - greedy (temperature <= 0): one pass, the argmax of the penalised
 *     logits (smallest id on ties);
 *   - otherwise the penalised, scaled logits go to a scratch row, with their
 *     maximum and the number of usable ones (not NaN, not -inf); the k-th
 *     largest (top-k) is found by a three-pass radix select (11 + 11 + 10
 *     bits of the value), never by sorting the vocabulary;
 *   - without top-p, the CPU keeps the survivors in id order: their softmax
 *     mass and the draw are two passes over the row (block sums, then the
 *     block where the running sum crosses u * total, scanned in order);
 *   - with top-p, the CPU orders the survivors by value (ties: smaller id
 *     first): the BLN_SAMPLE_CAND largest values (plus ties) are collected,
 *     sorted in one block, and top-p, min-p and the draw run on them, with
 *     the normaliser taken over the whole top-k set.
 * The draws use double precision as the CPU does; the GPU's exp() may differ
 * from the C library's in the last bit, and sums are added in another order,
 * so a choice can differ from the CPU's only when u falls within about 1e-13
 * (relative) of a boundary between two tokens.
 *
 * Cases the GPU does not decide (status BLN_SAMPLE_FALLBACK; the caller then
 * copies the logits back and runs the CPU sampler, which gives the answer):
 *   - top-p is on and its nucleus needs more than BLN_SAMPLE_CAND tokens
 *     (top_p close to 1 on a flat distribution), or more than
 *     BLN_SAMPLE_CAND_CAP tokens tie at the collection threshold;
 *   - top-k is on, top-p is off, more than one token survives and the CPU
 *     sampler would draw from them in the order left by its quickselect:
 *     top_k > n_vocab / 8 (and below the number of usable logits), or
 *     tokens tying with the k-th largest value make the set larger than k.
 * Logprobs (log-softmax of the raw logits, as bln_sampler_sample reports
 * them) are always computed here.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most candidates the top-p path sorts, and the most it collects when
 * values tie at the threshold. */
#define BLN_SAMPLE_CAND 1024
#define BLN_SAMPLE_CAND_CAP 2048

/* The most top logprobs per token (OpenAI's limit). */
#define BLN_SAMPLE_MAX_TOP 20

/* The largest vocabulary the kernels take. */
#define BLN_SAMPLE_MAX_VOCAB (1 << 24)

enum {
  BLN_SAMPLE_OK = 0,
  BLN_SAMPLE_FALLBACK = 1,   /* see above: use the CPU sampler */
};

/* The parameters of one draw, as BlnSamplerParams reads them. */
typedef struct {
  float temperature;
  float top_p;
  float min_p;
  int top_k;
  float repetition_penalty;
  float presence_penalty;
  float frequency_penalty;
  double u;                 /* uniform in [0, 1), used only when > 1 token survives */
  int n_top;                /* -1: no logprobs; 0..BLN_SAMPLE_MAX_TOP: the chosen
                             * token's logprob and the n_top most likely */
} BlnSampleArgs;

/* What one call leaves in device memory (copy it back after the call). */
typedef struct {
  int32_t id;               /* the chosen token */
  int32_t n_survivors;      /* tokens left by the filters; u was used iff > 1 */
  int32_t status;           /* BLN_SAMPLE_OK or BLN_SAMPLE_FALLBACK (nothing else valid) */
  float logprob;            /* of id under the raw logits (when n_top >= 0) */
  int32_t top_id[BLN_SAMPLE_MAX_TOP];       /* n_top most likely, most likely first;
                                             * -1 past the usable logits */
  float top_logprob[BLN_SAMPLE_MAX_TOP];
} BlnSampleResult;

/* Bytes of device scratch bln_kernels_sample needs for @n_vocab tokens
 * (about 8 bytes per token plus a few tens of KiB); 0 for an n_vocab outside
 * 1..BLN_SAMPLE_MAX_VOCAB. */
size_t bln_kernels_sample_scratch_bytes (int n_vocab);

/* Zeroes the scratch's persistent state (counters, histograms, history
 * flags). Call it once after allocating the scratch, and again after any
 * failed or interrupted call, before the next bln_kernels_sample. */
cudaError_t bln_kernels_sample_reset (void *d_scratch, int n_vocab, cudaStream_t stream);

/* Samples one token from @d_logits (n_vocab floats, not modified) with
 * @args, writing *@d_result, all on @stream. @d_hist holds @n_hist pairs
 * (token id, occurrence count) of distinct ids, the history the penalties
 * see (n_hist 0 when they are all off; pairs with an id out of range or a
 * count <= 0 are ignored). @d_scratch: bln_kernels_sample_scratch_bytes
 * (n_vocab) bytes, 256-byte aligned, reset once, used by one call at a time.
 * Returns cudaErrorInvalidValue for bad arguments, else the launches' error
 * code; never synchronises. */
cudaError_t bln_kernels_sample (const float *d_logits, int n_vocab, const int32_t *d_hist,
                                int n_hist, const BlnSampleArgs *args, void *d_scratch,
                                BlnSampleResult *d_result, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
