/* rules.c — rule storage, the Aho-Corasick word matcher and PCRE2 regexes. */
#include "rules.h"

#include <pcre2.h>
#include <string.h>

#include "bln-error.h"

/* ---- names -------------------------------------------------------------- */

static const char *const kind_names[] = { "word", "regex" };
static const char *const action_names[] = { "block", "mask", "log" };
static const char *const scope_names[] = { NULL, "input", "output", "both" };

const char *
bln_rule_kind_to_string (BlnRuleKind kind)
{
  return (guint) kind < G_N_ELEMENTS (kind_names) ? kind_names[kind] : "?";
}

const char *
bln_rule_action_to_string (BlnRuleAction action)
{
  return (guint) action < G_N_ELEMENTS (action_names) ? action_names[action] : "?";
}

const char *
bln_rule_scope_to_string (BlnRuleScope scope)
{
  return scope >= 1 && scope <= 3 ? scope_names[scope] : "?";
}

static int
name_index (const char *const *names, guint n, const char *s)
{
  for (guint i = 0; s && i < n; i++)
    if (names[i] && strcmp (names[i], s) == 0)
      return (int) i;
  return -1;
}

gboolean
bln_rule_kind_from_string (const char *s, BlnRuleKind *out)
{
  int i = name_index (kind_names, G_N_ELEMENTS (kind_names), s);
  if (i >= 0)
    *out = (BlnRuleKind) i;
  return i >= 0;
}

gboolean
bln_rule_action_from_string (const char *s, BlnRuleAction *out)
{
  int i = name_index (action_names, G_N_ELEMENTS (action_names), s);
  if (i >= 0)
    *out = (BlnRuleAction) i;
  return i >= 0;
}

gboolean
bln_rule_scope_from_string (const char *s, BlnRuleScope *out)
{
  int i = name_index (scope_names, G_N_ELEMENTS (scope_names), s);
  if (i >= 0)
    *out = (BlnRuleScope) i;
  return i >= 0;
}

void
bln_rule_free (BlnRule *rule)
{
  if (!rule)
    return;
  g_free (rule->pattern);
  g_free (rule->label);
  g_free (rule);
}

static BlnRule *
rule_copy (const BlnRule *r)
{
  BlnRule *c = g_new (BlnRule, 1);

  *c = *r;
  c->pattern = g_strdup (r->pattern);
  c->label = g_strdup (r->label ? r->label : "");
  return c;
}

/* ---- folding ------------------------------------------------------------ */

/* Half-width katakana U+FF61..U+FF9D and the full-width forms they stand for.
 * The sound marks U+FF9E/U+FF9F are left alone: composing them would fold two
 * code points into one. */
static const guint16 halfwidth_kana[] = {
  0x3002, 0x300C, 0x300D, 0x3001, 0x30FB, 0x30F2, 0x30A1, 0x30A3, 0x30A5, 0x30A7, 0x30A9,
  0x30E3, 0x30E5, 0x30E7, 0x30C3, 0x30FC, 0x30A2, 0x30A4, 0x30A6, 0x30A8, 0x30AA, 0x30AB,
  0x30AD, 0x30AF, 0x30B1, 0x30B3, 0x30B5, 0x30B7, 0x30B9, 0x30BB, 0x30BD, 0x30BF, 0x30C1,
  0x30C4, 0x30C6, 0x30C8, 0x30CA, 0x30CB, 0x30CC, 0x30CD, 0x30CE, 0x30CF, 0x30D2, 0x30D5,
  0x30D8, 0x30DB, 0x30DE, 0x30DF, 0x30E0, 0x30E1, 0x30E2, 0x30E4, 0x30E6, 0x30E8, 0x30E9,
  0x30EA, 0x30EB, 0x30EC, 0x30ED, 0x30EF, 0x30F3,
};

gunichar
bln_rule_fold_char (gunichar c, gboolean nocase, gboolean nowidth)
{
  if (nowidth)
    {
      if (c >= 0xFF01 && c <= 0xFF5E)       /* full-width ASCII */
        c -= 0xFEE0;
      else if (c == 0x3000)                 /* ideographic space */
        c = 0x20;
      else if (c >= 0xFF61 && c <= 0xFF9D)
        c = halfwidth_kana[c - 0xFF61];
    }
  if (nocase)
    c = g_unichar_tolower (c);
  return c;
}

/* Decodes @text into code points (stopping at the first invalid sequence) and
 * records the byte offset of each, plus the end offset. */
static void
decode (const char *text, gsize len, GArray *cps, GArray *offs)
{
  const char *p = text, *end = text + len;

  while (p < end)
    {
      gunichar c = g_utf8_get_char_validated (p, end - p);
      gsize off = p - text;
      if (c == (gunichar) -1 || c == (gunichar) -2)
        break;
      g_array_append_val (cps, c);
      g_array_append_val (offs, off);
      p = g_utf8_next_char (p);
    }
  {
    gsize off = p - text;
    g_array_append_val (offs, off);
  }
}

/* ---- Aho-Corasick ------------------------------------------------------- */

/* The goto function lives in one open-addressing table keyed by (state,
 * code point): nodes stay small and a 100k-word list costs tens of MB, not
 * the gigabytes of a dense 0x110000-wide table. */
typedef struct {
  guint64 *keys;   /* 0 = empty, else (state << 21 | cp) + 1 */
  guint32 *vals;
  gsize mask;
  gsize used;
} EdgeTable;

static inline gsize
edge_hash (guint64 k)
{
  k ^= k >> 31;
  k *= 0x9E3779B97F4A7C15ULL;
  k ^= k >> 29;
  return (gsize) k;
}

static void
edges_init (EdgeTable *t, gsize cap)
{
  t->mask = cap - 1;
  t->used = 0;
  t->keys = g_new0 (guint64, cap);
  t->vals = g_new (guint32, cap);
}

static void
edges_clear (EdgeTable *t)
{
  g_clear_pointer (&t->keys, g_free);
  g_clear_pointer (&t->vals, g_free);
}

static void edges_put (EdgeTable *t, guint32 state, gunichar c, guint32 child);

static void
edges_grow (EdgeTable *t)
{
  EdgeTable n;

  edges_init (&n, (t->mask + 1) * 2);
  for (gsize i = 0; i <= t->mask; i++)
    if (t->keys[i])
      {
        guint64 k = t->keys[i] - 1;
        edges_put (&n, (guint32) (k >> 21), (gunichar) (k & 0x1FFFFF), t->vals[i]);
      }
  edges_clear (t);
  *t = n;
}

static void
edges_put (EdgeTable *t, guint32 state, gunichar c, guint32 child)
{
  guint64 k = (((guint64) state << 21) | c) + 1;
  gsize i;

  if ((t->used + 1) * 4 > (t->mask + 1) * 3)
    edges_grow (t);
  for (i = edge_hash (k) & t->mask; t->keys[i] && t->keys[i] != k; i = (i + 1) & t->mask)
    ;
  if (!t->keys[i])
    t->used++;
  t->keys[i] = k;
  t->vals[i] = child;
}

/* The child of @state on @c, or 0 (the root is never anyone's child). */
static inline guint32
edges_get (const EdgeTable *t, guint32 state, gunichar c)
{
  guint64 k = (((guint64) state << 21) | c) + 1;

  for (gsize i = edge_hash (k) & t->mask; t->keys[i]; i = (i + 1) & t->mask)
    if (t->keys[i] == k)
      return t->vals[i];
  return 0;
}

typedef struct {
  guint32 first_child, next_sibling; /* build-time tree links, for the breadth-first pass */
  guint32 fail;                      /* longest proper suffix that is also a trie path */
  guint32 dict;                      /* nearest node on the fail chain ending a word; 0 none */
  guint32 depth;                     /* code points from the root */
  gunichar cp;                       /* label of the edge from the parent */
  gint32 word;                       /* index into Automaton.words, -1 when none ends here */
  guint32 acts;                      /* bit (1 << action) for each rule with a longer word
                                      * that starts with this node's path */
} AcNode;

typedef struct {
  GArray *rules;  /* guint rule indices sharing this folded word */
} AcWord;

typedef struct {
  gboolean nocase, nowidth;
  GArray *nodes;    /* AcNode; node 0 is the root */
  EdgeTable edges;
  GArray *words;    /* AcWord */
  GHashTable *word_index; /* folded word -> index + 1 */
  gboolean built;
} Automaton;

static void
automaton_init (Automaton *a, gboolean nocase, gboolean nowidth)
{
  AcNode root = { 0, 0, 0, 0, 0, 0, -1, 0 };

  a->nocase = nocase;
  a->nowidth = nowidth;
  a->nodes = g_array_new (FALSE, FALSE, sizeof (AcNode));
  g_array_append_val (a->nodes, root);
  edges_init (&a->edges, 1024);
  a->words = g_array_new (FALSE, FALSE, sizeof (AcWord));
  a->word_index = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  a->built = TRUE;
}

static void
automaton_clear (Automaton *a)
{
  if (!a->nodes)
    return;
  for (guint i = 0; i < a->words->len; i++)
    g_array_unref (g_array_index (a->words, AcWord, i).rules);
  g_array_unref (a->words);
  g_array_unref (a->nodes);
  g_hash_table_unref (a->word_index);
  edges_clear (&a->edges);
  memset (a, 0, sizeof *a);
}

/* Adds @word (valid, non-empty UTF-8) for rule @rule_index, whose action is
 * @action. Returns its length in code points. */
static gsize
automaton_add (Automaton *a, const char *word, guint rule_index, BlnRuleAction action)
{
  GString *folded = g_string_new (NULL);
  guint32 state = 0;
  gsize n = 0;
  gpointer idx;

  for (const char *p = word; *p; p = g_utf8_next_char (p), n++)
    {
      gunichar c = bln_rule_fold_char (g_utf8_get_char (p), a->nocase, a->nowidth);
      guint32 next = edges_get (&a->edges, state, c);

      g_string_append_unichar (folded, c);
      if (!next)
        {
          AcNode node = { 0, 0, 0, 0, 0, 0, -1, 0 };
          AcNode *parent = &g_array_index (a->nodes, AcNode, state);

          next = a->nodes->len;
          node.depth = parent->depth + 1;
          node.cp = c;
          node.next_sibling = parent->first_child;
          parent->first_child = next;
          g_array_append_val (a->nodes, node);
          edges_put (&a->edges, state, c, next);
        }
      /* @state is a proper prefix of @word: a match of this rule can be under
       * way there (bln_rule_set_open_start) */
      if (state != 0)
        g_array_index (a->nodes, AcNode, state).acts |= 1u << action;
      state = next;
    }
  idx = g_hash_table_lookup (a->word_index, folded->str);
  if (!idx)
    {
      AcWord w = { g_array_new (FALSE, FALSE, sizeof (guint)) };
      g_array_append_val (a->words, w);
      idx = GUINT_TO_POINTER (a->words->len);
      g_hash_table_insert (a->word_index, g_string_free (folded, FALSE), idx);
      g_array_index (a->nodes, AcNode, state).word = (gint32) a->words->len - 1;
    }
  else
    g_string_free (folded, TRUE);
  g_array_append_val (g_array_index (a->words, AcWord, GPOINTER_TO_UINT (idx) - 1).rules,
                      rule_index);
  a->built = FALSE;
  return n;
}

/* Computes the fail and dictionary links breadth first, so that a node's
 * fail target (always shallower) is final before the node is reached. */
static void
automaton_build (Automaton *a)
{
  AcNode *nodes = (AcNode *) (void *) a->nodes->data;
  guint32 *queue = g_new (guint32, a->nodes->len);
  gsize head = 0, tail = 0;

  for (guint32 v = nodes[0].first_child; v; v = nodes[v].next_sibling)
    {
      nodes[v].fail = 0;
      nodes[v].dict = 0;
      queue[tail++] = v;
    }
  while (head < tail)
    {
      guint32 u = queue[head++];
      for (guint32 v = nodes[u].first_child; v; v = nodes[v].next_sibling)
        {
          guint32 f = nodes[u].fail;
          guint32 t;

          while ((t = edges_get (&a->edges, f, nodes[v].cp)) == 0 && f != 0)
            f = nodes[f].fail;
          nodes[v].fail = t;
          nodes[v].dict = nodes[t].word >= 0 ? t : nodes[t].dict;
          queue[tail++] = v;
        }
    }
  g_free (queue);
  a->built = TRUE;
}

/* Reports every word occurrence in the decoded text. */
static void
automaton_scan (Automaton *a, const GArray *cps, const GArray *offs, GPtrArray *rule_meta,
                GArray *out)
{
  const AcNode *nodes;
  guint32 state = 0;

  if (a->nodes->len <= 1)
    return;
  if (!a->built)
    automaton_build (a);
  nodes = (const AcNode *) (const void *) a->nodes->data;
  for (guint i = 0; i < cps->len; i++)
    {
      gunichar c = bln_rule_fold_char (g_array_index (cps, gunichar, i), a->nocase, a->nowidth);
      guint32 t;

      while ((t = edges_get (&a->edges, state, c)) == 0 && state != 0)
        state = nodes[state].fail;
      state = t;
      for (guint32 s = nodes[state].word >= 0 ? state : nodes[state].dict; s; s = nodes[s].dict)
        {
          const AcWord *w = &g_array_index (a->words, AcWord, nodes[s].word);
          for (guint r = 0; r < w->rules->len; r++)
            {
              BlnRuleMatch m;
              guint ri = g_array_index (w->rules, guint, r);
              const BlnRule *rule = g_ptr_array_index (rule_meta, ri);

              m.rule_id = rule->id;
              m.rule_index = ri;
              m.action = rule->action;
              m.start = g_array_index (offs, gsize, i + 1 - nodes[s].depth);
              m.end = g_array_index (offs, gsize, i + 1);
              g_array_append_val (out, m);
            }
        }
    }
}

/* The start (an index into @cps) of the longest suffix of the decoded text
 * that is a proper prefix of a word of a rule whose action is in @actions;
 * cps->len when there is none. */
static guint
automaton_open_start (Automaton *a, const GArray *cps, guint actions)
{
  const AcNode *nodes;
  guint32 state = 0;

  if (a->nodes->len <= 1)
    return cps->len;
  if (!a->built)
    automaton_build (a);
  nodes = (const AcNode *) (const void *) a->nodes->data;
  for (guint i = 0; i < cps->len; i++)
    {
      gunichar c = bln_rule_fold_char (g_array_index (cps, gunichar, i), a->nocase, a->nowidth);
      guint32 t;

      while ((t = edges_get (&a->edges, state, c)) == 0 && state != 0)
        state = nodes[state].fail;
      state = t;
    }
  /* The fail chain lists every suffix that is a trie path, longest first. */
  for (; state != 0; state = nodes[state].fail)
    if (nodes[state].acts & actions)
      return cps->len - nodes[state].depth;
  return cps->len;
}

/* ---- rule sets ---------------------------------------------------------- */

typedef struct {
  guint rule_index;
  pcre2_code *code;
} Regex;

struct _BlnRuleSet {
  GPtrArray *rules;       /* BlnRule *, in the order added */
  Automaton ac[4];        /* indexed by nocase | nowidth << 1; nodes NULL until used */
  GArray *regexes;        /* Regex */
  gsize max_word_chars;
  pcre2_match_context *mctx;
};

BlnRuleSet *
bln_rule_set_new (void)
{
  BlnRuleSet *set = g_new0 (BlnRuleSet, 1);

  set->rules = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_rule_free);
  set->regexes = g_array_new (FALSE, FALSE, sizeof (Regex));
  set->mctx = pcre2_match_context_create (NULL);
  /* Bound the work a hostile pattern/text pair can cause. */
  pcre2_set_match_limit (set->mctx, 1000000);
  pcre2_set_depth_limit (set->mctx, 10000);
  return set;
}

void
bln_rule_set_free (BlnRuleSet *set)
{
  if (!set)
    return;
  for (guint i = 0; i < 4; i++)
    automaton_clear (&set->ac[i]);
  for (guint i = 0; i < set->regexes->len; i++)
    pcre2_code_free (g_array_index (set->regexes, Regex, i).code);
  g_array_unref (set->regexes);
  g_ptr_array_unref (set->rules);
  pcre2_match_context_free (set->mctx);
  g_free (set);
}

static pcre2_code *
compile_regex (const BlnRule *rule, GError **error)
{
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  /* \C (one code unit) could match half a character: refused, as Python's re
   * has no such escape either */
  guint32 opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C |
                 (rule->nocase ? PCRE2_CASELESS : 0);
  pcre2_code *code = pcre2_compile ((PCRE2_SPTR) rule->pattern, PCRE2_ZERO_TERMINATED, opts,
                                    &errcode, &erroff, NULL);

  if (!code)
    {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message (errcode, msg, sizeof msg);
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "regular expression '%s' does not compile at offset %zu: %s", rule->pattern,
                   (size_t) erroff, (const char *) msg);
      return NULL;
    }
  pcre2_jit_compile (code, PCRE2_JIT_COMPLETE); /* optional speed-up; failure is fine */
  return code;
}

static gboolean
validate_rule (const BlnRule *rule, GError **error)
{
  if (!rule->pattern || !*rule->pattern || !g_utf8_validate (rule->pattern, -1, NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "a rule needs a non-empty pattern in valid UTF-8");
      return FALSE;
    }
  if ((guint) rule->kind > BLN_RULE_REGEX || (guint) rule->action > BLN_RULE_LOG ||
      rule->scope < BLN_RULE_INPUT || rule->scope > BLN_RULE_BOTH)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "a rule has an unknown kind, action "
                   "or scope");
      return FALSE;
    }
  if (rule->label && !g_utf8_validate (rule->label, -1, NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "a rule label must be valid UTF-8");
      return FALSE;
    }
  return TRUE;
}

gboolean
bln_rule_set_add (BlnRuleSet *set, const BlnRule *rule, GError **error)
{
  guint index = set->rules->len;

  g_return_val_if_fail (set != NULL && rule != NULL, FALSE);
  if (!validate_rule (rule, error))
    return FALSE;
  if (rule->kind == BLN_RULE_REGEX)
    {
      Regex re = { index, compile_regex (rule, error) };
      if (!re.code)
        return FALSE;
      g_array_append_val (set->regexes, re);
    }
  else
    {
      Automaton *a = &set->ac[(rule->nocase ? 1 : 0) | (rule->nowidth ? 2 : 0)];
      gsize n;
      if (!a->nodes)
        automaton_init (a, rule->nocase, rule->nowidth);
      n = automaton_add (a, rule->pattern, index, rule->action);
      set->max_word_chars = MAX (set->max_word_chars, n);
    }
  g_ptr_array_add (set->rules, rule_copy (rule));
  return TRUE;
}

guint
bln_rule_set_size (BlnRuleSet *set)
{
  return set->rules->len;
}

const BlnRule *
bln_rule_set_get_rule (BlnRuleSet *set, guint index)
{
  g_return_val_if_fail (index < set->rules->len, NULL);
  return g_ptr_array_index (set->rules, index);
}

gsize
bln_rule_set_max_word_chars (BlnRuleSet *set)
{
  return set->max_word_chars;
}

gboolean
bln_rule_set_has_regex (BlnRuleSet *set)
{
  return set->regexes->len > 0;
}

/* Runs one regex over @subject (@len bytes of valid UTF-8) like finditer:
 * after an empty match the next try must not be empty at the same place. */
static void
regex_scan (BlnRuleSet *set, const Regex *re, const char *subject, gsize len,
            const gsize *back, GArray *out)
{
  pcre2_match_data *md = pcre2_match_data_create_from_pattern (re->code, NULL);
  const BlnRule *rule = g_ptr_array_index (set->rules, re->rule_index);
  PCRE2_SIZE pos = 0;
  guint32 flags = 0;

  while (pos <= len)
    {
      int rc = pcre2_match (re->code, (PCRE2_SPTR) subject, len, pos, flags, md, set->mctx);
      PCRE2_SIZE *ov;

      if (rc == PCRE2_ERROR_NOMATCH && flags)
        {
          /* No non-empty match here: step one code point and search freely. */
          if (pos >= len)
            break;
          pos = g_utf8_next_char (subject + pos) - subject;
          flags = 0;
          continue;
        }
      if (rc < 0)
        {
          if (rc != PCRE2_ERROR_NOMATCH)
            g_message ("rule %" G_GINT64_FORMAT ": regex match failed (%d)", rule->id, rc);
          break;
        }
      ov = pcre2_get_ovector_pointer (md);
      if (ov[1] > ov[0])
        {
          BlnRuleMatch m = { rule->id, re->rule_index, rule->action, ov[0], ov[1] };
          if (back)
            {
              m.start = back[m.start];
              m.end = back[m.end];
            }
          g_array_append_val (out, m);
        }
      pos = ov[1];
      flags = ov[1] == ov[0] ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
    }
  pcre2_match_data_free (md);
}

static int
match_cmp (gconstpointer pa, gconstpointer pb)
{
  const BlnRuleMatch *a = pa, *b = pb;

  if (a->start != b->start)
    return a->start < b->start ? -1 : 1;
  if (a->end != b->end)
    return a->end < b->end ? -1 : 1;
  return (int) a->rule_index - (int) b->rule_index;
}

GArray *
bln_rule_set_scan (BlnRuleSet *set, const char *text, gssize len)
{
  GArray *out = g_array_new (FALSE, FALSE, sizeof (BlnRuleMatch));
  g_autoptr (GArray) cps = g_array_new (FALSE, FALSE, sizeof (gunichar));
  g_autoptr (GArray) offs = g_array_new (FALSE, FALSE, sizeof (gsize));
  gsize valid;

  g_return_val_if_fail (set != NULL, out);
  if (!text)
    return out;
  if (len < 0)
    len = strlen (text);
  decode (text, len, cps, offs);
  valid = g_array_index (offs, gsize, offs->len - 1);

  for (guint i = 0; i < 4; i++)
    if (set->ac[i].nodes)
      automaton_scan (&set->ac[i], cps, offs, set->rules, out);

  if (set->regexes->len)
    {
      g_autoptr (GString) folded = NULL;
      g_autofree gsize *back = NULL;

      for (guint i = 0; i < set->regexes->len; i++)
        {
          const Regex *re = &g_array_index (set->regexes, Regex, i);
          const BlnRule *rule = g_ptr_array_index (set->rules, re->rule_index);

          if (rule->nowidth && !folded)
            {
              /* Width-folded copy; back[] maps its byte offsets to @text's. */
              folded = g_string_sized_new (valid);
              back = g_new0 (gsize, valid * 3 + 8);
              for (guint k = 0; k < cps->len; k++)
                {
                  gsize at = folded->len;
                  g_string_append_unichar (folded, bln_rule_fold_char (
                                             g_array_index (cps, gunichar, k), FALSE, TRUE));
                  for (gsize b = at; b < folded->len; b++)
                    back[b] = g_array_index (offs, gsize, k);
                }
              back[folded->len] = valid;
            }
          if (rule->nowidth)
            regex_scan (set, re, folded->str, folded->len, back, out);
          else
            regex_scan (set, re, text, valid, NULL, out);
        }
    }
  g_array_sort (out, match_cmp);
  return out;
}

gsize
bln_rule_set_open_start (BlnRuleSet *set, const char *text, gssize len, guint actions)
{
  g_autoptr (GArray) cps = g_array_new (FALSE, FALSE, sizeof (gunichar));
  g_autoptr (GArray) offs = g_array_new (FALSE, FALSE, sizeof (gsize));
  guint first;

  g_return_val_if_fail (set != NULL, 0);
  if (!text)
    return 0;
  if (len < 0)
    len = strlen (text);
  decode (text, len, cps, offs);
  first = cps->len;
  for (guint i = 0; i < 4; i++)
    if (set->ac[i].nodes)
      first = MIN (first, automaton_open_start (&set->ac[i], cps, actions));
  return g_array_index (offs, gsize, first);
}

BlnRuleSet *
bln_rule_set_load (BlnDb *db, BlnRuleScope scope, GError **error)
{
  g_autoptr (GPtrArray) rules = bln_rules_list (db, error);
  g_autoptr (BlnRuleSet) set = NULL;

  if (!rules)
    return NULL;
  set = bln_rule_set_new ();
  for (guint i = 0; i < rules->len; i++)
    {
      BlnRule *r = g_ptr_array_index (rules, i);
      g_autoptr (GError) local = NULL;

      if (!r->enabled || !(r->scope & scope))
        continue;
      if (!bln_rule_set_add (set, r, &local))
        g_message ("skipping rule %" G_GINT64_FORMAT ": %s", r->id, local->message);
    }
  return g_steal_pointer (&set);
}

char *
bln_rule_mask_text (const char *text, gssize len, const GArray *matches)
{
  GString *s;
  g_autofree guint8 *masked = NULL;
  gsize n;

  if (len < 0)
    len = strlen (text);
  n = len;
  masked = g_new0 (guint8, n + 1);
  for (guint i = 0; matches && i < matches->len; i++)
    {
      const BlnRuleMatch *m = &g_array_index (matches, BlnRuleMatch, i);
      gsize end = MIN (m->end, n); /* a match running past @len is masked up to it */
      if (m->action != BLN_RULE_MASK || m->start >= end)
        continue;
      memset (masked + m->start, 1, end - m->start);
    }
  s = g_string_sized_new (n);
  for (gsize i = 0; i < n;)
    {
      if (!masked[i])
        {
          g_string_append_c (s, text[i]);
          i++;
          continue;
        }
      /* One star per code point; matches always start and end on boundaries. */
      g_string_append_c (s, '*');
      i++;
      while (i < n && masked[i] && ((guint8) text[i] & 0xC0) == 0x80)
        i++;
    }
  return g_string_free (s, FALSE);
}

char *
bln_rule_matches_to_json (const GArray *matches)
{
  GString *s = g_string_new ("[");

  for (guint i = 0; matches && i < matches->len; i++)
    {
      const BlnRuleMatch *m = &g_array_index (matches, BlnRuleMatch, i);
      g_string_append_printf (s, "%s{\"rule\":%" G_GINT64_FORMAT ",\"action\":\"%s\","
                              "\"start\":%zu,\"end\":%zu}", i ? "," : "", m->rule_id,
                              bln_rule_action_to_string (m->action), (size_t) m->start,
                              (size_t) m->end);
    }
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* ---- storage ------------------------------------------------------------ */

gint64
bln_rules_add (BlnDb *db, const BlnRule *rule, GError **error)
{
  sqlite3_stmt *st;
  gint64 id;
  int rc;

  if (!validate_rule (rule, error))
    return 0;
  if (rule->kind == BLN_RULE_REGEX)
    {
      pcre2_code *code = compile_regex (rule, error);
      if (!code)
        return 0;
      pcre2_code_free (code);
    }
  if (!bln_db_begin (db, error))
    return 0;
  st = bln_db_prepare (db, "INSERT INTO rules (kind, pattern, action, scope, nocase, nowidth, "
                           "label, created, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", error);
  if (!st)
    {
      bln_db_rollback (db);
      return 0;
    }
  sqlite3_bind_text (st, 1, bln_rule_kind_to_string (rule->kind), -1, SQLITE_STATIC);
  sqlite3_bind_text (st, 2, rule->pattern, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 3, bln_rule_action_to_string (rule->action), -1, SQLITE_STATIC);
  sqlite3_bind_text (st, 4, bln_rule_scope_to_string (rule->scope), -1, SQLITE_STATIC);
  sqlite3_bind_int (st, 5, rule->nocase ? 1 : 0);
  sqlite3_bind_int (st, 6, rule->nowidth ? 1 : 0);
  sqlite3_bind_text (st, 7, rule->label ? rule->label : "", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64 (st, 8, rule->created ? rule->created : g_get_real_time () / G_USEC_PER_SEC);
  sqlite3_bind_int (st, 9, rule->enabled ? 1 : 0);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot save the rule", error);
      bln_db_rollback (db);
      return 0;
    }
  id = sqlite3_last_insert_rowid (bln_db_handle (db));
  if (!bln_db_commit (db, error))
    return 0;
  return id;
}

gboolean
bln_rules_set_enabled (BlnDb *db, gint64 id, gboolean enabled, GError **error)
{
  sqlite3_stmt *st;
  int rc;

  if (!bln_db_begin (db, error))
    return FALSE;
  st = bln_db_prepare (db, "UPDATE rules SET enabled = ? WHERE id = ?", error);
  if (!st)
    {
      bln_db_rollback (db);
      return FALSE;
    }
  sqlite3_bind_int (st, 1, enabled ? 1 : 0);
  sqlite3_bind_int64 (st, 2, id);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE || sqlite3_changes (bln_db_handle (db)) == 0)
    {
      if (rc != SQLITE_DONE)
        bln_db_set_error (db, rc, "cannot change the rule", error);
      else
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "there is no rule %" G_GINT64_FORMAT,
                     id);
      bln_db_rollback (db);
      return FALSE;
    }
  return bln_db_commit (db, error);
}

GPtrArray *
bln_rules_list (BlnDb *db, GError **error)
{
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_rule_free);
  sqlite3_stmt *st = bln_db_prepare (db, "SELECT id, kind, pattern, action, scope, nocase, "
                                         "nowidth, label, created, enabled FROM rules "
                                         "ORDER BY id", error);
  int rc;

  if (!st)
    return NULL;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      BlnRule *r = g_new0 (BlnRule, 1);

      r->id = sqlite3_column_int64 (st, 0);
      bln_rule_kind_from_string ((const char *) sqlite3_column_text (st, 1), &r->kind);
      r->pattern = g_strdup ((const char *) sqlite3_column_text (st, 2));
      bln_rule_action_from_string ((const char *) sqlite3_column_text (st, 3), &r->action);
      r->scope = BLN_RULE_BOTH;
      bln_rule_scope_from_string ((const char *) sqlite3_column_text (st, 4), &r->scope);
      r->nocase = sqlite3_column_int (st, 5) != 0;
      r->nowidth = sqlite3_column_int (st, 6) != 0;
      r->label = g_strdup ((const char *) sqlite3_column_text (st, 7));
      r->created = sqlite3_column_int64 (st, 8);
      r->enabled = sqlite3_column_int (st, 9) != 0;
      if (!r->pattern)
        r->pattern = g_strdup ("");
      g_ptr_array_add (list, r);
    }
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the rules", error);
      return NULL;
    }
  return g_steal_pointer (&list);
}

gboolean
bln_rules_remove (BlnDb *db, gint64 id, GError **error)
{
  sqlite3_stmt *st;
  int rc;

  if (!bln_db_begin (db, error))
    return FALSE;
  st = bln_db_prepare (db, "DELETE FROM rules WHERE id = ?", error);
  if (!st)
    {
      bln_db_rollback (db);
      return FALSE;
    }
  sqlite3_bind_int64 (st, 1, id);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot remove the rule", error);
      bln_db_rollback (db);
      return FALSE;
    }
  if (sqlite3_changes (bln_db_handle (db)) == 0)
    {
      bln_db_rollback (db);
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "there is no rule %" G_GINT64_FORMAT,
                   id);
      return FALSE;
    }
  return bln_db_commit (db, error);
}
