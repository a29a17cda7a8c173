/* tray-helper.c — runs a BlnTray on the session bus for test_tray.py.
 *
 * Arguments: ID=LABEL pairs for the model list. Acts like the app would:
 * choosing a model entry makes it the loaded one (the radio moves and the
 * tooltip names it). Prints one line per event on stdout:
 *   ready BUS-NAME | registered 0/1 | activated ID | server 0/1 | quit
 * and exits on "quit" (menu) or when stdin closes.
 */
#include <stdio.h>
#include <string.h>
#include <gio/gio.h>

#include "tray.h"

typedef struct {
  BlnTray *tray;
  GMainLoop *loop;
  GPtrArray *ids;
  GPtrArray *labels;
  gboolean server;
} Helper;

static void
say (const char *word, const char *arg)
{
  printf ("%s %s\n", word, arg);
  fflush (stdout);
}

static void
on_registered (BlnTray *tray, gboolean registered, gpointer user_data)
{
  say ("registered", registered ? "1" : "0");
}

static void
on_model (BlnTray *tray, const char *id, gpointer user_data)
{
  Helper *h = user_data;
  const char *label = id;

  for (guint i = 0; i + 1 < h->ids->len; i++)
    if (g_str_equal (g_ptr_array_index (h->ids, i), id))
      label = g_ptr_array_index (h->labels, i);
  bln_tray_set_models (tray, (const char *const *) h->ids->pdata,
                       (const char *const *) h->labels->pdata, id);
  bln_tray_set_state (tray, label, FALSE, h->server, h->server ? "http://127.0.0.1:1/" : NULL);
  say ("activated", id);
}

static void
on_server (BlnTray *tray, gpointer user_data)
{
  Helper *h = user_data;

  h->server = !h->server;
  bln_tray_set_state (tray, NULL, FALSE, h->server, h->server ? "http://127.0.0.1:1/" : NULL);
  say ("server", h->server ? "1" : "0");
}

static void
on_quit (BlnTray *tray, gpointer user_data)
{
  Helper *h = user_data;

  say ("quit", "");
  g_main_loop_quit (h->loop);
}

static gboolean
on_stdin (GIOChannel *channel, GIOCondition cond, gpointer user_data)
{
  Helper *h = user_data;

  g_main_loop_quit (h->loop);
  return G_SOURCE_REMOVE;
}

int
main (int argc, char **argv)
{
  Helper h = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GDBusConnection) bus = NULL;
  g_autoptr (GIOChannel) in = NULL;

  h.ids = g_ptr_array_new_with_free_func (g_free);
  h.labels = g_ptr_array_new_with_free_func (g_free);
  for (int i = 1; i < argc; i++)
    {
      const char *eq = strchr (argv[i], '=');
      if (!eq)
        continue;
      g_ptr_array_add (h.ids, g_strndup (argv[i], eq - argv[i]));
      g_ptr_array_add (h.labels, g_strdup (eq + 1));
    }
  g_ptr_array_add (h.ids, NULL);
  g_ptr_array_add (h.labels, NULL);

  bus = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  if (!bus)
    {
      fprintf (stderr, "no session bus: %s\n", error->message);
      return 1;
    }
  h.tray = bln_tray_new (bus, "org.baleen.Baleen-symbolic", &error);
  if (!h.tray)
    {
      fprintf (stderr, "tray: %s\n", error->message);
      return 1;
    }
  bln_tray_set_models (h.tray, (const char *const *) h.ids->pdata,
                       (const char *const *) h.labels->pdata, NULL);
  g_signal_connect (h.tray, "registered-changed", G_CALLBACK (on_registered), &h);
  g_signal_connect (h.tray, "model-activated", G_CALLBACK (on_model), &h);
  g_signal_connect (h.tray, "server-toggled", G_CALLBACK (on_server), &h);
  g_signal_connect (h.tray, "quit", G_CALLBACK (on_quit), &h);
  h.loop = g_main_loop_new (NULL, FALSE);
  in = g_io_channel_unix_new (0);
  g_io_add_watch (in, G_IO_IN | G_IO_HUP | G_IO_ERR, on_stdin, &h);
  say ("ready", bln_tray_bus_name (h.tray));
  g_main_loop_run (h.loop);
  g_object_unref (h.tray);
  g_main_loop_unref (h.loop);
  g_ptr_array_unref (h.ids);
  g_ptr_array_unref (h.labels);
  return 0;
}
