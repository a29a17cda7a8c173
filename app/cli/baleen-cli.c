/* baleen-cli — the engine from the command line.
 *
 * Each subcommand parses its own options (each has --help), writes results
 * to stdout and errors to stderr, and exits non-zero on failure.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "baleen-config.h"
#include "bln-error.h"
#include "chat.h"
#include "cpu/cpu.h"
#include "gguf.h"
#include "kv-cache.h"
#include "model.h"
#ifdef BALEEN_HAVE_ADMIN
#include "admin.h"
#endif
#if BALEEN_HAVE_CUDA
#include "cuda/cuda.h"
#endif
#include "sampler.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------------- */
/* shared helpers                                                          */

static int
fail (GError *error)
{
  g_printerr ("baleen-cli: %s\n", error ? error->message : "failed");
  g_clear_error (&error);
  return 1;
}

static char *
read_stdin (gsize *len, GError **error)
{
  GString *s = g_string_new (NULL);
  char buf[65536];
  size_t n;

  while ((n = fread (buf, 1, sizeof buf, stdin)) > 0)
    g_string_append_len (s, buf, n);
  if (ferror (stdin))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot read standard input: %s",
                   g_strerror (errno));
      g_string_free (s, TRUE);
      return NULL;
    }
  if (len != NULL)
    *len = s->len;
  return g_string_free (s, FALSE);
}

/* Loads only a tokenizer from a GGUF file (vocabulary-only files too), an HF
 * directory, or a tokenizer.json(.gz). */
static BlnTokenizer *
load_tokenizer (const char *path, char **chat_template, GError **error)
{
  BlnTokenizer *tok;

  if (g_file_test (path, G_FILE_TEST_IS_REGULAR) && !g_str_has_suffix (path, ".json")
      && !g_str_has_suffix (path, ".json.gz"))
    {
      g_autoptr (BlnGguf) gguf = bln_gguf_open (path, error);
      if (gguf == NULL)
        return NULL;
      tok = bln_tokenizer_new_from_gguf (gguf, error);
      if (tok != NULL && chat_template != NULL)
        *chat_template = g_strdup (bln_gguf_get_string (gguf, "tokenizer.chat_template", NULL));
      return tok;
    }
  tok = bln_tokenizer_new_from_file (path, error);
  if (tok != NULL && chat_template != NULL)
    *chat_template = g_strdup (bln_tokenizer_chat_template (tok));
  return tok;
}

static void
print_ids (GArray *ids)
{
  guint i;

  putchar ('[');
  for (i = 0; i < ids->len; i++)
    printf ("%s%d", i ? ", " : "", g_array_index (ids, int32_t, i));
  printf ("]\n");
}

static GArray *
parse_ids (const char *json, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonArray *arr;
  GArray *ids;
  guint i;

  if (!json_parser_load_from_data (parser, json, -1, error))
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY (json_parser_get_root (parser)))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "expected a JSON array of token ids");
      return NULL;
    }
  arr = json_node_get_array (json_parser_get_root (parser));
  ids = g_array_sized_new (FALSE, FALSE, sizeof (int32_t), json_array_get_length (arr));
  for (i = 0; i < json_array_get_length (arr); i++)
    {
      JsonNode *n = json_array_get_element (arr, i);
      gint64 v;
      int32_t id;
      if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64
          || (v = json_node_get_int (n)) < 0 || v > G_MAXINT32)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "element %u of the id array is not a token id", i);
          g_array_unref (ids);
          return NULL;
        }
      id = (int32_t) v;
      g_array_append_val (ids, id);
    }
  return ids;
}

/* Checks a --device value before anything is loaded. */
static gboolean
check_device (const char *device, GError **error)
{
  BlnContextOptions o;

  bln_context_options_init (&o);
  return bln_device_parse (device, &o, error);
}

/* A context on @device ("cpu", "cuda", "cuda:N", "auto"/NULL) with a
 * sliding attention window of @sliding_window tokens (0: off), falling back
 * to the CPU with a note on stderr when the GPU cannot be used (a window on
 * the GPU is an error, not a fallback). */
static BlnContext *
open_context (BlnModel *model, int n_ctx, BlnPool *pool, const char *device, int kv_bits,
              int sliding_window, GError **error)
{
  g_autofree char *note = NULL;
  BlnContextOptions o;
  BlnContext *ctx;

  bln_context_options_init (&o);
  if (kv_bits != 0)
    o.kv_bits = kv_bits;
  o.sliding_window = sliding_window;
  if (!bln_device_parse (device, &o, error))
    return NULL;
  ctx = bln_context_new_on_device (model, n_ctx, pool, &o, &note, error);
  if (note != NULL)
    g_printerr ("baleen-cli: %s\n", note);
  return ctx;
}

static BlnType
parse_quant (const char *name, GError **error)
{
  static const struct { const char *name; BlnType t; } map[] = {
    { "f32", BLN_TYPE_F32 }, { "f16", BLN_TYPE_F16 }, { "bf16", BLN_TYPE_BF16 },
    { "q8_0", BLN_TYPE_Q8_0 }, { "q4_0", BLN_TYPE_Q4_0 }, { "q4_k", BLN_TYPE_Q4_K },
    { "q6_k", BLN_TYPE_Q6_K },
  };
  guint i;

  if (name == NULL)
    return BLN_TYPE_F32;
  for (i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_ascii_strcasecmp (name, map[i].name) == 0)
      return map[i].t;
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
               "unknown quantisation '%s' (f32, f16, bf16, q8_0, q4_0, q4_K, q6_K)", name);
  return (BlnType) -1;
}

static BlnModel *
load_model (const char *path, const char *quant, GError **error)
{
  BlnModelOptions opts = { .hf_quant = BLN_TYPE_F32, .load_tokenizer = TRUE };

  if (path == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "no model given (-m PATH)");
      return NULL;
    }
  opts.hf_quant = parse_quant (quant, error);
  if ((int) opts.hf_quant < 0)
    return NULL;
  return bln_model_load_with_options (path, &opts, error);
}

/* Parses options for one subcommand; prints help and errors itself. */
static gboolean
parse_options (const char *cmd, const char *summary, GOptionEntry *entries, int *argc,
               char ***argv, GError **error)
{
  g_autoptr (GOptionContext) oc = NULL;
  g_autofree char *usage = g_strdup_printf ("%s — %s", cmd, summary);

  oc = g_option_context_new (usage);
  g_option_context_add_main_entries (oc, entries, NULL);
  return g_option_context_parse (oc, argc, argv, error);
}

/* ---------------------------------------------------------------------- */
/* generation                                                              */

typedef struct {
  BlnModel *model;
  BlnContext *ctx;
  BlnSampler *sampler;
  GArray *cached;      /* ids whose keys/values are in ctx */
  int32_t next;        /* the token sampled after the last one evaluated */
} Gen;

/* Brings the context to hold exactly @prompt, reusing the longest common
 * prefix already cached, and samples the token that follows it (on the GPU
 * for a GPU context: the logits stay there). */
static gboolean
gen_prefill (Gen *g, GArray *prompt, GError **error)
{
  guint common = 0;
  const int32_t *ids = (const int32_t *) prompt->data;

  while (common < prompt->len && common < g->cached->len
         && g_array_index (g->cached, int32_t, common) == ids[common])
    common++;
  if (common == prompt->len && common > 0)
    common--;   /* re-run the last token to get its logits */
  bln_context_truncate (g->ctx, (int) common);
  g_array_set_size (g->cached, common);
  if (!bln_context_eval_sample (g->ctx, ids + common, (int) (prompt->len - common), g->sampler,
                                &g->next, NULL, 0, error))
    return FALSE;
  g_array_append_vals (g->cached, ids + common, prompt->len - common);
  return TRUE;
}

/* Samples up to @n_max tokens, printing text as it becomes whole. Returns
 * the number generated. */
static int
gen_stream (Gen *g, int n_max, FILE *out, GError **error)
{
  BlnTokenizer *tok = bln_model_tokenizer (g->model);
  g_autoptr (BlnDetok) dt = bln_detok_new (tok);
  int n;

  for (n = 0; n < n_max; n++)
    {
      int32_t id = g->next;
      g_autofree char *piece = NULL;

      bln_sampler_accept (g->sampler, id);
      if (bln_tokenizer_is_eog (tok, id))
        break;
      piece = bln_detok_push (dt, id);
      if (piece != NULL && *piece)
        {
          fputs (piece, out);
          fflush (out);
        }
      if (bln_context_n_past (g->ctx) >= bln_context_n_ctx (g->ctx))
        {
          g_printerr ("\nbaleen-cli: context is full\n");
          n++;
          break;
        }
      if (!bln_context_eval_sample (g->ctx, &id, 1, g->sampler, &g->next, NULL, 0, error))
        return -1;
      g_array_append_val (g->cached, id);
    }
  {
    g_autofree char *rest = bln_detok_flush (dt);
    if (rest != NULL)
      fputs (rest, out);
  }
  return n;
}

static int
cmd_run (int argc, char **argv)
{
  g_autofree char *model_path = NULL, *prompt = NULL, *device = NULL, *quant = NULL;
  g_autofree char *system = NULL;
  gboolean chat = FALSE, verbose = FALSE;
  int n_predict = 256, top_k = 40, threads = 0, n_ctx = 4096, kv_bits = 0, window = 0;
  double temp = 0.7, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0;
  gint64 seed = -1;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "Model: GGUF file or HF directory", "PATH" },
    { "prompt", 'p', 0, G_OPTION_ARG_STRING, &prompt, "Complete this text", "TEXT" },
    { "chat", 0, 0, G_OPTION_ARG_NONE, &chat, "Chat interactively with the model's template", NULL },
    { "system", 0, 0, G_OPTION_ARG_STRING, &system, "System prompt for --chat", "TEXT" },
    { "n-predict", 'n', 0, G_OPTION_ARG_INT, &n_predict, "Tokens to generate (default 256)", "N" },
    { "temp", 0, 0, G_OPTION_ARG_DOUBLE, &temp, "Temperature, 0 = greedy (default 0.7)", "T" },
    { "top-k", 0, 0, G_OPTION_ARG_INT, &top_k, "Top-k, 0 = off (default 40)", "K" },
    { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &top_p, "Top-p (default 0.95)", "P" },
    { "min-p", 0, 0, G_OPTION_ARG_DOUBLE, &min_p, "Min-p (default 0.05)", "P" },
    { "repeat-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &repeat_penalty, "Repetition penalty (default 1)", "R" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Random seed (default: random)", "S" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N" },
    { "ctx", 'c', 0, G_OPTION_ARG_INT, &n_ctx, "Context size in tokens (default 4096)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu, cuda, cuda:N or auto (default auto: the GPU when usable)", "DEV" },
    { "kv-bits", 0, 0, G_OPTION_ARG_INT, &kv_bits, "GPU KV cache precision: 16 (default), 8 or 32", "N" },
    { "sliding-window", 0, 0, G_OPTION_ARG_INT, &window,
      "Attend to the last N tokens only (default 0: all; CPU, llama/qwen2)", "N" },
    { "quant", 'q', 0, G_OPTION_ARG_STRING, &quant, "Convert an HF model's weights on load (q8_0, q4_K, q6_K...)", "TYPE" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Print speed figures to stderr", NULL },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (BlnContext) ctx = NULL;
  BlnPool *pool = NULL;
  BlnSamplerParams sp;
  Gen g = { 0 };
  int rc = 0;

  if (!parse_options ("run", "generate text or chat", entries, &argc, &argv, &error))
    return fail (error);
  if ((prompt == NULL) == !chat)
    {
      g_printerr ("baleen-cli run: give either -p PROMPT or --chat\n");
      return 2;
    }
  if (n_predict < 0 || n_ctx <= 0 || threads < 0)
    {
      g_printerr ("baleen-cli run: -n, --ctx and --threads must be positive\n");
      return 2;
    }
  if (!check_device (device, &error) || (model = load_model (model_path, quant, &error)) == NULL
      || (pool = bln_pool_new (threads, &error)) == NULL
      || (ctx = open_context (model, n_ctx, pool, device, kv_bits, window, &error)) == NULL)
    {
      bln_pool_free (pool);
      return fail (error);
    }

  bln_sampler_params_init (&sp);
  sp.temperature = (float) temp;
  sp.top_k = top_k;
  sp.top_p = (float) top_p;
  sp.min_p = (float) min_p;
  sp.repetition_penalty = (float) repeat_penalty;
  sp.seed = seed >= 0 ? (guint64) seed : g_random_int () | ((guint64) g_random_int () << 32);
  g.model = model;
  g.ctx = ctx;
  g.sampler = bln_sampler_new (&sp, bln_model_hparams (model)->n_vocab);
  g.cached = g_array_new (FALSE, FALSE, sizeof (int32_t));

  if (!chat)
    {
      BlnTokenizer *tok = bln_model_tokenizer (model);
      g_autoptr (GArray) ids = bln_tokenizer_encode (tok, prompt, -1, bln_tokenizer_add_bos (tok),
                                                     FALSE, &error);
      gint64 t0 = g_get_monotonic_time (), t1;
      int n;

      if (ids == NULL || ids->len == 0)
        {
          if (error == NULL)
            g_set_error (&error, BLN_ERROR, BLN_ERROR_INVALID, "the prompt has no tokens");
          rc = fail (error);
          goto out;
        }
      if (!gen_prefill (&g, ids, &error))
        {
          rc = fail (error);
          goto out;
        }
      t1 = g_get_monotonic_time ();
      fputs (prompt, stdout);
      n = gen_stream (&g, n_predict, stdout, &error);
      putchar ('\n');
      if (n < 0)
        rc = fail (error);
      else if (verbose)
        g_printerr ("prompt: %u tokens, %.1f tok/s; generated %d tokens, %.1f tok/s\n", ids->len,
                    ids->len / ((t1 - t0) / 1e6), n,
                    n / MAX ((g_get_monotonic_time () - t1) / 1e6, 1e-9));
    }
  else
    {
      g_autoptr (JsonArray) messages = json_array_new ();
      const char *tmpl = bln_model_chat_template (model);
      BlnTokenizer *tok = bln_model_tokenizer (model);
      gboolean tty = isatty (STDIN_FILENO);

      if (tmpl == NULL)
        {
          g_printerr ("baleen-cli run: the model has no chat template; use -p instead\n");
          rc = 1;
          goto out;
        }
      if (system != NULL)
        {
          JsonObject *o = json_object_new ();
          json_object_set_string_member (o, "role", "system");
          json_object_set_string_member (o, "content", system);
          json_array_add_object_element (messages, o);
        }
      if (tty)
        g_printerr ("Chatting with %s (%s). Empty line or Ctrl-D ends.\n",
                    bln_model_name (model), bln_model_arch_name (model));
      for (;;)
        {
          char line[16384];
          g_autoptr (JsonNode) node = NULL;
          g_autofree char *rendered = NULL;
          g_autoptr (GArray) ids = NULL;
          GString *reply;
          JsonObject *o;
          FILE *mem;
          char *buf = NULL;
          size_t buflen = 0;
          int n;

          if (tty)
            g_printerr ("\n> ");
          if (fgets (line, sizeof line, stdin) == NULL)
            break;
          g_strchomp (line);
          if (*line == '\0')
            break;
          if (!g_utf8_validate (line, -1, NULL))
            {
              g_printerr ("baleen-cli: input is not valid UTF-8\n");
              continue;
            }
          o = json_object_new ();
          json_object_set_string_member (o, "role", "user");
          json_object_set_string_member (o, "content", line);
          json_array_add_object_element (messages, o);
          node = json_node_init_array (json_node_alloc (), messages);
          rendered = bln_chat_render (tmpl, node, NULL, TRUE, bln_tokenizer_bos_text (tok),
                                      bln_tokenizer_eos_text (tok), NULL, &error);
          if (rendered == NULL)
            {
              rc = fail (error);
              goto out;
            }
          ids = bln_tokenizer_encode (tok, rendered, -1, FALSE, TRUE, &error);
          if (ids == NULL || !gen_prefill (&g, ids, &error))
            {
              rc = fail (error);
              goto out;
            }
          /* tee the reply into a buffer to keep it in the history */
          mem = open_memstream (&buf, &buflen);
          if (mem == NULL)
            {
              g_printerr ("baleen-cli: out of memory\n");
              rc = 1;
              goto out;
            }
          n = gen_stream (&g, n_predict, mem, &error);
          fclose (mem);
          reply = g_string_new_len (buf, buflen);
          free (buf);
          fputs (reply->str, stdout);
          putchar ('\n');
          fflush (stdout);
          o = json_object_new ();
          json_object_set_string_member (o, "role", "assistant");
          json_object_set_string_member (o, "content", reply->str);
          json_array_add_object_element (messages, o);
          g_string_free (reply, TRUE);
          if (n < 0)
            {
              rc = fail (error);
              goto out;
            }
        }
    }

out:
  bln_sampler_free (g.sampler);

  g_array_unref (g.cached);
  g_clear_pointer (&ctx, bln_context_free);
  bln_pool_free (pool);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* tokenizer commands                                                      */

static int
cmd_tokenize (int argc, char **argv)
{
  g_autofree char *path = NULL, *text = NULL;
  gboolean add_special = FALSE, no_parse_special = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "GGUF file, HF directory or tokenizer.json[.gz]", "PATH" },
    { "add-special", 0, 0, G_OPTION_ARG_NONE, &add_special, "Add BOS/EOS as the model's config says", NULL },
    { "no-parse-special", 0, 0, G_OPTION_ARG_NONE, &no_parse_special, "Treat special-token text as plain text", NULL },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnTokenizer) tok = NULL;
  g_autoptr (GArray) ids = NULL;
  gsize len;

  if (!parse_options ("tokenize", "text on stdin, JSON token ids on stdout", entries, &argc,
                      &argv, &error))
    return fail (error);
  if (path == NULL)
    {
      g_printerr ("baleen-cli tokenize: -m PATH is required\n");
      return 2;
    }
  if ((tok = load_tokenizer (path, NULL, &error)) == NULL
      || (text = read_stdin (&len, &error)) == NULL)
    return fail (error);
  ids = bln_tokenizer_encode (tok, text, len, add_special && bln_tokenizer_add_bos (tok),
                              !no_parse_special, &error);
  if (ids == NULL)
    return fail (error);
  if (add_special && bln_tokenizer_add_eos (tok) && bln_tokenizer_eos (tok) >= 0)
    {
      int32_t eos = bln_tokenizer_eos (tok);
      g_array_append_val (ids, eos);
    }
  print_ids (ids);
  return 0;
}

static int
cmd_detokenize (int argc, char **argv)
{
  g_autofree char *path = NULL, *json = NULL, *text = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "GGUF file, HF directory or tokenizer.json[.gz]", "PATH" },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnTokenizer) tok = NULL;
  g_autoptr (GArray) ids = NULL;
  gsize len = 0;
  guint i;

  if (!parse_options ("detokenize", "JSON token ids on stdin, text on stdout", entries, &argc,
                      &argv, &error))
    return fail (error);
  if (path == NULL)
    {
      g_printerr ("baleen-cli detokenize: -m PATH is required\n");
      return 2;
    }
  if ((tok = load_tokenizer (path, NULL, &error)) == NULL
      || (json = read_stdin (NULL, &error)) == NULL || (ids = parse_ids (json, &error)) == NULL)
    return fail (error);
  for (i = 0; i < ids->len; i++)
    if (g_array_index (ids, int32_t, i) >= bln_tokenizer_n_vocab (tok))
      {
        g_printerr ("baleen-cli detokenize: id %d is outside the vocabulary\n",
                    g_array_index (ids, int32_t, i));
        return 1;
      }
  text = bln_tokenizer_decode (tok, (const int32_t *) ids->data, ids->len, &len);
  fwrite (text, 1, len, stdout);
  return 0;
}

static int
cmd_template (int argc, char **argv)
{
  g_autofree char *path = NULL, *json = NULL, *tmpl = NULL, *out = NULL, *tools_file = NULL;
  gboolean no_gen = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "GGUF file, HF directory or tokenizer_config.json's directory", "PATH" },
    { "no-generation-prompt", 0, 0, G_OPTION_ARG_NONE, &no_gen, "Do not open an assistant turn", NULL },
    { "tools", 0, 0, G_OPTION_ARG_FILENAME, &tools_file, "JSON file with an OpenAI tools array", "FILE" },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnTokenizer) tok = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (JsonParser) tparser = json_parser_new ();
  JsonNode *root, *tools = NULL;

  if (!parse_options ("template", "messages JSON on stdin, rendered prompt on stdout", entries,
                      &argc, &argv, &error))
    return fail (error);
  if (path == NULL)
    {
      g_printerr ("baleen-cli template: -m PATH is required\n");
      return 2;
    }
  if ((tok = load_tokenizer (path, &tmpl, &error)) == NULL
      || (json = read_stdin (NULL, &error)) == NULL
      || !json_parser_load_from_data (parser, json, -1, &error))
    return fail (error);
  if (tmpl == NULL)
    {
      g_printerr ("baleen-cli template: %s has no chat template\n", path);
      return 1;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_ARRAY (root))
    {
      g_printerr ("baleen-cli template: expected a JSON array of messages on stdin\n");
      return 1;
    }
  if (tools_file != NULL)
    {
      if (!json_parser_load_from_file (tparser, tools_file, &error))
        return fail (error);
      tools = json_parser_get_root (tparser);
    }
  out = bln_chat_render (tmpl, root, tools, !no_gen, bln_tokenizer_bos_text (tok),
                         bln_tokenizer_eos_text (tok), NULL, &error);
  if (out == NULL)
    return fail (error);
  fputs (out, stdout);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* model commands                                                          */

static gint
by_logit_desc (gconstpointer a, gconstpointer b, gpointer data)
{
  const float *lg = data;
  float la = lg[*(const int *) a], lb = lg[*(const int *) b];

  if (la != lb)
    return la > lb ? -1 : 1;
  return *(const int *) a - *(const int *) b;   /* ties: lower id first */
}

static int
cmd_logits (int argc, char **argv)
{
  g_autofree char *path = NULL, *ids_json = NULL, *quant = NULL, *device = NULL;
  int top = 0, threads = 0, kv_bits = 0, window = 0;
  gboolean all = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "Model: GGUF file or HF directory", "PATH" },
    { "ids", 0, 0, G_OPTION_ARG_STRING, &ids_json, "Token ids as a JSON array", "[…]" },
    { "top", 0, 0, G_OPTION_ARG_INT, &top, "Only the N largest logits, with their ids", "N" },
    { "all", 0, 0, G_OPTION_ARG_NONE, &all, "Logits at every position, not only the last", NULL },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu (default), cuda, cuda:N or auto", "DEV" },
    { "kv-bits", 0, 0, G_OPTION_ARG_INT, &kv_bits, "GPU KV cache precision: 16 (default), 8 or 32", "N" },
    { "sliding-window", 0, 0, G_OPTION_ARG_INT, &window,
      "Attend to the last N tokens only (default 0: all; CPU, llama/qwen2)", "N" },
    { "quant", 'q', 0, G_OPTION_ARG_STRING, &quant, "Convert an HF model's weights on load", "TYPE" },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (BlnContext) ctx = NULL;
  g_autoptr (GArray) ids = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree float *logits = NULL;
  g_autofree char *text = NULL;
  BlnPool *pool = NULL;
  int n_vocab, rows, r, i;

  if (!parse_options ("logits", "logits for given token ids, as JSON", entries, &argc, &argv,
                      &error))
    return fail (error);
  if (ids_json == NULL)
    {
      g_printerr ("baleen-cli logits: --ids is required\n");
      return 2;
    }
  if ((ids = parse_ids (ids_json, &error)) == NULL)
    return fail (error);
  if (ids->len == 0)
    {
      g_printerr ("baleen-cli logits: --ids is empty\n");
      return 2;
    }
  if (device == NULL)
    device = g_strdup ("cpu");
  if (!check_device (device, &error) || (model = load_model (path, quant, &error)) == NULL
      || (pool = bln_pool_new (threads, &error)) == NULL
      || (ctx = open_context (model, (int) ids->len, pool, device, kv_bits, window, &error))
             == NULL)
    {
      bln_pool_free (pool);
      return fail (error);
    }
  n_vocab = bln_model_hparams (model)->n_vocab;
  rows = all ? (int) ids->len : 1;
  logits = g_new (float, (size_t) rows * n_vocab);
  if (!bln_context_eval (ctx, (const int32_t *) ids->data, (int) ids->len, logits, all, &error))
    {
      g_clear_pointer (&ctx, bln_context_free);
      bln_pool_free (pool);
      return fail (error);
    }
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "n_vocab");
  json_builder_add_int_value (b, n_vocab);
  json_builder_set_member_name (b, "positions");
  json_builder_begin_array (b);
  for (r = 0; r < rows; r++)
    {
      const float *lg = logits + (size_t) r * n_vocab;
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "position");
      json_builder_add_int_value (b, all ? r : (int) ids->len - 1);
      if (top > 0)
        {
          /* all ids ordered by logit: one sort, whatever --top asks for */
          g_autofree int *best = g_new (int, n_vocab);
          int k = MIN (top, n_vocab), j;
          for (j = 0; j < n_vocab; j++)
            best[j] = j;
          g_qsort_with_data (best, n_vocab, sizeof (int), by_logit_desc, (gpointer) lg);
          json_builder_set_member_name (b, "top");
          json_builder_begin_array (b);
          for (j = 0; j < k; j++)
            {
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "id");
              json_builder_add_int_value (b, best[j]);
              json_builder_set_member_name (b, "logit");
              json_builder_add_double_value (b, lg[best[j]]);
              json_builder_end_object (b);
            }
          json_builder_end_array (b);
        }
      else
        {
          json_builder_set_member_name (b, "logits");
          json_builder_begin_array (b);
          for (i = 0; i < n_vocab; i++)
            json_builder_add_double_value (b, lg[i]);
          json_builder_end_array (b);
        }
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  puts (text);
  g_clear_pointer (&ctx, bln_context_free);
  bln_pool_free (pool);
  return 0;
}

static int
cmd_info (int argc, char **argv)
{
  g_autofree char *path = NULL, *types = NULL;
  int n_ctx = 0;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "Model: GGUF file or HF directory", "PATH" },
    { "ctx", 'c', 0, G_OPTION_ARG_INT, &n_ctx, "Context size for the memory estimate", "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnModel) model = NULL;
  const BlnHParams *hp;
  size_t wbytes, kv;
  double total;

  if (!parse_options ("info", "model metadata and memory estimate", entries, &argc, &argv,
                      &error))
    return fail (error);
  if ((model = load_model (path, NULL, &error)) == NULL)
    return fail (error);
  hp = bln_model_hparams (model);
  if (n_ctx <= 0)
    n_ctx = MIN (hp->n_ctx_train, 8192);
  types = bln_model_type_summary (model);
  wbytes = bln_model_weight_bytes (model);
  kv = bln_model_kv_bytes_per_token (model);
  total = wbytes + (double) kv * n_ctx;
  if (json)
    {
      printf ("{\"name\": \"%s\", \"architecture\": \"%s\", \"parameters\": %" G_GINT64_FORMAT
              ", \"weight_bytes\": %zu, \"context_length\": %d, \"vocab\": %d, \"layers\": %d,"
              " \"embedding\": %d, \"heads\": %d, \"kv_heads\": %d, \"kv_bytes_per_token\": %zu,"
              " \"estimate_ctx\": %d, \"estimate_bytes\": %.0f}\n",
              bln_model_name (model), bln_model_arch_name (model), bln_model_n_params (model),
              wbytes, hp->n_ctx_train, hp->n_vocab, hp->n_layer, hp->n_embd, hp->n_head,
              hp->n_head_kv, kv, n_ctx, total);
      return 0;
    }
  printf ("name:            %s\n", bln_model_name (model));
  printf ("architecture:    %s\n", bln_model_arch_name (model));
  printf ("parameters:      %" G_GINT64_FORMAT " (%.1f M)\n", bln_model_n_params (model),
          bln_model_n_params (model) / 1e6);
  printf ("tensor types:    %s\n", types);
  printf ("weights:         %.1f MiB\n", wbytes / 1048576.0);
  printf ("context length:  %d (trained)\n", hp->n_ctx_train);
  printf ("vocabulary:      %d\n", hp->n_vocab);
  printf ("layers:          %d, embedding %d, heads %d (kv %d)\n", hp->n_layer, hp->n_embd,
          hp->n_head, hp->n_head_kv);
  if (hp->arch == BLN_ARCH_DEEPSEEK2)
    printf ("MLA:             q_lora %d, kv_lora %d, nope %d, rope %d, v %d\n"
            "MoE:             %d experts, %d used, %d shared, %d dense lead layers\n",
            hp->q_lora_rank, hp->kv_lora_rank, hp->qk_nope_dim, hp->qk_rope_dim, hp->head_dim_v,
            hp->n_expert, hp->n_expert_used, hp->n_expert_shared, hp->n_layer_dense_lead);
  printf ("chat template:   %s\n", bln_model_chat_template (model) ? "yes" : "no");
  printf ("KV cache:        %.1f KiB per token (f32)\n", kv / 1024.0);
  printf ("memory estimate: %.1f MiB at %d tokens of context\n", total / 1048576.0, n_ctx);
  return 0;
}

static int
cmd_perplexity (int argc, char **argv)
{
  g_autofree char *path = NULL, *file = NULL, *text = NULL, *quant = NULL, *device = NULL;
  int n_ctx = 512, threads = 0, kv_bits = 0, window = 0;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "Model: GGUF file or HF directory", "PATH" },
    { "file", 'f', 0, G_OPTION_ARG_FILENAME, &file, "Text file", "FILE" },
    { "ctx", 'c', 0, G_OPTION_ARG_INT, &n_ctx, "Tokens per chunk (default 512)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu (default), cuda, cuda:N or auto", "DEV" },
    { "kv-bits", 0, 0, G_OPTION_ARG_INT, &kv_bits, "GPU KV cache precision: 16 (default), 8 or 32", "N" },
    { "sliding-window", 0, 0, G_OPTION_ARG_INT, &window,
      "Attend to the last N tokens only (default 0: all; CPU, llama/qwen2)", "N" },
    { "quant", 'q', 0, G_OPTION_ARG_STRING, &quant, "Convert an HF model's weights on load", "TYPE" },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (BlnContext) ctx = NULL;
  g_autoptr (GArray) ids = NULL;
  g_autofree float *logits = NULL;
  BlnTokenizer *tok;
  BlnPool *pool = NULL;
  double nll = 0.0;
  gsize len;
  int n_vocab, count = 0;
  guint start;

  if (!parse_options ("perplexity", "perplexity of a text file", entries, &argc, &argv, &error))
    return fail (error);
  if (file == NULL || n_ctx < 2)
    {
      g_printerr ("baleen-cli perplexity: -f FILE is required and --ctx must be at least 2\n");
      return 2;
    }
  if (device == NULL)
    device = g_strdup ("cpu");
  if (!check_device (device, &error) || !g_file_get_contents (file, &text, &len, &error)
      || (model = load_model (path, quant, &error)) == NULL
      || (pool = bln_pool_new (threads, &error)) == NULL
      || (ctx = open_context (model, n_ctx, pool, device, kv_bits, window, &error)) == NULL)
    {
      bln_pool_free (pool);
      return fail (error);
    }
  tok = bln_model_tokenizer (model);
  ids = bln_tokenizer_encode (tok, text, len, FALSE, FALSE, &error);
  if (ids == NULL)
    {
      g_clear_pointer (&ctx, bln_context_free);
      bln_pool_free (pool);
      return fail (error);
    }
  n_vocab = bln_model_hparams (model)->n_vocab;
  logits = g_new (float, (size_t) n_ctx * n_vocab);
  /* Chunks of n_ctx tokens, each starting with BOS when the model uses one;
   * every token after the first of a chunk is scored. */
  for (start = 0; start + 1 < ids->len;)
    {
      g_autoptr (GArray) chunk = g_array_new (FALSE, FALSE, sizeof (int32_t));
      int take, t;

      if (bln_tokenizer_add_bos (tok) && bln_tokenizer_bos (tok) >= 0)
        {
          int32_t bos = bln_tokenizer_bos (tok);
          g_array_append_val (chunk, bos);
        }
      take = MIN ((int) (ids->len - start), n_ctx - (int) chunk->len);
      g_array_append_vals (chunk, &g_array_index (ids, int32_t, start), take);
      bln_context_truncate (ctx, 0);
      if (!bln_context_eval (ctx, (const int32_t *) chunk->data, (int) chunk->len, logits, TRUE,
                             &error))
        {
          g_clear_pointer (&ctx, bln_context_free);
          bln_pool_free (pool);
          return fail (error);
        }
      for (t = 0; t + 1 < (int) chunk->len; t++)
        {
          const float *lg = logits + (size_t) t * n_vocab;
          int next = g_array_index (chunk, int32_t, t + 1), i;
          double mx = -INFINITY, sum = 0.0;
          for (i = 0; i < n_vocab; i++)
            mx = MAX (mx, lg[i]);
          for (i = 0; i < n_vocab; i++)
            sum += exp (lg[i] - mx);
          nll -= lg[next] - mx - log (sum);
          count++;
        }
      start += take;
      g_printerr ("[%u/%u] ppl so far %.4f\n", start, ids->len, exp (nll / count));
    }
  printf ("perplexity: %.4f over %d tokens\n", exp (nll / MAX (count, 1)), count);
  g_clear_pointer (&ctx, bln_context_free);
  bln_pool_free (pool);
  return 0;
}

/* The bandwidth ceiling of batch-1 decode: bytes one token reads (weights,
 * plus the KV cache at the mean depth of the timed window) and, on the GPU,
 * the copy rate measured now. */
typedef struct {
  double bytes_per_token;
  double mem_rate;       /* bytes/s, 0 when not measured */
  char *gpu;             /* device name, NULL on the CPU */
} BenchCeiling;

static void
bench_ceiling (BlnModel *model, BlnContext *ctx, int kv_bits, double mean_depth,
               BenchCeiling *c)
{
  double kv_elem = bln_context_device (ctx) == BLN_DEVICE_CUDA ? (kv_bits ? kv_bits : 16) / 8.0
                                                                : 4.0;
  double kv_token = (double) bln_model_kv_bytes_per_token (model) / 4.0 * kv_elem;

  memset (c, 0, sizeof *c);
  c->bytes_per_token = (double) bln_model_decode_bytes (model) + kv_token * mean_depth;
#if BALEEN_HAVE_CUDA
  if (bln_context_device (ctx) == BLN_DEVICE_CUDA)
    {
      BlnCudaDeviceInfo info;
      GError *error = NULL;

      if (bln_cuda_device_info (0, &info, &error))
        c->gpu = g_strdup (info.name);
      g_clear_error (&error);
      if (!bln_cuda_copy_rate (&c->mem_rate, &error))
        {
          g_printerr ("baleen-cli bench: could not measure the memory bandwidth: %s\n",
                      error->message);
          g_clear_error (&error);
        }
    }
#endif
}

/* Parses --batch: sizes separated by commas, each 1..4096. */
static GArray *
parse_batch_sizes (const char *list, GError **error)
{
  g_auto (GStrv) parts = g_strsplit (list, ",", -1);
  GArray *sizes = g_array_new (FALSE, FALSE, sizeof (int));
  int i;

  for (i = 0; parts[i] != NULL; i++)
    {
      guint64 v = 0;
      int n;

      if (!g_ascii_string_to_unsigned (g_strstrip (parts[i]), 10, 1, 4096, &v, NULL))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "--batch: '%s' is not a batch size (1..4096, comma-separated)", parts[i]);
          g_array_unref (sizes);
          return NULL;
        }
      n = (int) v;
      g_array_append_val (sizes, n);
    }
  if (sizes->len == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "--batch: no batch size given");
      g_array_unref (sizes);
      return NULL;
    }
  return sizes;
}

typedef struct {
  const float *logits;
  int n_rows, n_vocab;
  int32_t *out;
} ArgmaxJob;

static void
argmax_worker (void *p, int ith, int nth)
{
  ArgmaxJob *job = p;
  int a = (int) ((int64_t) job->n_rows * ith / nth);
  int b = (int) ((int64_t) job->n_rows * (ith + 1) / nth), r, t;

  for (r = a; r < b; r++)
    {
      const float *lg = job->logits + (size_t) r * job->n_vocab;
      int best = 0;

      for (t = 1; t < job->n_vocab; t++)
        if (lg[t] > lg[best])
          best = t;
      job->out[r] = best;
    }
}

/* One batch size of bench --batch: @n sequences, each with a prompt of
 * @n_prompt random tokens (all prompts in batched steps), then @n_gen decode
 * steps of one token per sequence, the greedy pick of each from its logits
 * (copied back, argmax on the host over the pool's threads, where the
 * scheduler's CPU sampler would run).
 * Best of @reps. */
static gboolean
bench_batch_one (BlnKvCache *kv, BlnPool *pool, int n, int n_prompt, int n_gen, int reps,
                 double *pp_tok_s, double *tg_tok_s, double *eval_ms, GError **error)
{
  BlnModel *model = bln_kv_cache_model (kv);
  int n_vocab = bln_model_hparams (model)->n_vocab, r, i, k;
  g_autofree BlnKvSeq **seqs = g_new0 (BlnKvSeq *, n);
  g_autofree BlnKvBatchItem *items = g_new0 (BlnKvBatchItem, n);
  g_autofree int32_t *prompts = g_new (int32_t, (size_t) n * n_prompt);
  g_autofree int32_t *next = g_new0 (int32_t, n);
  g_autofree float *logits = g_try_new (float, (size_t) n * n_vocab);
  g_autoptr (GRand) rand = g_rand_new_with_seed (4321);
  gboolean ok = TRUE;

  *pp_tok_s = *tg_tok_s = *eval_ms = 0;
  if (logits == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "no memory for %d rows of logits", n);
      return FALSE;
    }
  for (r = 0; r < reps && ok; r++)
    {
      gint64 t0, t1, t2, in_eval = 0, te;

      /* fresh prompts each repetition: nothing comes from the prefix cache */
      for (i = 0; i < n * n_prompt; i++)
        prompts[i] = g_rand_int_range (rand, 0, n_vocab);
      for (i = 0; i < n; i++)
        seqs[i] = bln_kv_seq_new (kv);
      t0 = g_get_monotonic_time ();
      for (i = 0; i < n; i++)
        items[i] = (BlnKvBatchItem) { seqs[i], prompts + (size_t) i * n_prompt, n_prompt,
                                      logits + (size_t) i * n_vocab, FALSE };
      ok = bln_kv_eval (kv, items, n, error);
      t1 = g_get_monotonic_time ();
      for (k = 0; k < n_gen && ok; k++)
        {
          ArgmaxJob job = { logits, n, n_vocab, next };

          /* the greedy picks, rows spread over the CPU threads */
          bln_pool_run (pool, argmax_worker, &job);
          for (i = 0; i < n; i++)
            items[i] = (BlnKvBatchItem) { seqs[i], &next[i], 1, logits + (size_t) i * n_vocab,
                                          FALSE };
          te = g_get_monotonic_time ();
          ok = bln_kv_eval (kv, items, n, error);
          in_eval += g_get_monotonic_time () - te;
        }
      t2 = g_get_monotonic_time ();
      for (i = 0; i < n; i++)
        g_clear_pointer (&seqs[i], bln_kv_seq_free);
      bln_kv_cache_drop_cached (kv);
      if (ok)
        {
          *pp_tok_s = MAX (*pp_tok_s, (double) n * n_prompt / MAX ((t1 - t0) / 1e6, 1e-9));
          if (n_gen > 0 && (double) n * n_gen / MAX ((t2 - t1) / 1e6, 1e-9) > *tg_tok_s)
            {
              *tg_tok_s = (double) n * n_gen / MAX ((t2 - t1) / 1e6, 1e-9);
              *eval_ms = in_eval / 1e3 / n_gen;
            }
        }
    }
  return ok;
}

/* bench --batch: decode speed with many sequences decoding together, over a
 * paged KV cache on @device (the scheduler's batched path). */
static int
bench_batch (BlnModel *model, BlnPool *pool, const char *device, int kv_bits, GArray *sizes,
             int n_prompt, int n_gen, int reps, gboolean json)
{
  BlnContextOptions o;
  GError *error = NULL;
  g_autofree char *types = bln_model_type_summary (model);
  const char *dev_name;
  int max_n = 0, bs = BLN_KV_BLOCK_SIZE_DEFAULT;
  size_t blocks;
  guint i;
  BlnKvCache *kv;

  bln_context_options_init (&o);
  if (kv_bits != 0)
    o.kv_bits = kv_bits;
  if (!bln_device_parse (device, &o, &error))
    return fail (error);
  for (i = 0; i < sizes->len; i++)
    max_n = MAX (max_n, g_array_index (sizes, int, i));
  /* every sequence's prompt and generation, plus a block each of slack */
  blocks = (size_t) max_n * ((size_t) (n_prompt + n_gen + bs) / bs + 1);
  kv = bln_kv_cache_new_with_options (model, pool,
                                      blocks * bln_kv_cache_block_bytes_for (model, bs), bs, &o,
                                      &error);
  if (kv == NULL)
    return fail (error);
  dev_name = bln_kv_cache_device (kv) == BLN_DEVICE_CUDA ? "cuda" : "cpu";
  if (json)
    printf ("{\"model\": \"%s\", \"types\": \"%s\", \"device\": \"%s\", \"kv_bits\": %d, "
            "\"n_prompt\": %d, \"n_gen\": %d, \"repetitions\": %d, \"batches\": [",
            bln_model_name (model), types, dev_name,
            bln_kv_cache_device (kv) == BLN_DEVICE_CUDA ? (kv_bits ? kv_bits : 16) : 32,
            n_prompt, n_gen, reps);
  for (i = 0; i < sizes->len; i++)
    {
      int n = g_array_index (sizes, int, i);
      double pp = 0, tg = 0, ev = 0;

      if (!bench_batch_one (kv, pool, n, n_prompt, n_gen, reps, &pp, &tg, &ev, &error))
        {
          if (json)
            printf ("]}\n");
          bln_kv_cache_free (kv);
          return fail (error);
        }
      if (json)
        printf ("%s{\"batch\": %d, \"pp_tok_s\": %.2f, \"tg_tok_s\": %.2f, "
                "\"tg_seq_tok_s\": %.2f, \"tg_step_ms\": %.3f, \"tg_eval_ms\": %.3f, "
                "\"tg_eval_tok_s\": %.2f}",
                i > 0 ? ", " : "", n, pp, tg, tg / n, tg > 0 ? 1e3 * n / tg : 0.0, ev,
                ev > 0 ? 1e3 * n / ev : 0.0);
      else
        printf ("%s (%s), %s, batch %d: pp%d %.1f tok/s, tg%d %.1f tok/s "
                "(%.1f tok/s per sequence, %.2f ms a step, %.2f of them in bln_kv_eval)\n",
                bln_model_name (model), types, dev_name, n, n_prompt, pp, n_gen, tg, tg / n,
                tg > 0 ? 1e3 * n / tg : 0.0, ev);
      fflush (stdout);
    }
  if (json)
    printf ("]}\n");
  bln_kv_cache_free (kv);
  return 0;
}

static int
cmd_bench (int argc, char **argv)
{
  g_autofree char *path = NULL, *device = NULL, *quant = NULL, *batch = NULL;
  int n_prompt = 128, n_gen = 64, threads = 0, reps = 3, depth = 0, kv_bits = 0;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &path, "Model: GGUF file or HF directory", "PATH" },
    { "prompt", 'p', 0, G_OPTION_ARG_INT, &n_prompt, "Prompt tokens (default 128)", "N" },
    { "gen", 'n', 0, G_OPTION_ARG_INT, &n_gen, "Generated tokens (default 64)", "N" },
    { "depth", 'd', 0, G_OPTION_ARG_INT, &depth, "Tokens already in the cache when decoding starts (default 0)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N" },
    { "repetitions", 'r', 0, G_OPTION_ARG_INT, &reps, "Repetitions; the best is kept (default 3)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu, cuda, cuda:N or auto (default auto)", "DEV" },
    { "kv-bits", 0, 0, G_OPTION_ARG_INT, &kv_bits, "GPU KV cache precision: 16 (default), 8 or 32", "N" },
    { "quant", 'q', 0, G_OPTION_ARG_STRING, &quant, "Convert an HF model's weights on load", "TYPE" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { "batch", 'b', 0, G_OPTION_ARG_STRING, &batch,
      "Decode N sequences together over a paged KV cache, for each N of a comma-separated list "
      "(prompt -p each, then -n steps)", "N[,N...]" },
    { NULL }
  };
  GError *error = NULL;
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (BlnContext) ctx = NULL;
  g_autoptr (GArray) sizes = NULL;
  g_autofree int32_t *ids = NULL;
  g_autofree float *logits = NULL;
  g_autoptr (BlnSampler) greedy = NULL;
  g_autofree char *types = NULL;
  BlnPool *pool = NULL;
  BenchCeiling ceil;
  double best_pp = 0, best_tg = 0, tg_ceiling = 0;
  const char *dev_name;
  int n_vocab, r, i, n_ids;
  GRand *rand;

  if (!parse_options ("bench", "prompt and generation speed", entries, &argc, &argv, &error))
    return fail (error);
  if (n_prompt < 1 || n_gen < 0 || reps < 1 || depth < 0)
    {
      g_printerr ("baleen-cli bench: --prompt must be ≥ 1, --gen ≥ 0, --depth ≥ 0, -r ≥ 1\n");
      return 2;
    }
  if (batch != NULL)
    {
      int rc;

      if ((sizes = parse_batch_sizes (batch, &error)) == NULL || !check_device (device, &error)
          || (model = load_model (path, quant, &error)) == NULL
          || (pool = bln_pool_new (threads, &error)) == NULL)
        {
          bln_pool_free (pool);
          return fail (error);
        }
      rc = bench_batch (model, pool, device, kv_bits, sizes, n_prompt, n_gen, reps, json);
      bln_pool_free (pool);
      return rc;
    }
  if (!check_device (device, &error) || (model = load_model (path, quant, &error)) == NULL
      || (pool = bln_pool_new (threads, &error)) == NULL
      || (ctx = open_context (model, MAX (n_prompt, depth + n_gen) + 1, pool, device, kv_bits,
                              0, &error)) == NULL)
    {
      bln_pool_free (pool);
      return fail (error);
    }
  n_vocab = bln_model_hparams (model)->n_vocab;
  n_ids = MAX (n_prompt, depth);
  {
    BlnSamplerParams sp;

    bln_sampler_params_init (&sp);
    sp.temperature = 0.f;
    greedy = bln_sampler_new (&sp, n_vocab);
  }
  ids = g_new (int32_t, n_ids);
  logits = g_new (float, n_vocab);
  rand = g_rand_new_with_seed (1234);
  for (i = 0; i < n_ids; i++)
    ids[i] = g_rand_int_range (rand, 0, n_vocab);
  g_rand_free (rand);

  for (r = 0; r < reps; r++)
    {
      gint64 t0, t1, t2;
      int32_t id = ids[0];

      bln_context_truncate (ctx, 0);
      t0 = g_get_monotonic_time ();
      if (!bln_context_eval (ctx, ids, n_prompt, logits, FALSE, &error))
        break;
      t1 = g_get_monotonic_time ();
      /* decode one token at a time after @depth cached tokens (llama-bench's
       * tg, and tg @ d with -d) */
      bln_context_truncate (ctx, 0);
      if (depth > 0 && !bln_context_eval (ctx, ids, depth, logits, FALSE, &error))
        break;
      t2 = g_get_monotonic_time ();
      /* each step also picks the next token (greedy; on the GPU for a GPU
       * context, so only the id comes back), as generation does */
      for (i = 0; i < n_gen; i++)
        if (!bln_context_eval_sample (ctx, &id, 1, greedy, &id, NULL, 0, &error))
          break;
      if (error != NULL)
        break;
      best_pp = MAX (best_pp, n_prompt / ((t1 - t0) / 1e6));
      if (n_gen > 0)
        best_tg = MAX (best_tg, n_gen / ((g_get_monotonic_time () - t2) / 1e6));
    }
  if (error != NULL)
    {
      g_clear_pointer (&ctx, bln_context_free);
      bln_pool_free (pool);
      return fail (error);
    }
  bench_ceiling (model, ctx, kv_bits, depth + n_gen / 2.0, &ceil);
  if (ceil.mem_rate > 0)
    tg_ceiling = ceil.mem_rate / ceil.bytes_per_token;
  dev_name = bln_context_device (ctx) == BLN_DEVICE_CUDA ? "cuda" : "cpu";
  types = bln_model_type_summary (model);
  if (json)
    {
      printf ("{\"model\": \"%s\", \"types\": \"%s\", \"device\": \"%s\", ", bln_model_name (model),
              types, dev_name);
      if (ceil.gpu)
        printf ("\"gpu\": \"%s\", \"kv_bits\": %d, ", ceil.gpu, kv_bits ? kv_bits : 16);
      else
        printf ("\"threads\": %d, \"simd\": \"%s\", ", bln_pool_n_threads (pool),
                bln_cpu_simd_level ());
      printf ("\"n_prompt\": %d, \"n_gen\": %d, \"depth\": %d, \"repetitions\": %d, "
              "\"pp_tok_s\": %.2f, \"tg_tok_s\": %.2f, \"decode_bytes_per_token\": %.0f",
              n_prompt, n_gen, depth, reps, best_pp, best_tg, ceil.bytes_per_token);
      if (ceil.mem_rate > 0)
        printf (", \"mem_bytes_per_s\": %.4g, \"tg_ceiling_tok_s\": %.1f, \"tg_fraction\": %.3f",
                ceil.mem_rate, tg_ceiling, best_tg / tg_ceiling);
      printf ("}\n");
    }
  else
    {
      printf ("%s (%s), %s", bln_model_name (model), types, dev_name);
      if (ceil.gpu)
        printf (" (%s)", ceil.gpu);
      else
        printf (" (%s, %d threads)", bln_cpu_simd_level (), bln_pool_n_threads (pool));
      printf (": pp%d %.1f tok/s, tg%d", n_prompt, best_pp, n_gen);
      if (depth > 0)
        printf (" @ d%d", depth);
      printf (" %.1f tok/s", best_tg);
      if (ceil.mem_rate > 0)
        printf (" = %.0f%% of the %.0f tok/s ceiling (%.2f TB/s / %.1f MB per token)",
                100.0 * best_tg / tg_ceiling, tg_ceiling, ceil.mem_rate / 1e12,
                ceil.bytes_per_token / 1e6);
      printf ("\n");
    }
  g_free (ceil.gpu);
  g_clear_pointer (&ctx, bln_context_free);
  bln_pool_free (pool);
  return 0;
}

/* ---------------------------------------------------------------------- */

static const struct {
  const char *name;
  int (*fn) (int argc, char **argv);
  const char *help;
} commands[] = {
  { "run", cmd_run, "generate text or chat with a model" },
  { "tokenize", cmd_tokenize, "text on stdin → JSON token ids" },
  { "detokenize", cmd_detokenize, "JSON token ids on stdin → text" },
  { "template", cmd_template, "messages JSON on stdin → rendered chat prompt" },
  { "logits", cmd_logits, "logits for given token ids" },
  { "info", cmd_info, "model metadata and memory estimate" },
  { "perplexity", cmd_perplexity, "perplexity of a text file" },
  { "bench", cmd_bench, "prompt and generation speed" },
#ifdef BALEEN_HAVE_ADMIN
  { "config", bln_admin_config, "read and change settings in the database (--db FILE)" },
  { "keys", bln_admin_keys, "create, list and revoke API keys (--db FILE)" },
  { "rules", bln_admin_rules, "safety rules: add, list, remove, test (--db FILE)" },
  { "audit", bln_admin_audit, "audit log: tail, export (--db FILE)" },
#endif
};

static void
usage (FILE *f)
{
  guint i;

  fprintf (f, "Usage: baleen-cli COMMAND [OPTIONS]   (baleen-cli COMMAND --help for options)\n\n"
              "Commands:\n");
  for (i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (f, "  %-12s %s\n", commands[i].name, commands[i].help);
  fprintf (f, "\nBaleen %s\n", BALEEN_VERSION);
}

int
main (int argc, char **argv)
{
  guint i;

  if (argc < 2 || g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h")
      || g_str_equal (argv[1], "help"))
    {
      usage (argc < 2 ? stderr : stdout);
      return argc < 2 ? 2 : 0;
    }
  if (g_str_equal (argv[1], "--version"))
    {
      printf ("baleen-cli %s\n", BALEEN_VERSION);
      return 0;
    }
  for (i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (argv[1], commands[i].name))
      {
        g_autofree char *prog = g_strdup_printf ("baleen-cli %s", argv[1]);
        argv[1] = prog;
        return commands[i].fn (argc - 1, argv + 1);
      }
  fprintf (stderr, "baleen-cli: unknown command '%s'\n\n", argv[1]);
  usage (stderr);
  return 2;
}
