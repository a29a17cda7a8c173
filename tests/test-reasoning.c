/* test-reasoning.c — the <think> splitter, on DeepSeek-R1's own rendering:
 * the R1 template (rendered by transformers, tests/golden/templates) opens the
 * block in the prompt and keeps only the part after </think> of an assistant
 * turn; the splitter must find the same answer, whatever the pieces the text
 * arrives in. */
#include <glib.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "reasoning.h"

static JsonObject *
find_case (GStrv lines, const char *name, JsonNode **keep)
{
  guint i;

  for (i = 0; lines[i] != NULL; i++)
    if (strstr (lines[i], name) != NULL)
      {
        *keep = json_from_string (lines[i], NULL);
        if (g_str_equal (json_object_get_string_member (json_node_get_object (*keep), "name"),
                         name))
          return json_node_get_object (*keep);
        g_clear_pointer (keep, json_node_unref);
      }
  g_error ("no case %s", name);
  return NULL;
}

static void
split_all (const char *text, gboolean inside, gsize chunk, GString *r, GString *c)
{
  g_autoptr (BlnReasoningSplit) rs = bln_reasoning_split_new (inside);
  gsize n = strlen (text), at;

  for (at = 0; at < n; at += chunk)
    bln_reasoning_split_push (rs, text + at, MIN (chunk, n - at), r, c);
  bln_reasoning_split_finish (rs, r, c);
}

static void
test_r1_template (void)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = g_build_filename (dir ? dir : "tests/golden", "templates",
                                            "chat_cases.jsonl", NULL);
  g_autofree char *data = NULL;
  g_auto (GStrv) lines = NULL;
  g_autoptr (JsonNode) k1 = NULL, k2 = NULL, k3 = NULL, k4 = NULL;
  JsonObject *r1, *v3, *qw, *r1nogen;
  const char *rendered, *assistant, *a, *e;
  g_autofree char *answer = NULL;
  gsize chunk;

  g_assert_true (g_file_get_contents (path, &data, NULL, NULL));
  lines = g_strsplit (data, "\n", -1);
  r1 = find_case (lines, "deepseek-r1-distill-qwen/reasoning_in_history/gen", &k1);
  v3 = find_case (lines, "deepseek-v3/reasoning_in_history/gen", &k2);
  qw = find_case (lines, "qwen2.5-instruct/reasoning_in_history/gen", &k3);
  r1nogen = find_case (lines, "deepseek-r1-distill-qwen/reasoning_in_history/nogen", &k4);

  /* only R1's generation prompt leaves the block open */
  g_assert_true (bln_reasoning_prompt_opens_block (json_object_get_string_member (r1, "rendered")));
  g_assert_false (bln_reasoning_prompt_opens_block (json_object_get_string_member (r1nogen,
                                                                                   "rendered")));
  g_assert_false (bln_reasoning_prompt_opens_block (json_object_get_string_member (v3, "rendered")));
  g_assert_false (bln_reasoning_prompt_opens_block (json_object_get_string_member (qw, "rendered")));

  /* the template's answer: what it renders between <｜Assistant｜> and <｜end▁of▁sentence｜> */
  rendered = json_object_get_string_member (r1, "rendered");
  a = strstr (rendered, "<｜Assistant｜>") + strlen ("<｜Assistant｜>");
  e = strstr (a, "<｜end▁of▁sentence｜>");
  answer = g_strndup (a, e - a);
  g_strchug (answer);
  assistant = json_object_get_string_member (
      json_array_get_object_element (json_object_get_array_member (r1, "messages"), 1), "content");
  for (chunk = 1; chunk <= strlen (assistant); chunk++)
    {
      g_autoptr (GString) r = g_string_new (NULL), c = g_string_new (NULL);
      g_autoptr (GString) r2 = g_string_new (NULL), c2 = g_string_new (NULL);
      g_autofree char *whole = NULL;

      /* the model's output with the tag it wrote itself … */
      split_all (assistant, FALSE, chunk, r, c);
      g_assert_cmpstr (c->str, ==, answer);
      whole = g_strconcat ("<think>", r->str, "</think>", NULL);
      g_assert_true (g_str_has_prefix (assistant, whole));
      g_assert_null (strstr (r->str, "think>"));
      /* … and as R1 really streams it, the opening tag being in the prompt */
      split_all (assistant + strlen ("<think>"), TRUE, chunk, r2, c2);
      g_assert_cmpstr (c2->str, ==, answer);
      g_assert_cmpstr (r2->str, ==, r->str);
    }
}

static void
test_edges (void)
{
  g_autoptr (GString) r = g_string_new (NULL), c = g_string_new (NULL);
  g_autoptr (BlnReasoningSplit) rs = bln_reasoning_split_new (FALSE);

  /* no block: content passes at once */
  bln_reasoning_split_push (rs, "Hi <think> there", -1, r, c);
  g_assert_cmpstr (c->str, ==, "Hi <think> there");
  g_assert_cmpstr (r->str, ==, "");
  g_clear_pointer (&rs, bln_reasoning_split_free);

  /* a half closing tag is held back, then turns out to be text */
  g_string_truncate (c, 0);
  rs = bln_reasoning_split_new (TRUE);
  bln_reasoning_split_push (rs, "a</thi", -1, r, c);
  g_assert_cmpstr (r->str, ==, "a");
  g_assert_true (bln_reasoning_split_in_reasoning (rs));
  bln_reasoning_split_push (rs, "s", -1, r, c);
  g_assert_cmpstr (r->str, ==, "a</this");
  /* unclosed at the end: all thinking */
  bln_reasoning_split_push (rs, "</t", -1, r, c);
  bln_reasoning_split_finish (rs, r, c);
  g_assert_cmpstr (r->str, ==, "a</this</t");
  g_assert_cmpstr (c->str, ==, "");
}

/* Random texts of tags, pieces of tags and words: the split never depends
 * on how the text was cut, and nothing but tags and the gap after the
 * closing one is lost. */
static void
test_random_pieces (void)
{
  static const char *const frags[] = { "<think>", "</think>", "<", "</", "</thi", "think>", "a",
                                       " ", "\n", "é", "<th", ">" };
  GRand *rng = g_rand_new_with_seed (5);
  int round;

  for (round = 0; round < 3000; round++)
    {
      g_autoptr (GString) text = g_string_new (NULL);
      g_autoptr (GString) r1 = g_string_new (NULL), c1 = g_string_new (NULL);
      g_autoptr (GString) r2 = g_string_new (NULL), c2 = g_string_new (NULL);
      gboolean inside = round % 2;
      int k, n = g_rand_int_range (rng, 1, 12);

      for (k = 0; k < n; k++)
        g_string_append (text, frags[g_rand_int_range (rng, 0, G_N_ELEMENTS (frags))]);
      split_all (text->str, inside, text->len, r1, c1);
      split_all (text->str, inside, (gsize) g_rand_int_range (rng, 1, 6), r2, c2);
      g_assert_cmpstr (r1->str, ==, r2->str);
      g_assert_cmpstr (c1->str, ==, c2->str);
      g_assert_cmpuint (r1->len + c1->len, <=, text->len);
      /* the answer is an exact tail of the text */
      g_assert_true (g_str_has_suffix (text->str, c1->str));
    }
  g_rand_free (rng);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Reasoning/r1-template", test_r1_template);
  g_test_add_func ("/Baleen/Reasoning/edges", test_edges);
  g_test_add_func ("/Baleen/Reasoning/random-pieces", test_random_pieces);
  return g_test_run ();
}
