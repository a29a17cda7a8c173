/* gpu-monitor.c — NVML through dlopen (see gpu-monitor.h).
 *
 * Only the few NVML entry points used here are declared, with the types of
 * NVML's public C API: functions return an int status (0 = success), a
 * device is an opaque pointer, utilisation is two unsigned ints (GPU and
 * memory-controller percent), memory three unsigned long longs (total,
 * free, used bytes) or, in the versioned form, an unsigned int version
 * followed by total, reserved, free and used, and a temperature an unsigned
 * int in °C for sensor 0 (the GPU die).
 *
 * Memory: nvidia-smi reports the versioned form's "used", which leaves out
 * the memory the driver reserves for itself; the first form counts it as
 * used. The versioned entry point is used when the driver has it, so that
 * the plot agrees with nvidia-smi.
 */
#include "gpu-monitor.h"

#include <dlfcn.h>
#include <string.h>
#include <glib/gi18n-lib.h>

typedef int NvmlReturn;
typedef struct NvmlDeviceOpaque *NvmlDevice;
typedef struct { unsigned int gpu, memory; } NvmlUtilization;
typedef struct { unsigned long long total, free, used; } NvmlMemory;
typedef struct {
  unsigned int version;
  unsigned long long total, reserved, free, used;
} NvmlMemoryV2;

/* NVML's structure version word: the size, and the version in the top byte */
#define NVML_MEMORY_V2_VERSION ((unsigned int) (sizeof (NvmlMemoryV2) | (2u << 24)))
#define NVML_TEMPERATURE_GPU 0

struct _BlnGpuMonitor
{
  void *lib;                 /* dlopen handle, NULL when unavailable */
  gboolean initialized;      /* nvmlInit succeeded: call nvmlShutdown */
  NvmlDevice device;
  char *name;
  char *reason;

  NvmlReturn (*init) (void);
  NvmlReturn (*shutdown) (void);
  NvmlReturn (*count) (unsigned int *n);
  NvmlReturn (*handle) (unsigned int index, NvmlDevice *device);
  NvmlReturn (*get_name) (NvmlDevice device, char *name, unsigned int len);
  NvmlReturn (*utilization) (NvmlDevice device, NvmlUtilization *u);
  NvmlReturn (*memory) (NvmlDevice device, NvmlMemory *m);
  NvmlReturn (*memory_v2) (NvmlDevice device, NvmlMemoryV2 *m);          /* may be NULL */
  NvmlReturn (*temperature) (NvmlDevice device, int sensor, unsigned int *c);  /* may be NULL */
};

static void
unavailable (BlnGpuMonitor *mon, char *reason)
{
  g_free (mon->reason);
  mon->reason = reason;
  if (mon->initialized && mon->shutdown)
    mon->shutdown ();
  mon->initialized = FALSE;
  if (mon->lib)
    dlclose (mon->lib);
  mon->lib = NULL;
  mon->device = NULL;
}

/* The entry point @a, else @b (may be NULL), or NULL when neither exists. */
static void *
symbol (void *lib, const char *a, const char *b)
{
  void *p = dlsym (lib, a);

  return p || !b ? p : dlsym (lib, b);
}

BlnGpuMonitor *
bln_gpu_monitor_new (guint index)
{
  BlnGpuMonitor *mon = g_new0 (BlnGpuMonitor, 1);
  const char *path = g_getenv ("BALEEN_NVML_LIBRARY");
  char name[96] = "";
  unsigned int n = 0;

  mon->lib = dlopen (path && *path ? path : "libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!mon->lib)
    {
      unavailable (mon, g_strdup (_("No NVIDIA GPU: the NVIDIA driver's NVML library is not "
                                    "installed.")));
      return mon;
    }
  mon->init = symbol (mon->lib, "nvmlInit_v2", "nvmlInit");
  mon->shutdown = symbol (mon->lib, "nvmlShutdown", NULL);
  mon->count = symbol (mon->lib, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
  mon->handle = symbol (mon->lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
  mon->get_name = symbol (mon->lib, "nvmlDeviceGetName", NULL);
  mon->utilization = symbol (mon->lib, "nvmlDeviceGetUtilizationRates", NULL);
  mon->memory = symbol (mon->lib, "nvmlDeviceGetMemoryInfo", NULL);
  mon->memory_v2 = symbol (mon->lib, "nvmlDeviceGetMemoryInfo_v2", NULL);
  mon->temperature = symbol (mon->lib, "nvmlDeviceGetTemperature", NULL);
  if (!mon->init || !mon->shutdown || !mon->count || !mon->handle || !mon->utilization ||
      !mon->memory)
    {
      unavailable (mon, g_strdup (_("No NVIDIA GPU: the NVML library lacks functions Baleen "
                                    "needs.")));
      return mon;
    }
  if (mon->init () != 0)
    {
      unavailable (mon, g_strdup (_("No NVIDIA GPU: the NVIDIA driver is not running.")));
      return mon;
    }
  mon->initialized = TRUE;
  if (mon->count (&n) != 0 || n == 0)
    {
      unavailable (mon, g_strdup (_("No NVIDIA GPU found.")));
      return mon;
    }
  if (index >= n || mon->handle (index, &mon->device) != 0)
    {
      unavailable (mon, g_strdup_printf (_("No NVIDIA GPU number %u."), index));
      return mon;
    }
  if (mon->get_name && mon->get_name (mon->device, name, sizeof name) == 0)
    {
      name[sizeof name - 1] = '\0';
      mon->name = g_utf8_make_valid (name, -1);
    }
  else
    mon->name = g_strdup_printf ("NVIDIA GPU %u", index);
  return mon;
}

void
bln_gpu_monitor_free (BlnGpuMonitor *mon)
{
  if (!mon)
    return;
  unavailable (mon, NULL);
  g_free (mon->name);
  g_free (mon);
}

gboolean
bln_gpu_monitor_available (BlnGpuMonitor *mon)
{
  return mon && mon->lib && mon->device;
}

const char *
bln_gpu_monitor_reason (BlnGpuMonitor *mon)
{
  return bln_gpu_monitor_available (mon) ? NULL : mon->reason;
}

const char *
bln_gpu_monitor_name (BlnGpuMonitor *mon)
{
  return bln_gpu_monitor_available (mon) ? mon->name : NULL;
}

gboolean
bln_gpu_monitor_sample (BlnGpuMonitor *mon, BlnGpuSample *out)
{
  NvmlUtilization u = { 0 };
  NvmlMemory m = { 0 };
  NvmlMemoryV2 m2 = { 0 };
  unsigned int c = 0;

  memset (out, 0, sizeof *out);
  out->temperature = -1;
  if (!bln_gpu_monitor_available (mon))
    return FALSE;
  if (mon->utilization (mon->device, &u) != 0)
    return FALSE;
  m2.version = NVML_MEMORY_V2_VERSION;
  if (mon->memory_v2 && mon->memory_v2 (mon->device, &m2) == 0)
    {
      out->memory_used = m2.used;
      out->memory_total = m2.total;
      out->memory_reserved = m2.reserved;
      out->memory_v2 = TRUE;
    }
  else if (mon->memory (mon->device, &m) == 0)
    {
      out->memory_used = m.used;
      out->memory_total = m.total;
    }
  else
    return FALSE;
  out->utilization = MIN (u.gpu, 100u);
  if (mon->temperature && mon->temperature (mon->device, NVML_TEMPERATURE_GPU, &c) == 0)
    out->temperature = c;
  return TRUE;
}
