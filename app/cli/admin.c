/* admin.c — baleen-cli config, keys, rules and audit: the settings database
 * from the command line (headless servers; the desktop app's Safety page
 * edits the same file). */
#include "admin.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "db.h"
#include "keys.h"
#include "rules.h"
#include "settings.h"

static char *opt_db;

static const GOptionEntry db_entry[] = {
  { "db", 0, 0, G_OPTION_ARG_FILENAME, &opt_db,
    "settings database (default: $XDG_DATA_HOME/baleen/baleen.db)", "FILE" },
  { NULL }
};

/* Parses @argc/@argv with @entries plus --db; prints usage errors. Returns
 * FALSE (exit status 2) on a usage error. Text options are declared as
 * FILENAME so that GOption passes the bytes through whatever the locale;
 * the stores validate them as UTF-8. */
static gboolean
parse (int *argc, char ***argv, const char *params, const char *summary,
       const GOptionEntry *entries)
{
  g_autoptr (GOptionContext) oc = g_option_context_new (params);
  g_autoptr (GError) error = NULL;

  g_option_context_set_summary (oc, summary);
  g_option_context_add_main_entries (oc, db_entry, NULL);
  if (entries)
    g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, argc, argv, &error))
    {
      fprintf (stderr, "%s: %s\n", (*argv)[0], error->message);
      return FALSE;
    }
  return TRUE;
}

static BlnDb *
open_db (const char *prog)
{
  g_autoptr (GError) error = NULL;
  BlnDb *db = bln_db_open (opt_db, &error);

  if (!db)
    fprintf (stderr, "%s: %s\n", prog, error->message);
  return db;
}

static int
fail (const char *prog, const GError *error)
{
  fprintf (stderr, "%s: %s\n", prog, error->message);
  return 1;
}

static void
print_json (JsonBuilder *b)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autofree char *s = NULL;

  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, FALSE);
  s = json_generator_to_data (gen, NULL);
  printf ("%s\n", s);
}

static char *
format_time (gint64 unix_s)
{
  g_autoptr (GDateTime) dt = NULL;

  if (unix_s <= 0)
    return g_strdup ("-");
  dt = g_date_time_new_from_unix_utc (unix_s);
  return dt ? g_date_time_format (dt, "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
}

/* ---- config ------------------------------------------------------------- */

int
bln_admin_config (int argc, char **argv)
{
  static gboolean opt_json;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "list as JSON", NULL },
    { NULL }
  };
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (BlnSettings) settings = NULL;
  g_autoptr (GError) error = NULL;
  const char *prog = argv[0];
  const char *verb;

  if (!parse (&argc, &argv, "list | get KEY | set KEY VALUE | reset KEY",
              "Read and change Baleen's settings.", entries))
    return 2;
  verb = argc > 1 ? argv[1] : NULL;
  if (!verb || !((g_str_equal (verb, "list") && argc == 2) ||
                 (g_str_equal (verb, "get") && argc == 3) ||
                 (g_str_equal (verb, "set") && argc == 4) ||
                 (g_str_equal (verb, "reset") && argc == 3)))
    {
      fprintf (stderr, "usage: %s [--db FILE] list | get KEY | set KEY VALUE | reset KEY\n",
               prog);
      return 2;
    }
  db = open_db (prog);
  if (!db)
    return 1;
  settings = bln_settings_new (db, &error);
  if (!settings)
    return fail (prog, error);

  if (g_str_equal (verb, "list"))
    {
      guint n;
      const BlnSettingSpec *specs = bln_settings_specs (&n);
      g_autoptr (JsonBuilder) b = json_builder_new ();

      json_builder_begin_object (b);
      for (guint i = 0; i < n; i++)
        {
          g_autofree char *v = bln_settings_get_text (settings, specs[i].key);
          if (opt_json)
            {
              json_builder_set_member_name (b, specs[i].key);
              json_builder_add_string_value (b, v);
            }
          else
            printf ("%-26s %-12s # %s\n", specs[i].key, v, specs[i].summary);
        }
      json_builder_end_object (b);
      if (opt_json)
        print_json (b);
      return 0;
    }
  if (g_str_equal (verb, "get"))
    {
      g_autofree char *v = bln_settings_get_text (settings, argv[2]);
      if (!v)
        {
          fprintf (stderr, "%s: unknown setting '%s'\n", prog, argv[2]);
          return 1;
        }
      printf ("%s\n", v);
      return 0;
    }
  if (g_str_equal (verb, "set"))
    {
      if (!bln_settings_set_from_string (settings, argv[2], argv[3], &error))
        return fail (prog, error);
      return 0;
    }
  if (!bln_settings_reset (settings, argv[2], &error))
    return fail (prog, error);
  return 0;
}

/* ---- keys --------------------------------------------------------------- */

int
bln_admin_keys (int argc, char **argv)
{
  static gint64 opt_rpm, opt_tpm;
  static gboolean opt_json;
  const GOptionEntry entries[] = {
    { "rpm", 0, 0, G_OPTION_ARG_INT64, &opt_rpm, "create: requests per minute (0: default)",
      "N" },
    { "tpm", 0, 0, G_OPTION_ARG_INT64, &opt_tpm, "create: tokens per minute (0: default)", "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "list as JSON lines", NULL },
    { NULL }
  };
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (GError) error = NULL;
  const char *prog = argv[0];
  const char *verb;

  if (!parse (&argc, &argv, "create NAME | list | revoke ID-OR-NAME",
              "Create, list and revoke API keys. A key is shown only when it is created.",
              entries))
    return 2;
  verb = argc > 1 ? argv[1] : NULL;
  if (!verb || !((g_str_equal (verb, "list") && argc == 2) ||
                 (g_str_equal (verb, "create") && argc == 3) ||
                 (g_str_equal (verb, "revoke") && argc == 3)))
    {
      fprintf (stderr, "usage: %s [--db FILE] create NAME [--rpm N] [--tpm N] | list [--json] "
                       "| revoke ID-OR-NAME\n", prog);
      return 2;
    }
  db = open_db (prog);
  if (!db)
    return 1;

  if (g_str_equal (verb, "create"))
    {
      gint64 id = 0;
      g_autofree char *key = bln_keys_create (db, argv[2], opt_rpm, opt_tpm, &id, &error);
      if (!key)
        return fail (prog, error);
      printf ("%s\n", key);
      fprintf (stderr, "key %" G_GINT64_FORMAT " '%s' created; it is not shown again\n", id,
               argv[2]);
      return 0;
    }
  if (g_str_equal (verb, "revoke"))
    {
      if (!bln_keys_revoke (db, argv[2], &error))
        return fail (prog, error);
      return 0;
    }
  {
    g_autoptr (GPtrArray) keys = bln_keys_list (db, &error);
    if (!keys)
      return fail (prog, error);
    if (!opt_json)
      printf ("%-4s %-20s %-13s %-19s %-19s %-8s %8s %10s\n", "ID", "NAME", "PREFIX", "CREATED",
              "LAST USED", "STATE", "RPM", "TPM");
    for (guint i = 0; i < keys->len; i++)
      {
        BlnKeyInfo *k = g_ptr_array_index (keys, i);
        if (opt_json)
          {
            g_autoptr (JsonBuilder) b = json_builder_new ();
            json_builder_begin_object (b);
            json_builder_set_member_name (b, "id");
            json_builder_add_int_value (b, k->id);
            json_builder_set_member_name (b, "name");
            json_builder_add_string_value (b, k->name);
            json_builder_set_member_name (b, "prefix");
            json_builder_add_string_value (b, k->prefix);
            json_builder_set_member_name (b, "created");
            json_builder_add_int_value (b, k->created);
            json_builder_set_member_name (b, "last_used");
            json_builder_add_int_value (b, k->last_used);
            json_builder_set_member_name (b, "revoked");
            json_builder_add_int_value (b, k->revoked);
            json_builder_set_member_name (b, "rpm");
            json_builder_add_int_value (b, k->rpm);
            json_builder_set_member_name (b, "tpm");
            json_builder_add_int_value (b, k->tpm);
            json_builder_end_object (b);
            print_json (b);
          }
        else
          {
            g_autofree char *created = format_time (k->created);
            g_autofree char *used = format_time (k->last_used);
            printf ("%-4" G_GINT64_FORMAT " %-20s %-13s %-19s %-19s %-8s %8" G_GINT64_FORMAT
                    " %10" G_GINT64_FORMAT "\n", k->id, k->name, k->prefix, created, used,
                    k->revoked ? "revoked" : "valid", k->rpm, k->tpm);
          }
      }
  }
  return 0;
}

/* ---- rules -------------------------------------------------------------- */

static void
rule_to_json (JsonBuilder *b, const BlnRule *r)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "id");
  json_builder_add_int_value (b, r->id);
  json_builder_set_member_name (b, "kind");
  json_builder_add_string_value (b, bln_rule_kind_to_string (r->kind));
  json_builder_set_member_name (b, "pattern");
  json_builder_add_string_value (b, r->pattern);
  json_builder_set_member_name (b, "action");
  json_builder_add_string_value (b, bln_rule_action_to_string (r->action));
  json_builder_set_member_name (b, "scope");
  json_builder_add_string_value (b, bln_rule_scope_to_string (r->scope));
  json_builder_set_member_name (b, "nocase");
  json_builder_add_boolean_value (b, r->nocase);
  json_builder_set_member_name (b, "nowidth");
  json_builder_add_boolean_value (b, r->nowidth);
  json_builder_set_member_name (b, "enabled");
  json_builder_add_boolean_value (b, r->enabled);
  json_builder_set_member_name (b, "label");
  json_builder_add_string_value (b, r->label ? r->label : "");
  json_builder_end_object (b);
}

static char *
read_stdin (void)
{
  GString *s = g_string_new (NULL);
  char buf[65536];
  size_t n;

  while ((n = fread (buf, 1, sizeof buf, stdin)) > 0)
    g_string_append_len (s, buf, n);
  return g_string_free (s, FALSE);
}

static int
rules_test (const char *prog, BlnDb *db, const char *text, const char *scope_name)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnRuleSet) set = NULL;
  g_autoptr (GArray) m = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *masked = NULL;
  BlnRuleScope scope = BLN_RULE_INPUT;
  const char *verdict = "pass";

  if (!bln_rule_scope_from_string (scope_name, &scope))
    {
      fprintf (stderr, "%s: --scope must be input, output or both\n", prog);
      return 2;
    }
  set = bln_rule_set_load (db, scope, &error);
  if (!set)
    return fail (prog, error);
  m = bln_rule_set_scan (set, text, -1);
  masked = bln_rule_mask_text (text, -1, m);
  for (guint i = 0; i < m->len; i++)
    {
      BlnRuleAction a = g_array_index (m, BlnRuleMatch, i).action;
      if (a == BLN_RULE_BLOCK)
        verdict = "block";
      else if (a == BLN_RULE_MASK && strcmp (verdict, "block") != 0)
        verdict = "mask";
      else if (a == BLN_RULE_LOG && strcmp (verdict, "pass") == 0)
        verdict = "log";
    }
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "verdict");
  json_builder_add_string_value (b, verdict);
  json_builder_set_member_name (b, "matches");
  json_builder_begin_array (b);
  for (guint i = 0; i < m->len; i++)
    {
      const BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, i);
      g_autofree char *frag = g_strndup (text + x->start, x->end - x->start);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "rule");
      json_builder_add_int_value (b, x->rule_id);
      json_builder_set_member_name (b, "action");
      json_builder_add_string_value (b, bln_rule_action_to_string (x->action));
      json_builder_set_member_name (b, "start");
      json_builder_add_int_value (b, x->start);
      json_builder_set_member_name (b, "end");
      json_builder_add_int_value (b, x->end);
      json_builder_set_member_name (b, "text");
      json_builder_add_string_value (b, frag);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "masked");
  json_builder_add_string_value (b, masked);
  json_builder_end_object (b);
  print_json (b);
  return 0;
}

int
bln_admin_rules (int argc, char **argv)
{
  static gboolean opt_regex, opt_nocase, opt_nowidth, opt_json, opt_disabled;
  static char *opt_action, *opt_scope, *opt_label;
  const GOptionEntry entries[] = {
    { "regex", 0, 0, G_OPTION_ARG_NONE, &opt_regex, "add: the pattern is a PCRE2 regex", NULL },
    { "action", 0, 0, G_OPTION_ARG_FILENAME, &opt_action, "add: block (default), mask or log",
      "ACTION" },
    { "scope", 0, 0, G_OPTION_ARG_FILENAME, &opt_scope,
      "add: input, output or both (default); test: input (default) or output", "SCOPE" },
    { "nocase", 0, 0, G_OPTION_ARG_NONE, &opt_nocase, "add: ignore letter case", NULL },
    { "nowidth", 0, 0, G_OPTION_ARG_NONE, &opt_nowidth,
      "add: full-width and half-width forms match alike", NULL },
    { "label", 0, 0, G_OPTION_ARG_FILENAME, &opt_label, "add: a note shown in listings", "TEXT" },
    { "disabled", 0, 0, G_OPTION_ARG_NONE, &opt_disabled, "add: store the rule switched off",
      NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "list as JSON lines", NULL },
    { NULL }
  };
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (GError) error = NULL;
  const char *prog = argv[0];
  const char *verb;

  if (!parse (&argc, &argv, "add PATTERN | list | remove ID | test [TEXT]",
              "Manage the safety rules. `test` reads the text from standard input when it is "
              "not given and prints what it triggers as JSON.", entries))
    return 2;
  verb = argc > 1 ? argv[1] : NULL;
  if (!verb || !((g_str_equal (verb, "list") && argc == 2) ||
                 (g_str_equal (verb, "add") && argc == 3) ||
                 (g_str_equal (verb, "remove") && argc == 3) ||
                 (g_str_equal (verb, "test") && (argc == 2 || argc == 3))))
    {
      fprintf (stderr, "usage: %s [--db FILE] add PATTERN [--regex] [--action A] [--scope S] "
                       "[--nocase] [--nowidth] [--label L] | list [--json] | remove ID | "
                       "test [TEXT] [--scope input|output]\n", prog);
      return 2;
    }
  db = open_db (prog);
  if (!db)
    return 1;

  if (g_str_equal (verb, "add"))
    {
      BlnRule r = { 0 };
      gint64 id;

      r.kind = opt_regex ? BLN_RULE_REGEX : BLN_RULE_WORD;
      r.pattern = argv[2];
      r.action = BLN_RULE_BLOCK;
      r.scope = BLN_RULE_BOTH;
      r.nocase = opt_nocase;
      r.nowidth = opt_nowidth;
      r.enabled = !opt_disabled;
      r.label = opt_label;
      if (opt_action && !bln_rule_action_from_string (opt_action, &r.action))
        {
          fprintf (stderr, "%s: --action must be block, mask or log\n", prog);
          return 2;
        }
      if (opt_scope && !bln_rule_scope_from_string (opt_scope, &r.scope))
        {
          fprintf (stderr, "%s: --scope must be input, output or both\n", prog);
          return 2;
        }
      id = bln_rules_add (db, &r, &error);
      if (!id)
        return fail (prog, error);
      printf ("%" G_GINT64_FORMAT "\n", id);
      return 0;
    }
  if (g_str_equal (verb, "remove"))
    {
      char *end = NULL;
      gint64 id = g_ascii_strtoll (argv[2], &end, 10);
      if (!*argv[2] || *end || id <= 0)
        {
          fprintf (stderr, "%s: '%s' is not a rule id\n", prog, argv[2]);
          return 2;
        }
      if (!bln_rules_remove (db, id, &error))
        return fail (prog, error);
      return 0;
    }
  if (g_str_equal (verb, "test"))
    {
      g_autofree char *text = argc == 3 ? g_strdup (argv[2]) : read_stdin ();
      return rules_test (prog, db, text, opt_scope ? opt_scope : "input");
    }
  {
    g_autoptr (GPtrArray) rules = bln_rules_list (db, &error);
    if (!rules)
      return fail (prog, error);
    if (!opt_json)
      printf ("%-4s %-5s %-6s %-6s %-5s %s\n", "ID", "KIND", "ACTION", "SCOPE", "FLAGS",
              "PATTERN");
    for (guint i = 0; i < rules->len; i++)
      {
        BlnRule *r = g_ptr_array_index (rules, i);
        if (opt_json)
          {
            g_autoptr (JsonBuilder) b = json_builder_new ();
            rule_to_json (b, r);
            print_json (b);
          }
        else
          printf ("%-4" G_GINT64_FORMAT " %-5s %-6s %-6s %c%c%c   %s%s%s\n", r->id,
                  bln_rule_kind_to_string (r->kind), bln_rule_action_to_string (r->action),
                  bln_rule_scope_to_string (r->scope), r->nocase ? 'i' : '-',
                  r->nowidth ? 'w' : '-', r->enabled ? '-' : 'x', r->pattern,
                  r->label && *r->label ? "   # " : "", r->label ? r->label : "");
      }
  }
  return 0;
}

/* ---- audit -------------------------------------------------------------- */

int
bln_admin_audit (int argc, char **argv)
{
  static gint opt_n = 20;
  static gboolean opt_json;
  static char *opt_format, *opt_output, *opt_since;
  const GOptionEntry entries[] = {
    { "lines", 'n', 0, G_OPTION_ARG_INT, &opt_n, "tail: how many records (default 20)", "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "tail: JSON lines", NULL },
    { "format", 0, 0, G_OPTION_ARG_FILENAME, &opt_format, "export: jsonl (default) or csv",
      "FORMAT" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &opt_output,
      "export: write to FILE (default: standard output)", "FILE" },
    { "since", 0, 0, G_OPTION_ARG_FILENAME, &opt_since,
      "export: only records from this ISO 8601 time on", "TIME" },
    { NULL }
  };
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (GError) error = NULL;
  const char *prog = argv[0];
  const char *verb;

  if (!parse (&argc, &argv, "tail | export | prune",
              "Read, export and prune the audit log (prune applies audit.retention_days and "
              "audit.max_rows).", entries))
    return 2;
  verb = argc == 2 ? argv[1] : NULL;
  if (!verb || !(g_str_equal (verb, "tail") || g_str_equal (verb, "export") ||
                 g_str_equal (verb, "prune")) || opt_n < 0)
    {
      fprintf (stderr, "usage: %s [--db FILE] tail [-n N] [--json] | export [--format "
                       "jsonl|csv] [-o FILE] [--since TIME] | prune\n", prog);
      return 2;
    }
  db = open_db (prog);
  if (!db)
    return 1;

  if (g_str_equal (verb, "export"))
    {
      BlnAuditFormat fmt = BLN_AUDIT_JSONL;
      gint64 since = 0;

      if (opt_format && g_str_equal (opt_format, "csv"))
        fmt = BLN_AUDIT_CSV;
      else if (opt_format && !g_str_equal (opt_format, "jsonl"))
        {
          fprintf (stderr, "%s: --format must be jsonl or csv\n", prog);
          return 2;
        }
      if (opt_since)
        {
          g_autoptr (GDateTime) dt = g_date_time_new_from_iso8601 (opt_since, NULL);
          if (!dt)
            {
              fprintf (stderr, "%s: --since needs an ISO 8601 time with a zone, e.g. "
                               "2026-01-31T00:00:00Z\n", prog);
              return 2;
            }
          since = g_date_time_to_unix (dt) * G_USEC_PER_SEC;
        }
      fflush (stdout);
      if (!bln_audit_export (db, opt_output ? opt_output : "-", fmt, since, &error))
        return fail (prog, error);
      return 0;
    }
  if (g_str_equal (verb, "prune"))
    {
      g_autoptr (BlnSettings) settings = bln_settings_new (db, &error);
      gint64 n;
      if (!settings)
        return fail (prog, error);
      n = bln_audit_prune (db, bln_settings_get_int (settings, "audit.retention_days") * 86400,
                           bln_settings_get_int (settings, "audit.max_rows"), &error);
      if (n < 0)
        return fail (prog, error);
      printf ("%" G_GINT64_FORMAT " records removed\n", n);
      return 0;
    }
  {
    g_autoptr (GPtrArray) recs = bln_audit_tail (db, opt_n, &error);
    if (!recs)
      return fail (prog, error);
    for (guint i = 0; i < recs->len; i++)
      {
        BlnAuditRecord *r = g_ptr_array_index (recs, i);
        if (opt_json)
          {
            g_autofree char *j = bln_audit_record_to_json (r);
            printf ("%s\n", j);
          }
        else
          {
            g_autofree char *t = format_time (r->time_us / G_USEC_PER_SEC);
            printf ("%s %-15s key=%-4" G_GINT64_FORMAT " %-22s %-20s %5" G_GINT64_FORMAT
                    "+%-5" G_GINT64_FORMAT " %8.1fms %s\n", t, r->client ? r->client : "",
                    r->key_id, r->endpoint ? r->endpoint : "", r->model ? r->model : "",
                    r->prompt_tokens, r->completion_tokens, r->total_ms,
                    r->finish_reason ? r->finish_reason : "");
          }
      }
    if (fflush (stdout) != 0 || ferror (stdout))
      {
        perror (prog);
        return 1;
      }
  }
  return 0;
}
