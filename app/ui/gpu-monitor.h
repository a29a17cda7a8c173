/* gpu-monitor.h — GPU utilisation and memory from NVIDIA's NVML.
 *
 * NVML (libnvidia-ml.so.1) comes with the NVIDIA driver, not with Baleen: it
 * is opened with dlopen() when the monitor is made, so the app starts and
 * runs without it. When the library, its entry points or a GPU are missing,
 * the monitor is "unavailable" and says why; it never fails otherwise.
 * GLib only (no GTK); use it from one thread. tools/gpu-monitor-check prints
 * what it reads, to compare with nvidia-smi on a machine with a GPU.
 *
 * $BALEEN_NVML_LIBRARY names another file to open instead (tests point it at
 * a missing one).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _BlnGpuMonitor BlnGpuMonitor;

typedef struct {
  double utilization;        /* percent of time a kernel ran over the last sample period */
  guint64 memory_used;       /* bytes (what nvidia-smi calls memory.used) */
  guint64 memory_total;      /* bytes */
  guint64 memory_reserved;   /* bytes the driver keeps for itself (0 when not reported) */
  gboolean memory_v2;        /* read with nvmlDeviceGetMemoryInfo_v2 (else the older call,
                              * whose "used" includes the reserved memory) */
  double temperature;        /* °C of the GPU die; -1 when NVML does not say */
} BlnGpuSample;

/* bln_gpu_monitor_new: opens NVML and picks GPU @index. Never NULL; check
 * bln_gpu_monitor_available(). Free with bln_gpu_monitor_free(). */
BlnGpuMonitor *bln_gpu_monitor_new (guint index);
void bln_gpu_monitor_free (BlnGpuMonitor *mon);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnGpuMonitor, bln_gpu_monitor_free)

/* bln_gpu_monitor_available: whether samples can be read. */
gboolean bln_gpu_monitor_available (BlnGpuMonitor *mon);

/* bln_gpu_monitor_reason: why not (a sentence owned by @mon), NULL when
 * available. */
const char *bln_gpu_monitor_reason (BlnGpuMonitor *mon);

/* bln_gpu_monitor_name: the GPU's name ("NVIDIA H200"), owned by @mon; NULL
 * when unavailable. */
const char *bln_gpu_monitor_name (BlnGpuMonitor *mon);

/* bln_gpu_monitor_sample: reads utilisation, memory and temperature into
 * @out. FALSE when unavailable or when NVML fails this time (then @out is
 * zeroed, temperature -1). */
gboolean bln_gpu_monitor_sample (BlnGpuMonitor *mon, BlnGpuSample *out);

G_END_DECLS
