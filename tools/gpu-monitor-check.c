/* gpu-monitor-check — prints what the desktop app's GPU monitor
 * (app/ui/gpu-monitor.c, NVML opened with dlopen) reads, as one JSON object,
 * so that it can be compared with nvidia-smi on a machine with a GPU.
 *
 *   gpu-monitor-check [--index N] [--samples K] [--compare]
 *
 * --samples K reads K times, 200 ms apart, and prints the last reading with
 * the utilisation's minimum and maximum over them. --compare also runs
 *   nvidia-smi --query-gpu=name,memory.total,memory.used,temperature.gpu,
 *              utilization.gpu --format=csv,noheader,nounits -i N
 * right after the last reading, adds its values to the JSON and exits 1 when
 * the name or the total memory differ, the used memory differs by more than
 * 2 % of the total, or the temperature by more than 3 °C (utilisation moves
 * too fast to compare; it is only printed). Exit 2 when NVML is unavailable
 * (the JSON says why), 3 when nvidia-smi cannot be run.
 *
 * GLib only: it builds without GTK.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "gpu-monitor.h"

/* @s as a JSON string (quotes included) into @out. */
static void
json_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  for (; s && *s; s++)
    {
      guchar c = (guchar) *s;
      if (c == '"' || c == '\\')
        g_string_append_printf (out, "\\%c", c);
      else if (c < 0x20)
        g_string_append_printf (out, "\\u%04x", c);
      else
        g_string_append_c (out, (char) c);
    }
  g_string_append_c (out, '"');
}

static double
mib (guint64 bytes)
{
  return bytes / 1048576.0;
}

int
main (int argc, char **argv)
{
  int index = 0, samples = 1;
  gboolean compare = FALSE;
  GOptionEntry entries[] = {
    { "index", 'i', 0, G_OPTION_ARG_INT, &index, "GPU number (default 0)", "N" },
    { "samples", 'n', 0, G_OPTION_ARG_INT, &samples, "Readings, 200 ms apart (default 1)", "K" },
    { "compare", 'c', 0, G_OPTION_ARG_NONE, &compare, "Also run nvidia-smi and compare", NULL },
    { NULL }
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("— what Baleen's GPU monitor reads");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnGpuMonitor) mon = NULL;
  g_autoptr (GString) out = g_string_new ("{");
  BlnGpuSample s = { 0 };
  double umin = INFINITY, umax = -INFINITY;
  int rc = 0, got = 0;

  g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, &argc, &argv, &error))
    {
      g_printerr ("gpu-monitor-check: %s\n", error->message);
      return 64;
    }
  if (index < 0 || samples < 1 || samples > 10000)
    {
      g_printerr ("gpu-monitor-check: --index must be >= 0 and --samples 1..10000\n");
      return 64;
    }

  mon = bln_gpu_monitor_new ((guint) index);
  g_string_append_printf (out, "\"index\": %d, \"available\": %s", index,
                          bln_gpu_monitor_available (mon) ? "true" : "false");
  if (!bln_gpu_monitor_available (mon))
    {
      g_string_append (out, ", \"reason\": ");
      json_string (out, bln_gpu_monitor_reason (mon));
      g_print ("%s}\n", out->str);
      return 2;
    }
  for (int k = 0; k < samples; k++)
    {
      if (k > 0)
        g_usleep (200000);
      if (bln_gpu_monitor_sample (mon, &s))
        {
          got++;
          umin = MIN (umin, s.utilization);
          umax = MAX (umax, s.utilization);
        }
    }
  g_string_append (out, ", \"name\": ");
  json_string (out, bln_gpu_monitor_name (mon));
  g_string_append_printf (out, ", \"samples_read\": %d", got);
  if (got > 0)
    {
      g_string_append_printf (out, ", \"utilization_gpu_percent\": %.0f", s.utilization);
      if (samples > 1)
        g_string_append_printf (out, ", \"utilization_min\": %.0f, \"utilization_max\": %.0f",
                                umin, umax);
      g_string_append_printf (out, ", \"memory_used_mib\": %.1f, \"memory_total_mib\": %.1f, "
                              "\"memory_reserved_mib\": %.1f, \"memory_api\": \"%s\"",
                              mib (s.memory_used), mib (s.memory_total), mib (s.memory_reserved),
                              s.memory_v2 ? "nvmlDeviceGetMemoryInfo_v2"
                                          : "nvmlDeviceGetMemoryInfo");
      if (s.temperature >= 0)
        g_string_append_printf (out, ", \"temperature_c\": %.0f", s.temperature);
      else
        g_string_append (out, ", \"temperature_c\": null");
    }
  else
    rc = 2;

  if (compare && got > 0)
    {
      g_autofree char *idx = g_strdup_printf ("%d", index);
      const char *smi[] = { "nvidia-smi",
                            "--query-gpu=name,memory.total,memory.used,temperature.gpu,"
                            "utilization.gpu",
                            "--format=csv,noheader,nounits", "-i", idx, NULL };
      g_autofree char *text = NULL;
      g_autofree char *err = NULL;
      g_auto (GStrv) f = NULL;
      int status = 0;

      if (!g_spawn_sync (NULL, (char **) smi, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &text, &err,
                         &status, &error) || !g_spawn_check_wait_status (status, NULL))
        {
          g_string_append (out, ", \"nvidia_smi_error\": ");
          json_string (out, error ? error->message : (err ? err : "failed"));
          rc = 3;
        }
      else
        {
          g_strstrip (text);
          f = g_strsplit (text, ",", -1);
          if (g_strv_length (f) < 5)
            {
              g_string_append (out, ", \"nvidia_smi_error\": ");
              json_string (out, text);
              rc = 3;
            }
          else
            {
              double total, used, temp, util;
              gboolean same_name, ok;

              for (guint i = 0; f[i]; i++)
                g_strstrip (f[i]);
              total = g_ascii_strtod (f[1], NULL);
              used = g_ascii_strtod (f[2], NULL);
              temp = g_ascii_strtod (f[3], NULL);
              util = g_ascii_strtod (f[4], NULL);
              same_name = g_strcmp0 (f[0], bln_gpu_monitor_name (mon)) == 0;
              ok = same_name && fabs (total - floor (mib (s.memory_total))) <= 1
                   && fabs (used - mib (s.memory_used)) <= 0.02 * total
                   && (s.temperature < 0 || fabs (temp - s.temperature) <= 3);
              g_string_append (out, ", \"nvidia_smi\": {\"name\": ");
              json_string (out, f[0]);
              g_string_append_printf (out, ", \"memory_total_mib\": %.0f, \"memory_used_mib\": %.0f"
                                      ", \"temperature_c\": %.0f, \"utilization_gpu_percent\": "
                                      "%.0f}, \"agree\": %s", total, used, temp, util,
                                      ok ? "true" : "false");
              if (!ok)
                rc = 1;
            }
        }
    }
  g_print ("%s}\n", out->str);
  return rc;
}
