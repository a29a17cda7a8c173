/* replay-main.c — runs a libFuzzer target over files, without libFuzzer: each
 * argument is a file or a directory of files (not recursive). Used as a plain
 * regression test over the committed corpus. */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int
run_file (const char *path)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *data = NULL;
  g_autofree uint8_t *exact = NULL;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, &error))
    {
      fprintf (stderr, "%s: %s\n", path, error->message);
      return 1;
    }
  /* an exact-size copy, so that a sanitizer sees any read past the end */
  exact = g_memdup2 (data, len);
  LLVMFuzzerTestOneInput (exact, len);
  return 0;
}

int
main (int argc, char **argv)
{
  int failures = 0, n = 0;

  for (int i = 1; i < argc; i++)
    {
      if (g_file_test (argv[i], G_FILE_TEST_IS_DIR))
        {
          g_autoptr (GDir) dir = g_dir_open (argv[i], 0, NULL);
          const char *name;

          if (dir == NULL)
            return 1;
          while ((name = g_dir_read_name (dir)) != NULL)
            {
              g_autofree char *path = g_build_filename (argv[i], name, NULL);
              failures += run_file (path);
              n++;
            }
        }
      else
        {
          failures += run_file (argv[i]);
          n++;
        }
    }
  printf ("replayed %d inputs\n", n);
  return failures ? 1 : (n > 0 ? 0 : 1);
}
