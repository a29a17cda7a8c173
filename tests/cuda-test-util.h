/* cuda-test-util.h — shared by the GPU tests: skipping without a GPU or
 * without the optional real-shape model, and contexts and paged KV caches
 * on the GPU. Header-only. */
#pragma once

#include <glib.h>
#include "cuda/cuda.h"
#include "kv-cache.h"
#include "model.h"

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

/* The path in BALEEN_CUDA_TEST_MODEL (a real-shape GGUF the caller
 * loads); when it is unset or empty, marks the current test skipped and
 * returns NULL. */
static inline const char *
need_test_model (void)
{
  const char *path = g_getenv ("BALEEN_CUDA_TEST_MODEL");

  if (path != NULL && *path != '\0')
    return path;
  g_test_skip ("BALEEN_CUDA_TEST_MODEL is not set");
  return NULL;
}

/* Initialises @o for the GPU with @kv_bits-bit KV rows (16, the default,
 * or 32). */
static inline void
gpu_options_init (BlnContextOptions *o, int kv_bits)
{
  bln_context_options_init (o);
  o->device = BLN_DEVICE_CUDA;
  o->kv_bits = kv_bits;
}

/* A context of @n_ctx positions on the GPU with @kv_bits-bit KV rows, or
 * NULL with @error (the tests that expect a refusal check it). */
static inline BlnContext *
gpu_context (BlnModel *model, int n_ctx, int kv_bits, BlnPool *pool, GError **error)
{
  BlnContextOptions o;

  gpu_options_init (&o, kv_bits);
  return bln_context_new_with_options (model, n_ctx, pool, &o, error);
}

/* A paged KV cache of @budget bytes on the GPU, in blocks of @block_size
 * (0: the default) with @kv_bits-bit rows; @pool may be NULL. Fails the
 * test when it cannot be made. */
static inline BlnKvCache *
gpu_kv_cache (BlnModel *model, BlnPool *pool, size_t budget, int block_size, int kv_bits)
{
  g_autoptr (GError) error = NULL;
  BlnContextOptions o;
  BlnKvCache *kv;

  gpu_options_init (&o, kv_bits);
  kv = bln_kv_cache_new_with_options (model, pool, budget, block_size, &o, &error);
  g_assert_no_error (error);
  return kv;
}
