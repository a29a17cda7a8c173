/* unicode.h — small UTF-8 and GPT-2 byte-alphabet helpers for the tokenizer. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The GPT-2 byte-level alphabet: every byte maps to one printable code point (printable
 * Latin-1 bytes to themselves, the others to U+0100 upward). */
gunichar bln_byte_to_gpt2 (guint8 b);
/* The inverse: the byte for code point @c, or -1 when @c is not in the alphabet. */
int bln_gpt2_to_byte (gunichar c);

/* Looks at the UTF-8 sequence at @p (@n > 0 bytes available). Returns its length (1-4)
 * and stores the code point in @c when it is a complete valid character; 0 when the
 * bytes are a valid but incomplete prefix that more bytes could complete; -k when the
 * first k bytes form a maximal invalid subsequence (to be replaced by one U+FFFD, the
 * way Rust's String::from_utf8_lossy does). */
int bln_utf8_scan (const guint8 *p, gsize n, gunichar *c);

/* Appends @n bytes to @out with every invalid or incomplete subsequence replaced by
 * U+FFFD. */
void bln_utf8_append_lossy (GString *out, const char *p, gsize n);

G_END_DECLS
