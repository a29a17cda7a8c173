/* cuda/sample.h — picks the next token on the GPU, as the CPU sampler would.
 *
 * The logits of the last position stay on the device: the kernels of
 * kernels/sample.h apply the sampler's penalties, temperature, top-k, top-p
 * and min-p there and draw with the number the CPU sampler's seeded
 * generator would use, so the token is the one bln_sampler_sample() picks
 * for the same logits, parameters, history and seed (see kernels/sample.h
 * for the one, vanishingly rare, way they can differ: a uniform number within
 * about 1e-13 of a boundary). Only a small result (~200 bytes: the id and the
 * requested top logprobs) comes back to the host.
 *
 * When the GPU cannot reproduce the CPU's choice cheaply (a top-p nucleus of
 * more than BLN_SAMPLE_CAND = 1024 tokens, i.e. top_p close to 1 on a flat
 * distribution; top-k above n_vocab / 8 without top-p; more than
 * BLN_CUDA_SAMPLE_MAX_TOP top logprobs) bln_cuda_sample() copies the logits
 * row back and runs bln_sampler_sample() itself: the answer is the same,
 * only slower (the copy plus the CPU sampler's O(n_vocab) pass).
 *
 * A BlnCudaSampler belongs to one device (the current one when it was made)
 * and is used by one thread at a time; one serves any number of BlnSamplers
 * (requests) of its vocabulary size, one call after the other.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#include "../sampler.h"

G_BEGIN_DECLS

/* The most top logprobs the GPU computes (more go to the CPU sampler). */
#define BLN_CUDA_SAMPLE_MAX_TOP 20

typedef struct _BlnCudaSampler BlnCudaSampler;

/* Device scratch (about 8 bytes per token plus a few tens of KiB) and pinned
 * host buffers (8 bytes per token, for the penalties' history) for sampling
 * rows of @n_vocab logits, on the calling thread's current device. NULL with
 * @error (BLN_ERROR_INVALID for an n_vocab outside 1..16M,
 * BLN_ERROR_NOMEM / BLN_ERROR_BACKEND from CUDA, e.g. no device). Free with
 * bln_cuda_sampler_free(). */
BlnCudaSampler *bln_cuda_sampler_new (int n_vocab, GError **error);

/* Frees the buffers and the struct (synchronising the device first is the
 * caller's business: no call may be in flight). NULL is ignored. */
void bln_cuda_sampler_free (BlnCudaSampler *gs);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnCudaSampler, bln_cuda_sampler_free)

/* bln_sampler_sample() for a logits row that is on the device: picks the next
 * token from @d_logits (n_vocab floats of device memory, not modified) with
 * @sampler's parameters, history and generator, running on @stream after
 * whatever is already queued there (the forward pass that writes the
 * logits), and waits for the answer. *@out_id gets the token; @top, when not
 * NULL, must hold @n_top + 1 entries and gets what bln_sampler_sample()
 * writes there (top[0] the chosen token's logprob, top[1..n_top] the n_top
 * most likely tokens under the raw logits, id -1 past the vocabulary).
 *
 * Like bln_sampler_sample() it advances @sampler's generator (by one number
 * when more than one token survived the filters) and does NOT record the
 * token: call bln_sampler_accept() with it, as with the CPU sampler.
 * @sampler's n_vocab must be @gs's.
 *
 * FALSE with @error on bad arguments (BLN_ERROR_INVALID) or a CUDA failure
 * (BLN_ERROR_BACKEND / BLN_ERROR_NOMEM, the generator then left as it was);
 * @gs stays usable (its state is reset before the next call). */
gboolean bln_cuda_sample (BlnCudaSampler *gs, cudaStream_t stream, const float *d_logits,
                          BlnSampler *sampler, int32_t *out_id, BlnLogprob *top, int n_top,
                          GError **error);

/* How many calls of @gs ended in the CPU sampler (see above), and how many
 * calls there were in all; for tests and diagnostics. */
guint64 bln_cuda_sampler_fallbacks (const BlnCudaSampler *gs);
guint64 bln_cuda_sampler_calls (const BlnCudaSampler *gs);

/* For tests: fills all of @gs's device scratch and result memory with 0xff
 * bytes (NaN floats, -1 ids) and resets its persistent state, so that a
 * later call reading anything it did not write shows up. Synchronous. FALSE
 * with @error on a CUDA failure. */
gboolean bln_cuda_sampler_poison (BlnCudaSampler *gs, GError **error);

G_END_DECLS
