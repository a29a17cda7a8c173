/* moderation.h — checking generated answers.
 *
 * Two layers. The stream filter applies the output rules to an answer while it
 * is generated: it holds back only as much text as the longest word rule (and
 * a configurable window for regular expressions), so a banned phrase split
 * across tokens — even inside a UTF-8 character — is still caught before any
 * of it is sent. A "block" match then stops the stream (the caller reports
 * finish_reason "content_filter") or is masked, as configured; "mask" matches
 * are always masked; "log" matches are only recorded.
 *
 * The moderation client calls an optional external service shaped like
 * OpenAI's POST /v1/moderations on a completed answer. Its failures never pass
 * silently: they are logged, and the caller's policy (fail open: keep the
 * answer; fail closed: withhold it) decides.
 */
#pragma once

#include <gio/gio.h>

#include "rules.h"

G_BEGIN_DECLS

typedef enum {
  BLN_OUTPUT_STOP, /* a block match ends the answer: finish_reason "content_filter" */
  BLN_OUTPUT_MASK, /* a block match is masked like a mask rule */
} BlnOutputAction;

typedef struct _BlnStreamFilter BlnStreamFilter;

/* bln_stream_filter_new:
 * A filter over @rules (borrowed; must outlive the filter; may be NULL for a
 * pass-through filter). @regex_window is the number of code points held back
 * for regular-expression rules (a regex match longer than it may be missed
 * when it arrives across several pushes). Free with bln_stream_filter_free.
 */
BlnStreamFilter *bln_stream_filter_new (BlnRuleSet *rules, BlnOutputAction action,
                                        gsize regex_window);
void bln_stream_filter_free (BlnStreamFilter *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnStreamFilter, bln_stream_filter_free)

/* bln_stream_filter_push:
 * Feeds the next piece of the answer (@len bytes, or -1 when NUL-terminated;
 * it may end inside a UTF-8 character) and appends to @emit the text that can
 * now be sent. Invalid UTF-8 is replaced by U+FFFD. Returns FALSE when the
 * answer must stop here (stop mode, a blocked phrase completed): what has
 * been emitted is then a masked prefix of the answer that ends before the
 * first blocked phrase, and before any longer blocked or masked word that
 * began earlier and could still be completing; later pushes emit nothing.
 */
gboolean bln_stream_filter_push (BlnStreamFilter *f, const char *piece, gssize len,
                                 GString *emit);

/* bln_stream_filter_finish:
 * The answer is complete: checks and appends the held-back rest to @emit.
 * Returns FALSE when it was stopped (now or earlier).
 */
gboolean bln_stream_filter_finish (BlnStreamFilter *f, GString *emit);

/* bln_stream_filter_stopped: whether a block match stopped the answer. */
gboolean bln_stream_filter_stopped (BlnStreamFilter *f);

/* bln_stream_filter_matches:
 * Every distinct match seen so far (BlnRuleMatch, owned by @f), with byte
 * offsets in the answer as generated (before masking), for the audit verdicts.
 */
const GArray *bln_stream_filter_matches (BlnStreamFilter *f);

/* ---- external moderation endpoint -------------------------------------- */

typedef struct {
  gboolean flagged;     /* any result flagged */
  char **categories;    /* the names of the flagged categories (NULL-terminated) */
} BlnModerationResult;

void bln_moderation_result_free (BlnModerationResult *res);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnModerationResult, bln_moderation_result_free)

/* bln_moderation_check_async:
 * POSTs {"input": @text[, "model": @model]} as JSON to @url with
 * "Authorization: Bearer @api_key" when @api_key is non-empty, and gives up
 * after @timeout_s. @session (borrowed) may be NULL for a private one.
 */
void bln_moderation_check_async (gpointer session, const char *url, const char *api_key,
                                 const char *model, const char *text, double timeout_s,
                                 GCancellable *cancellable, GAsyncReadyCallback callback,
                                 gpointer user_data);

/* bln_moderation_check_finish:
 * The parsed answer (new), or NULL with @error set when the service could not
 * be reached, timed out, answered an HTTP error, or answered something that is
 * not a moderation response. The failure is also logged with g_warning.
 */
BlnModerationResult *bln_moderation_check_finish (GAsyncResult *result, GError **error);

/* bln_moderation_allows:
 * The policy: whether the answer may be delivered, given the check's @result
 * (NULL when it failed) and @fail_closed.
 */
gboolean bln_moderation_allows (const BlnModerationResult *result, gboolean fail_closed);

G_END_DECLS
