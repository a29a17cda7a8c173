/* rules.h — input and output safety rules.
 *
 * A rule is a plain word (substring) or a PCRE2 regular expression with an
 * action: block the request (or stop the answer), mask the matched text with
 * '*', or only log the match. Rules are stored in the settings database; a
 * BlnRuleSet is the compiled form used on every message: all the words of a
 * set are found in one pass with an Aho-Corasick automaton over Unicode code
 * points (optionally case-insensitive and full/half-width-insensitive, folding
 * one code point to one so that match offsets stay exact), then each regular
 * expression runs over the text.
 */
#pragma once

#include <glib.h>

#include "db.h"

G_BEGIN_DECLS

typedef enum { BLN_RULE_WORD, BLN_RULE_REGEX } BlnRuleKind;
typedef enum { BLN_RULE_BLOCK, BLN_RULE_MASK, BLN_RULE_LOG } BlnRuleAction;
typedef enum {
  BLN_RULE_INPUT = 1,  /* checked on request messages */
  BLN_RULE_OUTPUT = 2, /* checked on generated answers */
  BLN_RULE_BOTH = 3,
} BlnRuleScope;

typedef struct {
  gint64 id;             /* database row id; 0 before it is stored */
  BlnRuleKind kind;
  char *pattern;         /* UTF-8 word or PCRE2 pattern */
  BlnRuleAction action;
  BlnRuleScope scope;
  gboolean nocase;       /* ignore letter case */
  gboolean nowidth;      /* treat full-width and half-width forms as the same */
  gboolean enabled;
  char *label;           /* free text shown in listings and verdicts */
  gint64 created;        /* unix seconds */
} BlnRule;

/* bln_rule_free: frees a rule and its strings. NULL is ignored. */
void bln_rule_free (BlnRule *rule);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnRule, bln_rule_free)

/* Names used in the database, the CLI and JSON: "word"/"regex",
 * "block"/"mask"/"log", "input"/"output"/"both". The _from_ functions return
 * FALSE for an unknown name. */
const char *bln_rule_kind_to_string (BlnRuleKind kind);
const char *bln_rule_action_to_string (BlnRuleAction action);
const char *bln_rule_scope_to_string (BlnRuleScope scope);
gboolean bln_rule_kind_from_string (const char *s, BlnRuleKind *out);
gboolean bln_rule_action_from_string (const char *s, BlnRuleAction *out);
gboolean bln_rule_scope_from_string (const char *s, BlnRuleScope *out);

/* bln_rules_add:
 * Validates @rule (non-empty valid UTF-8 pattern, a regex that compiles) and
 * stores it in one transaction. Returns the new id (> 0), or 0 with @error set.
 */
gint64 bln_rules_add (BlnDb *db, const BlnRule *rule, GError **error);

/* bln_rules_list: every stored rule, oldest first, as a new array of BlnRule *
 * that frees its elements; NULL with @error set on a database error. */
GPtrArray *bln_rules_list (BlnDb *db, GError **error);

/* bln_rules_remove: deletes rule @id. FALSE with @error set (BLN_ERROR_INVALID
 * when there is no such rule). */
gboolean bln_rules_remove (BlnDb *db, gint64 id, GError **error);

/* bln_rules_set_enabled: switches rule @id on or off (kept in the database,
 * skipped by bln_rule_set_load() while off) in one transaction. FALSE with
 * @error set (BLN_ERROR_INVALID when there is no such rule). */
gboolean bln_rules_set_enabled (BlnDb *db, gint64 id, gboolean enabled, GError **error);

/* ---- compiled sets ------------------------------------------------------ */

typedef struct _BlnRuleSet BlnRuleSet;

typedef struct {
  gint64 rule_id;        /* the rule's id as given to bln_rule_set_add */
  guint rule_index;      /* order in which the rule was added to the set */
  BlnRuleAction action;
  gsize start, end;      /* byte offsets of the matched text, end exclusive */
} BlnRuleMatch;

/* bln_rule_set_new: an empty set. Free with bln_rule_set_free. */
BlnRuleSet *bln_rule_set_new (void);
void bln_rule_set_free (BlnRuleSet *set);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnRuleSet, bln_rule_set_free)

/* bln_rule_set_add:
 * Adds @rule (copied; only kind, pattern, action, nocase, nowidth, id and
 * label are used) to @set. The automaton is rebuilt lazily on the next scan.
 * FALSE with @error set (BLN_ERROR_INVALID) for an empty or invalid pattern.
 */
gboolean bln_rule_set_add (BlnRuleSet *set, const BlnRule *rule, GError **error);

/* bln_rule_set_load:
 * A new set with the enabled rules of @db that apply to @scope. A stored
 * regex that no longer compiles is skipped with a warning. NULL with @error set
 * on a database error.
 */
BlnRuleSet *bln_rule_set_load (BlnDb *db, BlnRuleScope scope, GError **error);

/* bln_rule_set_size: the number of rules in @set. */
guint bln_rule_set_size (BlnRuleSet *set);

/* bln_rule_set_get_rule: the @index-th rule added (owned by @set). */
const BlnRule *bln_rule_set_get_rule (BlnRuleSet *set, guint index);

/* bln_rule_set_max_word_chars: the length in code points of the longest word
 * rule (0 when there are none). */
gsize bln_rule_set_max_word_chars (BlnRuleSet *set);

/* bln_rule_set_has_regex: whether @set holds any regular expression. */
gboolean bln_rule_set_has_regex (BlnRuleSet *set);

/* bln_rule_set_scan:
 * Finds every match in @text (@len bytes, or -1 when NUL-terminated): all
 * occurrences of every word, overlapping ones included, and for each regex
 * the successive non-overlapping non-empty matches from left to right (as
 * Python's re.finditer finds them). Invalid UTF-8 is scanned as far as it is
 * valid. Returns a new array of BlnRuleMatch sorted by start, then end, then
 * rule order. Never NULL.
 */
GArray *bln_rule_set_scan (BlnRuleSet *set, const char *text, gssize len);

/* bln_rule_set_open_start:
 * Where a word match that may still be under way at the end of @text (@len
 * bytes, or -1 when NUL-terminated) begins: the byte offset of the longest
 * suffix of @text that is a proper prefix of the word of a rule whose action
 * is in @actions (a mask of (1 << BlnRuleAction) bits), compared as the rule
 * compares (case, width). The stream filter uses it so that it never sends the
 * beginning of a phrase that a later piece could still complete. Returns the
 * end of @text's valid UTF-8 prefix when there is no such suffix; regular
 * expressions are not considered.
 */
gsize bln_rule_set_open_start (BlnRuleSet *set, const char *text, gssize len, guint actions);

/* bln_rule_mask_text:
 * Returns a copy of @text (@len bytes or -1) in which the bytes covered by the
 * matches of @matches whose action is MASK are replaced by one '*' per code
 * point; a match reaching past @len is masked up to it. New string, free
 * with g_free.
 */
char *bln_rule_mask_text (const char *text, gssize len, const GArray *matches);

/* bln_rule_matches_to_json:
 * The matches as a compact JSON array of {"rule":id,"action":"...",
 * "start":n,"end":n} objects (new string), for audit verdicts.
 */
char *bln_rule_matches_to_json (const GArray *matches);

/* bln_rule_fold_char:
 * The code point @c folds to for matching (full/half-width forms to their
 * ordinary form when @nowidth, then lower case when @nocase). One code point
 * to one.
 */
gunichar bln_rule_fold_char (gunichar c, gboolean nocase, gboolean nowidth);

G_END_DECLS
