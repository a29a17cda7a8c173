/* db.h — the settings database: one SQLite file per user.
 *
 * Opening a database creates it when missing, switches it to WAL with a busy
 * timeout, checks its integrity and brings its schema up to date by applying
 * the numbered migrations in data/migrations/ (compiled in as a GResource) in
 * one transaction each. PRAGMA user_version holds the last migration applied.
 *
 * Failures are reported in the BLN_DB_ERROR domain with a code that says what
 * the user can do about it (corrupt, read-only, full, busy), never by aborting.
 * A BlnDb is not thread-safe: use it from one thread at a time.
 */
#pragma once

#include <glib.h>
#include <sqlite3.h>

G_BEGIN_DECLS

#define BLN_DB_ERROR (bln_db_error_quark ())

typedef enum {
  BLN_DB_ERROR_OPEN,      /* the file or its folder cannot be opened or created */
  BLN_DB_ERROR_CORRUPT,   /* not a database, or PRAGMA integrity_check failed */
  BLN_DB_ERROR_READONLY,  /* a write was refused: read-only file, folder or medium */
  BLN_DB_ERROR_FULL,      /* the disk or the database's page limit is full */
  BLN_DB_ERROR_BUSY,      /* another process held the lock past the busy timeout */
  BLN_DB_ERROR_SCHEMA,    /* the file was written by a newer Baleen, or a migration failed */
  BLN_DB_ERROR_CONSTRAINT,/* a uniqueness or CHECK constraint refused a value */
  BLN_DB_ERROR_FAILED,    /* any other SQLite error; the message has SQLite's text */
} BlnDbError;

GQuark bln_db_error_quark (void);

typedef struct _BlnDb BlnDb;

/* bln_db_default_path:
 * Returns the default database path, $XDG_DATA_HOME/baleen/baleen.db (GLib's
 * user data dir). Newly allocated; free with g_free. Does not create anything.
 */
char *bln_db_default_path (void);

/* bln_db_open:
 * @path: the database file, or NULL for bln_db_default_path(); its folder is
 *   created when missing. ":memory:" opens a private in-memory database.
 * Opens (creating when needed), configures, checks and migrates the database.
 * A database that is read-only on disk is still opened when its schema is
 * current, so that it can be read; writes then fail with BLN_DB_ERROR_READONLY.
 * Returns a new handle (free with bln_db_close) or NULL with @error set.
 */
BlnDb *bln_db_open (const char *path, GError **error);

/* bln_db_close: closes the database and frees @db. NULL is ignored. */
void bln_db_close (BlnDb *db);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnDb, bln_db_close)

/* bln_db_handle: the underlying connection, owned by @db, for prepared
 * statements in the other app/core stores. Never NULL. */
sqlite3 *bln_db_handle (BlnDb *db);

/* bln_db_path: the file name @db was opened with (owned by @db). */
const char *bln_db_path (BlnDb *db);

/* bln_db_schema_version: the number of the last migration applied. */
int bln_db_schema_version (BlnDb *db);

/* bln_db_latest_version: the number of the newest migration compiled in. */
int bln_db_latest_version (void);

/* bln_db_exec:
 * Runs one or more SQL statements without results (no transaction is added).
 * Returns FALSE with @error set (code mapped from SQLite's) on failure.
 */
gboolean bln_db_exec (BlnDb *db, const char *sql, GError **error);

/* bln_db_begin / bln_db_commit / bln_db_rollback:
 * Every write in app/core runs between bln_db_begin (BEGIN IMMEDIATE, so a
 * concurrent writer waits up to the busy timeout instead of failing late) and
 * bln_db_commit; on any failure the caller calls bln_db_rollback, which is
 * safe to call when no transaction is open and never fails.
 */
gboolean bln_db_begin (BlnDb *db, GError **error);
gboolean bln_db_commit (BlnDb *db, GError **error);
void bln_db_rollback (BlnDb *db);

/* bln_db_prepare:
 * Prepares one statement on @db. Returns it (finalize with sqlite3_finalize)
 * or NULL with @error set.
 */
sqlite3_stmt *bln_db_prepare (BlnDb *db, const char *sql, GError **error);

/* bln_db_set_error:
 * Sets @error from SQLite result code @rc and @db's last message, prefixed by
 * @what ("cannot save the setting"). Used by the other stores.
 */
void bln_db_set_error (BlnDb *db, int rc, const char *what, GError **error);

/* bln_db_check_integrity:
 * Runs PRAGMA quick_check (or integrity_check when @full). Returns FALSE with
 * BLN_DB_ERROR_CORRUPT and the first problem found when the file is damaged.
 */
gboolean bln_db_check_integrity (BlnDb *db, gboolean full, GError **error);

G_END_DECLS
