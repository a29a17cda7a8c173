/* json-constraint.h — a byte-level JSON recogniser for constrained decoding.
 *
 * `response_format: {"type": "json_object"}` promises output that parses as
 * JSON; `{"type": "json_schema", "json_schema": {"schema": …}}` promises JSON
 * that a JSON Schema validator accepts. The engine keeps one recogniser per
 * request and, before every sampling step, masks each candidate token whose
 * bytes would make the output stop being a prefix of such a text; generation
 * ends as soon as the top-level value is complete.
 *
 * The recogniser is a pushdown automaton over bytes: a stack of open
 * objects and arrays (at most BLN_JSON_MAX_DEPTH) plus the lexical state of
 * strings (escapes, \u digits, UTF-8 sequences, no control characters),
 * numbers and the literals true/false/null. To keep a sampler from padding
 * for ever, at most BLN_JSON_MAX_SPACE whitespace bytes may follow each other
 * outside strings. The state is a plain struct: copying it is a snapshot.
 *
 * With a compiled schema (bln_json_schema_compile()) each open container and
 * the value being read also carry their schema node, so that only texts valid
 * against the schema are prefixes. The supported subset of JSON Schema:
 *   - type: "object", "array", "string", "number", "integer", "boolean",
 *     "null", or a list of those ("integer" means digits only: no fraction
 *     nor exponent is written for it);
 *   - properties (at most 64 per object), required, additionalProperties
 *     (false, true or a schema; absent means true). Keys are written in
 *     canonical form (characters escaped only where JSON requires it), each
 *     property at most once; keys outside the properties of an object that
 *     has properties may not use backslash escapes;
 *   - items (one schema for every element), minItems, maxItems;
 *   - enum (at most 64 values) and const: the value is written exactly as
 *     its compact canonical text;
 *   - anyOf whose alternatives can be told apart by their first byte (e.g.
 *     a type and null, a string and an object); with nothing else beside it
 *     but annotations;
 *   - $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed
 *     when the schema still has a finite smallest value);
 *   - annotations, ignored: title, description, default, examples, $schema,
 *     $id, $comment, deprecated, readOnly, writeOnly, and $defs /
 *     definitions themselves.
 * Any other keyword (minimum, pattern, format, oneOf, allOf, …) is refused
 * by the compiler rather than ignored, so that a promise is never silently
 * weakened.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define BLN_JSON_MAX_DEPTH 48
#define BLN_JSON_MAX_SPACE 8

/* A compiled schema: immutable, reference counted, shareable across threads. */
typedef struct _BlnJsonSchema BlnJsonSchema;

/* One open container (schema mode). */
typedef struct {
  guint64 seen;     /* object: properties written (bit i: property i) */
  guint16 node;     /* its schema node */
  guint16 count;    /* array: elements begun */
} BlnJsonFrame;

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
  /* schema mode (schema != NULL) */
  guint8 int_only;  /* the number being read is an integer */
  guint8 kfree;     /* the key being read may be outside the properties */
  guint8 mdone;     /* an enum text ended exactly here (a number that may go on) */
  guint16 vnode;    /* schema node of the value expected or being read */
  guint16 mpos;     /* bytes of the key or enum value matched so far */
  guint64 mmask;    /* properties / enum texts still matching */
  const BlnJsonSchema *schema;     /* borrowed */
  BlnJsonFrame frames[BLN_JSON_MAX_DEPTH];
} BlnJsonConstraint;

/* Starts a recogniser for one JSON text; with @object_only the top-level
 * value must be an object (what json_object mode promises). */
void bln_json_constraint_init (BlnJsonConstraint *c, gboolean object_only);

/* Starts a recogniser for one JSON text valid against @schema (borrowed: it
 * must outlive @c and its copies). */
void bln_json_constraint_init_schema (BlnJsonConstraint *c, const BlnJsonSchema *schema);

/* Advances over @n bytes. Returns FALSE, leaving @c in an unspecified state,
 * when the bytes cannot continue a valid JSON text (or follow a complete
 * one); copy @c first to keep the old state. */
gboolean bln_json_constraint_feed (BlnJsonConstraint *c, const char *bytes, gsize n);

/* Whether @n bytes could be fed now, without changing @c. n == 0 is FALSE
 * (an empty token makes no progress). */
gboolean bln_json_constraint_accepts (const BlnJsonConstraint *c, const char *bytes, gsize n);

/* Appends to @out the shortest bytes (close to it, in schema mode) that
 * complete the text from here: close the open string, finish a number or
 * literal, give a pending key a value, write the required properties and
 * array elements still missing (their smallest values), close every
 * container; nothing when complete. Used when the token budget runs out, so
 * that a cut-off reply still parses (and validates). */
void bln_json_constraint_closing (const BlnJsonConstraint *c, GString *out);

/* TRUE when a complete top-level value has been read. In schema mode a
 * top-level number counts as complete once it could end. */
gboolean bln_json_constraint_complete (const BlnJsonConstraint *c);

/* Compiles the JSON Schema @schema (an object or a boolean; not kept) for
 * the recogniser. Returns NULL with @error set when it uses anything outside
 * the subset above (BLN_ERROR_UNSUPPORTED, the message naming the keyword
 * and where it is, as a JSON pointer), is malformed (BLN_ERROR_INVALID), or
 * admits no value at all or no finite one (BLN_ERROR_INVALID). */
BlnJsonSchema *bln_json_schema_compile (JsonNode *schema, GError **error);
BlnJsonSchema *bln_json_schema_ref (BlnJsonSchema *schema);
/* Drops a reference; NULL is ignored. */
void bln_json_schema_unref (BlnJsonSchema *schema);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnJsonSchema, bln_json_schema_unref)

/* The smallest value the schema accepts, as compact JSON (owned by @schema). */
const char *bln_json_schema_min_value (const BlnJsonSchema *schema);

/* TRUE when every value the schema accepts is an object. */
gboolean bln_json_schema_objects_only (const BlnJsonSchema *schema);

G_END_DECLS
