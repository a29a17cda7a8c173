/* fuzz-gguf.c — libFuzzer target for the GGUF reader: any input must either
 * fail with an error or open into a reader whose every accessor is safe. */
#include <stddef.h>
#include <stdint.h>

#include "bln-error.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void
touch_all (const BlnGguf *g)
{
  uint64_t acc = bln_gguf_version (g) + bln_gguf_alignment (g);

  for (int64_t i = 0; i < bln_gguf_n_kv (g); i++)
    {
      const char *key = bln_gguf_kv_key (g, i);
      BlnGgufType et;
      uint64_t n = 0, uv;
      int64_t iv;
      double fv;
      gboolean bv;
      size_t len;

      acc += bln_gguf_kv_type (g, i) + (uint64_t) bln_gguf_find_key (g, key);
      acc += bln_gguf_get_int (g, key, &iv) + bln_gguf_get_uint64 (g, key, &uv)
             + bln_gguf_get_float (g, key, &fv) + bln_gguf_get_bool (g, key, &bv);
      if (bln_gguf_get_string (g, key, &len))
        acc += len;
      if (bln_gguf_get_array (g, key, &et, &n))
        for (uint64_t j = 0; j <= n && j < 1024; j++)
          {
            acc += bln_gguf_array_int (g, key, j, &iv) + bln_gguf_array_float (g, key, j, &fv);
            if (bln_gguf_array_string (g, key, j, &len))
              acc += len;
          }
    }
  for (int64_t i = 0; i < bln_gguf_n_tensors (g); i++)
    {
      const BlnGgufTensor *t = bln_gguf_tensor (g, i);
      const uint8_t *p = t->data;

      acc += (uintptr_t) bln_gguf_find_tensor (g, t->name);
      if (t->nbytes > 0)
        acc += p[0] + p[t->nbytes - 1];
    }
  sink = acc;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  BlnGguf *g = bln_gguf_open_memory (size ? data : (const uint8_t *) "", size, &error);

  if (g)
    {
      touch_all (g);
      bln_gguf_free (g);
    }
  else
    {
      if (error == NULL || error->domain != BLN_ERROR || error->message[0] == '\0')
        __builtin_trap ();
      g_error_free (error);
    }
  return 0;
}
