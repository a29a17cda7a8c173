/* jinja.h — a small Jinja2 interpreter for chat templates.
 *
 * It implements the subset of Jinja2 that model chat templates use, with the
 * environment Hugging Face transformers sets up for apply_chat_template():
 * trim_blocks and lstrip_blocks on, the loopcontrols extension (break /
 * continue), an immutable sandbox (no mutating methods on lists or dicts), the
 * default Undefined, a `tojson` filter that behaves like Python's
 * json.dumps(ensure_ascii=False), and the globals raise_exception(msg),
 * strftime_now(fmt), namespace(...), range(...) and dict(...).
 *
 * Supported: {{ }}, {% %}, {# #}, whitespace control with - and +, raw blocks;
 * if/elif/else, for (else, loop.*, unpacking, inline `if`), set (plain,
 * tuple, namespace attribute, block set), macro / call, filter blocks,
 * break / continue, generation / endgeneration (rendered as its body); the
 * usual filters, tests, operators, literals, and the common Python str / dict
 * methods. Anything else is a BLN_ERROR_TEMPLATE error that names the
 * construct and the template line.
 *
 * Rendering is bounded: output size, loop iterations, recursion depth and
 * string sizes are capped, so a hostile template fails with an error instead
 * of exhausting memory or hanging.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct _BlnTemplate BlnTemplate;

/* Parses @source (UTF-8 Jinja2 text). Returns a new template, free it with
 * bln_template_free(). On a syntax error, or when @source is not valid UTF-8,
 * returns NULL and sets @error (BLN_ERROR_TEMPLATE, message with the line). */
BlnTemplate *bln_template_new (const char *source, GError **error);

void bln_template_free (BlnTemplate *tmpl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnTemplate, bln_template_free)

/* Renders @tmpl with the members of @vars (a JSON object node, or NULL for no
 * variables) as template variables. JSON null becomes Python None, integers
 * stay integers, objects keep their member order. Returns a newly allocated
 * NUL-terminated UTF-8 string (g_free it). On failure (raise_exception(), an
 * undefined value used where jinja2 raises, a type error, or a resource limit)
 * returns NULL and sets @error to BLN_ERROR_TEMPLATE with the line. */
char *bln_template_render (BlnTemplate *tmpl, JsonNode *vars, GError **error);

/* Limits applied by bln_template_render(). */
#define BLN_TEMPLATE_MAX_OUTPUT      (64u << 20) /* bytes of output and of any one string */
#define BLN_TEMPLATE_MAX_STEPS       1000000     /* loop iterations + macro calls, in total */
#define BLN_TEMPLATE_MAX_DEPTH       200         /* nested macro calls / expression depth */

G_END_DECLS
