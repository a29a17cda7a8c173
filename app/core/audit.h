/* audit.h — the audit log: one record per API request, in the settings
 * database and optionally in a JSON-lines file.
 *
 * What is kept of the prompt and the answer follows the privacy setting: the
 * text itself, its SHA-256 (hex), or nothing. Every write is one transaction:
 * when the disk or the database is full the write fails cleanly (the caller
 * reports it and still answers the request) and the database stays intact.
 */
#pragma once

#include <glib.h>

#include "db.h"

G_BEGIN_DECLS

typedef enum { BLN_PRIVACY_NONE, BLN_PRIVACY_HASHED, BLN_PRIVACY_FULL } BlnPrivacy;

/* bln_privacy_from_string: "none", "hashed" or "full"; FALSE when unknown. */
gboolean bln_privacy_from_string (const char *s, BlnPrivacy *out);
const char *bln_privacy_to_string (BlnPrivacy privacy);

typedef struct {
  gint64 id;                /* row id (set when read back) */
  gint64 time_us;           /* unix microseconds; 0 = now when written */
  char *request_id;
  char *client;             /* client address */
  gint64 key_id;            /* API key id, 0 = none */
  char *model;
  char *endpoint;           /* e.g. "/v1/chat/completions" */
  gint64 prompt_tokens, completion_tokens, cached_tokens;
  double ttft_ms;           /* time to first token */
  double total_ms;
  char *finish_reason;
  char *verdicts;           /* JSON array of rule verdicts; NULL = "[]" */
  char *privacy;            /* how prompt/completion were stored (set when read back) */
  char *prompt;             /* written: the full text; read back: as stored, may be NULL */
  char *completion;
} BlnAuditRecord;

/* bln_audit_record_free: frees @rec and its strings. NULL is ignored. */
void bln_audit_record_free (BlnAuditRecord *rec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnAuditRecord, bln_audit_record_free)

/* bln_audit_write:
 * Stores @rec (borrowed) in one transaction, keeping its prompt and completion
 * as @privacy says. NULL strings are stored as empty (prompt/completion as
 * NULL). Returns the new row id, or 0 with @error set (BLN_DB_ERROR_FULL when
 * the disk or database is full); nothing is half-written.
 */
gint64 bln_audit_write (BlnDb *db, const BlnAuditRecord *rec, BlnPrivacy privacy,
                        GError **error);

/* bln_audit_append_jsonl:
 * Appends @rec as one JSON line (the same object bln_audit_record_to_json
 * gives, content per @privacy) to the file @path, creating it with mode 0600.
 * FALSE with @error set (BLN_ERROR_IO) when it cannot be written completely.
 */
gboolean bln_audit_append_jsonl (const char *path, const BlnAuditRecord *rec,
                                 BlnPrivacy privacy, GError **error);

/* bln_audit_prune:
 * Deletes records older than @max_age_s seconds (0: no age limit), then the
 * oldest records beyond @max_rows (0: no count limit), in one transaction.
 * Returns the number deleted, or -1 with @error set.
 */
gint64 bln_audit_prune (BlnDb *db, gint64 max_age_s, gint64 max_rows, GError **error);

/* bln_audit_trim_bytes:
 * Retention by size: while the database's pages in use (page_count minus
 * freelist_count, times page_size: what the file would shrink to after a
 * VACUUM) exceed @max_bytes, deletes the oldest audit records, a 32nd of
 * them (at least 16) at a time. Freed pages are reused by later writes, so
 * the file stops growing near @max_bytes. 0 or less: no limit. Returns the
 * number of records deleted, or -1 with @error. */
gint64 bln_audit_trim_bytes (BlnDb *db, gint64 max_bytes, GError **error);

/* bln_audit_trim:
 * The retention applied after each record, cheap enough for every request:
 * deletes the records older than @max_age_s seconds (0: no age limit) and,
 * when the records from the oldest to @newest_id (the id of the record just
 * written) span more than @max_rows ids (0: no count limit), the oldest ones
 * so that @max_rows remain. Ids only grow and pruning removes the oldest, so
 * the span is the count unless rows were deleted by hand (then it may keep
 * fewer; bln_audit_prune counts exactly). Both checks use indexes; nothing is
 * written when nothing is due. Returns the number deleted, or -1 with @error.
 */
gint64 bln_audit_trim (BlnDb *db, gint64 newest_id, gint64 max_age_s, gint64 max_rows,
                       GError **error);

/* bln_audit_tail: the newest @n records, oldest first (new array of
 * BlnAuditRecord * freeing its elements); NULL with @error set. */
GPtrArray *bln_audit_tail (BlnDb *db, guint n, GError **error);

/* bln_audit_count: the number of records, or -1 with @error set. */
gint64 bln_audit_count (BlnDb *db, GError **error);

/* bln_audit_record_to_json:
 * One record as a compact JSON object (new string) with the column names as
 * members; "verdicts" is embedded as JSON when it parses, else as a string.
 */
char *bln_audit_record_to_json (const BlnAuditRecord *rec);

typedef enum { BLN_AUDIT_JSONL, BLN_AUDIT_CSV } BlnAuditFormat;

/* bln_audit_export:
 * Writes every record with time >= @since_us (0: all), oldest first, to @path
 * ("-" for standard output) as JSON lines or as CSV with a header row (RFC
 * 4180 quoting). FALSE with @error set when the database cannot be read or
 * the output cannot be written completely (BLN_ERROR_IO, e.g. disk full).
 */
gboolean bln_audit_export (BlnDb *db, const char *path, BlnAuditFormat format, gint64 since_us,
                           GError **error);

G_END_DECLS
