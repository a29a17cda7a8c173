/* test-rules.c — the rule engine against references: Aho-Corasick word
 * matching against a naive Python substring search over a large random word
 * list (Chinese and English), the case- and width-insensitive modes against
 * Python's str.lower() and NFKC, and PCRE2 regexes against Python's `re`. */
#include <glib.h>
#include <string.h>

#include "bln-error.h"
#include "rules.h"
#include "safety-test-util.h"

/* Python: every occurrence (overlapping) of every word, as "start end index"
 * lines in byte offsets, sorted. argv: words file, text file, mode. */
static const char naive_script[] =
  "import sys, unicodedata\n"
  "words = open(sys.argv[1], encoding='utf-8').read().split('\\n')[:-1]\n"
  "text = open(sys.argv[2], encoding='utf-8').read()\n"
  "fold = sys.argv[3] == 'fold'\n"
  "def norm(s):\n"
  "    n = unicodedata.normalize('NFKC', s).lower() if fold else s\n"
  "    assert len(n) == len(s), 'reference folding must keep lengths'\n"
  "    return n\n"
  "t = norm(text)\n"
  "off = [0]\n"
  "for ch in text: off.append(off[-1] + len(ch.encode('utf-8')))\n"
  "out = []\n"
  "for i, w in enumerate(words):\n"
  "    w = norm(w)\n"
  "    p = t.find(w)\n"
  "    while p >= 0:\n"
  "        out.append((off[p], off[p + len(w)], i))\n"
  "        p = t.find(w, p + 1)\n"
  "out.sort()\n"
  "sys.stdout.write(''.join('%d %d %d\\n' % m for m in out))\n";

static gunichar
random_char (GRand *r, gboolean fold_forms)
{
  int kind = g_rand_int_range (r, 0, fold_forms ? 5 : 2);

  switch (kind)
    {
    case 0:
      return 'a' + g_rand_int_range (r, 0, 8);     /* small alphabets: many matches */
    case 1:
      return 0x4E00 + g_rand_int_range (r, 0, 12); /* CJK ideographs */
    case 2:
      return 'A' + g_rand_int_range (r, 0, 8);     /* upper case */
    case 3:
      return 0xFF41 + g_rand_int_range (r, 0, 8);  /* full-width a..h */
    default:
      return 0xFF71 + g_rand_int_range (r, 0, 8);  /* half-width katakana ア.. */
    }
}

static void
random_word (GRand *r, GString *s, gboolean fold_forms)
{
  int len = g_rand_int_range (r, 3, 9);

  for (int i = 0; i < len; i++)
    g_string_append_unichar (s, random_char (r, fold_forms));
}

static void
check_words_against_python (guint n_words, guint text_chars, gboolean fold)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *wpath = g_build_filename (dir, "words.txt", NULL);
  g_autofree char *tpath = g_build_filename (dir, "text.txt", NULL);
  g_autoptr (GRand) r = g_rand_new_with_seed (fold ? 7 : 42);
  g_autoptr (GString) words = g_string_new (NULL);
  g_autoptr (GString) text = g_string_new (NULL);
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GArray) m = NULL;
  g_autoptr (GString) got = g_string_new (NULL);
  g_autofree char *want = NULL;
  g_autoptr (GError) error = NULL;
  const char *args[] = { wpath, tpath, fold ? "fold" : "exact", NULL };
  gint64 t0, t1, t2;

  for (guint i = 0; i < n_words; i++)
    {
      GString *w = g_string_new (NULL);
      random_word (r, w, fold);
      g_string_append (words, w->str);
      g_string_append_c (words, '\n');
      g_ptr_array_add (list, g_string_free (w, FALSE));
    }
  /* The text: words from the list (so matches certainly occur), with random
   * characters between them. */
  while (g_utf8_strlen (text->str, -1) < (glong) text_chars)
    {
      if (g_rand_boolean (r))
        g_string_append (text, g_ptr_array_index (list, g_rand_int_range (r, 0, n_words)));
      for (int k = g_rand_int_range (r, 0, 4); k > 0; k--)
        g_string_append_unichar (text, random_char (r, fold));
    }
  g_assert_true (g_file_set_contents (wpath, words->str, words->len, NULL));
  g_assert_true (g_file_set_contents (tpath, text->str, text->len, NULL));

  t0 = g_get_monotonic_time ();
  for (guint i = 0; i < n_words; i++)
    {
      BlnRule rule = { 0 };
      rule.id = i + 1;
      rule.kind = BLN_RULE_WORD;
      rule.pattern = g_ptr_array_index (list, i);
      rule.action = BLN_RULE_LOG;
      rule.scope = BLN_RULE_BOTH;
      rule.nocase = rule.nowidth = fold;
      g_assert_true (bln_rule_set_add (set, &rule, &error));
    }
  t1 = g_get_monotonic_time ();
  m = bln_rule_set_scan (set, text->str, text->len);
  t2 = g_get_monotonic_time ();
  g_test_message ("%u words added in %.0f ms; %u chars scanned (first scan builds the "
                  "automaton) in %.0f ms, %u matches", n_words, (t1 - t0) / 1e3, text_chars,
                  (t2 - t1) / 1e3, m->len);
  for (guint i = 0; i < m->len; i++)
    {
      BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, i);
      g_string_append_printf (got, "%zu %zu %u\n", (size_t) x->start, (size_t) x->end,
                              x->rule_index);
    }
  want = run_python (naive_script, args);
  if (want)
    {
      g_assert_cmpuint (m->len, >, 100);
      g_assert_cmpstr (got->str, ==, want);
    }
  rm_rf (dir);
}

static void
test_words_100k (void)
{
  check_words_against_python (100000, 4000, FALSE);
}

static void
test_words_folded (void)
{
  check_words_against_python (20000, 4000, TRUE);
}

/* 100k words stay fast: one pass over 1 MB of text. */
static void
test_words_speed (void)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (3);
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GString) text = g_string_new (NULL);
  g_autoptr (GArray) m = NULL;
  gint64 t0;
  double ms;

  for (guint i = 0; i < 100000; i++)
    {
      g_autoptr (GString) w = g_string_new (NULL);
      BlnRule rule = { 0 };
      random_word (r, w, FALSE);
      g_string_append (w, "zq"); /* rare in the text below */
      rule.id = i + 1;
      rule.pattern = w->str;
      rule.scope = BLN_RULE_BOTH;
      g_assert_true (bln_rule_set_add (set, &rule, NULL));
    }
  while (text->len < 1000000)
    g_string_append (text, "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。");
  m = bln_rule_set_scan (set, "", 0); /* builds the automaton */
  g_array_unref (g_steal_pointer (&m));
  t0 = g_get_monotonic_time ();
  m = bln_rule_set_scan (set, text->str, text->len);
  ms = (g_get_monotonic_time () - t0) / 1e3;
  g_test_message ("1 MB scanned against 100k words in %.1f ms", ms);
  g_assert_cmpfloat (ms, <, 5000.0);
}

/* PCRE2 against Python's re: same patterns, same texts, same matches. */
static void
test_regex_vs_python (void)
{
  static const struct { const char *pattern; gboolean nocase; } pats[] = {
    { "b[a-z]+d", FALSE },
    { "colou?r", TRUE },
    { "\\d{3}-\\d{4}", FALSE },
    { "\\bcat\\b", FALSE },
    { "(?:foo|bar)+baz", FALSE },
    { "[^ ]+ing\\b", FALSE },
    { "\\w+@\\w+\\.com", FALSE },
    { "坏.{0,2}词", FALSE },
    { "x*", FALSE },
    { "(ab)+?c", TRUE },
    { "\\s{2,}", FALSE },
    { "[A-Z][a-z]+", FALSE },
    { "密码[:：]\\s*\\S+", FALSE },
  };
  static const char *texts[] = {
    "bad bold BOLD band b d bread",
    "Colour color COLOR colr colouur",
    "call 555-1234 or 5551234 or 12-34567 or 999-99999",
    "cat concat cat's category the cat.",
    "foobarbaz barbaz foobaz fobaz",
    "singing and dancing, ring bring ing",
    "mail me: a@b.com, x_1@host.com, @c.com",
    "坏词 坏了的词 坏的了的词 好词",
    "xx yxxxz x",
    "ABABC abc ababababc ac",
    "one  two   three \t four",
    "Hello World and Ünïcode Names Mc",
    "密码: hunter2 密码：秘密123 密码",
  };
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GString) got = g_string_new (NULL);
  g_autoptr (GString) spec = g_string_new (NULL);
  g_autofree char *want = NULL;
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "spec.txt", NULL);
  const char *args[] = { path, NULL };
  g_autoptr (GError) error = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (pats); i++)
    {
      BlnRule rule = { 0 };
      rule.id = i;
      rule.kind = BLN_RULE_REGEX;
      rule.pattern = (char *) pats[i].pattern;
      rule.nocase = pats[i].nocase;
      rule.scope = BLN_RULE_BOTH;
      g_assert_true (bln_rule_set_add (set, &rule, &error));
      g_assert_no_error (error);
      g_string_append_printf (spec, "%d\t%s\n", pats[i].nocase, pats[i].pattern);
    }
  g_string_append (spec, "--\n");
  for (guint t = 0; t < G_N_ELEMENTS (texts); t++)
    {
      g_autoptr (GArray) m = bln_rule_set_scan (set, texts[t], -1);
      g_string_append_printf (spec, "%s\n", texts[t]);
      for (guint i = 0; i < m->len; i++)
        {
          BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, i);
          g_string_append_printf (got, "%u %zu %zu %u\n", t, (size_t) x->start,
                                  (size_t) x->end, x->rule_index);
        }
    }
  g_assert_true (g_file_set_contents (path, spec->str, spec->len, NULL));
  want = run_python (
    "import re, sys\n"
    "pats, texts = open(sys.argv[1], encoding='utf-8').read().split('--\\n')\n"
    "pats = [l.split('\\t', 1) for l in pats.split('\\n') if l]\n"
    "texts = texts.split('\\n')[:-1]\n"
    "out = []\n"
    "for t, text in enumerate(texts):\n"
    "    b = lambda i: len(text[:i].encode('utf-8'))\n"
    "    for i, (nc, p) in enumerate(pats):\n"
    "        for m in re.finditer(p, text, re.IGNORECASE if nc == '1' else 0):\n"
    "            if m.end() > m.start():\n"
    "                out.append((t, b(m.start()), b(m.end()), i))\n"
    "out.sort()\n"
    "sys.stdout.write(''.join('%d %d %d %d\\n' % x for x in out))\n", args);
  if (want)
    g_assert_cmpstr (got->str, ==, want);
  g_assert_cmpuint (got->len, >, 200);
  rm_rf (dir);
}

static void
test_mask_and_actions (void)
{
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GArray) m = NULL;
  g_autofree char *masked = NULL;
  g_autofree char *json = NULL;
  g_autoptr (GError) error = NULL;
  BlnRule a = { 1, BLN_RULE_WORD, (char *) "秘密", BLN_RULE_MASK, BLN_RULE_BOTH, FALSE, FALSE,
                TRUE, NULL, 0 };
  BlnRule b = { 2, BLN_RULE_WORD, (char *) "SECRET", BLN_RULE_MASK, BLN_RULE_BOTH, TRUE, TRUE,
                TRUE, NULL, 0 };
  BlnRule c = { 3, BLN_RULE_REGEX, (char *) "(", BLN_RULE_BLOCK, BLN_RULE_BOTH, FALSE, FALSE,
                TRUE, NULL, 0 };
  BlnRule d = { 4, BLN_RULE_WORD, (char *) "", BLN_RULE_BLOCK, BLN_RULE_BOTH, FALSE, FALSE,
                TRUE, NULL, 0 };

  g_assert_true (bln_rule_set_add (set, &a, &error));
  g_assert_true (bln_rule_set_add (set, &b, &error));
  g_assert_false (bln_rule_set_add (set, &c, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_rule_set_add (set, &d, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  /* full-width ＳＥＣＲＥＴ and mixed case are the same word here */
  m = bln_rule_set_scan (set, "my 秘密 is ＳＥＣＲＥＴ or Secret.", -1);
  g_assert_cmpuint (m->len, ==, 3);
  masked = bln_rule_mask_text ("my 秘密 is ＳＥＣＲＥＴ or Secret.", -1, m);
  g_assert_cmpstr (masked, ==, "my ** is ****** or ******.");
  json = bln_rule_matches_to_json (m);
  g_assert_nonnull (strstr (json, "\"rule\":1,\"action\":\"mask\",\"start\":3,\"end\":9"));

  /* invalid UTF-8 ends the scan instead of crashing */
  g_array_unref (g_steal_pointer (&m));
  m = bln_rule_set_scan (set, "秘密\xff秘密", -1);
  g_assert_cmpuint (m->len, ==, 1);
}

static void
test_storage (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "r.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) list = NULL;
  g_autoptr (BlnRuleSet) in = NULL;
  g_autoptr (BlnRuleSet) out = NULL;
  const char *sqlish = "x'); DROP TABLE rules; --";
  BlnRule r = { 0 };
  gint64 id1, id2, id3;
  BlnDb *db = bln_db_open (path, &error);

  g_assert_no_error (error);
  r.kind = BLN_RULE_WORD;
  r.pattern = (char *) sqlish;
  r.label = (char *) "label \"with\" quotes; DELETE FROM rules";
  r.action = BLN_RULE_BLOCK;
  r.scope = BLN_RULE_INPUT;
  r.enabled = TRUE;
  id1 = bln_rules_add (db, &r, &error);
  g_assert_no_error (error);
  r.kind = BLN_RULE_REGEX;
  r.pattern = (char *) "[0-9]+'";
  r.scope = BLN_RULE_OUTPUT;
  r.action = BLN_RULE_MASK;
  id2 = bln_rules_add (db, &r, &error);
  r.enabled = FALSE;
  r.scope = BLN_RULE_BOTH;
  id3 = bln_rules_add (db, &r, &error);
  g_assert_no_error (error);
  g_assert_cmpint (id1, >, 0);
  g_assert_cmpint (id2, >, id1);
  r.pattern = (char *) "(unclosed";
  g_assert_cmpint (bln_rules_add (db, &r, &error), ==, 0);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  list = bln_rules_list (db, &error);
  g_assert_cmpuint (list->len, ==, 3);
  g_assert_cmpstr (((BlnRule *) list->pdata[0])->pattern, ==, sqlish);
  g_assert_cmpstr (((BlnRule *) list->pdata[0])->label, ==,
                   "label \"with\" quotes; DELETE FROM rules");
  g_assert_false (((BlnRule *) list->pdata[2])->enabled);

  in = bln_rule_set_load (db, BLN_RULE_INPUT, &error);
  out = bln_rule_set_load (db, BLN_RULE_OUTPUT, &error);
  g_assert_cmpuint (bln_rule_set_size (in), ==, 1);
  g_assert_cmpuint (bln_rule_set_size (out), ==, 1);
  {
    g_autoptr (GArray) m = bln_rule_set_scan (in, "a x'); DROP TABLE rules; -- b", -1);
    g_assert_cmpuint (m->len, ==, 1);
    g_assert_cmpint (g_array_index (m, BlnRuleMatch, 0).rule_id, ==, id1);
  }

  g_assert_true (bln_rules_remove (db, id1, &error));
  g_assert_false (bln_rules_remove (db, id1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_ptr_array_unref (list);
  list = bln_rules_list (db, &error);
  g_assert_cmpuint (list->len, ==, 2);
  (void) id3;
  bln_db_close (db);
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Rules/aho-corasick-100k-vs-python", test_words_100k);
  g_test_add_func ("/Baleen/Rules/case-width-folded-vs-python", test_words_folded);
  g_test_add_func ("/Baleen/Rules/speed", test_words_speed);
  g_test_add_func ("/Baleen/Rules/regex-vs-python-re", test_regex_vs_python);
  g_test_add_func ("/Baleen/Rules/mask-and-actions", test_mask_and_actions);
  g_test_add_func ("/Baleen/Rules/storage", test_storage);
  return g_test_run ();
}
