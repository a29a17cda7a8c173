/* test-db.c — the settings database: creation, migrations, reopening, typed
 * settings, and the errors for corrupt, read-only and full databases, checked
 * with Python's sqlite3 module as the reference reader. */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>

#include "bln-error.h"
#include "db.h"
#include "settings.h"
#include "safety-test-util.h"

static const char schema_script[] =
  "import sqlite3, sys, json\n"
  "c = sqlite3.connect(sys.argv[1])\n"
  "out = {'integrity': c.execute('PRAGMA integrity_check').fetchall()[0][0],\n"
  "       'version': c.execute('PRAGMA user_version').fetchone()[0],\n"
  "       'journal': c.execute('PRAGMA journal_mode').fetchone()[0],\n"
  "       'tables': sorted(r[0] for r in c.execute(\"SELECT name FROM sqlite_master WHERE \"\n"
  "                        \"type='table' AND name NOT LIKE 'sqlite_%'\")),\n"
  "       'rule_columns': [r[1] for r in c.execute('PRAGMA table_info(rules)')],\n"
  "       'settings': dict(c.execute('SELECT key, value FROM settings'))}\n"
  "print(json.dumps(out, sort_keys=True))\n";

static char *
python_view (const char *path)
{
  const char *args[] = { path, NULL };
  return run_python (schema_script, args);
}

static void
test_migrations (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "sub", "baleen.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autofree char *view = NULL;
  BlnDb *db;

  g_assert_cmpint (bln_db_latest_version (), >=, 2);
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_db_schema_version (db), ==, bln_db_latest_version ());
  bln_db_close (db);

  /* Reopening applies nothing and keeps the version. */
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_db_schema_version (db), ==, bln_db_latest_version ());
  bln_db_close (db);

  view = python_view (path);
  if (view)
    {
      g_autofree char *want_v = g_strdup_printf ("\"version\": %d", bln_db_latest_version ());
      g_assert_nonnull (strstr (view, "\"integrity\": \"ok\""));
      g_assert_nonnull (strstr (view, "\"journal\": \"wal\""));
      g_assert_nonnull (strstr (view, want_v));
      g_assert_nonnull (strstr (view, "\"tables\": [\"api_keys\", \"audit\", \"rules\", "
                                      "\"settings\"]"));
      g_assert_nonnull (strstr (view, "\"enabled\""));
    }
  rm_rf (dir);
}

/* A database written by the first schema (built by Python from
 * data/migrations/001-initial.sql, as an older Baleen left it) is migrated
 * and keeps its rows. */
static void
test_old_schema (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "old.db", NULL);
  g_autofree char *sql = g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "..", "..", "data",
                                           "migrations", "001-initial.sql", NULL);
  const char *args[] = { path, sql, NULL };
  g_autofree char *out = run_python (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1])\n"
    "c.executescript(open(sys.argv[2]).read())\n"
    "c.execute(\"INSERT INTO rules (kind, pattern, action, created) VALUES \"\n"
    "          \"('word', 'x''y', 'log', 1)\")\n"
    "c.execute('PRAGMA user_version = 1')\n"
    "c.commit()\n", args);
  g_autoptr (GError) error = NULL;
  g_autofree char *view = NULL;
  g_autoptr (GPtrArray) rules = NULL;
  BlnDb *db;

  if (!out)
    return;
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_db_schema_version (db), ==, bln_db_latest_version ());
  bln_db_close (db);
  view = python_view (path);
  g_assert_nonnull (strstr (view, "\"enabled\""));
  g_assert_nonnull (strstr (view, "\"integrity\": \"ok\""));
  rm_rf (dir);
}

static void
test_newer_schema (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "new.db", NULL);
  const char *args[] = { path, NULL };
  g_autofree char *out = run_python ("import sqlite3, sys\n"
                                     "c = sqlite3.connect(sys.argv[1])\n"
                                     "c.execute('PRAGMA user_version = 999')\n"
                                     "c.commit()\n", args);
  g_autoptr (GError) error = NULL;
  BlnDb *db;

  if (!out)
    return;
  db = bln_db_open (path, &error);
  g_assert_null (db);
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_SCHEMA);
  rm_rf (dir);
}

static void
test_corrupt (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *junk = g_build_filename (dir, "junk.db", NULL);
  g_autofree char *damaged = g_build_filename (dir, "damaged.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  const char *args[] = { damaged, NULL };
  g_autofree char *out = NULL;
  g_autofree char *bytes = g_strnfill (8192, 'Z');
  BlnDb *db;

  /* Not a database at all. */
  g_assert_true (g_file_set_contents (junk, bytes, 8192, NULL));
  db = bln_db_open (junk, &error);
  g_assert_null (db);
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_CORRUPT);
  g_assert_nonnull (strstr (error->message, "damaged"));

  /* A real database (made by Python's sqlite3) with a page overwritten. */
  out = run_python ("import sqlite3, sys\n"
                    "c = sqlite3.connect(sys.argv[1])\n"
                    "c.execute('CREATE TABLE t (a TEXT)')\n"
                    "c.execute('CREATE INDEX ti ON t (a)')\n"
                    "c.executemany('INSERT INTO t VALUES (?)', [('x' * 200,)] * 300)\n"
                    "c.commit(); c.close()\n"
                    "f = open(sys.argv[1], 'r+b'); f.seek(4096 * 3 + 100)\n"
                    "f.write(b'\\xff' * 2000); f.close()\n", args);
  if (!out)
    return;
  db = bln_db_open (damaged, &error2);
  g_assert_null (db);
  g_assert_error (error2, BLN_DB_ERROR, BLN_DB_ERROR_CORRUPT);
  rm_rf (dir);
}

static void
test_readonly (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "ro.db", NULL);
  g_autofree char *uri = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnSettings) s = NULL;
  BlnDb *db;

  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  s = bln_settings_new (db, &error);
  g_assert_true (bln_settings_set_int (s, "ratelimit.key_rpm", 7, &error));
  g_clear_object (&s);
  bln_db_close (db);

  /* Opened read-only (as for a file the user cannot write): reads work,
   * writes fail with a clear READONLY error. */
  uri = g_strdup_printf ("file:%s?mode=ro", path);
  db = bln_db_open (uri, &error);
  g_assert_no_error (error);
  s = bln_settings_new (db, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_settings_get_int (s, "ratelimit.key_rpm"), ==, 7);
  g_assert_false (bln_settings_set_int (s, "ratelimit.key_rpm", 8, &error));
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_READONLY);
  g_assert_nonnull (strstr (error->message, "read-only"));
  g_assert_cmpint (bln_settings_get_int (s, "ratelimit.key_rpm"), ==, 7);
  g_clear_object (&s);
  bln_db_close (db);
  rm_rf (dir);
}

static void
on_changed (BlnSettings *s, const char *key, gpointer data)
{
  g_ptr_array_add (data, g_strdup (key));
}

static void
test_settings (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "s.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) seen = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) seen_rpm = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (BlnSettings) s = NULL;
  g_autofree char *str = NULL;
  g_autofree char *view = NULL;
  const char *sqlish = "it's \"quoted\"; DROP TABLE settings; --";
  BlnDb *db;

  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  s = bln_settings_new (db, &error);
  g_assert_no_error (error);
  g_signal_connect (s, "changed", G_CALLBACK (on_changed), seen);
  g_signal_connect (s, "changed::ratelimit.key_rpm", G_CALLBACK (on_changed), seen_rpm);

  /* defaults */
  g_assert_cmpint (bln_settings_get_int (s, "audit.retention_days"), ==, 30);
  g_assert_true (bln_settings_get_bool (s, "audit.enabled"));
  g_assert_cmpfloat (bln_settings_get_double (s, "moderation.timeout_s"), ==, 10.0);
  str = bln_settings_get_string (s, "privacy.content");
  g_assert_cmpstr (str, ==, "hashed");

  /* typed sets, with change notification */
  g_assert_true (bln_settings_set_int (s, "ratelimit.key_rpm", 60, &error));
  g_assert_true (bln_settings_set_double (s, "moderation.timeout_s", 2.5, &error));
  g_assert_true (bln_settings_set_bool (s, "audit.enabled", FALSE, &error));
  g_assert_true (bln_settings_set_string (s, "audit.jsonl_path", sqlish, &error));
  g_assert_true (bln_settings_set_int (s, "ratelimit.key_rpm", 60, &error)); /* same: quiet */
  g_assert_no_error (error);
  g_assert_cmpuint (seen->len, ==, 4);
  g_assert_cmpuint (seen_rpm->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (seen, 0), ==, "ratelimit.key_rpm");

  /* validation: range, choices, type, unknown key; the old value stays */
  g_assert_false (bln_settings_set_int (s, "ratelimit.key_rpm", -1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_settings_set_string (s, "privacy.content", "some", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_settings_set_from_string (s, "audit.max_rows", "12x", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_settings_set_from_string (s, "no.such", "1", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_cmpint (bln_settings_get_int (s, "ratelimit.key_rpm"), ==, 60);
  g_assert_cmpuint (seen->len, ==, 4);

  /* persisted, as Python's sqlite3 reads it */
  g_clear_object (&s);
  bln_db_close (db);
  view = python_view (path);
  if (view)
    {
      g_assert_nonnull (strstr (view, "\"ratelimit.key_rpm\": \"60\""));
      g_assert_nonnull (strstr (view, "\"audit.enabled\": \"false\""));
      g_assert_nonnull (strstr (view, "DROP TABLE settings; --"));
    }
  db = bln_db_open (path, &error);
  s = bln_settings_new (db, &error);
  g_assert_no_error (error);
  g_clear_pointer (&str, g_free);
  str = bln_settings_get_string (s, "audit.jsonl_path");
  g_assert_cmpstr (str, ==, sqlish);
  g_assert_cmpfloat (bln_settings_get_double (s, "moderation.timeout_s"), ==, 2.5);
  g_assert_false (bln_settings_get_bool (s, "audit.enabled"));

  /* reset, and reload noticing a change made by another connection */
  g_assert_true (bln_settings_reset (s, "audit.enabled", &error));
  g_assert_true (bln_settings_get_bool (s, "audit.enabled"));
  {
    g_autoptr (GError) e2 = NULL;
    BlnDb *other = bln_db_open (path, &e2);
    g_autoptr (BlnSettings) s2 = bln_settings_new (other, &e2);
    g_assert_true (bln_settings_set_int (s2, "audit.retention_days", 5, &e2));
    g_assert_no_error (e2);
    g_clear_object (&s2);
    bln_db_close (other);
  }
  g_ptr_array_set_size (seen, 0);
  g_signal_connect (s, "changed", G_CALLBACK (on_changed), seen);
  g_assert_true (bln_settings_reload (s, &error));
  g_assert_cmpint (bln_settings_get_int (s, "audit.retention_days"), ==, 5);
  g_assert_cmpuint (seen->len, ==, 1);
  g_clear_object (&s);
  bln_db_close (db);
  rm_rf (dir);
}

/* A full database (SQLite's page limit standing in for a full disk): the
 * write fails with FULL, nothing is half-written, the file stays sound. */
static void
test_full (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "full.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnSettings) s = NULL;
  g_autofree char *big = g_strnfill (64 * 1024, 'a');
  g_autofree char *view = NULL;
  BlnDb *db = bln_db_open (path, &error);

  g_assert_no_error (error);
  s = bln_settings_new (db, &error);
  g_assert_true (bln_settings_set_string (s, "moderation.model", "small", &error));
  g_assert_true (bln_db_exec (db, "PRAGMA max_page_count = 8", &error));
  g_assert_no_error (error);
  g_assert_false (bln_settings_set_string (s, "moderation.model", big, &error));
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_FULL);
  g_assert_nonnull (strstr (error->message, "full"));
  {
    g_autofree char *v = bln_settings_get_string (s, "moderation.model");
    g_assert_cmpstr (v, ==, "small");
  }
  g_clear_object (&s);
  bln_db_close (db);
  view = python_view (path);
  if (view)
    {
      g_assert_nonnull (strstr (view, "\"integrity\": \"ok\""));
      g_assert_nonnull (strstr (view, "\"moderation.model\": \"small\""));
    }
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Db/migrations", test_migrations);
  g_test_add_func ("/Baleen/Db/old-schema", test_old_schema);
  g_test_add_func ("/Baleen/Db/newer-schema", test_newer_schema);
  g_test_add_func ("/Baleen/Db/corrupt", test_corrupt);
  g_test_add_func ("/Baleen/Db/readonly", test_readonly);
  g_test_add_func ("/Baleen/Db/settings", test_settings);
  g_test_add_func ("/Baleen/Db/full", test_full);
  return g_test_run ();
}
