/* json-constraint.h — a byte-level JSON recogniser for constrained decoding.
 *
 * `response_format: {"type": "json_object"}` promises output that parses as
 * JSON. The engine worker keeps one recogniser per request and, before every
 * sampling step, masks each candidate token whose bytes would make the output
 * stop being a prefix of a valid JSON text (RFC 8259); generation ends as
 * soon as the top-level value is complete.
 *
 * The recogniser is a pushdown automaton over bytes: a stack of open
 * objects and arrays (at most BLN_JSON_MAX_DEPTH) plus the lexical state of
 * strings (escapes, \u digits, UTF-8 sequences, no control characters),
 * numbers and the literals true/false/null. To keep a sampler from padding
 * for ever, at most BLN_JSON_MAX_SPACE whitespace bytes may follow each other
 * outside strings. The state is a plain struct: copying it is a snapshot.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define BLN_JSON_MAX_DEPTH 48
#define BLN_JSON_MAX_SPACE 8

typedef struct {
  guint8 state;
  guint8 depth;
  guint8 stack[BLN_JSON_MAX_DEPTH];  /* '{' or '[' */
  guint8 aux;       /* \u digits left, literal position, or UTF-8 bytes left */
  guint8 lit;       /* which literal: 't', 'f', 'n' */
  guint8 in_key;    /* the string being read is an object key */
  guint8 spaces;    /* whitespace run length */
  guint8 object_only;
  guint8 utf8_min;  /* lowest allowed next continuation byte for the current sequence */
  guint8 utf8_max;
} BlnJsonConstraint;

/* Starts a recogniser for one JSON text; with @object_only the top-level
 * value must be an object (what json_object mode promises). */
void bln_json_constraint_init (BlnJsonConstraint *c, gboolean object_only);

/* Advances over @n bytes. Returns FALSE, leaving @c in an unspecified state,
 * when the bytes cannot continue a valid JSON text (or follow a complete
 * one); copy @c first to keep the old state. */
gboolean bln_json_constraint_feed (BlnJsonConstraint *c, const char *bytes, gsize n);

/* Whether @n bytes could be fed now, without changing @c. n == 0 is FALSE
 * (an empty token makes no progress). */
gboolean bln_json_constraint_accepts (const BlnJsonConstraint *c, const char *bytes, gsize n);

/* Appends to @out the shortest bytes that complete the text from here
 * (close the open string, finish a number or literal, give a pending key a
 * null value, close every container); nothing when complete. Used when the
 * token budget runs out, so that a cut-off reply still parses. */
void bln_json_constraint_closing (const BlnJsonConstraint *c, GString *out);

/* TRUE when a complete top-level value has been read. */
gboolean bln_json_constraint_complete (const BlnJsonConstraint *c);

G_END_DECLS
