/* test-json-constraint.c — the JSON recogniser behind response_format
 * json_object, against Python's json module (strict) on the labelled texts of
 * tests/golden/json/cases.jsonl (tools/gen_json_cases.py), and random
 * constrained walks whose results json-glib must parse.
 *
 * json_schema mode: on tests/golden/json/schema-cases.jsonl the recogniser
 * must agree with Python's jsonschema package on every labelled document;
 * random constrained walks (random accepted pieces, then the closing) over
 * every schema are validated by jsonschema at test time (python3 is run on
 * them; skipped when python3 or jsonschema is missing); schemas outside the
 * subset must be refused. */
#include <glib.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "json-constraint.h"
#include "bln-error.h"

static GPtrArray *
load_file (const char *name)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = g_build_filename (dir ? dir : "tests/golden", "json", name, NULL);
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

static GPtrArray *
load_cases (void)
{
  return load_file ("cases.jsonl");
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

/* Feeds @text byte by byte (checking accepts() against feed()); TRUE when
 * complete at the end. *all_prefixes: every byte was accepted. */
static gboolean
recognise_schema (const BlnJsonSchema *schema, const char *text, gboolean *all_prefixes)
{
  BlnJsonConstraint c;
  gsize i, n = strlen (text);

  bln_json_constraint_init_schema (&c, schema);
  *all_prefixes = TRUE;
  for (i = 0; i < n; i++)
    {
      gboolean acc = bln_json_constraint_accepts (&c, text + i, 1);

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
test_schema_cases (void)
{
  g_autoptr (GPtrArray) cases = load_file ("schema-cases.jsonl");
  guint i, j, n_docs = 0, n_valid = 0;

  g_assert_cmpuint (cases->len, >=, 50);
  for (i = 0; i < cases->len; i++)
    {
      JsonObject *o = json_node_get_object (cases->pdata[i]);
      JsonArray *docs = json_object_get_array_member (o, "docs");
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnJsonSchema) schema =
        bln_json_schema_compile (json_object_get_member (o, "schema"), &error);
      g_autofree char *stext = json_to_string (json_object_get_member (o, "schema"), FALSE);

      if (schema == NULL)
        g_error ("schema %u %s: %s", i, stext, error->message);
      for (j = 0; j < json_array_get_length (docs); j++)
        {
          JsonObject *d = json_array_get_object_element (docs, j);
          const char *text = json_object_get_string_member (d, "text");
          gboolean valid = json_object_get_boolean_member (d, "valid");
          gboolean prefixes, got = recognise_schema (schema, text, &prefixes);

          if (got != valid)
            g_error ("schema %u %s, document %s: jsonschema says %s", i, stext, text,
                     valid ? "valid" : "invalid");
          if (valid)
            g_assert_true (prefixes);
          n_docs++;
          n_valid += valid;
        }
    }
  g_test_message ("%u documents, %u valid", n_docs, n_valid);
  g_assert_cmpuint (n_valid, >, 500);
  g_assert_cmpuint (n_docs - n_valid, >, 500);
}

/* Every byte string the schema's keys and enum texts are made of, and the
 * generic pieces: candidates for the walks. */
static void
add_schema_pieces (JsonNode *n, GPtrArray *pieces, int depth)
{
  if (depth > 8)
    return;
  if (JSON_NODE_HOLDS_OBJECT (n))
    {
      JsonObject *o = json_node_get_object (n);
      GList *names = json_object_get_members (o), *l;
      JsonNode *p = json_object_get_member (o, "properties");

      if (p != NULL && JSON_NODE_HOLDS_OBJECT (p))
        {
          GList *pn = json_object_get_members (json_node_get_object (p)), *k;

          for (k = pn; k != NULL; k = k->next)
            g_ptr_array_add (pieces, g_strdup_printf ("\"%s\":", (char *) k->data));
          g_list_free (pn);
        }
      for (l = names; l != NULL; l = l->next)
        add_schema_pieces (json_object_get_member (o, l->data), pieces, depth + 1);
      g_list_free (names);
      p = json_object_get_member (o, "enum");
      if (p == NULL)
        p = json_object_get_member (o, "const") ? json_object_get_member (o, "const") : NULL;
      if (p != NULL)
        g_ptr_array_add (pieces, json_to_string (p, FALSE));
    }
  else if (JSON_NODE_HOLDS_ARRAY (n))
    {
      JsonArray *a = json_node_get_array (n);
      guint i;

      for (i = 0; i < json_array_get_length (a); i++)
        {
          JsonNode *e = json_array_get_element (a, i);

          if (JSON_NODE_HOLDS_VALUE (e) || JSON_NODE_HOLDS_NULL (e))
            g_ptr_array_add (pieces, json_to_string (e, FALSE));
          else
            add_schema_pieces (e, pieces, depth + 1);
        }
    }
}

static void
test_schema_walks (void)
{
  static const char *const generic[] = {
    "{", "}", "[", "]", "\"", ":", ",", " ", "a", "x", "\\", "n", "-", "0", "12", ".", "5", "e",
    "true", "false", "null", "tr", "ue", "nu", "é", "字", "\"a\":", "\"}", "}]", "[{", "1e3",
  };
  g_autoptr (GPtrArray) cases = load_file ("schema-cases.jsonl");
  g_autofree char *py = g_find_program_in_path ("python3");
  g_autoptr (GString) lines = g_string_new (NULL);
  GRand *rng = g_rand_new_with_seed (11);
  guint i, n_walks = 0;

  for (i = 0; i < cases->len; i++)
    {
      JsonObject *o = json_node_get_object (cases->pdata[i]);
      JsonNode *sn = json_object_get_member (o, "schema");
      g_autoptr (BlnJsonSchema) schema = bln_json_schema_compile (sn, NULL);
      g_autoptr (GPtrArray) pieces = g_ptr_array_new_with_free_func (g_free);
      g_autofree char *stext = json_to_string (sn, FALSE);
      guint k, walk;

      g_assert_nonnull (schema);
      for (k = 0; k < G_N_ELEMENTS (generic); k++)
        g_ptr_array_add (pieces, g_strdup (generic[k]));
      add_schema_pieces (sn, pieces, 0);
      /* the pieces of keys and enum texts, one byte at a time too */
      for (k = 0, walk = pieces->len; k < walk; k++)
        {
          const char *p = pieces->pdata[k];
          gsize m;

          for (m = 1; m < strlen (p); m++)
            g_ptr_array_add (pieces, g_strndup (p, m));
        }
      for (walk = 0; walk < 40; walk++)
        {
          BlnJsonConstraint c;
          g_autoptr (GString) out = g_string_new (NULL);
          g_autoptr (GString) tail = g_string_new (NULL);
          g_autoptr (JsonNode) line = json_node_new (JSON_NODE_OBJECT);
          g_autoptr (JsonObject) lo = json_object_new ();
          int stepn, limit = g_rand_int_range (rng, 0, 60);

          bln_json_constraint_init_schema (&c, schema);
          for (stepn = 0; stepn < limit && !bln_json_constraint_complete (&c); stepn++)
            {
              g_autofree const char **ok = g_new (const char *, pieces->len);
              guint n_ok = 0;

              for (k = 0; k < pieces->len; k++)
                if (bln_json_constraint_accepts (&c, pieces->pdata[k],
                                                 strlen (pieces->pdata[k])))
                  ok[n_ok++] = pieces->pdata[k];
              if (n_ok == 0)
                break;   /* none of these pieces fits (a long enum text): the closing will */
              k = g_rand_int_range (rng, 0, (gint32) n_ok);
              g_assert_true (bln_json_constraint_feed (&c, ok[k], strlen (ok[k])));
              g_string_append (out, ok[k]);
            }
          /* the closing always completes the text, and writing part of it
           * leaves the rest as the closing (what lets the engine steer a
           * reply to its end within the token budget) */
          bln_json_constraint_closing (&c, tail);
          for (k = 1; k < tail->len; k++)
            {
              BlnJsonConstraint part = c;
              g_autoptr (GString) rest = g_string_new (NULL);

              g_assert_true (bln_json_constraint_feed (&part, tail->str, k));
              bln_json_constraint_closing (&part, rest);
              if (!g_str_equal (rest->str, tail->str + k))
                g_error ("schema %s after %s: closing %s, then after %u bytes %s", stext,
                         out->str, tail->str, k, rest->str);
            }
          g_assert_true (bln_json_constraint_feed (&c, tail->str, tail->len));
          g_assert_true (bln_json_constraint_complete (&c));
          g_string_append_len (out, tail->str, (gssize) tail->len);
          g_assert_true (g_utf8_validate (out->str, -1, NULL));
          json_object_set_member (lo, "schema", json_node_copy (sn));
          json_object_set_string_member (lo, "doc", out->str);
          json_node_set_object (line, lo);
          {
            g_autofree char *l = json_to_string (line, FALSE);
            g_string_append_printf (lines, "%s\n", l);
            if (walk < 2 && g_test_verbose ())
              g_test_message ("walk: %s", out->str);
          }
          n_walks++;
        }
    }
  g_rand_free (rng);
  g_assert_cmpuint (n_walks, >, 2000);
  if (py == NULL)
    {
      g_test_skip ("python3 is not installed: the walks were not validated by jsonschema");
      return;
    }
  {
    static const char script[] =
      "import json, sys\n"
      "try:\n"
      "    import jsonschema\n"
      "except ImportError:\n"
      "    print('SKIP'); sys.exit(0)\n"
      "bad = 0; n = 0\n"
      "for line in open(sys.argv[1], encoding='utf-8'):\n"
      "    o = json.loads(line); n += 1\n"
      "    try:\n"
      "        doc = json.loads(o['doc'])\n"
      "        jsonschema.validate(doc, o['schema'], cls=jsonschema.Draft202012Validator)\n"
      "    except Exception as e:\n"
      "        bad += 1\n"
      "        if bad < 10: print('INVALID', o['doc'], json.dumps(o['schema']), str(e)[:200])\n"
      "print('CHECKED', n, 'BAD', bad)\n";
    g_autofree char *tmp = NULL;
    g_autofree char *sout = NULL;
    g_autoptr (GError) error = NULL;
    int fd = g_file_open_tmp ("bln-walks-XXXXXX.jsonl", &tmp, &error);
    const char *argv[] = { py, "-c", script, NULL, NULL };
    int status = 0;

    g_assert_cmpint (fd, >=, 0);
    close (fd);
    g_assert_true (g_file_set_contents (tmp, lines->str, (gssize) lines->len, NULL));
    argv[3] = tmp;
    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &sout,
                                 NULL, &status, &error));
    g_unlink (tmp);
    if (g_str_has_prefix (sout, "SKIP"))
      {
        g_test_skip ("the jsonschema package is missing: the walks were not validated");
        return;
      }
    g_test_message ("%s", sout);
    if (strstr (sout, " BAD 0\n") == NULL)
      g_error ("walk outputs that jsonschema rejects:\n%s", sout);
  }
}

static void
test_schema_refused (void)
{
  static const char *const unsupported[] = {
    "{\"type\":\"integer\",\"minimum\":3}",
    "{\"type\":\"string\",\"pattern\":\"^a\"}",
    "{\"type\":\"string\",\"format\":\"date\"}",
    "{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}",
    "{\"allOf\":[{\"type\":\"string\"}]}",
    "{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{}}]}",
    "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}",
    "{\"type\":\"array\",\"items\":[{\"type\":\"string\"}]}",
    "{\"$ref\":\"http://example.com/s.json\"}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":3}}}",
  };
  static const char *const invalid[] = {
    "false", "[]", "{\"type\":\"text\"}", "{\"enum\":[]}", "{\"type\":\"string\",\"enum\":[1,2]}",
    "{\"type\":\"object\",\"required\":[\"a\"],\"additionalProperties\":false}",
    "{\"$ref\":\"#/$defs/missing\"}",
    "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"c\":{\"$ref\":\"#/$defs/n\"}},"
    "\"required\":[\"c\"]}},\"$ref\":\"#/$defs/n\"}",
    "{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}",
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (unsupported) + G_N_ELEMENTS (invalid); i++)
    {
      gboolean uns = i < G_N_ELEMENTS (unsupported);
      const char *text = uns ? unsupported[i] : invalid[i - G_N_ELEMENTS (unsupported)];
      g_autoptr (JsonNode) n = json_from_string (text, NULL);
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnJsonSchema) s = NULL;

      g_assert_nonnull (n);
      s = bln_json_schema_compile (n, &error);
      if (s != NULL)
        g_error ("%s was compiled", text);
      g_assert_true (g_error_matches (error, BLN_ERROR,
                                      uns ? BLN_ERROR_UNSUPPORTED : BLN_ERROR_INVALID));
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/JsonConstraint/python-cases", test_python_cases);
  g_test_add_func ("/Baleen/JsonConstraint/random-walks", test_random_walks);
  g_test_add_func ("/Baleen/JsonConstraint/limits", test_limits);
  g_test_add_func ("/Baleen/JsonConstraint/schema-cases", test_schema_cases);
  g_test_add_func ("/Baleen/JsonConstraint/schema-walks", test_schema_walks);
  g_test_add_func ("/Baleen/JsonConstraint/schema-refused", test_schema_refused);
  return g_test_run ();
}
