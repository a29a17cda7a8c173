/* safety-test-util.h — helpers shared by the app/core safety tests: a
 * temporary folder and running a Python reference script. Header-only. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

/* A new temporary folder (caller frees the name; remove with rm_rf). */
static inline char *
tmp_dir (void)
{
  g_autoptr (GError) error = NULL;
  char *d = g_dir_make_tmp ("baleen-safety-XXXXXX", &error);

  g_assert_no_error (error);
  return d;
}

static inline void
rm_rf (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  if (dir)
    {
      while ((name = g_dir_read_name (dir)))
        {
          g_autofree char *p = g_build_filename (path, name, NULL);
          rm_rf (p);
        }
    }
  g_remove (path);
}

/* Runs `python3 -c SCRIPT ARGS...` and returns its standard output (new
 * string). Skips the test (returns NULL) when python3 is absent; fails it
 * when the script fails. */
static inline char *
run_python (const char *script, const char *const *args)
{
  g_autofree char *py = g_find_program_in_path ("python3");
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  char *out = NULL;
  g_autofree char *err = NULL;
  int status = 0;

  if (!py)
    {
      g_test_skip ("python3 is not installed: no reference to compare with");
      return NULL;
    }
  g_ptr_array_add (argv, py);
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, (gpointer) script);
  for (const char *const *a = args; a && *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);
  g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                &status, &error);
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("python reference failed: %s", err);
  return out;
}
