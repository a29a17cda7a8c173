/* test-keys.c — API keys: created once, stored only as a salted HMAC (checked
 * with Python's hmac/hashlib on the rows Python's sqlite3 reads), verified,
 * revoked, with SQL-like names kept intact. */
#include <glib.h>
#include <string.h>

#include "bln-error.h"
#include "keys.h"
#include "safety-test-util.h"

static void
test_lifecycle (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "k.db", NULL);
  g_autoptr (GError) error = NULL;
  const char *sqlish = "bob'); DROP TABLE api_keys; --";
  g_autofree char *k1 = NULL;
  g_autofree char *k2 = NULL;
  g_autofree char *wrong = NULL;
  g_autoptr (BlnKeyInfo) info = NULL;
  g_autoptr (GPtrArray) list = NULL;
  gint64 id1 = 0, id2 = 0;
  BlnDb *db = bln_db_open (path, &error);

  g_assert_no_error (error);
  k1 = bln_keys_create (db, sqlish, 30, 1000, &id1, &error);
  g_assert_no_error (error);
  k2 = bln_keys_create (db, "ci", 0, 0, &id2, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_prefix (k1, "bln-"));
  g_assert_cmpuint (strlen (k1), ==, 4 + 43);
  g_assert_cmpstr (k1, !=, k2);

  /* the name is unique */
  g_assert_null (bln_keys_create (db, "ci", 0, 0, NULL, &error));
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_CONSTRAINT);
  g_clear_error (&error);
  g_assert_null (bln_keys_create (db, "neg", -1, 0, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  info = bln_keys_verify (db, k1, &error);
  g_assert_no_error (error);
  g_assert_cmpint (info->id, ==, id1);
  g_assert_cmpstr (info->name, ==, sqlish);
  g_assert_cmpint (info->rpm, ==, 30);
  g_assert_cmpint (info->tpm, ==, 1000);
  g_assert_cmpint (info->last_used, >, 0);

  /* one changed character, a truncated key, nothing */
  wrong = g_strdup (k1);
  wrong[20] = wrong[20] == 'A' ? 'B' : 'A';
  g_assert_null (bln_keys_verify (db, wrong, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  wrong[30] = '\0';
  g_assert_null (bln_keys_verify (db, wrong, &error));
  g_clear_error (&error);
  g_assert_null (bln_keys_verify (db, "", &error));
  g_clear_error (&error);

  g_assert_cmpint (bln_keys_count_valid (db, &error), ==, 2);
  g_assert_true (bln_keys_revoke (db, "ci", &error));
  g_assert_null (bln_keys_verify (db, k2, &error));
  g_clear_error (&error);
  g_assert_false (bln_keys_revoke (db, "ci", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_cmpint (bln_keys_count_valid (db, &error), ==, 1);

  list = bln_keys_list (db, &error);
  g_assert_cmpuint (list->len, ==, 2);
  g_assert_cmpint (((BlnKeyInfo *) list->pdata[1])->revoked, >, 0);
  g_assert_cmpint (((BlnKeyInfo *) list->pdata[0])->revoked, ==, 0);
  bln_db_close (db);

  /* What is on disk: no key in clear anywhere in the file; the stored hash is
   * HMAC-SHA256(salt, key) as Python's hmac module computes it. */
  {
    const char *args[] = { path, k1, NULL };
    g_autofree char *out = run_python (
      "import sqlite3, sys, hmac, hashlib\n"
      "c = sqlite3.connect(sys.argv[1])\n"
      "rows = c.execute('SELECT name, salt, hash, prefix FROM api_keys ORDER BY id').fetchall()\n"
      "raw = open(sys.argv[1], 'rb').read()\n"
      "for w in ('-wal', '-shm'):\n"
      "    try: raw += open(sys.argv[1] + w, 'rb').read()\n"
      "    except OSError: pass\n"
      "assert sys.argv[2].encode() not in raw, 'key stored in clear'\n"
      "name, salt, h, prefix = rows[0]\n"
      "want = hmac.new(salt.encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest()\n"
      "assert hmac.compare_digest(h, want), (h, want)\n"
      "assert sys.argv[2].startswith(prefix)\n"
      "assert rows[0][1] != rows[1][1], 'salts must differ'\n"
      "print(name)\n", args);
    if (out)
      {
        g_strchomp (out);
        g_assert_cmpstr (out, ==, sqlish);
      }
  }
  rm_rf (dir);
}

static void
test_const_time_equal (void)
{
  g_assert_true (bln_const_time_equal ("abcdef", "abcdef", 6));
  g_assert_false (bln_const_time_equal ("abcdef", "abcdeg", 6));
  g_assert_false (bln_const_time_equal ("xbcdef", "abcdef", 6));
  g_assert_true (bln_const_time_equal ("a", "b", 0));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Keys/lifecycle", test_lifecycle);
  g_test_add_func ("/Baleen/Keys/const-time-equal", test_const_time_equal);
  return g_test_run ();
}
