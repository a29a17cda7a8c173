/* main.c — starts the `baleen` desktop app. */
#include <locale.h>
#include <glib/gi18n-lib.h>

#include "application.h"

int
main (int argc, char **argv)
{
  g_autoptr (BlnApplication) app = NULL;

  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, BALEEN_LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);

  app = bln_application_new ();
  return g_application_run (G_APPLICATION (app), argc, argv);
}
