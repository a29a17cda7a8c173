/* db.c — opening, checking and migrating the settings database. */
#include "db.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "bln-migrations.h"

#define BLN_DB_BUSY_TIMEOUT_MS 5000
#define MIGRATIONS_DIR "/org/baleen/migrations/"

struct _BlnDb {
  sqlite3 *conn;
  char *path;
  int version;
};

G_DEFINE_QUARK (bln-db-error-quark, bln_db_error)

static BlnDbError
code_for (int rc)
{
  switch (rc & 0xff)
    {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return BLN_DB_ERROR_CORRUPT;
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return BLN_DB_ERROR_READONLY;
    case SQLITE_FULL:
      return BLN_DB_ERROR_FULL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return BLN_DB_ERROR_BUSY;
    case SQLITE_CANTOPEN:
      return BLN_DB_ERROR_OPEN;
    case SQLITE_CONSTRAINT:
      return BLN_DB_ERROR_CONSTRAINT;
    default:
      return BLN_DB_ERROR_FAILED;
    }
}

/* A sentence the user can act on, ahead of SQLite's own words. */
static const char *
advice_for (BlnDbError code)
{
  switch (code)
    {
    case BLN_DB_ERROR_CORRUPT:
      return "the database file is damaged or is not a Baleen database; restore a backup or "
             "move it away to start afresh";
    case BLN_DB_ERROR_READONLY:
      return "the database is read-only; check the permissions of the file and its folder";
    case BLN_DB_ERROR_FULL:
      return "the database or the disk is full; free some space or prune the audit log";
    case BLN_DB_ERROR_BUSY:
      return "the database is locked by another process";
    case BLN_DB_ERROR_OPEN:
      return "the database file cannot be opened";
    default:
      return NULL;
    }
}

void
bln_db_set_error (BlnDb *db, int rc, const char *what, GError **error)
{
  BlnDbError code = code_for (rc);
  const char *advice = advice_for (code);
  const char *msg = db && db->conn ? sqlite3_errmsg (db->conn) : sqlite3_errstr (rc);

  if (advice)
    g_set_error (error, BLN_DB_ERROR, code, "%s: %s (%s)", what, advice, msg);
  else
    g_set_error (error, BLN_DB_ERROR, code, "%s: %s", what, msg);
}

char *
bln_db_default_path (void)
{
  return g_build_filename (g_get_user_data_dir (), "baleen", "baleen.db", NULL);
}

sqlite3 *
bln_db_handle (BlnDb *db)
{
  return db->conn;
}

const char *
bln_db_path (BlnDb *db)
{
  return db->path;
}

int
bln_db_schema_version (BlnDb *db)
{
  return db->version;
}

gboolean
bln_db_exec (BlnDb *db, const char *sql, GError **error)
{
  int rc;

  g_return_val_if_fail (db != NULL && sql != NULL, FALSE);
  rc = sqlite3_exec (db->conn, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    {
      bln_db_set_error (db, rc, "database statement failed", error);
      return FALSE;
    }
  return TRUE;
}

gboolean
bln_db_begin (BlnDb *db, GError **error)
{
  return bln_db_exec (db, "BEGIN IMMEDIATE", error);
}

gboolean
bln_db_commit (BlnDb *db, GError **error)
{
  int rc = sqlite3_exec (db->conn, "COMMIT", NULL, NULL, NULL);

  if (rc != SQLITE_OK)
    {
      bln_db_set_error (db, rc, "cannot save to the database", error);
      bln_db_rollback (db);
      return FALSE;
    }
  return TRUE;
}

void
bln_db_rollback (BlnDb *db)
{
  if (!sqlite3_get_autocommit (db->conn))
    sqlite3_exec (db->conn, "ROLLBACK", NULL, NULL, NULL);
}

sqlite3_stmt *
bln_db_prepare (BlnDb *db, const char *sql, GError **error)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2 (db->conn, sql, -1, &st, NULL);

  if (rc != SQLITE_OK)
    {
      bln_db_set_error (db, rc, "cannot read the database", error);
      sqlite3_finalize (st);
      return NULL;
    }
  return st;
}

gboolean
bln_db_check_integrity (BlnDb *db, gboolean full, GError **error)
{
  sqlite3_stmt *st;
  int rc;
  gboolean ok = TRUE;

  st = bln_db_prepare (db, full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)", error);
  if (!st)
    return FALSE;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      const char *line = (const char *) sqlite3_column_text (st, 0);
      if (ok && g_strcmp0 (line, "ok") != 0)
        {
          g_set_error (error, BLN_DB_ERROR, BLN_DB_ERROR_CORRUPT, "%s: %s (%s)",
                       db->path, advice_for (BLN_DB_ERROR_CORRUPT),
                       line ? line : "integrity check failed");
          ok = FALSE;
        }
    }
  if (ok && rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot check the database", error);
      ok = FALSE;
    }
  sqlite3_finalize (st);
  return ok;
}

/* ---- migrations ---------------------------------------------------------- */

typedef struct {
  int number;
  char *name;
} Migration;

static int
migration_cmp (gconstpointer a, gconstpointer b)
{
  return ((const Migration *) a)->number - ((const Migration *) b)->number;
}

static void
migration_clear (gpointer p)
{
  g_free (((Migration *) p)->name);
}

/* The compiled-in migrations, sorted by number. Names that do not start with
 * a number are ignored. */
static GArray *
list_migrations (void)
{
  GArray *list = g_array_new (FALSE, TRUE, sizeof (Migration));
  g_auto (GStrv) names = NULL;

  g_array_set_clear_func (list, migration_clear);
  names = g_resource_enumerate_children (bln_migrations_get_resource (), MIGRATIONS_DIR,
                                         G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  for (guint i = 0; names && names[i]; i++)
    {
      char *end = NULL;
      long n = strtol (names[i], &end, 10);
      Migration m;

      if (end == names[i] || n <= 0 || n > 100000 || !g_str_has_suffix (names[i], ".sql"))
        continue;
      m.number = (int) n;
      m.name = g_strdup (names[i]);
      g_array_append_val (list, m);
    }
  g_array_sort (list, migration_cmp);
  return list;
}

int
bln_db_latest_version (void)
{
  g_autoptr (GArray) list = list_migrations ();

  return list->len ? g_array_index (list, Migration, list->len - 1).number : 0;
}

static gboolean
read_version (BlnDb *db, GError **error)
{
  sqlite3_stmt *st = bln_db_prepare (db, "PRAGMA user_version", error);
  int rc;

  if (!st)
    return FALSE;
  rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    db->version = sqlite3_column_int (st, 0);
  sqlite3_finalize (st);
  if (rc != SQLITE_ROW)
    {
      bln_db_set_error (db, rc, "cannot read the database", error);
      return FALSE;
    }
  return TRUE;
}

static gboolean
apply_migration (BlnDb *db, const Migration *m, GError **error)
{
  g_autofree char *rpath = g_strconcat (MIGRATIONS_DIR, m->name, NULL);
  g_autoptr (GBytes) bytes = NULL;
  g_autofree char *sql = NULL;
  g_autofree char *bump = NULL;
  g_autoptr (GError) local = NULL;
  gsize len = 0;
  const char *data;

  bytes = g_resource_lookup_data (bln_migrations_get_resource (), rpath,
                                  G_RESOURCE_LOOKUP_FLAGS_NONE, &local);
  if (!bytes)
    {
      g_set_error (error, BLN_DB_ERROR, BLN_DB_ERROR_SCHEMA, "migration %s: %s", m->name,
                   local->message);
      return FALSE;
    }
  data = g_bytes_get_data (bytes, &len);
  sql = g_strndup (data, len);
  bump = g_strdup_printf ("PRAGMA user_version = %d", m->number);

  if (!bln_db_begin (db, error))
    return FALSE;
  if (!bln_db_exec (db, sql, &local) || !bln_db_exec (db, bump, &local))
    {
      bln_db_rollback (db);
      g_set_error (error, BLN_DB_ERROR,
                   local->code == BLN_DB_ERROR_FAILED ? BLN_DB_ERROR_SCHEMA : local->code,
                   "migration %s failed: %s", m->name, local->message);
      return FALSE;
    }
  if (!bln_db_commit (db, error))
    return FALSE;
  db->version = m->number;
  return TRUE;
}

static gboolean
migrate (BlnDb *db, GError **error)
{
  g_autoptr (GArray) list = list_migrations ();
  int latest = list->len ? g_array_index (list, Migration, list->len - 1).number : 0;

  if (db->version > latest)
    {
      g_set_error (error, BLN_DB_ERROR, BLN_DB_ERROR_SCHEMA,
                   "%s has schema version %d, newer than this Baleen knows (%d); "
                   "use a newer Baleen or another database", db->path, db->version, latest);
      return FALSE;
    }
  for (guint i = 0; i < list->len; i++)
    {
      const Migration *m = &g_array_index (list, Migration, i);
      if (m->number <= db->version)
        continue;
      if (sqlite3_db_readonly (db->conn, "main") == 1)
        {
          g_set_error (error, BLN_DB_ERROR, BLN_DB_ERROR_READONLY,
                       "%s needs schema migration %s but is read-only; check the permissions "
                       "of the file and its folder", db->path, m->name);
          return FALSE;
        }
      if (!apply_migration (db, m, error))
        return FALSE;
    }
  return TRUE;
}

/* ---- open / close ------------------------------------------------------- */

BlnDb *
bln_db_open (const char *path, GError **error)
{
  g_autofree char *default_path = NULL;
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (GError) local = NULL;
  gboolean memory, uri;
  int rc;

  if (!path)
    path = default_path = bln_db_default_path ();
  memory = strcmp (path, ":memory:") == 0;
  uri = g_str_has_prefix (path, "file:");

  if (!memory && !uri)
    {
      g_autofree char *dir = g_path_get_dirname (path);
      if (g_mkdir_with_parents (dir, 0700) != 0)
        {
          int saved = errno;
          g_set_error (error, BLN_DB_ERROR, BLN_DB_ERROR_OPEN,
                       "cannot create the folder %s for the database: %s", dir,
                       g_strerror (saved));
          return NULL;
        }
    }

  db = g_new0 (BlnDb, 1);
  db->path = g_strdup (path);
  rc = sqlite3_open_v2 (path, &db->conn,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
  if (rc != SQLITE_OK)
    {
      g_autofree char *what = g_strdup_printf ("cannot open %s", path);
      bln_db_set_error (db, rc, what, error);
      return NULL;
    }
  sqlite3_extended_result_codes (db->conn, 1);
  sqlite3_busy_timeout (db->conn, BLN_DB_BUSY_TIMEOUT_MS);

  /* The first read tells a non-database file apart. */
  if (!read_version (db, &local))
    {
      g_set_error (error, BLN_DB_ERROR, local->code, "%s: %s", path, local->message);
      return NULL;
    }
  if (!memory && sqlite3_db_readonly (db->conn, "main") != 1)
    {
      if (!bln_db_exec (db, "PRAGMA journal_mode = WAL", &local))
        {
          g_set_error (error, BLN_DB_ERROR, local->code, "%s: %s", path, local->message);
          return NULL;
        }
    }
  if (!bln_db_exec (db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL", error))
    return NULL;
  if (!bln_db_check_integrity (db, FALSE, error))
    return NULL;
  if (!migrate (db, error))
    return NULL;
  return g_steal_pointer (&db);
}

void
bln_db_close (BlnDb *db)
{
  if (!db)
    return;
  if (db->conn)
    sqlite3_close_v2 (db->conn);
  g_free (db->path);
  g_free (db);
}
