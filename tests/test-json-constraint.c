/* test-json-constraint.c — the JSON recogniser behind response_format
 * json_object, against Python's json module (strict) on the labelled texts of
 * tests/golden/json/cases.jsonl (tools/gen_json_cases.py), and random
 * constrained walks whose results json-glib must parse. */
#include <glib.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "json-constraint.h"

static GPtrArray *
load_cases (void)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = g_build_filename (dir ? dir : "tests/golden", "json", "cases.jsonl",
                                            NULL);
  g_autofree char *data = NULL;
  g_auto (GStrv) lines = NULL;
  GPtrArray *cases = g_ptr_array_new_with_free_func ((GDestroyNotify) json_node_unref);
  guint i;

  g_assert_true (g_file_get_contents (path, &data, NULL, NULL));
  lines = g_strsplit (data, "\n", -1);
  for (i = 0; lines[i] != NULL; i++)
    if (*lines[i])
      {
        JsonNode *n = json_from_string (lines[i], NULL);
        g_assert_nonnull (n);
        g_ptr_array_add (cases, n);
      }
  return cases;
}

static gboolean
recognise (const char *text, gboolean object_only, gboolean *all_prefixes)
{
  BlnJsonConstraint c;
  gsize i, n = strlen (text);

  bln_json_constraint_init (&c, object_only);
  *all_prefixes = TRUE;
  for (i = 0; i < n; i++)
    {
      BlnJsonConstraint before = c;
      gboolean acc = bln_json_constraint_accepts (&c, text + i, 1);

      g_assert_true (memcmp (&before, &c, sizeof c) == 0);   /* accepts() changes nothing */
      if (!bln_json_constraint_feed (&c, text + i, 1))
        {
          g_assert_false (acc);
          *all_prefixes = FALSE;
          return FALSE;
        }
      g_assert_true (acc);
    }
  return bln_json_constraint_complete (&c);
}

static void
test_python_cases (void)
{
  g_autoptr (GPtrArray) cases = load_cases ();
  guint i, n_valid = 0;

  g_assert_cmpuint (cases->len, >, 500);
  for (i = 0; i < cases->len; i++)
    {
      JsonObject *o = json_node_get_object (cases->pdata[i]);
      const char *text = json_object_get_string_member (o, "text");
      gboolean valid = json_object_get_boolean_member (o, "valid");
      gboolean is_obj = json_object_get_boolean_member (o, "object");
      g_autofree char *trimmed = g_strdup (text);
      g_autofree char *wrapped = NULL;
      gboolean prefixes, got;

      /* the recogniser ends at the value: trailing whitespace is not fed */
      g_strchomp (trimmed);
      /* wrapped in an array, a scalar ends where its text ends ("" stays empty) */
      wrapped = *g_strchug (trimmed) ? g_strdup_printf ("[%s]", trimmed) : g_strdup ("");
      got = recognise (wrapped, FALSE, &prefixes);
      if (got != valid)
        g_error ("case %u %s: python says %s", i, text, valid ? "valid" : "invalid");
      if (valid)
        g_assert_true (prefixes);
      got = recognise (trimmed, TRUE, &prefixes);
      if (got != is_obj)
        g_error ("object case %u %s: python says %s", i, text, is_obj ? "object" : "not");
      n_valid += valid;
    }
  g_assert_cmpuint (n_valid, >, 100);
}

/* Walks: at each step pick at random among pieces the recogniser accepts,
 * as the masked sampler does; every finished text must parse. */
static void
test_random_walks (void)
{
  static const char *const pieces[] = {
    "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "a", "key", "\\", "n", "u", "00e9", "-", "0",
    "12", ".", "5", "e", "+", "true", "false", "null", "tr", "ue", "fa", "lse", "nu", "ll",
    "\"a\":", "\": \"", "\"}", "é", "字", "\xe5", "\xad\x97", "\x01", "\t", "}]", "[{", "1e3",
  };
  GRand *rng = g_rand_new_with_seed (7);
  guint walk, n_complete = 0;

  for (walk = 0; walk < 2000; walk++)
    {
      BlnJsonConstraint c;
      g_autoptr (GString) out = g_string_new (NULL);
      int stepn;

      bln_json_constraint_init (&c, TRUE);
      for (stepn = 0; stepn < 80 && !bln_json_constraint_complete (&c); stepn++)
        {
          const char *ok[G_N_ELEMENTS (pieces)];
          guint n_ok = 0, k;

          for (k = 0; k < G_N_ELEMENTS (pieces); k++)
            if (bln_json_constraint_accepts (&c, pieces[k], strlen (pieces[k])))
              ok[n_ok++] = pieces[k];
          g_assert_cmpuint (n_ok, >, 0);   /* a valid prefix can always continue */
          k = g_rand_int_range (rng, 0, (gint32) n_ok);
          g_assert_true (bln_json_constraint_feed (&c, ok[k], strlen (ok[k])));
          g_string_append (out, ok[k]);
          /* the shortest ending always completes the text, and json-glib agrees */
          if (g_rand_int_range (rng, 0, 4) == 0)
            {
              BlnJsonConstraint end = c;
              g_autoptr (GString) tail = g_string_new (NULL);
              g_autoptr (GString) whole = g_string_new (out->str);
              g_autoptr (JsonParser) jp = json_parser_new ();

              bln_json_constraint_closing (&c, tail);
              g_assert_true (bln_json_constraint_feed (&end, tail->str, tail->len));
              g_assert_true (bln_json_constraint_complete (&end));
              g_string_append_len (whole, tail->str, (gssize) tail->len);
              if (!json_parser_load_from_data (jp, whole->str, (gssize) whole->len, NULL))
                g_error ("closing %s gave unparsable %s", out->str, whole->str);
            }
        }
      g_assert_true (g_utf8_validate (out->str, -1, NULL)
                     || !bln_json_constraint_complete (&c));
      if (bln_json_constraint_complete (&c))
        {
          g_autoptr (JsonParser) p = json_parser_new ();
          g_autoptr (GError) error = NULL;

          if (!json_parser_load_from_data (p, out->str, -1, &error))
            g_error ("walk produced %s: %s", out->str, error->message);
          g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)));
          n_complete++;
          /* nothing may follow a complete value */
          g_assert_false (bln_json_constraint_accepts (&c, " ", 1));
          g_assert_false (bln_json_constraint_accepts (&c, "}", 1));
        }
    }
  g_assert_cmpuint (n_complete, >, 100);
  g_rand_free (rng);
}

static void
test_limits (void)
{
  BlnJsonConstraint c;
  int i;

  bln_json_constraint_init (&c, TRUE);
  g_assert_false (bln_json_constraint_accepts (&c, "", 0));
  g_assert_false (bln_json_constraint_accepts (&c, "[", 1));
  for (i = 0; i < BLN_JSON_MAX_SPACE; i++)
    g_assert_true (bln_json_constraint_feed (&c, " ", 1));
  g_assert_false (bln_json_constraint_accepts (&c, " ", 1));
  g_assert_true (bln_json_constraint_feed (&c, "{\"a\":", 5));
  for (i = 1; i < BLN_JSON_MAX_DEPTH; i++)
    g_assert_true (bln_json_constraint_feed (&c, "[", 1));
  g_assert_false (bln_json_constraint_accepts (&c, "[", 1));
  g_assert_true (bln_json_constraint_accepts (&c, "]", 1));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/JsonConstraint/python-cases", test_python_cases);
  g_test_add_func ("/Baleen/JsonConstraint/random-walks", test_random_walks);
  g_test_add_func ("/Baleen/JsonConstraint/limits", test_limits);
  return g_test_run ();
}
