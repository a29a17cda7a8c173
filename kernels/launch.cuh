/* kernels/launch.cuh — kernel launches with programmatic dependent launch.
 *
 * On Hopper and newer, a kernel launched with programmatic stream
 * serialization may be scheduled while the kernel before it on the stream is
 * still finishing, so its launch latency overlaps its predecessor's tail
 * (the decode step is a chain of a few hundred short kernels). Every kernel
 * launched through bln_launch() must therefore call bln_pdl_wait() before it
 * reads anything an earlier kernel wrote: that waits until the prerequisite
 * grid has completed and its memory is visible. On older GPUs, or with
 * BALEEN_CUDA_PDL=0, launches are ordinary and the wait does nothing.
 */
#pragma once

#include <cstdlib>
#include <cstring>
#include <utility>
#include <cuda_runtime.h>

/* Lets the next kernel on the stream launch as soon as every block of this
 * one has started (instead of when they have all finished), so its blocks
 * can take the SMs this kernel's tail leaves free and start on work that
 * needs nothing from this kernel (the matvecs prefetch their weights). Its
 * reads of this kernel's results still wait in bln_pdl_wait(). Off unless
 * built with -DBLN_PDL_TRIGGER=1 (an experiment; docs/BENCHMARKS.md). */
__device__ __forceinline__ void
bln_pdl_trigger ()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(BLN_PDL_TRIGGER) && BLN_PDL_TRIGGER
  cudaTriggerProgrammaticLaunchCompletion ();
#endif
}

__device__ __forceinline__ void
bln_pdl_wait ()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  bln_pdl_trigger ();
  cudaGridDependencySynchronize ();
#endif
}

/* Whether launches may use programmatic serialization: the current device is
 * compute capability 9.0 or newer and BALEEN_CUDA_PDL is not "0". Decided
 * once per process (devices of one machine are assumed alike). */
static inline bool
bln_pdl_enabled ()
{
  static int state = -1;

  if (state < 0)
    {
      int dev = 0, major = 0;
      const char *env = std::getenv ("BALEEN_CUDA_PDL");

      state = 0;
      if ((env == nullptr || std::strcmp (env, "0") != 0) && cudaGetDevice (&dev) == cudaSuccess
          && cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, dev)
               == cudaSuccess && major >= 9)
        state = 1;
      (void) cudaGetLastError ();
    }
  return state == 1;
}

/* kernel<<<grid, block, smem, stream>>> (args...), with programmatic
 * serialization where enabled. Returns the launch's error code. */
template <typename... KArgs, typename... Args>
static inline cudaError_t
bln_launch (void (*kernel) (KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args &&...args)
{
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1] = {};

  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = bln_pdl_enabled () ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx (&cfg, kernel, std::forward<Args> (args)...);
}

/* Streaming multiprocessors of the current device (100 if it cannot be
 * asked), and whether it has compute capability 8.0 or newer (mma with
 * int8 and F16 operands). Decided once per process; the devices of one
 * machine are assumed alike. */
static inline int
bln_sm_count ()
{
  static int n = 0;

  if (n == 0)
    {
      int dev = 0, v = 0;
      if (cudaGetDevice (&dev) == cudaSuccess
          && cudaDeviceGetAttribute (&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess
          && v > 0)
        n = v;
      else
        n = 100;
      (void) cudaGetLastError ();
    }
  return n;
}

static inline bool
bln_device_sm80 ()
{
  static int state = -1;

  if (state < 0)
    {
      int dev = 0, major = 0;
      state = cudaGetDevice (&dev) == cudaSuccess
                  && cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, dev)
                       == cudaSuccess
                  && major >= 8
                ? 1
                : 0;
      (void) cudaGetLastError ();
    }
  return state == 1;
}
