/* audit-view.h — the audit log viewer on the Safety page.
 *
 * A group listing the newest records of the audit table (app/core/audit.h),
 * newest first, with a search entry that keeps the records whose text, model,
 * endpoint, client, request id, key id, finish reason or verdicts contain
 * every word typed (case-insensitive; "key:N" finds API key N), and buttons that export the whole log
 * to a JSON Lines or CSV file chosen in a file dialog. The list is read again
 * when the group is shown and with its Refresh button.
 */
#pragma once

#include <adwaita.h>

#include "application.h"
#include "audit.h"

G_BEGIN_DECLS

#define BLN_TYPE_AUDIT_VIEW (bln_audit_view_get_type ())
G_DECLARE_FINAL_TYPE (BlnAuditView, bln_audit_view, BLN, AUDIT_VIEW, AdwPreferencesGroup)

/* Records shown at most (the newest ones). */
#define BLN_AUDIT_VIEW_MAX_ROWS 500

/* bln_audit_view_new: a viewer of @app's database (borrowed; it outlives the
 * view). Floating reference. */
BlnAuditView *bln_audit_view_new (BlnApplication *app);

/* bln_audit_view_refresh: reads the newest records again. Without a database
 * the list stays empty; a read error is shown as a toast. */
void bln_audit_view_refresh (BlnAuditView *self);

/* bln_audit_view_n_records / bln_audit_view_n_shown: records read, and those
 * the current search keeps (the rows visible in the list). */
guint bln_audit_view_n_records (BlnAuditView *self);
guint bln_audit_view_n_shown (BlnAuditView *self);

/* bln_audit_view_get_widget: "search" (GtkSearchEntry), "list" (GtkListBox),
 * "refresh", "export-jsonl", "export-csv" (GtkButton); NULL otherwise.
 * Borrowed; for tests. */
GtkWidget *bln_audit_view_get_widget (BlnAuditView *self, const char *name);

/* bln_audit_view_export_async:
 * Writes every record to @file as @format through bln_audit_export() on a
 * worker thread with its own connection to the database. The export buttons
 * call it with the file chosen in the dialog. Finish with
 * bln_audit_view_export_finish(): FALSE with @error set when there is no
 * database, it cannot be read, or the file cannot be written completely.
 */
void bln_audit_view_export_async (BlnAuditView *self, GFile *file, BlnAuditFormat format,
                                  GCancellable *cancellable, GAsyncReadyCallback callback,
                                  gpointer user_data);
gboolean bln_audit_view_export_finish (BlnAuditView *self, GAsyncResult *result,
                                       GError **error);

G_END_DECLS
