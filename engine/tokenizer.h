/* tokenizer.h — text ↔ token ids, exact against Hugging Face `tokenizers`.
 *
 * Two model kinds are supported:
 *
 *  - Byte-level BPE (GPT-2 style; DeepSeek LLM/Coder/V3/R1, Qwen2 / R1-Distill-Qwen,
 *    Llama 3, SmolLM2): the text is split into pieces by the family's pre-tokenizer
 *    (a chain of regexes, each applied to the pieces of the previous one with "Isolated"
 *    semantics), every piece is mapped byte by byte onto the GPT-2 byte↔unicode alphabet
 *    and merged by merge rank.
 *  - SentencePiece-style BPE ("llama-spm": Llama 2, DeepSeek-LLM 1.x SPM conversions):
 *    spaces become U+2581 '▁', one '▁' is put in front of every run of plain text, symbols
 *    are merged by vocabulary score (or by merge rank when loaded from tokenizer.json) and
 *    characters missing from the vocabulary fall back to <0xNN> byte tokens.
 *
 * Added tokens (HF `added_tokens`; for GGUF the token types control, user-defined and
 * unknown) are cut out of the raw text first, longest match first, honouring their
 * lstrip / rstrip / single_word flags, exactly like HF `encode(text,
 * add_special_tokens=False)`. Only then is each remaining run of text normalised (NFC for
 * Qwen), pre-tokenised and merged.
 *
 * A BlnTokenizer is immutable once created: every function below may be called from
 * several threads at once on the same tokenizer.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "gguf.h"

G_BEGIN_DECLS

typedef struct _BlnTokenizer BlnTokenizer;

typedef enum {
  BLN_TOKENIZER_BYTE_BPE, /* byte-level BPE (GGUF tokenizer.ggml.model "gpt2") */
  BLN_TOKENIZER_SPM,      /* SentencePiece-style BPE (GGUF "llama") */
} BlnTokenizerKind;

/* Creates a tokenizer from the tokenizer.* metadata of an open GGUF file.
 * tokenizer.ggml.model selects the kind ("gpt2" or "llama"); for "gpt2",
 * tokenizer.ggml.pre selects the pre-tokenizer: deepseek-llm, deepseek-coder,
 * deepseek-v3, qwen2, deepseek-r1-qwen (both with NFC), llama-bpe / llama3 (ignore_merges),
 * smollm, gpt2; a missing pre or "default" means the GPT-2 regex. Any other value fails
 * with BLN_ERROR_UNSUPPORTED naming it. Nothing is borrowed from @gguf: it may be freed
 * afterwards. Returns NULL with @error set (BLN_ERROR_CORRUPT for missing or inconsistent
 * arrays, BLN_ERROR_UNSUPPORTED for an unknown model or pre-tokenizer). */
BlnTokenizer *bln_tokenizer_new_from_gguf (const BlnGguf *gguf, GError **error);

/* Creates a tokenizer from a Hugging Face tokenizer.json. @path may be the file itself
 * (plain or gzip-compressed, detected by its magic bytes, e.g. tokenizer.json.gz) or a
 * directory holding tokenizer.json (or tokenizer.json.gz). A tokenizer_config.json in the
 * same directory, when present, supplies add_bos_token, add_eos_token, bos_token,
 * eos_token and chat_template. Returns NULL with @error set: BLN_ERROR_IO when a file
 * cannot be read, BLN_ERROR_CORRUPT for malformed JSON or an inconsistent vocabulary,
 * BLN_ERROR_UNSUPPORTED naming any model / normalizer / pre-tokenizer feature that is not
 * implemented. */
BlnTokenizer *bln_tokenizer_new_from_file (const char *path, GError **error);

/* Same from memory: @json is the tokenizer.json text (@json_len bytes, may be gzip data),
 * @config the tokenizer_config.json text or NULL. Neither buffer is kept. */
BlnTokenizer *bln_tokenizer_new_from_json_data (const char *json, gsize json_len,
                                                const char *config, gsize config_len,
                                                GError **error);

void bln_tokenizer_free (BlnTokenizer *tok);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnTokenizer, bln_tokenizer_free)

/* Tokenizes @len bytes of @text (-1: NUL-terminated) into a new GArray of int32_t ids.
 *
 * @add_bos: put the BOS id in front (when the vocabulary has one). Callers that want HF's
 *   add_special_tokens=True pass bln_tokenizer_add_bos() here and append
 *   bln_tokenizer_eos() themselves when bln_tokenizer_add_eos() is set.
 * @parse_special: recognise special (control) tokens written in the text, e.g.
 *   "<|im_end|>". Leave it FALSE for text that comes from a user: special-token strings
 *   are then tokenized as ordinary text and cannot be injected. Non-special added tokens
 *   (HF special=false, GGUF user-defined) are always recognised, as HF does with
 *   split_special_tokens=True.
 *
 * The text must be valid UTF-8 (it may hold NUL bytes when @len is given); otherwise NULL
 * is returned with BLN_ERROR_INVALID. Free the result with g_array_unref(). */
GArray *bln_tokenizer_encode (const BlnTokenizer *tok, const char *text, gssize len,
                              gboolean add_bos, gboolean parse_special, GError **error);

/* Same, appending to @out (a GArray of int32_t) instead; returns FALSE with @error set and
 * @out unchanged on failure. */
gboolean bln_tokenizer_encode_append (const BlnTokenizer *tok, const char *text, gssize len,
                                      gboolean add_bos, gboolean parse_special, GArray *out,
                                      GError **error);

/* Same into a caller buffer: returns the number of ids the text tokenizes to (which may
 * exceed @cap; then only the first @cap are written), or -1 with @error set. */
gssize bln_tokenizer_encode_into (const BlnTokenizer *tok, const char *text, gssize len,
                                  gboolean add_bos, gboolean parse_special, int32_t *ids,
                                  gsize cap, GError **error);

/* The bytes token @id stands for (GPT-2 characters mapped back to bytes, '▁' → ' ',
 * <0xNN> → the byte, added tokens → their text). Returns a pointer owned by @tok, valid
 * for its lifetime, with the length in @len; the bytes may be an incomplete or invalid
 * UTF-8 sequence (one byte of a multi-byte character). NULL for an id out of range. */
const char *bln_tokenizer_token_bytes (const BlnTokenizer *tok, int32_t id, gsize *len);

/* The vocabulary entry of @id as stored (e.g. "Ġhello", "▁Hello", "<0x0A>", "<|im_end|>"),
 * as HF convert_ids_to_tokens gives it. Owned by @tok. NULL when out of range. */
const char *bln_tokenizer_token_text (const BlnTokenizer *tok, int32_t id);

/* The id whose vocabulary entry is exactly @text (a NUL-terminated string, compared with
 * the stored form, see bln_tokenizer_token_text), or -1. */
int32_t bln_tokenizer_token_id (const BlnTokenizer *tok, const char *text);

/* Decodes @n ids to bytes, as HF decode(skip_special_tokens=False) does; for SPM the one
 * leading space of the whole output is dropped, as the Llama "Strip" decoder does. Ids out
 * of range are skipped. Returns a new NUL-terminated buffer (g_free) with its length in
 * @len (may be NULL); it is raw bytes — valid UTF-8 whenever the ids came from encoding
 * valid text; use BlnDetok for streaming, which never emits broken UTF-8. */
char *bln_tokenizer_decode (const BlnTokenizer *tok, const int32_t *ids, gsize n, gsize *len);

/* Same, leaving special (control) tokens out when @skip_special is TRUE. */
char *bln_tokenizer_decode_full (const BlnTokenizer *tok, const int32_t *ids, gsize n,
                                 gboolean skip_special, gsize *len);

BlnTokenizerKind bln_tokenizer_kind (const BlnTokenizer *tok);
int32_t bln_tokenizer_n_vocab (const BlnTokenizer *tok);
/* Special ids; -1 when the vocabulary has none. eot is the end-of-turn token of chat
 * models (<|EOT|>, <|im_end|>, <|eot_id|>…), or eos when there is no separate one. */
int32_t bln_tokenizer_bos (const BlnTokenizer *tok);
int32_t bln_tokenizer_eos (const BlnTokenizer *tok);
int32_t bln_tokenizer_eot (const BlnTokenizer *tok);
int32_t bln_tokenizer_pad (const BlnTokenizer *tok);
gboolean bln_tokenizer_add_bos (const BlnTokenizer *tok);
gboolean bln_tokenizer_add_eos (const BlnTokenizer *tok);
/* TRUE when @id is a special (control) token. */
gboolean bln_tokenizer_is_special (const BlnTokenizer *tok, int32_t id);
/* TRUE when generation should stop at @id: eos, eot, and the special tokens
 * <｜end▁of▁sentence｜>, <|EOT|>, <|im_end|>, <|endoftext|>, <|eot_id|>, <|eom_id|>,
 * <|end_of_text|>, </s>, <|end|> where the vocabulary has them. */
gboolean bln_tokenizer_is_eog (const BlnTokenizer *tok, int32_t id);
/* The same as bln_tokenizer_is_eog(). */
gboolean bln_tokenizer_is_end_of_generation (const BlnTokenizer *tok, int32_t id);

/* The text of the BOS / EOS token (owned by @tok), or NULL when there is none: what chat
 * templates get as bos_token / eos_token. */
const char *bln_tokenizer_bos_text (const BlnTokenizer *tok);
const char *bln_tokenizer_eos_text (const BlnTokenizer *tok);

/* The chat template (GGUF tokenizer.chat_template, or tokenizer_config.json's
 * chat_template: a string, or from a list of {name, template} the one named "default").
 * Owned by @tok; NULL when absent. */
const char *bln_tokenizer_chat_template (const BlnTokenizer *tok);
/* Another template by name (e.g. "tool_use"; GGUF tokenizer.chat_template.NAME); NULL or
 * "default" gives the main one. Owned by @tok; NULL when absent. */
const char *bln_tokenizer_chat_template_named (const BlnTokenizer *tok, const char *name);

/* Incremental detokenizer: feed ids one at a time and get back only complete UTF-8. Bytes
 * of a character split across tokens are held back until the character is complete;
 * bytes that can never form a valid character are replaced by U+FFFD (one per maximal
 * invalid subsequence, as Rust's from_utf8_lossy and HF decode do). For SPM vocabularies
 * the leading space of the very first output is dropped, matching
 * bln_tokenizer_decode(). All pushes plus the flush give exactly bln_tokenizer_decode()
 * of the same ids whenever that is valid UTF-8. Special tokens are included as text; stop
 * on bln_tokenizer_is_eog() before pushing if they should not be shown. */
typedef struct _BlnDetok BlnDetok;

/* @tok is borrowed and must outlive the detokenizer. Free with bln_detok_free(). */
BlnDetok *bln_detok_new (const BlnTokenizer *tok);
void bln_detok_free (BlnDetok *detok);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnDetok, bln_detok_free)

/* Adds token @id and returns the text that is now complete as a new NUL-terminated string
 * (g_free; "" when everything is held back). Ids out of range add nothing. */
char *bln_detok_push (BlnDetok *detok, int32_t id);

/* Same, appending to @out; returns the number of bytes appended. */
gsize bln_detok_push_append (BlnDetok *detok, int32_t id, GString *out);

/* Ends the stream: returns whatever is held back, each incomplete sequence as U+FFFD (a
 * new string, g_free; "" when nothing was held), and resets the detokenizer for a new
 * stream. */
char *bln_detok_flush (BlnDetok *detok);

/* Forgets held-back bytes and starts a new stream (the SPM leading space is dropped
 * again). */
void bln_detok_reset (BlnDetok *detok);

G_END_DECLS
