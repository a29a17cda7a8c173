/* keys.h — API keys, stored hashed in the settings database.
 *
 * A key is shown once, when it is created: "bln-" followed by 43 characters
 * of URL-safe base64 (32 random bytes). The database keeps only a per-key
 * random salt and HMAC-SHA256(salt, key), plus the key's first characters
 * (its prefix) so a presented key finds its row without scanning them all,
 * and so listings can tell keys apart. Hashes are compared in constant time.
 */
#pragma once

#include <glib.h>

#include "db.h"

G_BEGIN_DECLS

typedef struct {
  gint64 id;
  char *name;
  char *prefix;      /* "bln-" and the next 8 characters of the key */
  gint64 created;    /* unix seconds */
  gint64 last_used;  /* unix seconds, 0 when never used */
  gint64 revoked;    /* unix seconds, 0 while the key is valid */
  gint64 rpm;        /* requests per minute, 0 = the server's default */
  gint64 tpm;        /* tokens per minute, 0 = the server's default */
} BlnKeyInfo;

/* bln_key_info_free: frees @info and its strings. NULL is ignored. */
void bln_key_info_free (BlnKeyInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnKeyInfo, bln_key_info_free)

/* bln_keys_create:
 * Creates a key named @name (unique, non-empty UTF-8) with per-key limits
 * @rpm and @tpm (>= 0; 0 = the server's default) and stores its hash.
 * Returns the key itself, the only time it is available (new string), and its
 * id in @out_id when non-NULL; NULL with @error set on failure
 * (BLN_DB_ERROR_CONSTRAINT when the name is taken).
 */
char *bln_keys_create (BlnDb *db, const char *name, gint64 rpm, gint64 tpm, gint64 *out_id,
                       GError **error);

/* bln_keys_list: all keys, revoked ones included, oldest first: a new array
 * of BlnKeyInfo * that frees its elements; NULL with @error set. */
GPtrArray *bln_keys_list (BlnDb *db, GError **error);

/* bln_keys_revoke:
 * Revokes the key whose id or name is @id_or_name. FALSE with @error set
 * (BLN_ERROR_INVALID when there is no such valid key).
 */
gboolean bln_keys_revoke (BlnDb *db, const char *id_or_name, GError **error);

/* bln_keys_verify:
 * Checks a presented key (e.g. from "Authorization: Bearer ..."). Returns the
 * matching valid key's info (new, free with bln_key_info_free) and records its
 * use time, or NULL when the key is unknown or revoked (with @error set to
 * BLN_ERROR_INVALID), or on a database error (@error in BLN_DB_ERROR). A
 * failed last-use write does not reject the key.
 */
BlnKeyInfo *bln_keys_verify (BlnDb *db, const char *key, GError **error);

/* bln_keys_count_valid: the number of keys not revoked, or -1 with @error set. */
gint64 bln_keys_count_valid (BlnDb *db, GError **error);

/* bln_const_time_equal:
 * Compares @n bytes of @a and @b in time that depends only on @n.
 */
gboolean bln_const_time_equal (const void *a, const void *b, gsize n);

G_END_DECLS
