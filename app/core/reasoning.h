/* reasoning.h — split a reasoning model's output into thinking and answer.
 *
 * DeepSeek-R1 (and the distills, QwQ, Qwen3) write their chain of thought
 * between `<think>` and `</think>` before the answer. OpenAI-style clients
 * (Cherry Studio, DeepSeek's own API) expect the thinking in
 * `reasoning_content` and only the answer in `content`, with no tags.
 *
 * The splitter is incremental: text arrives in arbitrary pieces (a tag may be
 * cut across tokens, or across UTF-8 boundaries of the pieces), and every
 * byte that cannot yet be classified is held back until it can. An opening
 * tag is recognised only at the very start of the output (after leading
 * whitespace); R1's templates already put `<think>\n` at the end of the
 * prompt, so the generation starts inside the block
 * (bln_reasoning_prompt_opens_block() detects that). After `</think>` the
 * whitespace that separates thinking from the answer is dropped and the rest
 * is passed through untouched (later tags are content).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _BlnReasoningSplit BlnReasoningSplit;

/* A splitter for `<think>`…`</think>`. When @starts_inside is TRUE the
 * output is taken to start inside the block (the prompt opened it). Free with
 * bln_reasoning_split_free(). Never fails. */
BlnReasoningSplit *bln_reasoning_split_new (gboolean starts_inside);

void bln_reasoning_split_free (BlnReasoningSplit *rs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnReasoningSplit, bln_reasoning_split_free)

/* Feeds @len bytes of @text (-1: NUL-terminated) and appends what is now
 * known to be thinking to @reasoning and what is answer to @content (either
 * may get nothing; the tags themselves go to neither). */
void bln_reasoning_split_push (BlnReasoningSplit *rs, const char *text, gssize len,
                               GString *reasoning, GString *content);

/* Ends the output: whatever was held back goes where it was heading (an
 * unclosed block is all thinking; a half tag is plain text of its side). */
void bln_reasoning_split_finish (BlnReasoningSplit *rs, GString *reasoning, GString *content);

/* TRUE while the splitter is inside a thinking block (or may still enter one
 * at the start). */
gboolean bln_reasoning_split_in_reasoning (BlnReasoningSplit *rs);

/* TRUE when the rendered @prompt leaves a `<think>` block open at its end
 * (the last `<think>` after the last `</think>`, followed by whitespace
 * only): the model's output starts inside it. */
gboolean bln_reasoning_prompt_opens_block (const char *prompt);

G_END_DECLS
