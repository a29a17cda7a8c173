/* test-chat-template.c — chat templates rendered exactly like transformers.
 *
 * Two sources of expected output, both made with python jinja2 (nobody here
 * wrote them by hand):
 *  - the shared vectors (shared/data/tokenizers/.../chat_template_cases.jsonl
 *    and the R1-Distill derived ones, rendered through apply_chat_template);
 *  - tests/golden/templates/chat_cases.jsonl from tools/gen_template_golden.py,
 *    many more conversations (tools, tool calls, reasoning, unicode, empty and
 *    null content) over the DeepSeek-V3, R1-Distill-Qwen and Qwen2.5 templates.
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "bln-error.h"
#include "chat.h"

#define DS_BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

typedef struct {
  JsonNode *node;   /* the case */
  char *template;   /* template source */
  const char *bos;
  const char *eos;
} Case;

static void
case_free (Case *c)
{
  json_node_unref (c->node);
  g_free (c->template);
  g_free (c);
}

static void
run_case (gconstpointer data)
{
  const Case *c = data;
  JsonObject *o = json_node_get_object (c->node);
  JsonNode *tools = json_object_get_member (o, "tools");
  const char *bos = json_object_has_member (o, "bos_token")
                        ? json_object_get_string_member (o, "bos_token") : c->bos;
  const char *eos = json_object_has_member (o, "eos_token")
                        ? json_object_get_string_member (o, "eos_token") : c->eos;
  g_autoptr (GError) error = NULL;
  g_autofree char *out = bln_chat_render (c->template, json_object_get_member (o, "messages"),
                                          tools, json_object_get_boolean_member (o,
                                                     "add_generation_prompt"),
                                          bos, eos, NULL, &error);
  if (json_object_has_member (o, "error")) {
    g_assert_null (out);
    g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
    return;
  }
  if (!out)
    g_test_message ("error: %s", error->message);
  g_assert_no_error (error);
  g_assert_cmpstr (out, ==, json_object_get_string_member (o, "rendered"));
}

static char *
read_text (const char *path)
{
  g_autoptr (GError) error = NULL;
  char *text = NULL;
  if (!g_file_get_contents (path, &text, NULL, &error))
    g_error ("cannot read %s: %s", path, error->message);
  return text;
}

static char *
config_template (const char *path)
{
  g_autofree char *text = read_text (path);
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) root = json_from_string (text, &error);
  g_assert_no_error (error);
  return g_strdup (json_object_get_string_member (json_node_get_object (root), "chat_template"));
}

/* Registers every line of @jsonl as a test; @tmpl (owned) NULL means the
 * line names its template file under @tmpl_dir. */
static void
add_cases (GPtrArray *keep, const char *prefix, const char *jsonl, const char *tmpl,
           const char *tmpl_dir, const char *bos, const char *eos)
{
  g_autofree char *text = read_text (jsonl);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  int i;
  for (i = 0; lines[i]; i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *name = NULL;
    Case *c;
    JsonObject *o;
    if (!*lines[i])
      continue;
    c = g_new0 (Case, 1);
    c->node = json_from_string (lines[i], &error);
    g_assert_no_error (error);
    o = json_node_get_object (c->node);
    if (tmpl)
      c->template = g_strdup (tmpl);
    else {
      g_autofree char *p = g_build_filename (tmpl_dir, json_object_get_string_member (o,
                                                                        "template"), NULL);
      c->template = read_text (p);
    }
    c->bos = bos;
    c->eos = eos;
    g_ptr_array_add (keep, c);
    name = g_strdup_printf ("%s/%s", prefix, json_object_get_string_member (o, "name"));
    g_test_add_data_func (name, c, run_case);
  }
}

static void
test_api_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) obj = json_from_string ("{}", NULL);
  g_autoptr (JsonNode) msgs = json_from_string ("[{\"role\":\"user\",\"content\":\"x\"}]", NULL);
  g_autoptr (JsonObject) extra = json_object_new ();
  g_autofree char *out = NULL;
  g_assert_null (bln_chat_render ("x", obj, NULL, FALSE, NULL, NULL, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (bln_chat_render ("{% if %}", msgs, NULL, FALSE, NULL, NULL, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
  g_clear_error (&error);
  g_assert_null (bln_chat_render ("{{ raise_exception('no') }}", msgs, NULL, FALSE, NULL, NULL,
                                  NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
  g_clear_error (&error);
  /* extra variables and defaults reach the template */
  json_object_set_boolean_member (extra, "enable_thinking", TRUE);
  out = bln_chat_render ("{{ enable_thinking }}|{{ tools }}|{{ bos_token }}|{{ messages[0].content }}",
                         msgs, NULL, TRUE, NULL, "E", extra, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (out, ==, "True|None||x");
}

int
main (int argc, char **argv)
{
  const char *shared = g_getenv ("BALEEN_SHARED_DATA");
  const char *golden = g_getenv ("BALEEN_GOLDEN_DIR");
  GPtrArray *keep = g_ptr_array_new_with_free_func ((GDestroyNotify) case_free);
  g_autofree char *gdir = g_build_filename (golden ? golden : "tests/golden", "templates", NULL);
  g_autofree char *gcases = g_build_filename (gdir, "chat_cases.jsonl", NULL);
  int rc;

  g_test_init (&argc, &argv, NULL);
  if (!shared)
    shared = "../shared/data";
  {
    g_autofree char *cfg = g_build_filename (shared, "tokenizers/deepseek-v3/tokenizer_config.json",
                                             NULL);
    g_autofree char *cases = g_build_filename (shared,
                                               "tokenizers/deepseek-v3/chat_template_cases.jsonl",
                                               NULL);
    g_autofree char *tmpl = config_template (cfg);
    add_cases (keep, "/Baleen/ChatTemplate/shared/deepseek-v3", cases, tmpl, NULL, DS_BOS, DS_EOS);
  }
  {
    g_autofree char *cfg = g_build_filename (shared, "tokenizers/qwen2/tokenizer_config.json",
                                             NULL);
    g_autofree char *cases = g_build_filename (shared, "tokenizers/qwen2/chat_template_cases.jsonl",
                                               NULL);
    g_autofree char *tmpl = config_template (cfg);
    add_cases (keep, "/Baleen/ChatTemplate/shared/qwen2.5", cases, tmpl, NULL, "", "<|im_end|>");
  }
  {
    g_autofree char *tp = g_build_filename (
        shared, "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", NULL);
    g_autofree char *cases = g_build_filename (
        shared, "tokenizers/qwen2/r1_distill_derived_chat_template_cases.jsonl", NULL);
    g_autofree char *tmpl = read_text (tp);
    add_cases (keep, "/Baleen/ChatTemplate/shared/r1-distill-qwen", cases, tmpl, NULL, DS_BOS,
               DS_EOS);
  }
  add_cases (keep, "/Baleen/ChatTemplate/golden", gcases, NULL, gdir, "", "");
  g_test_add_func ("/Baleen/ChatTemplate/api-errors", test_api_errors);
  rc = g_test_run ();
  g_ptr_array_unref (keep);
  return rc;
}
