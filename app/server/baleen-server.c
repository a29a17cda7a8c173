/* baleen-server — serve a model over the OpenAI-compatible HTTP API.
 *
 *   baleen-server --model PATH [--host H] [--port P] [--api-key K] [--threads N] [--ctx N]
 *
 * Listens on 127.0.0.1 by default and refuses a non-loopback address without
 * an API key. Prints "listening on URL" on stdout once it accepts
 * connections. SIGINT / SIGTERM stop it: it stops listening, cancels the
 * requests in flight, ends their replies and exits with status 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <glib.h>
#include <glib-unix.h>
#include "baleen-config.h"
#include "server.h"

static gboolean
on_signal (gpointer data)
{
  g_main_loop_quit (data);
  return G_SOURCE_CONTINUE;
}

int
main (int argc, char **argv)
{
  g_autofree char *model_path = NULL, *host = NULL, *api_key = NULL;
  int port = 8080, threads = 0, n_ctx = 4096;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "Model: GGUF file or HF directory", "PATH" },
    { "host", 0, 0, G_OPTION_ARG_STRING, &host, "Address to listen on (default 127.0.0.1)", "H" },
    { "port", 'p', 0, G_OPTION_ARG_INT, &port, "Port (default 8080; 0 = any free port)", "P" },
    { "api-key", 0, 0, G_OPTION_ARG_STRING, &api_key, "Require this key (Bearer or X-Api-Key)", "K" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N" },
    { "ctx", 'c', 0, G_OPTION_ARG_INT, &n_ctx, "Context size in tokens (default 4096)", "N" },
    { NULL }
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("— OpenAI-compatible server");
  g_autoptr (GError) error = NULL;
  g_autoptr (GMainLoop) loop = NULL;
  BlnEngineWorker *worker;
  BlnServer *server;
  BlnServerOptions opts = { 0 };
  guint sig_int, sig_term;

  g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, &argc, &argv, &error))
    {
      g_printerr ("baleen-server: %s\n", error->message);
      return 2;
    }
  if (model_path == NULL)
    {
      g_printerr ("baleen-server: --model PATH is required\n");
      return 2;
    }
  if (threads < 0 || n_ctx <= 0 || port < 0 || port > 65535)
    {
      g_printerr ("baleen-server: --threads, --ctx and --port must be in range\n");
      return 2;
    }

  worker = bln_engine_worker_new (model_path, threads, n_ctx, &error);
  if (worker == NULL)
    {
      g_printerr ("baleen-server: %s\n", error->message);
      return 1;
    }
  opts.host = host;
  opts.port = port;
  opts.api_key = api_key;
  server = bln_server_new (worker, &opts, &error);
  if (server == NULL)
    {
      g_printerr ("baleen-server: %s\n", error->message);
      bln_engine_worker_free (worker);
      return 1;
    }

  loop = g_main_loop_new (NULL, FALSE);
  sig_int = g_unix_signal_add (SIGINT, on_signal, loop);
  sig_term = g_unix_signal_add (SIGTERM, on_signal, loop);
  printf ("baleen-server %s: model %s; listening on %s\n", BALEEN_VERSION,
          bln_server_model_id (server), bln_server_url (server));
  fflush (stdout);
  g_main_loop_run (loop);

  g_printerr ("baleen-server: stopping\n");
  g_source_remove (sig_int);
  g_source_remove (sig_term);
  bln_server_shutdown (server);
  bln_engine_worker_free (worker);   /* posts the done callbacks of what was cancelled */
  while (bln_server_n_active (server) > 0)
    g_main_context_iteration (NULL, TRUE);
  /* let libsoup write the ends of those replies (for at most a second) */
  {
    gint64 until = g_get_monotonic_time () + G_USEC_PER_SEC;
    while (g_get_monotonic_time () < until && g_main_context_iteration (NULL, FALSE))
      ;
  }
  bln_server_free (server);
  return 0;
}
