/* audit.c — writing, pruning, reading and exporting audit records. */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bln-error.h"

static const char *const privacy_names[] = { "none", "hashed", "full" };

gboolean
bln_privacy_from_string (const char *s, BlnPrivacy *out)
{
  for (guint i = 0; s && i < G_N_ELEMENTS (privacy_names); i++)
    if (strcmp (s, privacy_names[i]) == 0)
      {
        *out = (BlnPrivacy) i;
        return TRUE;
      }
  return FALSE;
}

const char *
bln_privacy_to_string (BlnPrivacy privacy)
{
  return (guint) privacy < G_N_ELEMENTS (privacy_names) ? privacy_names[privacy] : "none";
}

void
bln_audit_record_free (BlnAuditRecord *rec)
{
  if (!rec)
    return;
  g_free (rec->request_id);
  g_free (rec->client);
  g_free (rec->model);
  g_free (rec->endpoint);
  g_free (rec->finish_reason);
  g_free (rec->verdicts);
  g_free (rec->privacy);
  g_free (rec->prompt);
  g_free (rec->completion);
  g_free (rec);
}

/* The stored form of @text under @privacy (new string or NULL). */
static char *
keep (const char *text, BlnPrivacy privacy)
{
  if (!text || privacy == BLN_PRIVACY_NONE)
    return NULL;
  if (privacy == BLN_PRIVACY_HASHED)
    return g_compute_checksum_for_string (G_CHECKSUM_SHA256, text, -1);
  return g_strdup (text);
}

#define S(x) ((x) ? (x) : "")

gint64
bln_audit_write (BlnDb *db, const BlnAuditRecord *rec, BlnPrivacy privacy, GError **error)
{
  g_autofree char *prompt = keep (rec->prompt, privacy);
  g_autofree char *completion = keep (rec->completion, privacy);
  sqlite3_stmt *st;
  gint64 id;
  int rc;

  if (!bln_db_begin (db, error))
    return 0;
  st = bln_db_prepare (db, "INSERT INTO audit (time, request_id, client, key_id, model, "
                           "endpoint, prompt_tokens, completion_tokens, cached_tokens, ttft_ms, "
                           "total_ms, finish_reason, verdicts, privacy, prompt, completion) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", error);
  if (!st)
    {
      bln_db_rollback (db);
      return 0;
    }
  sqlite3_bind_int64 (st, 1, rec->time_us ? rec->time_us : g_get_real_time ());
  sqlite3_bind_text (st, 2, S (rec->request_id), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 3, S (rec->client), -1, SQLITE_TRANSIENT);
  if (rec->key_id > 0)
    sqlite3_bind_int64 (st, 4, rec->key_id);
  else
    sqlite3_bind_null (st, 4);
  sqlite3_bind_text (st, 5, S (rec->model), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 6, S (rec->endpoint), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64 (st, 7, rec->prompt_tokens);
  sqlite3_bind_int64 (st, 8, rec->completion_tokens);
  sqlite3_bind_int64 (st, 9, rec->cached_tokens);
  sqlite3_bind_double (st, 10, rec->ttft_ms);
  sqlite3_bind_double (st, 11, rec->total_ms);
  sqlite3_bind_text (st, 12, S (rec->finish_reason), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 13, rec->verdicts ? rec->verdicts : "[]", -1, SQLITE_TRANSIENT);
  sqlite3_bind_text (st, 14, bln_privacy_to_string (privacy), -1, SQLITE_STATIC);
  if (prompt)
    sqlite3_bind_text (st, 15, prompt, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (st, 15);
  if (completion)
    sqlite3_bind_text (st, 16, completion, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (st, 16);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot write the audit record", error);
      bln_db_rollback (db);
      return 0;
    }
  id = sqlite3_last_insert_rowid (bln_db_handle (db));
  if (!bln_db_commit (db, error))
    return 0;
  return id;
}

char *
bln_audit_record_to_json (const BlnAuditRecord *rec)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GDateTime) dt = g_date_time_new_from_unix_utc (rec->time_us / G_USEC_PER_SEC);
  g_autofree char *iso = dt ? g_date_time_format_iso8601 (dt) : g_strdup ("");

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "id");
  json_builder_add_int_value (b, rec->id);
  json_builder_set_member_name (b, "time_us");
  json_builder_add_int_value (b, rec->time_us);
  json_builder_set_member_name (b, "time");
  json_builder_add_string_value (b, iso);
  json_builder_set_member_name (b, "request_id");
  json_builder_add_string_value (b, S (rec->request_id));
  json_builder_set_member_name (b, "client");
  json_builder_add_string_value (b, S (rec->client));
  json_builder_set_member_name (b, "key_id");
  if (rec->key_id > 0)
    json_builder_add_int_value (b, rec->key_id);
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "model");
  json_builder_add_string_value (b, S (rec->model));
  json_builder_set_member_name (b, "endpoint");
  json_builder_add_string_value (b, S (rec->endpoint));
  json_builder_set_member_name (b, "prompt_tokens");
  json_builder_add_int_value (b, rec->prompt_tokens);
  json_builder_set_member_name (b, "completion_tokens");
  json_builder_add_int_value (b, rec->completion_tokens);
  json_builder_set_member_name (b, "cached_tokens");
  json_builder_add_int_value (b, rec->cached_tokens);
  json_builder_set_member_name (b, "ttft_ms");
  json_builder_add_double_value (b, rec->ttft_ms);
  json_builder_set_member_name (b, "total_ms");
  json_builder_add_double_value (b, rec->total_ms);
  json_builder_set_member_name (b, "finish_reason");
  json_builder_add_string_value (b, S (rec->finish_reason));
  json_builder_set_member_name (b, "verdicts");
  if (rec->verdicts && json_parser_load_from_data (parser, rec->verdicts, -1, NULL) &&
      json_parser_get_root (parser))
    json_builder_add_value (b, json_node_copy (json_parser_get_root (parser)));
  else
    json_builder_add_string_value (b, rec->verdicts ? rec->verdicts : "");
  json_builder_set_member_name (b, "privacy");
  json_builder_add_string_value (b, rec->privacy ? rec->privacy : "none");
  json_builder_set_member_name (b, "prompt");
  if (rec->prompt)
    json_builder_add_string_value (b, rec->prompt);
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "completion");
  if (rec->completion)
    json_builder_add_string_value (b, rec->completion);
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);

  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

/* Writes all of @data to @fd. */
static gboolean
write_all (int fd, const char *data, gsize len, const char *path, GError **error)
{
  while (len > 0)
    {
      ssize_t w = write (fd, data, len);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        {
          int saved = errno;
          g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot write to %s: %s", path,
                       g_strerror (w < 0 ? saved : ENOSPC));
          return FALSE;
        }
      data += w;
      len -= w;
    }
  return TRUE;
}

gboolean
bln_audit_append_jsonl (const char *path, const BlnAuditRecord *rec, BlnPrivacy privacy,
                        GError **error)
{
  BlnAuditRecord copy = *rec;
  g_autofree char *prompt = keep (rec->prompt, privacy);
  g_autofree char *completion = keep (rec->completion, privacy);
  g_autofree char *json = NULL;
  g_autofree char *line = NULL;
  gboolean ok;
  int fd;

  copy.prompt = prompt;
  copy.completion = completion;
  copy.privacy = (char *) bln_privacy_to_string (privacy);
  if (!copy.time_us)
    copy.time_us = g_get_real_time ();
  json = bln_audit_record_to_json (&copy);
  line = g_strconcat (json, "\n", NULL);

  fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      int saved = errno;
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot open the audit file %s: %s", path,
                   g_strerror (saved));
      return FALSE;
    }
  /* One write call for the whole line keeps concurrent appenders' lines whole. */
  ok = write_all (fd, line, strlen (line), path, error);
  if (close (fd) != 0 && ok)
    {
      int saved = errno;
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot write to %s: %s", path,
                   g_strerror (saved));
      ok = FALSE;
    }
  return ok;
}

static gint64
changes_or_fail (BlnDb *db, sqlite3_stmt *st, GError **error)
{
  int rc;

  if (!st)
    return -1;
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot prune the audit log", error);
      return -1;
    }
  return sqlite3_changes (bln_db_handle (db));
}

/* The single integer @sql (a min() query) gives in @out, or G_MAXINT64 when
 * it is NULL (no rows). FALSE with @error set on a database error. */
static gboolean
query_min (BlnDb *db, const char *sql, gint64 *out, GError **error)
{
  sqlite3_stmt *st = bln_db_prepare (db, sql, error);
  int rc;

  *out = G_MAXINT64;
  if (!st)
    return FALSE;
  rc = sqlite3_step (st);
  if (rc == SQLITE_ROW && sqlite3_column_type (st, 0) != SQLITE_NULL)
    *out = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the audit log", error);
      return FALSE;
    }
  return TRUE;
}

/* One integer from a PRAGMA (page_count, freelist_count, page_size). */
static gboolean
pragma_int (BlnDb *db, const char *sql, gint64 *out, GError **error)
{
  sqlite3_stmt *st = bln_db_prepare (db, sql, error);
  int rc;

  if (st == NULL)
    return FALSE;
  rc = sqlite3_step (st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64 (st, 0) : 0;
  sqlite3_finalize (st);
  if (rc != SQLITE_ROW)
    {
      bln_db_set_error (db, rc, "cannot read the database size", error);
      return FALSE;
    }
  return TRUE;
}

gint64
bln_audit_trim_bytes (BlnDb *db, gint64 max_bytes, GError **error)
{
  gint64 total = 0;

  if (max_bytes <= 0)
    return 0;
  /* bounded: each round drops at least 1/32 of the records */
  for (int round = 0; round < 128; round++)
    {
      gint64 pages, free_pages, page_size, oldest, newest, chunk, n;
      sqlite3_stmt *st;

      if (!pragma_int (db, "PRAGMA page_count", &pages, error)
          || !pragma_int (db, "PRAGMA freelist_count", &free_pages, error)
          || !pragma_int (db, "PRAGMA page_size", &page_size, error))
        return -1;
      if ((pages - free_pages) * page_size <= max_bytes)
        break;
      if (!query_min (db, "SELECT min(id) FROM audit", &oldest, error)
          || !query_min (db, "SELECT -max(id) FROM audit", &newest, error))
        return -1;
      if (oldest == G_MAXINT64)
        break;   /* no records left: the rest of the file is not the log's */
      newest = -newest;
      chunk = MAX ((gint64) 16, (newest - oldest + 1) / 32);
      st = bln_db_prepare (db, "DELETE FROM audit WHERE id < ?", error);
      if (st)
        sqlite3_bind_int64 (st, 1, oldest + chunk);
      if ((n = changes_or_fail (db, st, error)) < 0)
        return -1;
      total += n;
    }
  return total;
}

gint64
bln_audit_trim (BlnDb *db, gint64 newest_id, gint64 max_age_s, gint64 max_rows, GError **error)
{
  gint64 cutoff = g_get_real_time () - max_age_s * G_USEC_PER_SEC;
  gboolean age_due = FALSE, rows_due = FALSE;
  gint64 total = 0, n, oldest;
  sqlite3_stmt *st;

  if (max_age_s > 0)
    {
      /* min() over the time index, and min(id) over the rowid: no scans */
      if (!query_min (db, "SELECT min(time) FROM audit", &oldest, error))
        return -1;
      age_due = oldest < cutoff;
    }
  if (max_rows > 0 && newest_id > 0)
    {
      if (!query_min (db, "SELECT min(id) FROM audit", &oldest, error))
        return -1;
      rows_due = oldest != G_MAXINT64 && newest_id - oldest + 1 > max_rows;
    }
  if (!age_due && !rows_due)
    return 0;
  if (!bln_db_begin (db, error))
    return -1;
  if (age_due)
    {
      st = bln_db_prepare (db, "DELETE FROM audit WHERE time < ?", error);
      if (st)
        sqlite3_bind_int64 (st, 1, cutoff);
      if ((n = changes_or_fail (db, st, error)) < 0)
        {
          bln_db_rollback (db);
          return -1;
        }
      total += n;
    }
  if (rows_due)
    {
      st = bln_db_prepare (db, "DELETE FROM audit WHERE id <= ?", error);
      if (st)
        sqlite3_bind_int64 (st, 1, newest_id - max_rows);
      if ((n = changes_or_fail (db, st, error)) < 0)
        {
          bln_db_rollback (db);
          return -1;
        }
      total += n;
    }
  if (!bln_db_commit (db, error))
    return -1;
  return total;
}

gint64
bln_audit_prune (BlnDb *db, gint64 max_age_s, gint64 max_rows, GError **error)
{
  gint64 total = 0, n;
  sqlite3_stmt *st;

  if (!bln_db_begin (db, error))
    return -1;
  if (max_age_s > 0)
    {
      st = bln_db_prepare (db, "DELETE FROM audit WHERE time < ?", error);
      if (st)
        sqlite3_bind_int64 (st, 1, g_get_real_time () - max_age_s * G_USEC_PER_SEC);
      if ((n = changes_or_fail (db, st, error)) < 0)
        {
          bln_db_rollback (db);
          return -1;
        }
      total += n;
    }
  if (max_rows > 0)
    {
      st = bln_db_prepare (db, "DELETE FROM audit WHERE id <= (SELECT id FROM audit "
                               "ORDER BY id DESC LIMIT 1 OFFSET ?)", error);
      if (st)
        sqlite3_bind_int64 (st, 1, max_rows);
      if ((n = changes_or_fail (db, st, error)) < 0)
        {
          bln_db_rollback (db);
          return -1;
        }
      total += n;
    }
  if (!bln_db_commit (db, error))
    return -1;
  return total;
}

#define AUDIT_COLUMNS "id, time, request_id, client, key_id, model, endpoint, prompt_tokens, " \
                      "completion_tokens, cached_tokens, ttft_ms, total_ms, finish_reason, " \
                      "verdicts, privacy, prompt, completion"

static char *
col_text (sqlite3_stmt *st, int i)
{
  return sqlite3_column_type (st, i) == SQLITE_NULL
           ? NULL : g_strdup ((const char *) sqlite3_column_text (st, i));
}

static BlnAuditRecord *
record_from_row (sqlite3_stmt *st)
{
  BlnAuditRecord *r = g_new0 (BlnAuditRecord, 1);

  r->id = sqlite3_column_int64 (st, 0);
  r->time_us = sqlite3_column_int64 (st, 1);
  r->request_id = col_text (st, 2);
  r->client = col_text (st, 3);
  r->key_id = sqlite3_column_int64 (st, 4);
  r->model = col_text (st, 5);
  r->endpoint = col_text (st, 6);
  r->prompt_tokens = sqlite3_column_int64 (st, 7);
  r->completion_tokens = sqlite3_column_int64 (st, 8);
  r->cached_tokens = sqlite3_column_int64 (st, 9);
  r->ttft_ms = sqlite3_column_double (st, 10);
  r->total_ms = sqlite3_column_double (st, 11);
  r->finish_reason = col_text (st, 12);
  r->verdicts = col_text (st, 13);
  r->privacy = col_text (st, 14);
  r->prompt = col_text (st, 15);
  r->completion = col_text (st, 16);
  return r;
}

GPtrArray *
bln_audit_tail (BlnDb *db, guint n, GError **error)
{
  g_autoptr (GPtrArray) list =
    g_ptr_array_new_with_free_func ((GDestroyNotify) bln_audit_record_free);
  sqlite3_stmt *st = bln_db_prepare (db, "SELECT * FROM (SELECT " AUDIT_COLUMNS " FROM audit "
                                         "ORDER BY id DESC LIMIT ?) ORDER BY id", error);
  int rc;

  if (!st)
    return NULL;
  sqlite3_bind_int64 (st, 1, n);
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    g_ptr_array_add (list, record_from_row (st));
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the audit log", error);
      return NULL;
    }
  return g_steal_pointer (&list);
}

gint64
bln_audit_count (BlnDb *db, GError **error)
{
  sqlite3_stmt *st = bln_db_prepare (db, "SELECT count(*) FROM audit", error);
  gint64 n = -1;
  int rc;

  if (!st)
    return -1;
  rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    n = sqlite3_column_int64 (st, 0);
  else
    bln_db_set_error (db, rc, "cannot count the audit records", error);
  sqlite3_finalize (st);
  return n;
}

/* Appends @field to @s quoted as RFC 4180 asks when it needs to be. */
static void
csv_field (GString *s, const char *field)
{
  if (!field)
    return;
  if (!strpbrk (field, ",\"\r\n"))
    {
      g_string_append (s, field);
      return;
    }
  g_string_append_c (s, '"');
  for (const char *p = field; *p; p++)
    {
      if (*p == '"')
        g_string_append_c (s, '"');
      g_string_append_c (s, *p);
    }
  g_string_append_c (s, '"');
}

static void
csv_row (GString *s, const BlnAuditRecord *r)
{
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  g_autofree char *key = r->key_id > 0 ? g_strdup_printf ("%" G_GINT64_FORMAT, r->key_id)
                                       : g_strdup ("");

  g_string_append_printf (s, "%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",", r->id, r->time_us);
  csv_field (s, r->request_id);
  g_string_append_c (s, ',');
  csv_field (s, r->client);
  g_string_append_printf (s, ",%s,", key);
  csv_field (s, r->model);
  g_string_append_c (s, ',');
  csv_field (s, r->endpoint);
  g_string_append_printf (s, ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",",
                          r->prompt_tokens, r->completion_tokens, r->cached_tokens);
  g_string_append (s, g_ascii_dtostr (num, sizeof num, r->ttft_ms));
  g_string_append_c (s, ',');
  g_string_append (s, g_ascii_dtostr (num, sizeof num, r->total_ms));
  g_string_append_c (s, ',');
  csv_field (s, r->finish_reason);
  g_string_append_c (s, ',');
  csv_field (s, r->verdicts);
  g_string_append_c (s, ',');
  csv_field (s, r->privacy);
  g_string_append_c (s, ',');
  csv_field (s, r->prompt);
  g_string_append_c (s, ',');
  csv_field (s, r->completion);
  g_string_append (s, "\r\n");
}

gboolean
bln_audit_export (BlnDb *db, const char *path, BlnAuditFormat format, gint64 since_us,
                  GError **error)
{
  gboolean to_stdout = strcmp (path, "-") == 0;
  g_autoptr (GString) buf = g_string_new (NULL);
  sqlite3_stmt *st;
  gboolean ok = TRUE;
  int fd, rc;

  st = bln_db_prepare (db, "SELECT " AUDIT_COLUMNS " FROM audit WHERE time >= ? ORDER BY id",
                       error);
  if (!st)
    return FALSE;
  sqlite3_bind_int64 (st, 1, since_us);
  fd = to_stdout ? STDOUT_FILENO
                 : open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      int saved = errno;
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot open %s: %s", path,
                   g_strerror (saved));
      sqlite3_finalize (st);
      return FALSE;
    }
  if (format == BLN_AUDIT_CSV)
    g_string_append (buf, "id,time_us,request_id,client,key_id,model,endpoint,prompt_tokens,"
                          "completion_tokens,cached_tokens,ttft_ms,total_ms,finish_reason,"
                          "verdicts,privacy,prompt,completion\r\n");
  while (ok && (rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      g_autoptr (BlnAuditRecord) r = record_from_row (st);
      if (format == BLN_AUDIT_CSV)
        csv_row (buf, r);
      else
        {
          g_autofree char *json = bln_audit_record_to_json (r);
          g_string_append (buf, json);
          g_string_append_c (buf, '\n');
        }
      if (buf->len >= 65536)
        {
          ok = write_all (fd, buf->str, buf->len, to_stdout ? "standard output" : path, error);
          g_string_truncate (buf, 0);
        }
    }
  if (ok && rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the audit log", error);
      ok = FALSE;
    }
  sqlite3_finalize (st);
  if (ok && buf->len)
    ok = write_all (fd, buf->str, buf->len, to_stdout ? "standard output" : path, error);
  if (!to_stdout)
    {
      if (ok && fsync (fd) != 0 && errno != EINVAL && errno != EROFS)
        {
          int saved = errno;
          g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot write to %s: %s", path,
                       g_strerror (saved));
          ok = FALSE;
        }
      if (close (fd) != 0 && ok)
        {
          int saved = errno;
          g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot write to %s: %s", path,
                       g_strerror (saved));
          ok = FALSE;
        }
    }
  return ok;
}
