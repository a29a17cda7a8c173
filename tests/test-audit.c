/* test-audit.c — the audit log: SQL-like strings in every field read back
 * intact (by us and by Python's sqlite3), the privacy modes against Python's
 * hashlib, JSON-lines and CSV exports parsed by Python's json and csv modules,
 * retention, and failures: a full database (PRAGMA max_page_count) and a full
 * device (/dev/full) are reported and leave the database sound. */
#include <glib.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "audit.h"
#include "bln-error.h"
#include "safety-test-util.h"

static const char *const nasty[] = {
  "plain",
  "it's",
  "'; DROP TABLE audit; --",
  "\"quoted\", with comma",
  "line\nbreak\r\nand \\ backslash",
  "中文，逗号\t和制表符",
  "Robert'); DELETE FROM settings WHERE ('1'='1",
};

static BlnAuditRecord *
make_record (guint i)
{
  BlnAuditRecord *r = g_new0 (BlnAuditRecord, 1);
  const char *s = nasty[i % G_N_ELEMENTS (nasty)];

  r->time_us = 1700000000000000 + i * 1000000;
  r->request_id = g_strdup_printf ("req-%u %s", i, s);
  r->client = g_strdup (s);
  r->key_id = i % 3;
  r->model = g_strdup (s);
  r->endpoint = g_strdup (s);
  r->prompt_tokens = 10 + i;
  r->completion_tokens = 20 + i;
  r->cached_tokens = i;
  r->ttft_ms = 12.5 + i;
  r->total_ms = 100.25 + i;
  r->finish_reason = g_strdup (s);
  r->verdicts = g_strdup ("[{\"rule\":1,\"action\":\"log\",\"start\":0,\"end\":2}]");
  r->prompt = g_strdup_printf ("prompt %s", s);
  r->completion = g_strdup_printf ("answer %s", s);
  return r;
}

static void
test_roundtrip (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "a.db", NULL);
  g_autofree char *jsonl = g_build_filename (dir, "out.jsonl", NULL);
  g_autofree char *csv = g_build_filename (dir, "out.csv", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) tail = NULL;
  guint n = G_N_ELEMENTS (nasty) * 3;
  BlnDb *db = bln_db_open (path, &error);

  g_assert_no_error (error);
  for (guint i = 0; i < n; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      BlnPrivacy p = i % 3 == 0 ? BLN_PRIVACY_FULL : i % 3 == 1 ? BLN_PRIVACY_HASHED
                                                                : BLN_PRIVACY_NONE;
      g_assert_cmpint (bln_audit_write (db, r, p, &error), >, 0);
      g_assert_no_error (error);
    }
  g_assert_cmpint (bln_audit_count (db, &error), ==, n);

  tail = bln_audit_tail (db, 5, &error);
  g_assert_cmpuint (tail->len, ==, 5);
  for (guint k = 0; k < 5; k++)
    {
      guint i = n - 5 + k;
      g_autoptr (BlnAuditRecord) want = make_record (i);
      BlnAuditRecord *got = tail->pdata[k];
      g_assert_cmpstr (got->request_id, ==, want->request_id);
      g_assert_cmpstr (got->client, ==, want->client);
      g_assert_cmpstr (got->model, ==, want->model);
      g_assert_cmpstr (got->endpoint, ==, want->endpoint);
      g_assert_cmpstr (got->finish_reason, ==, want->finish_reason);
      g_assert_cmpint (got->key_id, ==, want->key_id);
      g_assert_cmpint (got->completion_tokens, ==, want->completion_tokens);
      g_assert_cmpfloat (got->total_ms, ==, want->total_ms);
      if (i % 3 == 0)
        g_assert_cmpstr (got->prompt, ==, want->prompt);
      else if (i % 3 == 2)
        g_assert_null (got->prompt);
    }

  g_assert_true (bln_audit_export (db, jsonl, BLN_AUDIT_JSONL, 0, &error));
  g_assert_no_error (error);
  g_assert_true (bln_audit_export (db, csv, BLN_AUDIT_CSV, 0, &error));
  g_assert_no_error (error);
  bln_db_close (db);

  /* The references read the database and both exports and agree. */
  {
    const char *args[] = { path, jsonl, csv, NULL };
    g_autofree char *out = run_python (
      "import sqlite3, sys, json, csv, hashlib\n"
      "c = sqlite3.connect(sys.argv[1]); c.row_factory = sqlite3.Row\n"
      "assert c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'\n"
      "rows = [dict(r) for r in c.execute('SELECT * FROM audit ORDER BY id')]\n"
      "js = [json.loads(l) for l in open(sys.argv[2], encoding='utf-8')]\n"
      "cs = list(csv.DictReader(open(sys.argv[3], encoding='utf-8', newline='')))\n"
      "assert len(rows) == len(js) == len(cs), (len(rows), len(js), len(cs))\n"
      "for r, j, k in zip(rows, js, cs):\n"
      "    assert r['request_id'].startswith('req-')\n"
      "    for f in ('request_id', 'client', 'model', 'endpoint', 'finish_reason', 'privacy'):\n"
      "        assert r[f] == j[f] == k[f], (f, r[f], j[f], k[f])\n"
      "    for f in ('prompt_tokens', 'completion_tokens', 'cached_tokens'):\n"
      "        assert r[f] == j[f] == int(k[f])\n"
      "    assert r['total_ms'] == j['total_ms'] == float(k['total_ms'])\n"
      "    assert r['time'] == j['time_us'] == int(k['time_us'])\n"
      "    assert j['verdicts'] == json.loads(r['verdicts']) == json.loads(k['verdicts'])\n"
      "    assert (r['key_id'] or None) == j['key_id']\n"
      "    assert r['prompt'] == j['prompt'] and (r['prompt'] or '') == k['prompt']\n"
      "    n = r['id'] - 1\n"
      "    plain = 'prompt ' + r['client']\n"
      "    if r['privacy'] == 'full': assert r['prompt'] == plain\n"
      "    if r['privacy'] == 'hashed':\n"
      "        assert r['prompt'] == hashlib.sha256(plain.encode()).hexdigest()\n"
      "    if r['privacy'] == 'none': assert r['prompt'] is None and r['completion'] is None\n"
      "print(len(rows))\n", args);
    if (out)
      g_assert_cmpint (atoi (out), ==, n);
  }
  rm_rf (dir);
}

static void
test_jsonl_sink (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "live.jsonl", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnAuditRecord) r = make_record (2);
  const char *args[] = { path, NULL };
  g_autofree char *out = NULL;

  g_assert_true (bln_audit_append_jsonl (path, r, BLN_PRIVACY_HASHED, &error));
  g_assert_true (bln_audit_append_jsonl (path, r, BLN_PRIVACY_FULL, &error));
  g_assert_no_error (error);
  out = run_python ("import json, sys, hashlib\n"
                    "a, b = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]\n"
                    "assert a['prompt'] == hashlib.sha256(b['prompt'].encode()).hexdigest()\n"
                    "assert a['client'] == b['client']\n"
                    "print(b['client'])\n", args);
  if (out)
    {
      g_strchomp (out);
      g_assert_cmpstr (out, ==, nasty[2]);
    }
  /* a device that is always full */
  if (g_file_test ("/dev/full", G_FILE_TEST_EXISTS))
    {
      g_assert_false (bln_audit_append_jsonl ("/dev/full", r, BLN_PRIVACY_FULL, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
      g_assert_nonnull (strstr (error->message, "No space"));
    }
  rm_rf (dir);
}

static void
test_export_dev_full (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "a.db", NULL);
  g_autoptr (GError) error = NULL;
  BlnDb *db = bln_db_open (path, &error);

  if (!g_file_test ("/dev/full", G_FILE_TEST_EXISTS))
    {
      g_test_skip ("no /dev/full here");
      bln_db_close (db);
      rm_rf (dir);
      return;
    }
  for (guint i = 0; i < 3; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      g_assert_cmpint (bln_audit_write (db, r, BLN_PRIVACY_FULL, &error), >, 0);
    }
  g_assert_false (bln_audit_export (db, "/dev/full", BLN_AUDIT_JSONL, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "No space"));
  g_clear_error (&error);
  g_assert_false (bln_audit_export (db, "/dev/full", BLN_AUDIT_CSV, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  g_assert_true (bln_db_check_integrity (db, TRUE, &error));
  bln_db_close (db);
  rm_rf (dir);
}

/* The database fills up mid-stream: each failing write is reported with
 * FULL, the earlier records survive, and the file passes integrity_check. */
static void
test_full_database (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "full.db", NULL);
  g_autoptr (GError) error = NULL;
  gint64 written = 0, failed = 0;
  BlnDb *db = bln_db_open (path, &error);

  g_assert_no_error (error);
  g_assert_true (bln_db_exec (db, "PRAGMA max_page_count = 40", &error));
  for (guint i = 0; i < 400; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      g_free (r->completion);
      r->completion = g_strnfill (900, 'x');
      if (bln_audit_write (db, r, BLN_PRIVACY_FULL, &error) > 0)
        written++;
      else
        {
          g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_FULL);
          g_clear_error (&error);
          failed++;
        }
    }
  g_assert_cmpint (written, >, 0);
  g_assert_cmpint (failed, >, 0);
  g_assert_cmpint (bln_audit_count (db, &error), ==, written);
  /* pruning frees room again */
  g_assert_cmpint (bln_audit_prune (db, 0, 2, &error), ==, written - 2);
  {
    g_autoptr (BlnAuditRecord) r = make_record (1);
    g_assert_cmpint (bln_audit_write (db, r, BLN_PRIVACY_FULL, &error), >, 0);
  }
  bln_db_close (db);
  {
    const char *args[] = { path, NULL };
    g_autofree char *out = run_python (
      "import sqlite3, sys\n"
      "c = sqlite3.connect(sys.argv[1])\n"
      "print(c.execute('PRAGMA integrity_check').fetchone()[0],\n"
      "      c.execute('SELECT count(*) FROM audit').fetchone()[0])\n", args);
    if (out)
      g_assert_cmpstr (out, ==, "ok 3\n");
  }
  rm_rf (dir);
}

static void
test_retention (void)
{
  g_autoptr (GError) error = NULL;
  BlnDb *db = bln_db_open (":memory:", &error);
  gint64 now = g_get_real_time ();

  g_assert_no_error (error);
  for (guint i = 0; i < 10; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      /* five records ten days old, five from now */
      r->time_us = i < 5 ? now - (gint64) 10 * 86400 * G_USEC_PER_SEC : now;
      g_assert_cmpint (bln_audit_write (db, r, BLN_PRIVACY_NONE, &error), >, 0);
    }
  g_assert_cmpint (bln_audit_prune (db, 7 * 86400, 0, &error), ==, 5);
  g_assert_cmpint (bln_audit_prune (db, 0, 3, &error), ==, 2);
  g_assert_cmpint (bln_audit_prune (db, 0, 3, &error), ==, 0);
  g_assert_cmpint (bln_audit_count (db, &error), ==, 3);
  g_assert_no_error (error);
  bln_db_close (db);
}

/* bln_audit_trim, the per-record retention: by age (through the time index)
 * and by count (through the ids), doing nothing when nothing is due. The
 * survivors must be exactly the newest ones, as an ORDER BY says. */
static void
test_trim (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) tail = NULL;
  BlnDb *db = bln_db_open (":memory:", &error);
  gint64 now = g_get_real_time ();
  gint64 ids[12];

  g_assert_no_error (error);
  g_assert_cmpint (bln_audit_trim (db, 0, 7 * 86400, 3, &error), ==, 0);  /* empty log */
  for (guint i = 0; i < 10; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      /* five records ten days old, five from now */
      r->time_us = i < 5 ? now - (gint64) 10 * 86400 * G_USEC_PER_SEC : now;
      ids[i] = bln_audit_write (db, r, BLN_PRIVACY_NONE, &error);
      g_assert_cmpint (ids[i], >, 0);
    }
  /* nothing due: no limits, or limits that hold */
  g_assert_cmpint (bln_audit_trim (db, ids[9], 0, 0, &error), ==, 0);
  g_assert_cmpint (bln_audit_trim (db, ids[9], 30 * 86400, 10, &error), ==, 0);
  g_assert_cmpint (bln_audit_count (db, &error), ==, 10);
  /* by age, then by count */
  g_assert_cmpint (bln_audit_trim (db, ids[9], 7 * 86400, 0, &error), ==, 5);
  g_assert_cmpint (bln_audit_trim (db, ids[9], 7 * 86400, 3, &error), ==, 2);
  g_assert_cmpint (bln_audit_trim (db, ids[9], 7 * 86400, 3, &error), ==, 0);
  g_assert_cmpint (bln_audit_count (db, &error), ==, 3);
  /* one more record: one goes, and the newest three stay */
  {
    g_autoptr (BlnAuditRecord) r = make_record (10);
    r->time_us = now;
    ids[10] = bln_audit_write (db, r, BLN_PRIVACY_NONE, &error);
  }
  g_assert_cmpint (bln_audit_trim (db, ids[10], 7 * 86400, 3, &error), ==, 1);
  tail = bln_audit_tail (db, 10, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (tail->len, ==, 3);
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (((BlnAuditRecord *) tail->pdata[i])->id, ==, ids[8 + i]);
  /* the exact pass agrees */
  g_assert_cmpint (bln_audit_prune (db, 7 * 86400, 3, &error), ==, 0);
  g_assert_no_error (error);
  bln_db_close (db);
}

/* Retention by size: the pages in use (as SQLite's own pragmas count them)
 * stay under the limit while records keep coming, the newest records stay,
 * and a limit that holds deletes nothing. */
static void
test_trim_bytes (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("bln-audit-XXXXXX", &error);
  g_autofree char *path = g_build_filename (dir, "a.db", NULL);
  const gint64 limit = 256 * 1024;
  BlnDb *db;
  gint64 last = 0, deleted = 0;

  g_assert_no_error (error);
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_audit_trim_bytes (db, 0, &error), ==, 0);
  for (guint i = 0; i < 600; i++)
    {
      g_autoptr (BlnAuditRecord) r = make_record (i);
      gint64 n;

      g_free (r->prompt);
      r->prompt = g_strnfill (2000, (char) ('a' + i % 26));   /* ~2 KB a record */
      last = bln_audit_write (db, r, BLN_PRIVACY_FULL, &error);
      g_assert_no_error (error);
      n = bln_audit_trim_bytes (db, limit, &error);
      g_assert_no_error (error);
      g_assert_cmpint (n, >=, 0);
      deleted += n;
    }
  {
    sqlite3_stmt *st;
    gint64 pc, fl, ps;
    g_autoptr (GPtrArray) tail = NULL;

    st = bln_db_prepare (db, "SELECT (SELECT page_count FROM pragma_page_count), "
                         "(SELECT freelist_count FROM pragma_freelist_count), "
                         "(SELECT page_size FROM pragma_page_size)", &error);
    g_assert_no_error (error);
    g_assert_cmpint (sqlite3_step (st), ==, SQLITE_ROW);
    pc = sqlite3_column_int64 (st, 0);
    fl = sqlite3_column_int64 (st, 1);
    ps = sqlite3_column_int64 (st, 2);
    sqlite3_finalize (st);
    g_test_message ("600 records of ~2 KB, limit %" G_GINT64_FORMAT " bytes: %" G_GINT64_FORMAT
                    " deleted, %" G_GINT64_FORMAT " bytes in use", limit, deleted, (pc - fl) * ps);
    g_assert_cmpint ((pc - fl) * ps, <=, limit);
    g_assert_cmpint (deleted, >, 400);   /* 1.2 MB written into 256 KiB */
    tail = bln_audit_tail (db, 1, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (tail->len, ==, 1);
    g_assert_cmpint (((BlnAuditRecord *) tail->pdata[0])->id, ==, last);
    /* a limit that holds deletes nothing */
    g_assert_cmpint (bln_audit_trim_bytes (db, 64 * 1024 * 1024, &error), ==, 0);
  }
  bln_db_close (db);
  g_unlink (path);
  {
    g_autofree char *wal = g_strconcat (path, "-wal", NULL);
    g_autofree char *shm = g_strconcat (path, "-shm", NULL);
    g_unlink (wal);
    g_unlink (shm);
  }
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Audit/roundtrip-sql-like-exports", test_roundtrip);
  g_test_add_func ("/Baleen/Audit/jsonl-sink", test_jsonl_sink);
  g_test_add_func ("/Baleen/Audit/export-dev-full", test_export_dev_full);
  g_test_add_func ("/Baleen/Audit/full-database", test_full_database);
  g_test_add_func ("/Baleen/Audit/retention", test_retention);
  g_test_add_func ("/Baleen/Audit/trim", test_trim);
  g_test_add_func ("/Baleen/Audit/trim-bytes", test_trim_bytes);
  return g_test_run ();
}
