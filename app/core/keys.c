/* keys.c — creating, listing, revoking and checking hashed API keys. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bln-error.h"

#define KEY_PREFIX "bln-"
#define KEY_RANDOM_BYTES 32
#define KEY_SHOWN_CHARS 12 /* "bln-" + 8 characters: enough to find the row */
#define SALT_BYTES 16

void
bln_key_info_free (BlnKeyInfo *info)
{
  if (!info)
    return;
  g_free (info->name);
  g_free (info->prefix);
  g_free (info);
}

gboolean
bln_const_time_equal (const void *a, const void *b, gsize n)
{
  const volatile guint8 *x = a, *y = b;
  guint8 diff = 0;

  for (gsize i = 0; i < n; i++)
    diff |= x[i] ^ y[i];
  return diff == 0;
}

/* Fills @buf with bytes from the kernel's random source. */
static gboolean
random_bytes (guint8 *buf, gsize n, GError **error)
{
  gsize got = 0;

  while (got < n)
    {
      ssize_t r = getrandom (buf + got, n - got, 0);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        {
          int saved = errno;
          g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "no random bytes for a key: %s",
                       g_strerror (saved));
          return FALSE;
        }
      got += r;
    }
  return TRUE;
}

static char *
to_hex (const guint8 *b, gsize n)
{
  char *s = g_malloc (n * 2 + 1);

  for (gsize i = 0; i < n; i++)
    g_snprintf (s + i * 2, 3, "%02x", b[i]);
  return s;
}

/* HMAC-SHA256 keyed with the salt (hex text, as stored) over the key. */
static char *
key_hash (const char *salt_hex, const char *key)
{
  g_autoptr (GHmac) h = g_hmac_new (G_CHECKSUM_SHA256, (const guchar *) salt_hex,
                                    strlen (salt_hex));

  g_hmac_update (h, (const guchar *) key, strlen (key));
  return g_strdup (g_hmac_get_string (h));
}

char *
bln_keys_create (BlnDb *db, const char *name, gint64 rpm, gint64 tpm, gint64 *out_id,
                 GError **error)
{
  guint8 raw[KEY_RANDOM_BYTES], salt[SALT_BYTES];
  g_autofree char *b64 = NULL;
  g_autofree char *key = NULL;
  g_autofree char *salt_hex = NULL;
  g_autofree char *hash = NULL;
  g_autofree char *prefix = NULL;
  sqlite3_stmt *st;
  int rc;

  if (!name || !*name || !g_utf8_validate (name, -1, NULL))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "a key needs a non-empty UTF-8 name");
      return NULL;
    }
  if (rpm < 0 || tpm < 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "key limits cannot be negative");
      return NULL;
    }
  if (!random_bytes (raw, sizeof raw, error) || !random_bytes (salt, sizeof salt, error))
    return NULL;

  b64 = g_base64_encode (raw, sizeof raw);
  g_strdelimit (b64, "+", '-');
  g_strdelimit (b64, "/", '_');
  g_strdelimit (b64, "=", '\0');
  key = g_strconcat (KEY_PREFIX, b64, NULL);
  salt_hex = to_hex (salt, sizeof salt);
  hash = key_hash (salt_hex, key);
  prefix = g_strndup (key, KEY_SHOWN_CHARS);
  memset (raw, 0, sizeof raw);

  if (!bln_db_begin (db, error))
    return NULL;
  st = bln_db_prepare (db, "INSERT INTO api_keys (name, prefix, salt, hash, created, rpm, tpm) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", error);
  if (!st)
    {
      bln_db_rollback (db);
      return NULL;
    }
  sqlite3_bind_text (st, 1, name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 2, prefix, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 3, salt_hex, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 4, hash, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64 (st, 5, g_get_real_time () / G_USEC_PER_SEC);
  sqlite3_bind_int64 (st, 6, rpm);
  sqlite3_bind_int64 (st, 7, tpm);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      g_autofree char *what = g_strdup_printf ("cannot create the key '%s'", name);
      bln_db_set_error (db, rc, what, error);
      bln_db_rollback (db);
      return NULL;
    }
  if (out_id)
    *out_id = sqlite3_last_insert_rowid (bln_db_handle (db));
  if (!bln_db_commit (db, error))
    return NULL;
  return g_steal_pointer (&key);
}

static BlnKeyInfo *
info_from_row (sqlite3_stmt *st)
{
  BlnKeyInfo *k = g_new0 (BlnKeyInfo, 1);

  k->id = sqlite3_column_int64 (st, 0);
  k->name = g_strdup ((const char *) sqlite3_column_text (st, 1));
  k->prefix = g_strdup ((const char *) sqlite3_column_text (st, 2));
  k->created = sqlite3_column_int64 (st, 3);
  k->last_used = sqlite3_column_int64 (st, 4);
  k->revoked = sqlite3_column_int64 (st, 5);
  k->rpm = sqlite3_column_int64 (st, 6);
  k->tpm = sqlite3_column_int64 (st, 7);
  return k;
}

#define INFO_COLUMNS "id, name, prefix, created, last_used, revoked, rpm, tpm"

GPtrArray *
bln_keys_list (BlnDb *db, GError **error)
{
  g_autoptr (GPtrArray) list =
    g_ptr_array_new_with_free_func ((GDestroyNotify) bln_key_info_free);
  sqlite3_stmt *st = bln_db_prepare (db, "SELECT " INFO_COLUMNS " FROM api_keys ORDER BY id",
                                     error);
  int rc;

  if (!st)
    return NULL;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    g_ptr_array_add (list, info_from_row (st));
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the keys", error);
      return NULL;
    }
  return g_steal_pointer (&list);
}

gboolean
bln_keys_revoke (BlnDb *db, const char *id_or_name, GError **error)
{
  sqlite3_stmt *st;
  char *end = NULL;
  gint64 id;
  int rc;

  g_return_val_if_fail (id_or_name != NULL, FALSE);
  id = g_ascii_strtoll (id_or_name, &end, 10);
  if (!*id_or_name || *end)
    id = -1;
  if (!bln_db_begin (db, error))
    return FALSE;
  st = bln_db_prepare (db, "UPDATE api_keys SET revoked = ? WHERE revoked IS NULL AND "
                           "(id = ? OR name = ?)", error);
  if (!st)
    {
      bln_db_rollback (db);
      return FALSE;
    }
  sqlite3_bind_int64 (st, 1, g_get_real_time () / G_USEC_PER_SEC);
  sqlite3_bind_int64 (st, 2, id);
  sqlite3_bind_text (st, 3, id_or_name, -1, SQLITE_TRANSIENT);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot revoke the key", error);
      bln_db_rollback (db);
      return FALSE;
    }
  if (sqlite3_changes (bln_db_handle (db)) == 0)
    {
      bln_db_rollback (db);
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "there is no valid key '%s'",
                   id_or_name);
      return FALSE;
    }
  return bln_db_commit (db, error);
}

static void
touch (BlnDb *db, gint64 id)
{
  g_autoptr (GError) local = NULL;
  sqlite3_stmt *st;
  int rc;

  if (!bln_db_begin (db, &local))
    {
      g_message ("cannot record the use of key %" G_GINT64_FORMAT ": %s", id, local->message);
      return;
    }
  st = bln_db_prepare (db, "UPDATE api_keys SET last_used = ? WHERE id = ?", &local);
  if (!st)
    {
      bln_db_rollback (db);
      return;
    }
  sqlite3_bind_int64 (st, 1, g_get_real_time () / G_USEC_PER_SEC);
  sqlite3_bind_int64 (st, 2, id);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE || !bln_db_commit (db, &local))
    {
      bln_db_rollback (db);
      g_message ("cannot record the use of key %" G_GINT64_FORMAT, id);
    }
}

BlnKeyInfo *
bln_keys_verify (BlnDb *db, const char *key, GError **error)
{
  g_autofree char *prefix = NULL;
  BlnKeyInfo *found = NULL;
  sqlite3_stmt *st;
  int rc;

  if (!key || strlen (key) < KEY_SHOWN_CHARS || strlen (key) > 512)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "invalid API key");
      return NULL;
    }
  prefix = g_strndup (key, KEY_SHOWN_CHARS);
  st = bln_db_prepare (db, "SELECT " INFO_COLUMNS ", salt, hash FROM api_keys "
                           "WHERE prefix = ? AND revoked IS NULL", error);
  if (!st)
    return NULL;
  sqlite3_bind_text (st, 1, prefix, -1, SQLITE_TRANSIENT);
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      const char *salt = (const char *) sqlite3_column_text (st, 8);
      const char *stored = (const char *) sqlite3_column_text (st, 9);
      g_autofree char *hash = NULL;

      if (!salt || !stored)
        continue;
      hash = key_hash (salt, key);
      if (strlen (stored) == strlen (hash) &&
          bln_const_time_equal (hash, stored, strlen (hash)) && !found)
        found = info_from_row (st);
    }
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_key_info_free (found);
      bln_db_set_error (db, rc, "cannot check the API key", error);
      return NULL;
    }
  if (!found)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "invalid API key");
      return NULL;
    }
  touch (db, found->id);
  found->last_used = g_get_real_time () / G_USEC_PER_SEC;
  return found;
}

gint64
bln_keys_count_valid (BlnDb *db, GError **error)
{
  sqlite3_stmt *st = bln_db_prepare (db, "SELECT count(*) FROM api_keys WHERE revoked IS NULL",
                                     error);
  gint64 n = -1;

  if (!st)
    return -1;
  if (sqlite3_step (st) == SQLITE_ROW)
    n = sqlite3_column_int64 (st, 0);
  else
    bln_db_set_error (db, sqlite3_errcode (bln_db_handle (db)), "cannot count the keys", error);
  sqlite3_finalize (st);
  return n;
}
