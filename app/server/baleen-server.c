/* baleen-server — serve models over the OpenAI-compatible HTTP API.
 *
 *   baleen-server --model PATH | --models-dir DIR [--host H] [--port P] [--api-key K]
 *                 [--db FILE] [--device cpu|cuda] [--ctx N] [--parallel N] [--threads N]
 *                 [--kv-mem MIB] [--kv-bits 8|32] [--max-queue N] [--idle-ttl SECONDS] [--session-ttl SECONDS]
 *                 [--grace SECONDS]
 *
 * Listens on 127.0.0.1 by default and refuses (exit status 2) a non-loopback
 * address without an API key. With --model the model is loaded before
 * listening; with --models-dir the installed models are listed at once and
 * each is loaded on its first request. Prints one line on stdout once it
 * accepts connections:
 *   "baleen-server VERSION: model ID; listening on URL"            (--model)
 *   "baleen-server VERSION: models N in DIR; listening on URL"     (--models-dir)
 * SIGINT / SIGTERM: new work is answered 503, requests in flight may finish
 * for --grace seconds, then they are cancelled, their replies ended, and the
 * process exits with status 0. docs/SERVER.md has the whole story.
 */
#include <stdio.h>
#include <stdlib.h>
#include <glib.h>
#include <glib-unix.h>
#include <gio/gio.h>
#include "baleen-config.h"
#include "bln-error.h"
#include "server.h"
#include "safety.h"
#include "engine-worker.h"

static gboolean
on_signal (gpointer data)
{
  gboolean *stop = data;

  *stop = TRUE;
  return G_SOURCE_CONTINUE;
}

static gboolean
host_is_loopback (const char *host)
{
  g_autoptr (GInetAddress) addr = NULL;

  if (host == NULL || g_ascii_strcasecmp (host, "localhost") == 0)
    return TRUE;
  addr = g_inet_address_new_from_string (host);
  return addr != NULL && g_inet_address_get_is_loopback (addr);
}

static gboolean
tick (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* Runs the main context while the server has requests in flight (with
 * @also_waiting, also requests not fully answered), until @deadline
 * (monotonic µs). */
static void
iterate_until (BlnServer *server, gboolean also_waiting, gint64 deadline)
{
  /* wake at least every 100 ms to look at the clock */
  guint t = g_timeout_add (100, tick, NULL);

  while (g_get_monotonic_time () < deadline
         && (bln_server_n_active (server) > 0
             || (also_waiting && bln_server_n_waiting (server) > 0)))
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (t);
}

int
main (int argc, char **argv)
{
  g_autofree char *model_path = NULL, *models_dir = NULL, *host = NULL, *api_key = NULL;
  g_autofree char *db = NULL, *device = NULL;
  g_autoptr (BlnSafety) safety = NULL;
  int port = 8080, threads = 0, n_ctx = 4096, parallel = 32, idle_ttl = 0, grace = 10;
  int session_ttl = 0, sliding_window = 0;
  int kv_mem = 0, max_queue = 256, kv_bits = 32;
  gboolean no_prefix_cache = FALSE;
  BlnEngineWorkerOptions wopts;
  int keepalive_ms = 10000;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path,
      "Serve this model: a GGUF file or an HF directory", "PATH" },
    { "models-dir", 0, 0, G_OPTION_ARG_FILENAME, &models_dir,
      "Serve every model found in this folder, each loaded on first use", "DIR" },
    { "host", 0, 0, G_OPTION_ARG_STRING, &host,
      "Address to listen on (default 127.0.0.1; others need --api-key)", "H" },
    { "port", 'p', 0, G_OPTION_ARG_INT, &port, "Port (default 8080; 0 = any free port)", "P" },
    { "api-key", 0, 0, G_OPTION_ARG_STRING, &api_key,
      "Require this key (Authorization: Bearer or X-Api-Key)", "K" },
    { "db", 0, 0, G_OPTION_ARG_FILENAME, &db,
      "Settings database: API keys (then other addresses may listen), rate limits, safety "
      "rules, audit log; see docs/SAFETY.md", "FILE" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu or cuda (default cpu)", "DEV" },
    { "ctx", 'c', 0, G_OPTION_ARG_INT, &n_ctx, "Context size in tokens (default 4096)", "N" },
    { "parallel", 0, 0, G_OPTION_ARG_INT, &parallel,
      "Sequences generated at once, in one batch (default 32; CPU, and GPU for llama/qwen2)",
      "N" },
    { "kv-mem", 0, 0, G_OPTION_ARG_INT, &kv_mem,
      "KV cache pool in MiB (default: room for --parallel full contexts, 64..2048; GPU F16: "
      "64..16384)", "MIB" },
    { "kv-bits", 0, 0, G_OPTION_ARG_INT, &kv_bits,
      "CPU KV cache precision: 32 (F32, default) or 8 (int8 with a scale per 32 values, "
      "about 3.5x the tokens in the same --kv-mem; llama/qwen2)", "8|32" },
    { "no-prefix-cache", 0, 0, G_OPTION_ARG_NONE, &no_prefix_cache,
      "CPU: do not reuse the KV blocks of earlier prompts' common prefixes", NULL },
    { "max-queue", 0, 0, G_OPTION_ARG_INT, &max_queue,
      "CPU: requests waiting at most; more are answered 429 (default 256)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N" },
    { "session-ttl", 0, 0, G_OPTION_ARG_INT, &session_ttl,
      "CPU: free cached prompt-prefix KV blocks unused for this long (default 0: never)",
      "SECONDS" },
    { "sliding-window", 0, 0, G_OPTION_ARG_INT, &sliding_window,
      "llama/qwen2: each token attends to the last N tokens only, and KV blocks before that "
      "are given back (default 0: the whole context; not with --device cuda --parallel 1)",
      "N" },
    { "idle-ttl", 0, 0, G_OPTION_ARG_INT, &idle_ttl,
      "Unload a model unused for this long (default 0: never)", "SECONDS" },
    { "grace", 0, 0, G_OPTION_ARG_INT, &grace,
      "On SIGTERM, let requests in flight finish for this long (default 10)", "SECONDS" },
    { "sse-keepalive", 0, 0, G_OPTION_ARG_INT, &keepalive_ms,
      "Send an SSE ': keep-alive' comment after this much silence (default 10000)", "MS" },
    { NULL }
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("— OpenAI-compatible model server");
  g_autoptr (GError) error = NULL;
  BlnModelLibrary *lib;
  BlnModelHost *mhost;
  BlnServer *server;
  BlnServerOptions opts = { 0 };
  BlnModelHostOptions hopts = { 0 };
  guint sig_int, sig_term;
  gboolean stop = FALSE;

  g_option_context_add_main_entries (oc, entries, NULL);
  g_option_context_set_summary (oc, "Serves GGUF and HF models over the OpenAI, Ollama and "
                                    "WebSocket APIs. See docs/SERVER.md.");
  if (!g_option_context_parse (oc, &argc, &argv, &error))
    {
      g_printerr ("baleen-server: %s\n", error->message);
      return 2;
    }
  if ((model_path == NULL) == (models_dir == NULL))
    {
      g_printerr ("baleen-server: give either --model PATH or --models-dir DIR\n");
      return 2;
    }
  if (threads < 0 || n_ctx <= 0 || port < 0 || port > 65535 || parallel < 1 || idle_ttl < 0
      || session_ttl < 0
      || grace < 0 || kv_mem < 0 || max_queue < 1 || parallel > 4096 || kv_mem > (1 << 24))
    {
      g_printerr ("baleen-server: --threads, --ctx, --port, --parallel, --kv-mem, --max-queue, "
                  "--idle-ttl and --grace must be in range\n");
      return 2;
    }
  if (!host_is_loopback (host) && (api_key == NULL || *api_key == '\0') && db == NULL)
    {
      g_printerr ("baleen-server: refusing to listen on %s, which is not a loopback address, "
                  "without an API key: pass --api-key KEY (clients then send "
                  "'Authorization: Bearer KEY')\n", host);
      return 2;
    }
  if (sliding_window < 0)
    {
      g_printerr ("baleen-server: --sliding-window must be 0 (off) or a number of tokens, "
                  "not %d\n", sliding_window);
      return 2;
    }
  if (sliding_window > 0 && device != NULL && g_str_equal (device, "cuda") && parallel == 1)
    {
      g_printerr ("baleen-server: --sliding-window is not available on the single-sequence GPU "
                  "path (--device cuda --parallel 1); leave it out, or use --parallel 2 or "
                  "more\n");
      return 2;
    }
  if (kv_bits != 8 && kv_bits != 32)
    {
      g_printerr ("baleen-server: --kv-bits must be 8 or 32\n");
      return 2;
    }
  if (device != NULL && !g_str_equal (device, "cpu") && !g_str_equal (device, "cuda"))
    {
      g_printerr ("baleen-server: --device must be cpu or cuda\n");
      return 2;
    }
  /* every worker the model host makes: the CPU scheduler, or one GPU context */
  bln_engine_worker_options_init (&wopts);
  wopts.parallel = parallel;
  wopts.kv_mem_mib = kv_mem;
  wopts.kv_bits = kv_bits;
  wopts.no_prefix_cache = no_prefix_cache;
  wopts.session_ttl_s = session_ttl;
  wopts.sliding_window = sliding_window;
  wopts.max_queue = max_queue;
  wopts.device = device;
  bln_engine_worker_set_defaults (&wopts);
  if (db != NULL)
    {
      safety = bln_safety_new (db, &error);
      if (safety == NULL)
        {
          g_printerr ("baleen-server: %s\n", error->message);
          return 1;
        }
      if (api_key != NULL && *api_key != '\0')
        g_printerr ("baleen-server: --db: API keys come from the database (baleen-cli keys); "
                    "--api-key is ignored\n");
    }

  if (models_dir != NULL)
    lib = bln_model_library_new_from_dir (models_dir, &error);
  else
    lib = bln_model_library_new_for_path (model_path, &error);
  if (lib == NULL)
    {
      g_printerr ("baleen-server: %s\n", error->message);
      return 1;
    }
  if (models_dir != NULL && bln_model_library_n_models (lib) == 0)
    g_printerr ("baleen-server: no models found in %s (GGUF files or HF directories)\n",
                models_dir);
  hopts.n_threads = threads;
  hopts.n_ctx = n_ctx;
  hopts.idle_ttl = (guint) idle_ttl;
  mhost = bln_model_host_new (lib, &hopts);
  if (model_path != NULL
      && !bln_model_host_preload (mhost, bln_model_library_get (lib, 0), &error))
    {
      g_printerr ("baleen-server: %s\n", error->message);
      bln_model_host_free (mhost);
      bln_model_library_free (lib);
      return 1;
    }

  opts.host = host;
  opts.port = port;
  opts.api_key = api_key;
  opts.safety = safety;
  opts.keepalive_ms = (guint) CLAMP (keepalive_ms, 10, 600000);
  opts.strict_models = models_dir != NULL;
  server = bln_server_new (mhost, lib, &opts, &error);
  if (server == NULL)
    {
      g_printerr ("baleen-server: %s\n", error->message);
      bln_model_host_free (mhost);
      bln_model_library_free (lib);
      return g_error_matches (error, BLN_ERROR, BLN_ERROR_INVALID) ? 2 : 1;
    }

  sig_int = g_unix_signal_add (SIGINT, on_signal, &stop);
  sig_term = g_unix_signal_add (SIGTERM, on_signal, &stop);
  if (models_dir != NULL)
    printf ("baleen-server %s: models %u in %s; listening on %s\n", BALEEN_VERSION,
            bln_model_library_n_models (lib), models_dir, bln_server_url (server));
  else
    printf ("baleen-server %s: model %s; listening on %s\n", BALEEN_VERSION,
            bln_server_model_id (server), bln_server_url (server));
  fflush (stdout);
  while (!stop)
    g_main_context_iteration (NULL, TRUE);

  g_printerr ("baleen-server: stopping (in flight: %u; grace %d s)\n",
              bln_server_n_active (server), grace);
  g_source_remove (sig_int);
  g_source_remove (sig_term);
  bln_server_stop_accepting (server);
  iterate_until (server, TRUE, g_get_monotonic_time () + (gint64) grace * G_USEC_PER_SEC);
  /* what is still running is cancelled; the worker reports each one back */
  bln_server_shutdown (server);
  iterate_until (server, FALSE, g_get_monotonic_time () + 5 * G_USEC_PER_SEC);
  /* let libsoup write the ends of those replies (for at most a second) */
  iterate_until (server, TRUE, g_get_monotonic_time () + G_USEC_PER_SEC);
  bln_server_free (server);      /* gives back the model leases still held */
  bln_model_host_free (mhost);   /* frees the worker */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  bln_model_library_free (lib);
  return 0;
}
