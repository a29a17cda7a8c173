/* cpu/dispatch.c — picks the kernel table once, from what the CPU supports.
 *
 * The SIMD files are compiled with their own -m flags, so nothing in them may
 * run before the check here. BALEEN_CPU_SIMD=scalar (or avx2) caps the level;
 * bln_cpu_force_scalar() switches at run time for the tests.
 */
#include <stdatomic.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "vecdot.h"

static BlnCpuKernels simd_table;
static _Atomic (const BlnCpuKernels *) forced;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* F16C from CPUID leaf 1 (ECX bit 29): clang before 15 does not know the
 * "f16c" name for __builtin_cpu_supports. */
static gboolean
have_f16c (void)
{
  unsigned int a, b, c, d;

  return __get_cpuid (1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

static int
detect_level (void)
{
  int level = 0;   /* 0 scalar, 1 avx2, 2 avx512 */
  const char *env = g_getenv ("BALEEN_CPU_SIMD");

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init ();
  if (__builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma") && have_f16c ())
    level = 1;
  if (level == 1 && __builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
      && __builtin_cpu_supports ("avx512vl"))
    level = 2;
#endif
  if (env != NULL && strcmp (env, "scalar") == 0)
    level = 0;
  else if (env != NULL && strcmp (env, "avx2") == 0 && level > 1)
    level = 1;
  return level;
}

static const BlnCpuKernels *
chosen (void)
{
  static gsize once = 0;
  static const BlnCpuKernels *table;

  if (g_once_init_enter (&once))
    {
      int level = detect_level ();

      simd_table = *bln_cpu_kernels_scalar ();
#if defined(__x86_64__) && defined(BLN_HAVE_AVX2_KERNELS)
      if (level >= 1)
        bln_cpu_kernels_avx2_init (&simd_table);
#endif
#if defined(__x86_64__) && defined(BLN_HAVE_AVX512_KERNELS)
      if (level >= 2)
        bln_cpu_kernels_avx512_init (&simd_table);
#endif
      table = &simd_table;
      g_once_init_leave (&once, 1);
    }
  return table;
}

const BlnCpuKernels *
bln_cpu_kernels (void)
{
  const BlnCpuKernels *f = atomic_load (&forced);

  return f != NULL ? f : chosen ();
}

void
bln_cpu_force_scalar (gboolean scalar)
{
  atomic_store (&forced, scalar ? bln_cpu_kernels_scalar () : NULL);
}

const char *
bln_cpu_simd_level (void)
{
  return bln_cpu_kernels ()->name;
}
