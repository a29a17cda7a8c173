/* test-jinja.c — the Jinja2 interpreter against python jinja2.
 *
 * tests/golden/templates/jinja_cases.jsonl holds small templates covering one
 * language feature each, rendered by python jinja2 configured as transformers
 * configures it (tools/gen_template_golden.py). Every case must render byte for
 * byte the same, or fail where jinja2 raised. The hostile-input cases below
 * only check that we fail cleanly instead of crashing or hanging.
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "bln-error.h"
#include "jinja.h"

static char *
golden_path (const char *name)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  return g_build_filename (dir ? dir : "tests/golden", "templates", name, NULL);
}

static void
run_case (gconstpointer data)
{
  JsonObject *c = json_node_get_object ((JsonNode *) data);
  const char *src = json_object_get_string_member (c, "template");
  JsonNode *vars = json_object_get_member (c, "vars");
  gboolean want_error = json_object_has_member (c, "error");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnTemplate) tmpl = bln_template_new (src, &error);
  g_autofree char *out = NULL;

  if (tmpl)
    out = bln_template_render (tmpl, vars, &error);
  if (want_error) {
    if (out)
      g_test_message ("expected an error, got \"%s\"", out);
    g_assert_null (out);
    g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
    return;
  }
  if (!out)
    g_test_message ("error: %s", error->message);
  g_assert_no_error (error);
  g_assert_cmpstr (out, ==, json_object_get_string_member (c, "rendered"));
}

static void
expect_template_error (const char *src, JsonNode *vars)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnTemplate) tmpl = bln_template_new (src, &error);
  g_autofree char *out = NULL;
  if (tmpl)
    out = bln_template_render (tmpl, vars, &error);
  g_assert_null (out);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
  g_assert_nonnull (strstr (error->message, "line"));
}

static void
test_hostile (void)
{
  GString *deep = g_string_new (NULL);
  int i;
  /* deeply nested expressions and statements */
  for (i = 0; i < 5000; i++)
    g_string_append_c (deep, '(');
  g_string_prepend (deep, "{{ ");
  expect_template_error (deep->str, NULL);
  g_string_truncate (deep, 0);
  for (i = 0; i < 5000; i++)
    g_string_append (deep, "{% if true %}");
  expect_template_error (deep->str, NULL);
  g_string_free (deep, TRUE);
  /* unbounded recursion, output and work */
  expect_template_error ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL);
  expect_template_error ("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}"
                         "{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                         NULL);
  expect_template_error ("{{ 'x' * 1000000000000 }}", NULL);
  expect_template_error ("{% for a in range(100000) %}{% for b in range(100000) %}"
                         "{% endfor %}{% endfor %}", NULL);
  expect_template_error ("{{ range(100000000000) }}", NULL);
  /* a namespace that holds itself and a macro must not leak or crash */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (BlnTemplate) t = bln_template_new (
        "{% set ns = namespace() %}{% set ns.me = ns %}{% macro m() %}x{% endmacro %}"
        "{% set ns.m = m %}{{ ns.m() }}", &error);
    g_autofree char *out = NULL;
    g_assert_no_error (error);
    out = bln_template_render (t, NULL, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (out, ==, "x");
  }
  /* unsupported constructs name themselves and the line */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (BlnTemplate) t = bln_template_new ("a\n\n{% include 'x.j2' %}", &error);
    g_assert_null (t);
    g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
    g_assert_nonnull (strstr (error->message, "line 3"));
    g_assert_nonnull (strstr (error->message, "include"));
  }
  /* invalid UTF-8 and unterminated tags */
  {
    g_autoptr (GError) error = NULL;
    g_assert_null (bln_template_new ("\xff\xfe", &error));
    g_assert_error (error, BLN_ERROR, BLN_ERROR_TEMPLATE);
  }
  expect_template_error ("{{ 'abc", NULL);
  expect_template_error ("{# never closed", NULL);
  expect_template_error ("{% for %}", NULL);
  expect_template_error ("{{ ]] }}", NULL);
}

int
main (int argc, char **argv)
{
  g_autofree char *path = golden_path ("jinja_cases.jsonl");
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  GPtrArray *keep = g_ptr_array_new_with_free_func ((GDestroyNotify) json_node_unref);
  g_autoptr (GError) error = NULL;
  int i, rc;

  g_test_init (&argc, &argv, NULL);
  if (!g_file_get_contents (path, &text, NULL, &error))
    g_error ("cannot read %s: %s", path, error->message);
  lines = g_strsplit (text, "\n", -1);
  for (i = 0; lines[i]; i++) {
    JsonNode *node;
    g_autofree char *name = NULL;
    if (!*lines[i])
      continue;
    node = json_from_string (lines[i], &error);
    g_assert_no_error (error);
    g_ptr_array_add (keep, node);
    name = g_strdup_printf ("/Baleen/Jinja/golden/%s",
                            json_object_get_string_member (json_node_get_object (node), "name"));
    g_test_add_data_func (name, node, run_case);
  }
  g_test_add_func ("/Baleen/Jinja/hostile", test_hostile);
  rc = g_test_run ();
  g_ptr_array_unref (keep);
  return rc;
}
