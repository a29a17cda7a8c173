/* chat-page.h — the Chat page: a streaming playground over the local API.
 *
 * Messages go to the running server's /v1/chat/completions with stream:
 * true, so the page sees exactly what an API client sees. Reasoning (the
 * reasoning_content deltas, or a <think>…</think> block at the start of the
 * content) is shown in a collapsible block above the reply; time to first
 * token and tokens per second are measured on arrival.
 */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_CHAT_PAGE (bln_chat_page_get_type ())
G_DECLARE_FINAL_TYPE (BlnChatPage, bln_chat_page, BLN, CHAT_PAGE, AdwBin)

/* bln_chat_page_new: the page for @app (floating reference). */
BlnChatPage *bln_chat_page_new (BlnApplication *app);

/* bln_chat_page_send: sends @text as the user's next message, as the Send
 * button does (starting the server when a model is loaded and it is off).
 * FALSE with a message shown when it cannot be sent. */
gboolean bln_chat_page_send (BlnChatPage *self, const char *text);

/* Whether a reply is streaming. */
gboolean bln_chat_page_is_streaming (BlnChatPage *self);

/* The last reply's text and reasoning (owned by the page, "" when none), the
 * number of text deltas it arrived in, and its measurements (0 when not
 * measured). */
const char *bln_chat_page_last_reply (BlnChatPage *self);
const char *bln_chat_page_last_reasoning (BlnChatPage *self);
guint bln_chat_page_last_n_deltas (BlnChatPage *self);
/* The number of server-sent events of the last reply ("data:" lines, the
 * closing [DONE] included) and whether it came as text/event-stream. */
guint bln_chat_page_last_n_events (BlnChatPage *self, gboolean *is_sse);
void bln_chat_page_last_stats (BlnChatPage *self, double *ttft_ms, double *tokens_per_s,
                               int *n_tokens);

G_END_DECLS
