/* jinja.c — lexer, parser and tree-walking evaluator for the Jinja2 subset
 * described in jinja.h.
 *
 * Sections: values, text helpers (Python-compatible str/repr/json), lexer,
 * parser (to a tree of Node), evaluator, filters/tests/methods, public API.
 *
 * Memory: values are reference counted. Lists and dicts are never mutated
 * once built (the sandbox is immutable), so they cannot form cycles; only
 * namespaces and frames captured by macros can, and those are registered in
 * the render context and emptied when the render ends. Tree nodes and tokens
 * live in per-template arrays and are freed with the template.
 */
#include "jinja.h"
#include "bln-error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

typedef enum {
  JV_UNDEF,
  JV_NONE,
  JV_BOOL,
  JV_INT,
  JV_FLOAT,
  JV_STR,
  JV_LIST,
  JV_DICT,
  JV_NS,
  JV_FUNC,
  JV_MACRO,
} JvType;

typedef struct JVal JVal;
typedef struct Node Node;
typedef struct Frame Frame;
typedef struct Ctx Ctx;

typedef JVal *(*BuiltinFn) (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames,
                            GPtrArray *kwvals);

struct JVal {
  int ref;
  JvType t;
  gboolean is_tuple; /* lists: print as a tuple */
  gboolean is_loop;  /* dicts: the `loop` object (has cycle()) */
  union {
    gboolean b;
    gint64 i;
    double f;
    struct {
      char *s;
      gsize len;
    } s;
    GPtrArray *list; /* of JVal* */
    struct {
      GPtrArray *keys; /* of JVal* (strings mostly) */
      GPtrArray *vals;
    } d;
    struct {
      BuiltinFn fn;
      const char *name;
    } fn;
    struct {
      Node *node;   /* N_MACRO, or the body holder of a call block */
      Frame *frame; /* captured scope, a counted reference */
    } m;
  } u;
  char *undef_name; /* JV_UNDEF: what was looked up, for messages */
};

static JVal *jv_new (JvType t);
static JVal *jv_ref (JVal *v);
static void jv_unref (JVal *v);
static void frame_unref (Frame *f);

static JVal *
jv_new (JvType t)
{
  JVal *v = g_new0 (JVal, 1);
  v->ref = 1;
  v->t = t;
  if (t == JV_LIST)
    v->u.list = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  else if (t == JV_DICT || t == JV_NS) {
    v->u.d.keys = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    v->u.d.vals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  }
  return v;
}

static JVal *
jv_ref (JVal *v)
{
  v->ref++;
  return v;
}

static void
jv_unref (JVal *v)
{
  if (v == NULL || --v->ref > 0)
    return;
  switch (v->t) {
  case JV_STR:
    g_free (v->u.s.s);
    break;
  case JV_LIST:
    g_ptr_array_unref (v->u.list);
    break;
  case JV_DICT:
  case JV_NS:
    g_ptr_array_unref (v->u.d.keys);
    g_ptr_array_unref (v->u.d.vals);
    break;
  case JV_MACRO:
    if (v->u.m.frame)
      frame_unref (v->u.m.frame);
    break;
  default:
    break;
  }
  g_free (v->undef_name);
  g_free (v);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (JVal, jv_unref)

static JVal *
jv_undef (const char *name)
{
  JVal *v = jv_new (JV_UNDEF);
  v->undef_name = g_strdup (name);
  return v;
}

static JVal *
jv_none (void)
{
  return jv_new (JV_NONE);
}

static JVal *
jv_bool (gboolean b)
{
  JVal *v = jv_new (JV_BOOL);
  v->u.b = b ? TRUE : FALSE;
  return v;
}

static JVal *
jv_int (gint64 i)
{
  JVal *v = jv_new (JV_INT);
  v->u.i = i;
  return v;
}

static JVal *
jv_float (double f)
{
  JVal *v = jv_new (JV_FLOAT);
  v->u.f = f;
  return v;
}

/* Takes ownership of @s (NUL-terminated, @len bytes). */
static JVal *
jv_str_take (char *s, gsize len)
{
  JVal *v = jv_new (JV_STR);
  v->u.s.s = s;
  v->u.s.len = len;
  return v;
}

static JVal *
jv_str_len (const char *s, gsize len)
{
  return jv_str_take (g_strndup (s, len), len);
}

static JVal *
jv_str (const char *s)
{
  return jv_str_len (s, strlen (s));
}

static JVal *
jv_gstr (GString *g)
{
  gsize len = g->len;
  return jv_str_take (g_string_free (g, FALSE), len);
}

static void
list_push (JVal *list, JVal *item) /* takes @item */
{
  g_ptr_array_add (list->u.list, item);
}

static gboolean jv_equal (JVal *a, JVal *b);

static int
dict_find (JVal *d, JVal *key)
{
  guint i;
  for (i = 0; i < d->u.d.keys->len; i++)
    if (jv_equal (g_ptr_array_index (d->u.d.keys, i), key))
      return (int) i;
  return -1;
}

static int
dict_find_str (JVal *d, const char *key)
{
  guint i;
  for (i = 0; i < d->u.d.keys->len; i++) {
    JVal *k = g_ptr_array_index (d->u.d.keys, i);
    if (k->t == JV_STR && strcmp (k->u.s.s, key) == 0)
      return (int) i;
  }
  return -1;
}

/* Takes @key and @val; replaces an existing entry in place (Python order). */
static void
dict_set (JVal *d, JVal *key, JVal *val)
{
  int idx = dict_find (d, key);
  if (idx >= 0) {
    jv_unref (key);
    jv_unref (g_ptr_array_index (d->u.d.vals, idx));
    g_ptr_array_index (d->u.d.vals, idx) = val;
    return;
  }
  g_ptr_array_add (d->u.d.keys, key);
  g_ptr_array_add (d->u.d.vals, val);
}

static void
dict_set_str (JVal *d, const char *key, JVal *val)
{
  dict_set (d, jv_str (key), val);
}

static JVal *
dict_get_str (JVal *d, const char *key) /* borrowed or NULL */
{
  int idx = dict_find_str (d, key);
  return idx >= 0 ? g_ptr_array_index (d->u.d.vals, idx) : NULL;
}

static gboolean
jv_is_number (JVal *v)
{
  return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL;
}

static double
jv_as_double (JVal *v)
{
  if (v->t == JV_FLOAT)
    return v->u.f;
  if (v->t == JV_BOOL)
    return v->u.b;
  return (double) v->u.i;
}

static gboolean
jv_truthy (JVal *v)
{
  switch (v->t) {
  case JV_UNDEF:
  case JV_NONE:
    return FALSE;
  case JV_BOOL:
    return v->u.b;
  case JV_INT:
    return v->u.i != 0;
  case JV_FLOAT:
    return v->u.f != 0.0;
  case JV_STR:
    return v->u.s.len > 0;
  case JV_LIST:
    return v->u.list->len > 0;
  case JV_DICT:
    return v->u.d.keys->len > 0;
  default:
    return TRUE;
  }
}

static gboolean
jv_equal (JVal *a, JVal *b)
{
  guint i;
  if (jv_is_number (a) && jv_is_number (b)) {
    if (a->t != JV_FLOAT && b->t != JV_FLOAT)
      return (a->t == JV_BOOL ? a->u.b : a->u.i) == (b->t == JV_BOOL ? b->u.b : b->u.i);
    return jv_as_double (a) == jv_as_double (b);
  }
  if (a->t != b->t)
    return FALSE;
  switch (a->t) {
  case JV_UNDEF:
  case JV_NONE:
    return TRUE;
  case JV_STR:
    return a->u.s.len == b->u.s.len && memcmp (a->u.s.s, b->u.s.s, a->u.s.len) == 0;
  case JV_LIST:
    if (a->is_tuple != b->is_tuple || a->u.list->len != b->u.list->len)
      return FALSE;
    for (i = 0; i < a->u.list->len; i++)
      if (!jv_equal (g_ptr_array_index (a->u.list, i), g_ptr_array_index (b->u.list, i)))
        return FALSE;
    return TRUE;
  case JV_DICT:
    if (a->u.d.keys->len != b->u.d.keys->len)
      return FALSE;
    for (i = 0; i < a->u.d.keys->len; i++) {
      int j = dict_find (b, g_ptr_array_index (a->u.d.keys, i));
      if (j < 0 || !jv_equal (g_ptr_array_index (a->u.d.vals, i),
                              g_ptr_array_index (b->u.d.vals, j)))
        return FALSE;
    }
    return TRUE;
  default:
    return a == b;
  }
}

static const char *
jv_type_name (JVal *v)
{
  switch (v->t) {
  case JV_UNDEF: return "Undefined";
  case JV_NONE: return "NoneType";
  case JV_BOOL: return "bool";
  case JV_INT: return "int";
  case JV_FLOAT: return "float";
  case JV_STR: return "str";
  case JV_LIST: return v->is_tuple ? "tuple" : "list";
  case JV_DICT: return "dict";
  case JV_NS: return "Namespace";
  case JV_FUNC: return "builtin_function_or_method";
  case JV_MACRO: return "Macro";
  default: return "object";
  }
}

/* ------------------------------------------------------------------------ */
/* Text helpers: Python's whitespace, repr(), str() and json.dumps()        */

static gboolean
py_isspace (gunichar c)
{
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
    return TRUE;
  if (c < 0x80)
    return FALSE;
  return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Length in bytes of the run of Python whitespace starting at @s. */
static gsize
ws_span (const char *s, gsize len)
{
  gsize i = 0;
  while (i < len) {
    gunichar c;
    const char *next;
    if ((guchar) s[i] < 0x80) {
      if (!py_isspace ((guchar) s[i]))
        break;
      i++;
      continue;
    }
    c = g_utf8_get_char (s + i);
    if (!py_isspace (c))
      break;
    next = g_utf8_next_char (s + i);
    i = (gsize) (next - s);
  }
  return i;
}

/* Length of @s once trailing Python whitespace is removed. */
static gsize
rstrip_len (const char *s, gsize len)
{
  while (len > 0) {
    const char *p = g_utf8_find_prev_char (s, s + len);
    if (p == NULL || !py_isspace (g_utf8_get_char (p)))
      break;
    len = (gsize) (p - s);
  }
  return len;
}

/* Python's repr(float). */
static void
append_py_float (GString *out, double f)
{
  char buf[64];
  int prec, exp10, ndig, i;
  char digits[32];
  const char *e;
  if (isnan (f)) {
    g_string_append (out, "nan");
    return;
  }
  if (isinf (f)) {
    g_string_append (out, f < 0 ? "-inf" : "inf");
    return;
  }
  for (prec = 1; prec <= 17; prec++) {
    snprintf (buf, sizeof buf, "%.*e", prec - 1, f);
    if (strtod (buf, NULL) == f)
      break;
  }
  /* buf is [-]d[.ddd]e[+-]xx: split into digits and exponent */
  ndig = 0;
  for (i = 0; buf[i] && buf[i] != 'e'; i++)
    if (buf[i] >= '0' && buf[i] <= '9' && ndig < 31)
      digits[ndig++] = buf[i];
  digits[ndig] = '\0';
  e = strchr (buf, 'e');
  exp10 = e ? atoi (e + 1) : 0;
  while (ndig > 1 && digits[ndig - 1] == '0')
    digits[--ndig] = '\0';
  if (buf[0] == '-')
    g_string_append_c (out, '-');
  if (exp10 >= -5 + 1 && exp10 < 16) {
    if (exp10 >= 0) {
      for (i = 0; i <= exp10; i++)
        g_string_append_c (out, i < ndig ? digits[i] : '0');
      g_string_append_c (out, '.');
      if (ndig > exp10 + 1)
        g_string_append (out, digits + exp10 + 1);
      else
        g_string_append_c (out, '0');
    } else {
      g_string_append (out, "0.");
      for (i = 0; i < -exp10 - 1; i++)
        g_string_append_c (out, '0');
      g_string_append (out, digits);
    }
  } else {
    g_string_append_c (out, digits[0]);
    if (ndig > 1) {
      g_string_append_c (out, '.');
      g_string_append (out, digits + 1);
    }
    g_string_append_printf (out, "e%c%02d", exp10 < 0 ? '-' : '+', ABS (exp10));
  }
}

static gboolean
py_printable (gunichar c)
{
  if (c < 0x20 || c == 0x7f)
    return FALSE;
  if (c >= 0x80 && c < 0xa0)
    return FALSE;
  if (c == 0xad)
    return FALSE;
  switch (g_unichar_type (c)) {
  case G_UNICODE_CONTROL:
  case G_UNICODE_FORMAT:
  case G_UNICODE_UNASSIGNED:
  case G_UNICODE_PRIVATE_USE:
  case G_UNICODE_SURROGATE:
  case G_UNICODE_LINE_SEPARATOR:
  case G_UNICODE_PARAGRAPH_SEPARATOR:
    return FALSE;
  case G_UNICODE_SPACE_SEPARATOR:
    return c == ' ';
  default:
    return TRUE;
  }
}

/* Python's repr(str). */
static void
append_py_repr_str (GString *out, const char *s, gsize len)
{
  gboolean has_sq = memchr (s, '\'', len) != NULL;
  gboolean has_dq = memchr (s, '"', len) != NULL;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  const char *p = s, *end = s + len;
  g_string_append_c (out, q);
  while (p < end) {
    gunichar c = g_utf8_get_char (p);
    const char *next = g_utf8_next_char (p);
    if (c == (gunichar) q || c == '\\') {
      g_string_append_c (out, '\\');
      g_string_append_c (out, (char) c);
    } else if (c == '\n')
      g_string_append (out, "\\n");
    else if (c == '\r')
      g_string_append (out, "\\r");
    else if (c == '\t')
      g_string_append (out, "\\t");
    else if (c < 0x80 && py_printable (c))
      g_string_append_c (out, (char) c);
    else if (py_printable (c))
      g_string_append_len (out, p, next - p);
    else if (c < 0x100)
      g_string_append_printf (out, "\\x%02x", c);
    else if (c < 0x10000)
      g_string_append_printf (out, "\\u%04x", c);
    else
      g_string_append_printf (out, "\\U%08x", c);
    p = next;
  }
  g_string_append_c (out, q);
}

static void append_str (GString *out, JVal *v);

/* Python's repr() of a value, as used when a container is printed. */
static void
append_repr (GString *out, JVal *v, int depth)
{
  guint i;
  if (depth > 100) {
    g_string_append (out, "...");
    return;
  }
  switch (v->t) {
  case JV_STR:
    append_py_repr_str (out, v->u.s.s, v->u.s.len);
    break;
  case JV_LIST:
    g_string_append_c (out, v->is_tuple ? '(' : '[');
    for (i = 0; i < v->u.list->len; i++) {
      if (i)
        g_string_append (out, ", ");
      append_repr (out, g_ptr_array_index (v->u.list, i), depth + 1);
    }
    if (v->is_tuple && v->u.list->len == 1)
      g_string_append_c (out, ',');
    g_string_append_c (out, v->is_tuple ? ')' : ']');
    break;
  case JV_DICT:
  case JV_NS:
    if (v->t == JV_NS)
      g_string_append (out, "<Namespace ");
    g_string_append_c (out, '{');
    for (i = 0; i < v->u.d.keys->len; i++) {
      if (i)
        g_string_append (out, ", ");
      append_repr (out, g_ptr_array_index (v->u.d.keys, i), depth + 1);
      g_string_append (out, ": ");
      append_repr (out, g_ptr_array_index (v->u.d.vals, i), depth + 1);
    }
    g_string_append_c (out, '}');
    if (v->t == JV_NS)
      g_string_append_c (out, '>');
    break;
  case JV_UNDEF:
    g_string_append (out, "Undefined");
    break;
  default:
    append_str (out, v);
    break;
  }
}

/* Python's str() of a value, as {{ }} prints it. */
static void
append_str (GString *out, JVal *v)
{
  switch (v->t) {
  case JV_UNDEF:
    break;
  case JV_NONE:
    g_string_append (out, "None");
    break;
  case JV_BOOL:
    g_string_append (out, v->u.b ? "True" : "False");
    break;
  case JV_INT:
    g_string_append_printf (out, "%" G_GINT64_FORMAT, v->u.i);
    break;
  case JV_FLOAT:
    append_py_float (out, v->u.f);
    break;
  case JV_STR:
    g_string_append_len (out, v->u.s.s, v->u.s.len);
    break;
  case JV_FUNC:
    g_string_append_printf (out, "<built-in function %s>", v->u.fn.name);
    break;
  case JV_MACRO:
    g_string_append (out, "<Macro>");
    break;
  default:
    append_repr (out, v, 0);
    break;
  }
}

static char *
jv_to_cstr (JVal *v, gsize *len)
{
  GString *g = g_string_new (NULL);
  append_str (g, v);
  if (len)
    *len = g->len;
  return g_string_free (g, FALSE);
}

/* json.dumps() string escaping. */
static void
append_json_str (GString *out, const char *s, gsize len, gboolean ensure_ascii)
{
  const char *p = s, *end = s + len;
  g_string_append_c (out, '"');
  while (p < end) {
    gunichar c = g_utf8_get_char (p);
    const char *next = g_utf8_next_char (p);
    switch (c) {
    case '"': g_string_append (out, "\\\""); break;
    case '\\': g_string_append (out, "\\\\"); break;
    case '\n': g_string_append (out, "\\n"); break;
    case '\r': g_string_append (out, "\\r"); break;
    case '\t': g_string_append (out, "\\t"); break;
    case '\b': g_string_append (out, "\\b"); break;
    case '\f': g_string_append (out, "\\f"); break;
    default:
      if (c < 0x20)
        g_string_append_printf (out, "\\u%04x", c);
      else if (c < 0x80 || !ensure_ascii)
        g_string_append_len (out, p, next - p);
      else if (c < 0x10000)
        g_string_append_printf (out, "\\u%04x", c);
      else {
        gunichar v = c - 0x10000;
        g_string_append_printf (out, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      }
      break;
    }
    p = next;
  }
  g_string_append_c (out, '"');
}

typedef struct {
  const char *indent; /* NULL: single line */
  const char *item_sep;
  const char *key_sep;
  gboolean sort_keys;
  gboolean ensure_ascii;
} JsonOpts;

static int
cmp_keys_str (gconstpointer a, gconstpointer b, gpointer user)
{
  JVal *d = user;
  JVal *ka = g_ptr_array_index (d->u.d.keys, *(const guint *) a);
  JVal *kb = g_ptr_array_index (d->u.d.keys, *(const guint *) b);
  g_autofree char *sa = jv_to_cstr (ka, NULL);
  g_autofree char *sb = jv_to_cstr (kb, NULL);
  return strcmp (sa, sb);
}

static void
json_newline (GString *out, const JsonOpts *o, int level)
{
  int i;
  g_string_append_c (out, '\n');
  for (i = 0; i < level; i++)
    g_string_append (out, o->indent);
}

/* json.dumps() of a value. Returns FALSE (with *why set) for values JSON cannot hold. */
static gboolean
append_json (GString *out, JVal *v, const JsonOpts *o, int level, const char **why)
{
  guint i;
  if (level > 200) {
    *why = "nesting too deep";
    return FALSE;
  }
  switch (v->t) {
  case JV_NONE:
    g_string_append (out, "null");
    return TRUE;
  case JV_BOOL:
    g_string_append (out, v->u.b ? "true" : "false");
    return TRUE;
  case JV_INT:
    g_string_append_printf (out, "%" G_GINT64_FORMAT, v->u.i);
    return TRUE;
  case JV_FLOAT:
    if (isnan (v->u.f))
      g_string_append (out, "NaN");
    else if (isinf (v->u.f))
      g_string_append (out, v->u.f < 0 ? "-Infinity" : "Infinity");
    else
      append_py_float (out, v->u.f);
    return TRUE;
  case JV_STR:
    append_json_str (out, v->u.s.s, v->u.s.len, o->ensure_ascii);
    return TRUE;
  case JV_LIST:
    if (v->u.list->len == 0) {
      g_string_append (out, "[]");
      return TRUE;
    }
    g_string_append_c (out, '[');
    for (i = 0; i < v->u.list->len; i++) {
      if (i)
        g_string_append (out, o->item_sep);
      if (o->indent)
        json_newline (out, o, level + 1);
      if (!append_json (out, g_ptr_array_index (v->u.list, i), o, level + 1, why))
        return FALSE;
    }
    if (o->indent)
      json_newline (out, o, level);
    g_string_append_c (out, ']');
    return TRUE;
  case JV_DICT: {
    g_autoptr (GArray) order = g_array_new (FALSE, FALSE, sizeof (guint));
    if (v->u.d.keys->len == 0) {
      g_string_append (out, "{}");
      return TRUE;
    }
    for (i = 0; i < v->u.d.keys->len; i++)
      g_array_append_val (order, i);
    if (o->sort_keys)
      g_array_sort_with_data (order, cmp_keys_str, v);
    g_string_append_c (out, '{');
    for (i = 0; i < order->len; i++) {
      guint k = g_array_index (order, guint, i);
      JVal *key = g_ptr_array_index (v->u.d.keys, k);
      if (i)
        g_string_append (out, o->item_sep);
      if (o->indent)
        json_newline (out, o, level + 1);
      if (key->t == JV_STR)
        append_json_str (out, key->u.s.s, key->u.s.len, o->ensure_ascii);
      else if (key->t == JV_NONE)
        g_string_append (out, "\"null\"");
      else if (key->t == JV_BOOL)
        g_string_append (out, key->u.b ? "\"true\"" : "\"false\"");
      else if (key->t == JV_INT || key->t == JV_FLOAT) {
        g_string_append_c (out, '"');
        append_str (out, key);
        g_string_append_c (out, '"');
      } else {
        *why = "keys must be str, int, float, bool or None";
        return FALSE;
      }
      g_string_append (out, o->key_sep);
      if (!append_json (out, g_ptr_array_index (v->u.d.vals, k), o, level + 1, why))
        return FALSE;
    }
    if (o->indent)
      json_newline (out, o, level);
    g_string_append_c (out, '}');
    return TRUE;
  }
  default:
    *why = v->t == JV_UNDEF ? "Object of type Undefined is not JSON serializable"
                            : "object is not JSON serializable";
    return FALSE;
  }
}

/* Converts a json-glib node into a value. */
static JVal *
jv_from_json (JsonNode *node, int depth)
{
  if (node == NULL || depth > 512)
    return jv_none ();
  switch (json_node_get_node_type (node)) {
  case JSON_NODE_NULL:
    return jv_none ();
  case JSON_NODE_VALUE: {
    GType t = json_node_get_value_type (node);
    if (t == G_TYPE_BOOLEAN)
      return jv_bool (json_node_get_boolean (node));
    if (t == G_TYPE_INT64 || t == G_TYPE_INT)
      return jv_int (json_node_get_int (node));
    if (t == G_TYPE_DOUBLE || t == G_TYPE_FLOAT)
      return jv_float (json_node_get_double (node));
    if (t == G_TYPE_STRING) {
      const char *s = json_node_get_string (node);
      return jv_str (s ? s : "");
    }
    return jv_none ();
  }
  case JSON_NODE_ARRAY: {
    JsonArray *a = json_node_get_array (node);
    JVal *v = jv_new (JV_LIST);
    guint i, n = json_array_get_length (a);
    for (i = 0; i < n; i++)
      list_push (v, jv_from_json (json_array_get_element (a, i), depth + 1));
    return v;
  }
  case JSON_NODE_OBJECT: {
    JsonObject *o = json_node_get_object (node);
    JVal *v = jv_new (JV_DICT);
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    json_object_iter_init_ordered (&it, o);
    while (json_object_iter_next_ordered (&it, &name, &member))
      dict_set_str (v, name, jv_from_json (member, depth + 1));
    return v;
  }
  default:
    return jv_none ();
  }
}

/* ------------------------------------------------------------------------ */
/* Lexer                                                                    */
/*
 * Follows jinja2's lexer with trim_blocks and lstrip_blocks: newlines in the
 * source are normalised to "\n" and one trailing newline is dropped; `{%-`
 * strips all whitespace before the tag, otherwise lstrip_blocks removes
 * spaces between the line start and a `{%` or `{#` (not after `{%+`, never
 * for `{{`); `-%}` strips whitespace after, `+%}` keeps it, `%}` and `#}`
 * swallow a single "\n".
 */

typedef enum {
  T_DATA,
  T_VAR_BEGIN,
  T_VAR_END,
  T_BLOCK_BEGIN,
  T_BLOCK_END,
  T_NAME,
  T_STRING,
  T_INT,
  T_FLOAT,
  T_OP,
  T_EOF,
} TokType;

typedef struct {
  TokType t;
  int line;
  char *s; /* data / name / string value / operator, owned by the template */
  gsize len;
  gint64 i;
  double f;
} Tok;

struct _BlnTemplate {
  GArray *toks;    /* of Tok */
  GPtrArray *nodes; /* every Node, for freeing */
  GPtrArray *body;  /* top-level statements */
};

typedef struct {
  BlnTemplate *tmpl;
  const char *src;
  gsize len;
  gsize pos;
  int line;
  GError **error;
} Lexer;

static void
lex_push (Lexer *lx, TokType t, const char *s, gsize len)
{
  Tok tok = { 0 };
  tok.t = t;
  tok.line = lx->line;
  if (s) {
    tok.s = g_strndup (s, len);
    tok.len = len;
  }
  g_array_append_val (lx->tmpl->toks, tok);
}

static int
count_nl (const char *s, gsize len)
{
  int n = 0;
  gsize i;
  for (i = 0; i < len; i++)
    n += s[i] == '\n';
  return n;
}

static gboolean
lex_fail (Lexer *lx, const char *msg)
{
  g_set_error (lx->error, BLN_ERROR, BLN_ERROR_TEMPLATE, "template line %d: %s", lx->line, msg);
  return FALSE;
}

/* Python unicode-escape decoding of a string literal body. */
static char *
decode_escapes (const char *s, gsize len, gsize *out_len)
{
  GString *g = g_string_sized_new (len);
  gsize i = 0;
  while (i < len) {
    char c = s[i];
    if (c != '\\' || i + 1 >= len) {
      g_string_append_c (g, c);
      i++;
      continue;
    }
    c = s[i + 1];
    i += 2;
    switch (c) {
    case 'n': g_string_append_c (g, '\n'); break;
    case 't': g_string_append_c (g, '\t'); break;
    case 'r': g_string_append_c (g, '\r'); break;
    case '\\': g_string_append_c (g, '\\'); break;
    case '\'': g_string_append_c (g, '\''); break;
    case '"': g_string_append_c (g, '"'); break;
    case 'a': g_string_append_c (g, '\a'); break;
    case 'b': g_string_append_c (g, '\b'); break;
    case 'f': g_string_append_c (g, '\f'); break;
    case 'v': g_string_append_c (g, '\v'); break;
    case '\n': break;
    case 'x':
    case 'u':
    case 'U': {
      int n = c == 'x' ? 2 : c == 'u' ? 4 : 8, k;
      gunichar v = 0;
      for (k = 0; k < n && i + (gsize) k < len && g_ascii_isxdigit (s[i + k]); k++)
        v = v * 16 + (gunichar) g_ascii_xdigit_value (s[i + k]);
      if (k == n && g_unichar_validate (v)) {
        g_string_append_unichar (g, v);
        i += (gsize) n;
      } else {
        g_string_append_c (g, '\\');
        g_string_append_c (g, c);
      }
      break;
    }
    default:
      if (c >= '0' && c <= '7') {
        gunichar v = (gunichar) (c - '0');
        int k;
        for (k = 0; k < 2 && i < len && s[i] >= '0' && s[i] <= '7'; k++, i++)
          v = v * 8 + (gunichar) (s[i] - '0');
        g_string_append_unichar (g, v);
      } else {
        g_string_append_c (g, '\\');
        g_string_append_c (g, c);
      }
      break;
    }
  }
  *out_len = g->len;
  return g_string_free (g, FALSE);
}

static const char *const lex_ops[] = {
  "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
  "{", "}", "<", ">", "=", ".", ":", "|", ",", ";", NULL,
};

/* Lexes the inside of a {{ }} or {% %} tag up to and including its end. */
static gboolean
lex_tag (Lexer *lx, gboolean is_block)
{
  const char *s = lx->src;
  int depth = 0;
  char closer = is_block ? '%' : '}';
  for (;;) {
    gsize p = lx->pos;
    gsize w = ws_span (s + p, lx->len - p);
    lx->line += count_nl (s + p, w);
    p += w;
    lx->pos = p;
    if (p >= lx->len)
      return lex_fail (lx, "unexpected end of template inside a tag");
    if (depth == 0) {
      /* end of tag, possibly with a whitespace-control sign */
      if ((s[p] == '-' || (s[p] == '+' && is_block)) && p + 2 < lx->len + 0 &&
          s[p + 1] == closer && s[p + 2] == '}') {
        lex_push (lx, is_block ? T_BLOCK_END : T_VAR_END, NULL, 0);
        lx->pos = p + 3;
        if (s[p] == '-') {
          w = ws_span (s + lx->pos, lx->len - lx->pos);
          lx->line += count_nl (s + lx->pos, w);
          lx->pos += w;
        }
        return TRUE;
      }
      if (s[p] == closer && p + 1 < lx->len && s[p + 1] == '}') {
        lex_push (lx, is_block ? T_BLOCK_END : T_VAR_END, NULL, 0);
        lx->pos = p + 2;
        if (is_block && lx->pos < lx->len && s[lx->pos] == '\n') {
          lx->pos++;
          lx->line++;
        }
        return TRUE;
      }
    }
    if (g_ascii_isdigit (s[p])) {
      gsize q = p;
      gboolean is_float = FALSE;
      GString *num = g_string_new (NULL);
      Tok *tok;
      while (q < lx->len && (g_ascii_isdigit (s[q]) || (s[q] == '_' && q + 1 < lx->len &&
                                                       g_ascii_isdigit (s[q + 1]))))
        if (s[q++] != '_')
          g_string_append_c (num, s[q - 1]);
      if (q + 1 < lx->len && s[q] == '.' && g_ascii_isdigit (s[q + 1]) &&
          !(p > 0 && s[p - 1] == '.')) {
        is_float = TRUE;
        g_string_append_c (num, s[q++]);
        while (q < lx->len && (g_ascii_isdigit (s[q]) || s[q] == '_'))
          if (s[q++] != '_')
            g_string_append_c (num, s[q - 1]);
      }
      if (q < lx->len && (s[q] == 'e' || s[q] == 'E') && !(p > 0 && s[p - 1] == '.')) {
        gsize r = q + 1;
        if (r < lx->len && (s[r] == '+' || s[r] == '-'))
          r++;
        if (r < lx->len && g_ascii_isdigit (s[r])) {
          is_float = TRUE;
          g_string_append_c (num, 'e');
          g_string_append_len (num, s + q + 1, (gssize) (r - q - 1));
          q = r;
          while (q < lx->len && (g_ascii_isdigit (s[q]) || s[q] == '_'))
            if (s[q++] != '_')
              g_string_append_c (num, s[q - 1]);
        }
      }
      lex_push (lx, is_float ? T_FLOAT : T_INT, NULL, 0);
      tok = &g_array_index (lx->tmpl->toks, Tok, lx->tmpl->toks->len - 1);
      if (is_float)
        tok->f = g_ascii_strtod (num->str, NULL);
      else {
        errno = 0;
        tok->i = g_ascii_strtoll (num->str, NULL, 10);
        if (errno) {
          g_string_free (num, TRUE);
          return lex_fail (lx, "integer literal too large");
        }
      }
      g_string_free (num, TRUE);
      lx->pos = q;
      continue;
    }
    if (g_ascii_isalpha (s[p]) || s[p] == '_') {
      gsize q = p;
      while (q < lx->len && (g_ascii_isalnum (s[q]) || s[q] == '_'))
        q++;
      lex_push (lx, T_NAME, s + p, q - p);
      lx->pos = q;
      continue;
    }
    if (s[p] == '\'' || s[p] == '"') {
      char quote = s[p];
      gsize q = p + 1;
      gsize dlen;
      char *dec;
      Tok *tok;
      while (q < lx->len && s[q] != quote) {
        if (s[q] == '\\')
          q++;
        q++;
      }
      if (q >= lx->len)
        return lex_fail (lx, "unterminated string literal");
      dec = decode_escapes (s + p + 1, q - p - 1, &dlen);
      lex_push (lx, T_STRING, NULL, 0);
      tok = &g_array_index (lx->tmpl->toks, Tok, lx->tmpl->toks->len - 1);
      tok->s = dec;
      tok->len = dlen;
      lx->line += count_nl (s + p, q - p);
      lx->pos = q + 1;
      continue;
    }
    {
      int k;
      for (k = 0; lex_ops[k]; k++) {
        gsize ol = strlen (lex_ops[k]);
        if (p + ol <= lx->len && memcmp (s + p, lex_ops[k], ol) == 0)
          break;
      }
      if (!lex_ops[k]) {
        g_autofree char *msg = g_strdup_printf ("unexpected character '%c'", s[p]);
        return lex_fail (lx, msg);
      }
      if (strchr ("([{", lex_ops[k][0]))
        depth++;
      else if (strchr (")]}", lex_ops[k][0])) {
        if (depth == 0)
          return lex_fail (lx, "unbalanced closing bracket");
        depth--;
      }
      lex_push (lx, T_OP, lex_ops[k], strlen (lex_ops[k]));
      lx->pos = p + strlen (lex_ops[k]);
    }
  }
}

/* Is there `raw` (then optional spaces, then `-%}` or `%}`) at @p? Returns the end or 0. */
static gsize
match_word_tag (Lexer *lx, gsize p, const char *word, gboolean *minus_end)
{
  const char *s = lx->src;
  gsize wl = strlen (word);
  p += ws_span (s + p, lx->len - p);
  if (p + wl > lx->len || memcmp (s + p, word, wl) != 0)
    return 0;
  p += wl;
  p += ws_span (s + p, lx->len - p);
  if (p + 3 <= lx->len && s[p] == '-' && s[p + 1] == '%' && s[p + 2] == '}') {
    *minus_end = TRUE;
    return p + 3;
  }
  if (p + 3 <= lx->len && s[p] == '+' && s[p + 1] == '%' && s[p + 2] == '}') {
    *minus_end = FALSE;
    return p + 3;
  }
  if (p + 2 <= lx->len && s[p] == '%' && s[p + 1] == '}') {
    *minus_end = FALSE;
    return p + 2;
  }
  return 0;
}

static gboolean
lex_all (Lexer *lx)
{
  const char *s = lx->src;
  gboolean line_starting = TRUE;
  while (lx->pos < lx->len) {
    gsize p = lx->pos, tag;
    const char *hit = NULL;
    char kind, sign;
    gsize text_len, l_pos;
    /* find the earliest tag opener */
    for (tag = p; tag + 1 < lx->len; tag++)
      if (s[tag] == '{' && (s[tag + 1] == '{' || s[tag + 1] == '%' || s[tag + 1] == '#')) {
        hit = s + tag;
        break;
      }
    if (!hit) {
      lex_push (lx, T_DATA, s + p, lx->len - p);
      lx->line += count_nl (s + p, lx->len - p);
      lx->pos = lx->len;
      break;
    }
    kind = s[tag + 1];
    sign = tag + 2 < lx->len ? s[tag + 2] : '\0';
    if (sign != '-' && sign != '+')
      sign = '\0';
    text_len = tag - p;
    if (sign == '-')
      text_len = rstrip_len (s + p, text_len);
    else if (sign != '+' && kind != '{') {
      const char *nl = g_strrstr_len (s + p, (gssize) text_len, "\n");
      l_pos = nl ? (gsize) (nl - (s + p)) + 1 : 0;
      if ((l_pos > 0 || line_starting) && l_pos < text_len &&
          ws_span (s + p + l_pos, text_len - l_pos) == text_len - l_pos)
        text_len = l_pos;
    }
    if (text_len > 0)
      lex_push (lx, T_DATA, s + p, text_len);
    lx->line += count_nl (s + p, tag - p);
    lx->pos = tag + 2 + (sign ? 1 : 0);
    line_starting = FALSE;

    if (kind == '#') {
      gsize q = lx->pos;
      const char *end = NULL;
      for (; q + 1 < lx->len; q++)
        if (s[q] == '#' && s[q + 1] == '}') {
          end = s + q;
          break;
        }
      if (!end)
        return lex_fail (lx, "missing end of comment tag");
      lx->line += count_nl (s + lx->pos, q - lx->pos);
      lx->pos = q + 2;
      if (q > tag + 2 && s[q - 1] == '-') {
        gsize w = ws_span (s + lx->pos, lx->len - lx->pos);
        lx->line += count_nl (s + lx->pos, w);
        lx->pos += w;
      } else if (!(q > tag + 2 && s[q - 1] == '+') && lx->pos < lx->len && s[lx->pos] == '\n') {
        lx->pos++;
        lx->line++;
      }
      line_starting = lx->pos > 0 && s[lx->pos - 1] == '\n';
      continue;
    }
    if (kind == '%') {
      gboolean minus = FALSE;
      gsize body = match_word_tag (lx, lx->pos, "raw", &minus);
      if (body) {
        /* raw: data up to {% endraw %}, with the usual stripping on both tags */
        gsize q;
        for (q = body; q + 1 < lx->len; q++) {
          gsize endtag;
          char esign;
          gboolean eminus = FALSE;
          gsize tl;
          if (!(s[q] == '{' && s[q + 1] == '%'))
            continue;
          esign = q + 2 < lx->len ? s[q + 2] : '\0';
          endtag = match_word_tag (lx, q + 2 + ((esign == '-' || esign == '+') ? 1 : 0),
                                   "endraw", &eminus);
          if (!endtag)
            continue;
          if (minus)
            body += ws_span (s + body, lx->len - body);
          tl = q - body;
          if (esign == '-')
            tl = rstrip_len (s + body, tl);
          else if (esign != '+') {
            const char *nl = g_strrstr_len (s + body, (gssize) tl, "\n");
            l_pos = nl ? (gsize) (nl - (s + body)) + 1 : 0;
            if (l_pos > 0 && l_pos < tl && ws_span (s + body + l_pos, tl - l_pos) == tl - l_pos)
              tl = l_pos;
          }
          if (tl > 0)
            lex_push (lx, T_DATA, s + body, tl);
          lx->line += count_nl (s + lx->pos, endtag - lx->pos);
          lx->pos = endtag;
          if (eminus) {
            gsize w = ws_span (s + lx->pos, lx->len - lx->pos);
            lx->line += count_nl (s + lx->pos, w);
            lx->pos += w;
          } else if (s[endtag - 3] != '+' && lx->pos < lx->len && s[lx->pos] == '\n') {
            lx->pos++;
            lx->line++;
          }
          break;
        }
        if (q + 1 >= lx->len)
          return lex_fail (lx, "missing end of raw directive");
        line_starting = lx->pos > 0 && s[lx->pos - 1] == '\n';
        continue;
      }
    }
    lex_push (lx, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, NULL, 0);
    if (!lex_tag (lx, kind == '%'))
      return FALSE;
    line_starting = lx->pos > 0 && s[lx->pos - 1] == '\n';
  }
  lex_push (lx, T_EOF, NULL, 0);
  return TRUE;
}

/* ------------------------------------------------------------------------ */
/* Parser                                                                   */

typedef enum {
  /* statements */
  N_TEXT,      /* s */
  N_OUTPUT,    /* a */
  N_IF,        /* a = cond, body, orelse */
  N_FOR,       /* targets (names), a = iter, b = filter, body, orelse */
  N_SET,       /* targets or (a = ns name node, s = attr), b = value */
  N_SET_BLOCK, /* targets, body, filters in args */
  N_MACRO,     /* s = name, params (names), defaults (args), body */
  N_CALLBLOCK, /* a = call expr, body, params */
  N_FILTERBLOCK, /* a = filter chain applied to a placeholder, body */
  N_BREAK,
  N_CONTINUE,
  N_BODY,      /* body (generation blocks and similar) */
  /* expressions */
  E_LIT,     /* lit */
  E_NAME,    /* s */
  E_ATTR,    /* a . s */
  E_ITEM,    /* a [ b ] */
  E_SLICE,   /* a [ args[0] : args[1] : args[2] ] (NULL entries allowed) */
  E_CALL,    /* a ( args, kwnames/kwargs ) */
  E_FILTER,  /* a | s ( args ) — a may be NULL inside filter blocks */
  E_TEST,    /* a is [not] s ( args ), flag = negated */
  E_NEG,
  E_POS,
  E_NOT,
  E_BIN,     /* a op b, s = operator */
  E_AND,
  E_OR,
  E_COND,    /* b if a else c */
  E_LIST,    /* args */
  E_TUPLE,   /* args */
  E_DICT,    /* args = k0, v0, k1, v1, ... */
} NodeType;

struct Node {
  NodeType t;
  int line;
  char *s;
  JVal *lit;
  Node *a, *b, *c;
  GPtrArray *args;    /* Node* (may contain NULL for slices) */
  GPtrArray *kwnames; /* char* */
  GPtrArray *kwargs;  /* Node* */
  GPtrArray *body, *orelse;
  GPtrArray *targets; /* char* */
  gboolean flag;
};

typedef struct {
  BlnTemplate *tmpl;
  guint pos;
  GError **error;
  int depth;
} Parser;

static Node *
node_new (Parser *ps, NodeType t, int line)
{
  Node *n = g_new0 (Node, 1);
  n->t = t;
  n->line = line;
  g_ptr_array_add (ps->tmpl->nodes, n);
  return n;
}

static void
node_free (Node *n)
{
  g_free (n->s);
  if (n->lit)
    jv_unref (n->lit);
  if (n->args)
    g_ptr_array_unref (n->args);
  if (n->kwnames)
    g_ptr_array_unref (n->kwnames);
  if (n->kwargs)
    g_ptr_array_unref (n->kwargs);
  if (n->body)
    g_ptr_array_unref (n->body);
  if (n->orelse)
    g_ptr_array_unref (n->orelse);
  if (n->targets)
    g_ptr_array_unref (n->targets);
  g_free (n);
}

static Tok *
cur (Parser *ps)
{
  return &g_array_index (ps->tmpl->toks, Tok, ps->pos);
}

static Tok *
peek (Parser *ps, guint ahead)
{
  guint i = MIN (ps->pos + ahead, ps->tmpl->toks->len - 1);
  return &g_array_index (ps->tmpl->toks, Tok, i);
}

static void
advance (Parser *ps)
{
  if (cur (ps)->t != T_EOF)
    ps->pos++;
}

static gboolean
parse_fail (Parser *ps, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static gboolean
parse_fail (Parser *ps, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  if (ps->error && *ps->error)
    return FALSE;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (ps->error, BLN_ERROR, BLN_ERROR_TEMPLATE, "template line %d: %s", cur (ps)->line,
               msg);
  return FALSE;
}

static gboolean
is_op (Tok *t, const char *op)
{
  return t->t == T_OP && strcmp (t->s, op) == 0;
}

static gboolean
is_name (Tok *t, const char *name)
{
  return t->t == T_NAME && strcmp (t->s, name) == 0;
}

static gboolean
expect_op (Parser *ps, const char *op)
{
  if (!is_op (cur (ps), op))
    return parse_fail (ps, "expected '%s'", op);
  advance (ps);
  return TRUE;
}

static const char *
tok_desc (Tok *t)
{
  switch (t->t) {
  case T_NAME:
  case T_OP:
    return t->s;
  case T_STRING:
    return "string";
  case T_INT:
  case T_FLOAT:
    return "number";
  case T_BLOCK_END:
    return "end of statement block";
  case T_VAR_END:
    return "end of print statement";
  case T_EOF:
    return "end of template";
  default:
    return "token";
  }
}

static Node *parse_expr (Parser *ps);
static Node *parse_expr_noif (Parser *ps);
static Node *parse_or (Parser *ps);
static Node *parse_unary (Parser *ps, gboolean with_filter);
static Node *parse_primary (Parser *ps);
static Node *parse_postfix (Parser *ps, Node *n);
static Node *parse_filter_chain (Parser *ps, Node *n);

static gboolean
parse_call_args (Parser *ps, Node *call)
{
  /* at '(' */
  advance (ps);
  call->args = g_ptr_array_new ();
  call->kwnames = g_ptr_array_new_with_free_func (g_free);
  call->kwargs = g_ptr_array_new ();
  while (!is_op (cur (ps), ")")) {
    Node *v;
    if (call->args->len + call->kwargs->len > 0 && !expect_op (ps, ","))
      return FALSE;
    if (is_op (cur (ps), ")"))
      break;
    if (is_op (cur (ps), "*") || is_op (cur (ps), "**"))
      return parse_fail (ps, "unsupported construct: *args / **kwargs in a call");
    if (cur (ps)->t == T_NAME && is_op (peek (ps, 1), "=")) {
      g_ptr_array_add (call->kwnames, g_strdup (cur (ps)->s));
      advance (ps);
      advance (ps);
      if (!(v = parse_expr (ps)))
        return FALSE;
      g_ptr_array_add (call->kwargs, v);
    } else {
      if (call->kwargs->len > 0)
        return parse_fail (ps, "positional argument follows keyword argument");
      if (!(v = parse_expr (ps)))
        return FALSE;
      g_ptr_array_add (call->args, v);
    }
  }
  advance (ps);
  return TRUE;
}

static Node *
parse_tuple_or_expr (Parser *ps, gboolean allow_empty)
{
  /* expr [, expr]* — a tuple when a comma appears */
  int line = cur (ps)->line;
  Node *first, *tup;
  if (allow_empty && is_op (cur (ps), ")")) {
    tup = node_new (ps, E_TUPLE, line);
    tup->args = g_ptr_array_new ();
    return tup;
  }
  if (!(first = parse_expr (ps)))
    return NULL;
  if (!is_op (cur (ps), ","))
    return first;
  tup = node_new (ps, E_TUPLE, line);
  tup->args = g_ptr_array_new ();
  g_ptr_array_add (tup->args, first);
  while (is_op (cur (ps), ",")) {
    Node *n;
    advance (ps);
    if (is_op (cur (ps), ")") || cur (ps)->t == T_BLOCK_END || cur (ps)->t == T_VAR_END)
      break;
    if (!(n = parse_expr (ps)))
      return NULL;
    g_ptr_array_add (tup->args, n);
  }
  return tup;
}

static Node *
parse_primary (Parser *ps)
{
  Tok *t = cur (ps);
  Node *n;
  if (++ps->depth > BLN_TEMPLATE_MAX_DEPTH) {
    parse_fail (ps, "expression nested too deeply");
    return NULL;
  }
  switch (t->t) {
  case T_NAME:
    if (strcmp (t->s, "true") == 0 || strcmp (t->s, "True") == 0 ||
        strcmp (t->s, "false") == 0 || strcmp (t->s, "False") == 0) {
      n = node_new (ps, E_LIT, t->line);
      n->lit = jv_bool (t->s[0] == 't' || t->s[0] == 'T');
    } else if (strcmp (t->s, "none") == 0 || strcmp (t->s, "None") == 0) {
      n = node_new (ps, E_LIT, t->line);
      n->lit = jv_none ();
    } else {
      n = node_new (ps, E_NAME, t->line);
      n->s = g_strdup (t->s);
    }
    advance (ps);
    break;
  case T_STRING: {
    GString *g = g_string_new_len (t->s, (gssize) t->len);
    n = node_new (ps, E_LIT, t->line);
    advance (ps);
    while (cur (ps)->t == T_STRING) { /* adjacent literals concatenate */
      g_string_append_len (g, cur (ps)->s, (gssize) cur (ps)->len);
      advance (ps);
    }
    n->lit = jv_gstr (g);
    break;
  }
  case T_INT:
    n = node_new (ps, E_LIT, t->line);
    n->lit = jv_int (t->i);
    advance (ps);
    break;
  case T_FLOAT:
    n = node_new (ps, E_LIT, t->line);
    n->lit = jv_float (t->f);
    advance (ps);
    break;
  case T_OP:
    if (is_op (t, "(")) {
      advance (ps);
      if (!(n = parse_tuple_or_expr (ps, TRUE)))
        return NULL;
      if (!expect_op (ps, ")"))
        return NULL;
      break;
    }
    if (is_op (t, "[")) {
      n = node_new (ps, E_LIST, t->line);
      n->args = g_ptr_array_new ();
      advance (ps);
      while (!is_op (cur (ps), "]")) {
        Node *item;
        if (n->args->len > 0 && !expect_op (ps, ","))
          return NULL;
        if (is_op (cur (ps), "]"))
          break;
        if (!(item = parse_expr (ps)))
          return NULL;
        g_ptr_array_add (n->args, item);
      }
      advance (ps);
      break;
    }
    if (is_op (t, "{")) {
      n = node_new (ps, E_DICT, t->line);
      n->args = g_ptr_array_new ();
      advance (ps);
      while (!is_op (cur (ps), "}")) {
        Node *k, *v;
        if (n->args->len > 0 && !expect_op (ps, ","))
          return NULL;
        if (is_op (cur (ps), "}"))
          break;
        if (!(k = parse_expr (ps)) || !expect_op (ps, ":") || !(v = parse_expr (ps)))
          return NULL;
        g_ptr_array_add (n->args, k);
        g_ptr_array_add (n->args, v);
      }
      advance (ps);
      break;
    }
    /* fall through */
  default:
    parse_fail (ps, "unexpected '%s'", tok_desc (t));
    return NULL;
  }
  ps->depth--;
  return n;
}

static Node *
parse_postfix (Parser *ps, Node *n)
{
  for (;;) {
    Tok *t = cur (ps);
    if (is_op (t, ".")) {
      Node *a;
      advance (ps);
      t = cur (ps);
      if (t->t == T_NAME) {
        a = node_new (ps, E_ATTR, t->line);
        a->s = g_strdup (t->s);
      } else if (t->t == T_INT) {
        a = node_new (ps, E_ITEM, t->line);
        a->b = node_new (ps, E_LIT, t->line);
        a->b->lit = jv_int (t->i);
      } else {
        parse_fail (ps, "expected a name after '.'");
        return NULL;
      }
      a->a = n;
      advance (ps);
      n = a;
    } else if (is_op (t, "[")) {
      Node *parts[3] = { NULL, NULL, NULL };
      int np = 0;
      gboolean is_slice = FALSE;
      advance (ps);
      for (;;) {
        if (is_op (cur (ps), ":")) {
          is_slice = TRUE;
          if (++np > 2) {
            parse_fail (ps, "invalid slice");
            return NULL;
          }
          advance (ps);
          continue;
        }
        if (is_op (cur (ps), "]"))
          break;
        if (parts[np] != NULL) {
          parse_fail (ps, "expected ']'");
          return NULL;
        }
        if (!(parts[np] = parse_expr (ps)))
          return NULL;
      }
      advance (ps);
      if (is_slice) {
        Node *sl = node_new (ps, E_SLICE, t->line);
        sl->a = n;
        sl->args = g_ptr_array_new ();
        g_ptr_array_add (sl->args, parts[0]);
        g_ptr_array_add (sl->args, parts[1]);
        g_ptr_array_add (sl->args, parts[2]);
        n = sl;
      } else {
        Node *it = node_new (ps, E_ITEM, t->line);
        if (!parts[0]) {
          parse_fail (ps, "expected a subscript");
          return NULL;
        }
        it->a = n;
        it->b = parts[0];
        n = it;
      }
    } else if (is_op (t, "(")) {
      Node *call = node_new (ps, E_CALL, t->line);
      call->a = n;
      if (!parse_call_args (ps, call))
        return NULL;
      n = call;
    } else
      break;
  }
  return n;
}

static Node *
parse_filter_chain (Parser *ps, Node *n)
{
  for (;;) {
    Tok *t = cur (ps);
    if (is_op (t, "|")) {
      Node *f;
      GString *name;
      advance (ps);
      if (cur (ps)->t != T_NAME) {
        parse_fail (ps, "expected a filter name after '|'");
        return NULL;
      }
      f = node_new (ps, E_FILTER, t->line);
      name = g_string_new (cur (ps)->s);
      advance (ps);
      while (is_op (cur (ps), ".") && peek (ps, 1)->t == T_NAME) {
        g_string_append_c (name, '.');
        g_string_append (name, peek (ps, 1)->s);
        advance (ps);
        advance (ps);
      }
      f->s = g_string_free (name, FALSE);
      f->a = n;
      if (is_op (cur (ps), "(")) {
        if (!parse_call_args (ps, f))
          return NULL;
      } else {
        f->args = g_ptr_array_new ();
        f->kwnames = g_ptr_array_new_with_free_func (g_free);
        f->kwargs = g_ptr_array_new ();
      }
      n = f;
    } else if (is_name (t, "is")) {
      Node *te = node_new (ps, E_TEST, t->line);
      Tok *a;
      advance (ps);
      if (is_name (cur (ps), "not")) {
        te->flag = TRUE;
        advance (ps);
      }
      if (cur (ps)->t != T_NAME) {
        parse_fail (ps, "expected a test name after 'is'");
        return NULL;
      }
      te->s = g_strdup (cur (ps)->s);
      te->a = n;
      advance (ps);
      a = cur (ps);
      if (is_op (a, "(")) {
        if (!parse_call_args (ps, te))
          return NULL;
      } else {
        te->args = g_ptr_array_new ();
        te->kwnames = g_ptr_array_new_with_free_func (g_free);
        te->kwargs = g_ptr_array_new ();
        if ((a->t == T_NAME || a->t == T_STRING || a->t == T_INT || a->t == T_FLOAT ||
             is_op (a, "[") || is_op (a, "{")) &&
            !is_name (a, "else") && !is_name (a, "or") && !is_name (a, "and") &&
            !is_name (a, "if") && !is_name (a, "is") && !is_name (a, "in") &&
            !is_name (a, "not")) {
          Node *arg = parse_primary (ps);
          if (!arg || !(arg = parse_postfix (ps, arg)))
            return NULL;
          g_ptr_array_add (te->args, arg);
        }
      }
      n = te;
    } else if (is_op (t, "(")) {
      Node *call = node_new (ps, E_CALL, t->line);
      call->a = n;
      if (!parse_call_args (ps, call))
        return NULL;
      n = call;
    } else
      break;
  }
  return n;
}

static Node *
parse_unary (Parser *ps, gboolean with_filter)
{
  Tok *t = cur (ps);
  Node *n;
  if (++ps->depth > BLN_TEMPLATE_MAX_DEPTH) {
    parse_fail (ps, "expression nested too deeply");
    return NULL;
  }
  if (is_op (t, "-") || is_op (t, "+")) {
    advance (ps);
    n = node_new (ps, t->s[0] == '-' ? E_NEG : E_POS, t->line);
    if (!(n->a = parse_unary (ps, FALSE)))
      return NULL;
  } else if (!(n = parse_primary (ps)))
    return NULL;
  if (!(n = parse_postfix (ps, n)))
    return NULL;
  if (with_filter && !(n = parse_filter_chain (ps, n)))
    return NULL;
  ps->depth--;
  return n;
}

static Node *
make_bin (Parser *ps, const char *op, Node *a, Node *b, int line)
{
  Node *n = node_new (ps, E_BIN, line);
  n->s = g_strdup (op);
  n->a = a;
  n->b = b;
  return n;
}

static Node *
parse_pow (Parser *ps)
{
  Node *n = parse_unary (ps, TRUE);
  while (n && is_op (cur (ps), "**")) {
    int line = cur (ps)->line;
    Node *r;
    advance (ps);
    if (!(r = parse_unary (ps, TRUE)))
      return NULL;
    n = make_bin (ps, "**", n, r, line);
  }
  return n;
}

static Node *
parse_mul (Parser *ps)
{
  Node *n = parse_pow (ps);
  while (n && (is_op (cur (ps), "*") || is_op (cur (ps), "/") || is_op (cur (ps), "//") ||
               is_op (cur (ps), "%"))) {
    Tok *t = cur (ps);
    Node *r;
    advance (ps);
    if (!(r = parse_pow (ps)))
      return NULL;
    n = make_bin (ps, t->s, n, r, t->line);
  }
  return n;
}

static Node *
parse_concat (Parser *ps)
{
  Node *n = parse_mul (ps);
  while (n && is_op (cur (ps), "~")) {
    Tok *t = cur (ps);
    Node *r;
    advance (ps);
    if (!(r = parse_mul (ps)))
      return NULL;
    n = make_bin (ps, "~", n, r, t->line);
  }
  return n;
}

static Node *
parse_add (Parser *ps)
{
  Node *n = parse_concat (ps);
  while (n && (is_op (cur (ps), "+") || is_op (cur (ps), "-"))) {
    Tok *t = cur (ps);
    Node *r;
    advance (ps);
    if (!(r = parse_concat (ps)))
      return NULL;
    n = make_bin (ps, t->s, n, r, t->line);
  }
  return n;
}

static Node *
parse_compare (Parser *ps)
{
  Node *n = parse_add (ps);
  while (n) {
    Tok *t = cur (ps);
    const char *op = NULL;
    Node *r;
    if (t->t == T_OP && (strcmp (t->s, "==") == 0 || strcmp (t->s, "!=") == 0 ||
                         strcmp (t->s, "<") == 0 || strcmp (t->s, "<=") == 0 ||
                         strcmp (t->s, ">") == 0 || strcmp (t->s, ">=") == 0)) {
      op = t->s;
      advance (ps);
    } else if (is_name (t, "in")) {
      op = "in";
      advance (ps);
    } else if (is_name (t, "not") && is_name (peek (ps, 1), "in")) {
      op = "notin";
      advance (ps);
      advance (ps);
    } else
      break;
    if (!(r = parse_add (ps)))
      return NULL;
    /* chained comparisons (a < b < c) are rare in templates: evaluate pairwise-left */
    n = make_bin (ps, op, n, r, t->line);
  }
  return n;
}

static Node *
parse_not (Parser *ps)
{
  if (is_name (cur (ps), "not")) {
    Node *n = node_new (ps, E_NOT, cur (ps)->line);
    advance (ps);
    if (++ps->depth > BLN_TEMPLATE_MAX_DEPTH) {
      parse_fail (ps, "expression nested too deeply");
      return NULL;
    }
    if (!(n->a = parse_not (ps)))
      return NULL;
    ps->depth--;
    return n;
  }
  return parse_compare (ps);
}

static Node *
parse_and (Parser *ps)
{
  Node *n = parse_not (ps);
  while (n && is_name (cur (ps), "and")) {
    Node *a = node_new (ps, E_AND, cur (ps)->line);
    advance (ps);
    a->a = n;
    if (!(a->b = parse_not (ps)))
      return NULL;
    n = a;
  }
  return n;
}

static Node *
parse_or (Parser *ps)
{
  Node *n = parse_and (ps);
  while (n && is_name (cur (ps), "or")) {
    Node *o = node_new (ps, E_OR, cur (ps)->line);
    advance (ps);
    o->a = n;
    if (!(o->b = parse_and (ps)))
      return NULL;
    n = o;
  }
  return n;
}

static Node *
parse_expr (Parser *ps)
{
  Node *n = parse_or (ps);
  while (n && is_name (cur (ps), "if")) {
    Node *c = node_new (ps, E_COND, cur (ps)->line);
    advance (ps);
    c->b = n;
    if (!(c->a = parse_or (ps)))
      return NULL;
    if (is_name (cur (ps), "else")) {
      advance (ps);
      if (!(c->c = parse_expr (ps)))
        return NULL;
    }
    n = c;
  }
  return n;
}

/* An expression without a trailing inline `if` (the for-loop iterable). */
static Node *
parse_expr_noif (Parser *ps)
{
  return parse_or (ps);
}

static gboolean
expect_block_end (Parser *ps)
{
  if (cur (ps)->t != T_BLOCK_END)
    return parse_fail (ps, "expected end of statement block, got '%s'", tok_desc (cur (ps)));
  advance (ps);
  return TRUE;
}

/* Parses statements until a block whose first word is one of @ends. Leaves
 * the parser at that word (after `{%`) and returns the body; at end of
 * template returns it when @ends is NULL, else fails. */
static GPtrArray *parse_body (Parser *ps, const char *const *ends);

static gboolean
parse_targets (Parser *ps, GPtrArray *targets)
{
  for (;;) {
    if (cur (ps)->t != T_NAME)
      return parse_fail (ps, "expected a variable name");
    g_ptr_array_add (targets, g_strdup (cur (ps)->s));
    advance (ps);
    if (!is_op (cur (ps), ","))
      return TRUE;
    advance (ps);
  }
}

static gboolean
end_is (Parser *ps, const char *word)
{
  /* the parser is at the ending word of a body */
  if (!is_name (cur (ps), word))
    return FALSE;
  advance (ps);
  return TRUE;
}

static Node *
parse_statement (Parser *ps)
{
  Tok *t = cur (ps);
  int line = t->line;
  Node *n;
  if (t->t != T_NAME) {
    parse_fail (ps, "expected a statement name");
    return NULL;
  }
  if (is_name (t, "if")) {
    static const char *const ends[] = { "elif", "else", "endif", NULL };
    Node *top, *cur_if;
    advance (ps);
    top = cur_if = node_new (ps, N_IF, line);
    for (;;) {
      if (!(cur_if->a = parse_expr (ps)) || !expect_block_end (ps))
        return NULL;
      if (!(cur_if->body = parse_body (ps, ends)))
        return NULL;
      if (end_is (ps, "elif")) {
        Node *next = node_new (ps, N_IF, cur (ps)->line);
        cur_if->orelse = g_ptr_array_new ();
        g_ptr_array_add (cur_if->orelse, next);
        cur_if = next;
        continue;
      }
      if (end_is (ps, "else")) {
        static const char *const ends2[] = { "endif", NULL };
        if (!expect_block_end (ps) || !(cur_if->orelse = parse_body (ps, ends2)))
          return NULL;
      }
      if (!end_is (ps, "endif")) {
        parse_fail (ps, "expected 'endif'");
        return NULL;
      }
      if (!expect_block_end (ps))
        return NULL;
      return top;
    }
  }
  if (is_name (t, "for")) {
    static const char *const ends[] = { "else", "endfor", NULL };
    static const char *const ends2[] = { "endfor", NULL };
    advance (ps);
    n = node_new (ps, N_FOR, line);
    n->targets = g_ptr_array_new_with_free_func (g_free);
    if (is_op (cur (ps), "(")) {
      advance (ps);
      if (!parse_targets (ps, n->targets) || !expect_op (ps, ")"))
        return NULL;
    } else if (!parse_targets (ps, n->targets))
      return NULL;
    if (!is_name (cur (ps), "in")) {
      parse_fail (ps, "expected 'in' in for loop");
      return NULL;
    }
    advance (ps);
    if (!(n->a = parse_expr_noif (ps)))
      return NULL;
    if (is_name (cur (ps), "if")) {
      advance (ps);
      if (!(n->b = parse_expr_noif (ps)))
        return NULL;
    }
    if (is_name (cur (ps), "recursive")) {
      parse_fail (ps, "unsupported construct: recursive for loop");
      return NULL;
    }
    if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
      return NULL;
    if (end_is (ps, "else")) {
      if (!expect_block_end (ps) || !(n->orelse = parse_body (ps, ends2)))
        return NULL;
    }
    if (!end_is (ps, "endfor") || !expect_block_end (ps)) {
      parse_fail (ps, "expected 'endfor'");
      return NULL;
    }
    return n;
  }
  if (is_name (t, "set")) {
    advance (ps);
    if (cur (ps)->t == T_NAME && is_op (peek (ps, 1), ".") && peek (ps, 2)->t == T_NAME &&
        is_op (peek (ps, 3), "=")) {
      n = node_new (ps, N_SET, line);
      n->a = node_new (ps, E_NAME, line);
      n->a->s = g_strdup (cur (ps)->s);
      n->s = g_strdup (peek (ps, 2)->s);
      ps->pos += 4;
      if (!(n->b = parse_tuple_or_expr (ps, FALSE)) || !expect_block_end (ps))
        return NULL;
      return n;
    }
    n = node_new (ps, N_SET, line);
    n->targets = g_ptr_array_new_with_free_func (g_free);
    if (!parse_targets (ps, n->targets))
      return NULL;
    if (is_op (cur (ps), "=")) {
      advance (ps);
      if (!(n->b = parse_tuple_or_expr (ps, FALSE)) || !expect_block_end (ps))
        return NULL;
      return n;
    }
    {
      static const char *const ends[] = { "endset", NULL };
      n->t = N_SET_BLOCK;
      if (n->targets->len != 1) {
        parse_fail (ps, "block set takes one name");
        return NULL;
      }
      if (is_op (cur (ps), "|")) {
        if (!(n->a = parse_filter_chain (ps, NULL)))
          return NULL;
      }
      if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
        return NULL;
      if (!end_is (ps, "endset") || !expect_block_end (ps))
        return NULL;
      return n;
    }
  }
  if (is_name (t, "macro")) {
    static const char *const ends[] = { "endmacro", NULL };
    advance (ps);
    n = node_new (ps, N_MACRO, line);
    if (cur (ps)->t != T_NAME) {
      parse_fail (ps, "expected a macro name");
      return NULL;
    }
    n->s = g_strdup (cur (ps)->s);
    advance (ps);
    n->targets = g_ptr_array_new_with_free_func (g_free);
    n->args = g_ptr_array_new ();
    if (!expect_op (ps, "("))
      return NULL;
    while (!is_op (cur (ps), ")")) {
      if (n->targets->len > 0 && !expect_op (ps, ","))
        return NULL;
      if (cur (ps)->t != T_NAME) {
        parse_fail (ps, "expected a parameter name");
        return NULL;
      }
      g_ptr_array_add (n->targets, g_strdup (cur (ps)->s));
      advance (ps);
      if (is_op (cur (ps), "=")) {
        Node *d;
        advance (ps);
        if (!(d = parse_expr (ps)))
          return NULL;
        g_ptr_array_add (n->args, d);
      } else
        g_ptr_array_add (n->args, NULL);
    }
    advance (ps);
    if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
      return NULL;
    if (!end_is (ps, "endmacro") || !expect_block_end (ps))
      return NULL;
    return n;
  }
  if (is_name (t, "call")) {
    static const char *const ends[] = { "endcall", NULL };
    advance (ps);
    n = node_new (ps, N_CALLBLOCK, line);
    n->targets = g_ptr_array_new_with_free_func (g_free);
    if (is_op (cur (ps), "(")) {
      advance (ps);
      while (!is_op (cur (ps), ")")) {
        if (n->targets->len > 0 && !expect_op (ps, ","))
          return NULL;
        if (cur (ps)->t != T_NAME) {
          parse_fail (ps, "expected a parameter name");
          return NULL;
        }
        g_ptr_array_add (n->targets, g_strdup (cur (ps)->s));
        advance (ps);
      }
      advance (ps);
    }
    if (!(n->a = parse_expr (ps)) || n->a->t != E_CALL) {
      parse_fail (ps, "expected a call in call block");
      return NULL;
    }
    if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
      return NULL;
    if (!end_is (ps, "endcall") || !expect_block_end (ps))
      return NULL;
    return n;
  }
  if (is_name (t, "filter")) {
    static const char *const ends[] = { "endfilter", NULL };
    Node *chain;
    advance (ps);
    n = node_new (ps, N_FILTERBLOCK, line);
    /* parse `name(args) | name ...` as a chain over a NULL input */
    ps->pos--; /* pretend there is a '|' */
    {
      Tok *fake = cur (ps);
      char *saved = fake->s;
      TokType st = fake->t;
      fake->t = T_OP;
      fake->s = (char *) "|";
      chain = parse_filter_chain (ps, NULL);
      fake->t = st;
      fake->s = saved;
    }
    if (!chain)
      return NULL;
    n->a = chain;
    if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
      return NULL;
    if (!end_is (ps, "endfilter") || !expect_block_end (ps))
      return NULL;
    return n;
  }
  if (is_name (t, "generation")) {
    static const char *const ends[] = { "endgeneration", NULL };
    advance (ps);
    n = node_new (ps, N_BODY, line);
    if (!expect_block_end (ps) || !(n->body = parse_body (ps, ends)))
      return NULL;
    if (!end_is (ps, "endgeneration") || !expect_block_end (ps))
      return NULL;
    return n;
  }
  if (is_name (t, "break") || is_name (t, "continue")) {
    n = node_new (ps, t->s[0] == 'b' ? N_BREAK : N_CONTINUE, line);
    advance (ps);
    if (!expect_block_end (ps))
      return NULL;
    return n;
  }
  parse_fail (ps, "unsupported construct: '%s' statement", t->s);
  return NULL;
}

static GPtrArray *
parse_body (Parser *ps, const char *const *ends)
{
  GPtrArray *body;
  if (ps->depth + 1 > BLN_TEMPLATE_MAX_DEPTH) {
    parse_fail (ps, "statements nested too deeply");
    return NULL;
  }
  body = g_ptr_array_new ();
  for (;;) {
    Tok *t = cur (ps);
    if (t->t == T_EOF) {
      if (ends == NULL)
        return body;
      parse_fail (ps, "unexpected end of template, expected '%s'", ends[0]);
      g_ptr_array_unref (body);
      return NULL;
    }
    if (t->t == T_DATA) {
      Node *n = node_new (ps, N_TEXT, t->line);
      n->s = g_strndup (t->s, t->len);
      n->flag = FALSE;
      n->lit = jv_str_len (t->s, t->len);
      g_ptr_array_add (body, n);
      advance (ps);
    } else if (t->t == T_VAR_BEGIN) {
      Node *n = node_new (ps, N_OUTPUT, t->line);
      advance (ps);
      if (!(n->a = parse_tuple_or_expr (ps, FALSE))) {
        g_ptr_array_unref (body);
        return NULL;
      }
      if (cur (ps)->t != T_VAR_END) {
        parse_fail (ps, "expected end of print statement, got '%s'", tok_desc (cur (ps)));
        g_ptr_array_unref (body);
        return NULL;
      }
      advance (ps);
      g_ptr_array_add (body, n);
    } else if (t->t == T_BLOCK_BEGIN) {
      Tok *w = peek (ps, 1);
      Node *n;
      if (ends && w->t == T_NAME) {
        int k;
        for (k = 0; ends[k]; k++)
          if (strcmp (w->s, ends[k]) == 0) {
            advance (ps);
            return body;
          }
      }
      if (w->t == T_NAME && (g_str_has_prefix (w->s, "end") || strcmp (w->s, "elif") == 0 ||
                             strcmp (w->s, "else") == 0)) {
        advance (ps);
        parse_fail (ps, "unexpected '%s'", w->s);
        g_ptr_array_unref (body);
        return NULL;
      }
      advance (ps);
      ps->depth += 2;
      n = parse_statement (ps);
      ps->depth -= 2;
      if (!n) {
        g_ptr_array_unref (body);
        return NULL;
      }
      g_ptr_array_add (body, n);
    } else {
      parse_fail (ps, "unexpected '%s'", tok_desc (t));
      g_ptr_array_unref (body);
      return NULL;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Evaluator                                                                */

struct Frame {
  int ref;
  GHashTable *vars; /* char* -> JVal* */
  Frame *parent;
};

struct Ctx {
  BlnTemplate *tmpl;
  GError *err;
  Frame *frame;       /* innermost scope */
  Frame *root;
  GHashTable *globals; /* builtin functions */
  guint64 steps;
  int depth;
  GPtrArray *captured; /* Frame* captured by macros, emptied at the end */
  GPtrArray *namespaces; /* JVal* namespaces, emptied at the end */
};

enum { EX_OK, EX_BREAK, EX_CONTINUE, EX_ERR };

static Frame *
frame_new (Frame *parent)
{
  Frame *f = g_new0 (Frame, 1);
  f->ref = 1;
  f->vars = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) jv_unref);
  f->parent = parent;
  if (parent)
    parent->ref++;
  return f;
}

static void
frame_unref (Frame *f)
{
  while (f && --f->ref == 0) {
    Frame *parent = f->parent;
    g_hash_table_unref (f->vars);
    g_free (f);
    f = parent;
  }
}

static void
frame_set (Frame *f, const char *name, JVal *v) /* takes @v */
{
  g_hash_table_replace (f->vars, g_strdup (name), v);
}

static JVal *
ctx_fail (Ctx *ctx, Node *at, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

static JVal *
ctx_fail (Ctx *ctx, Node *at, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  if (ctx->err)
    return NULL;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  ctx->err = g_error_new (BLN_ERROR, BLN_ERROR_TEMPLATE, "template line %d: %s",
                          at ? at->line : 0, msg);
  return NULL;
}

static JVal *
fail_undefined (Ctx *ctx, Node *at, JVal *u)
{
  if (u->undef_name)
    return ctx_fail (ctx, at, "%s is undefined", u->undef_name);
  return ctx_fail (ctx, at, "value is undefined");
}

static JVal *eval (Ctx *ctx, Node *n);
static int exec_body (Ctx *ctx, GPtrArray *body, GString *out);
static JVal *call_value (Ctx *ctx, Node *at, JVal *fn, GPtrArray *args, GPtrArray *kwnames,
                         GPtrArray *kwvals, JVal *caller);
static JVal *apply_filter (Ctx *ctx, Node *at, const char *name, JVal *in, GPtrArray *args,
                           GPtrArray *kwnames, GPtrArray *kwvals);
static int apply_test (Ctx *ctx, Node *at, const char *name, JVal *in, GPtrArray *args);

static gboolean
check_len (Ctx *ctx, Node *at, gsize len)
{
  if (len > BLN_TEMPLATE_MAX_OUTPUT) {
    ctx_fail (ctx, at, "string or output larger than %u bytes", BLN_TEMPLATE_MAX_OUTPUT);
    return FALSE;
  }
  return TRUE;
}

static JVal *
lookup (Ctx *ctx, const char *name)
{
  Frame *f;
  JVal *v;
  for (f = ctx->frame; f; f = f->parent)
    if ((v = g_hash_table_lookup (f->vars, name)))
      return jv_ref (v);
  if ((v = g_hash_table_lookup (ctx->globals, name)))
    return jv_ref (v);
  return jv_undef (name);
}

/* obj.name — jinja2 getattr: attribute, then item. */
static JVal *
get_attr (Ctx *ctx, Node *at, JVal *obj, const char *name)
{
  JVal *v;
  if (obj->t == JV_UNDEF)
    return fail_undefined (ctx, at, obj);
  if ((obj->t == JV_DICT || obj->t == JV_NS) && (v = dict_get_str (obj, name)))
    return jv_ref (v);
  {
    g_autofree char *what = g_strdup_printf ("'%s object' has no attribute '%s'",
                                             jv_type_name (obj), name);
    return jv_undef (what);
  }
}

static gboolean
norm_index (gint64 *idx, gsize len)
{
  if (*idx < 0)
    *idx += (gint64) len;
  return *idx >= 0 && (guint64) *idx < len;
}

/* obj[key] — jinja2 getitem: item, then attribute. */
static JVal *
get_item (Ctx *ctx, Node *at, JVal *obj, JVal *key)
{
  if (obj->t == JV_UNDEF)
    return fail_undefined (ctx, at, obj);
  if (obj->t == JV_DICT || obj->t == JV_NS) {
    int i = dict_find (obj, key);
    if (i >= 0)
      return jv_ref (g_ptr_array_index (obj->u.d.vals, i));
  } else if ((obj->t == JV_LIST || obj->t == JV_STR) && (key->t == JV_INT || key->t == JV_BOOL)) {
    gint64 idx = key->t == JV_BOOL ? key->u.b : key->u.i;
    if (obj->t == JV_LIST) {
      if (norm_index (&idx, obj->u.list->len))
        return jv_ref (g_ptr_array_index (obj->u.list, idx));
    } else {
      glong n = g_utf8_strlen (obj->u.s.s, (gssize) obj->u.s.len);
      if (norm_index (&idx, (gsize) n)) {
        const char *p = g_utf8_offset_to_pointer (obj->u.s.s, (glong) idx);
        return jv_str_len (p, (gsize) (g_utf8_next_char (p) - p));
      }
    }
  }
  if (key->t == JV_STR)
    return get_attr (ctx, at, obj, key->u.s.s);
  {
    g_autofree char *k = jv_to_cstr (key, NULL);
    g_autofree char *what = g_strdup_printf ("'%s object' has no element %s",
                                             jv_type_name (obj), k);
    return jv_undef (what);
  }
}

/* Python slice semantics over @n elements. */
static GArray *
slice_indices (gint64 n, JVal *start, JVal *stop, JVal *step, GError **why)
{
  GArray *idx = g_array_new (FALSE, FALSE, sizeof (gint64));
  gint64 st = 1, lo, hi, i;
  if (step && step->t != JV_NONE) {
    if (step->t != JV_INT || step->u.i == 0) {
      g_set_error_literal (why, BLN_ERROR, BLN_ERROR_TEMPLATE, "slice step must be a non-zero int");
      g_array_unref (idx);
      return NULL;
    }
    st = step->u.i;
  }
  if ((start && start->t != JV_NONE && start->t != JV_INT) ||
      (stop && stop->t != JV_NONE && stop->t != JV_INT)) {
    g_set_error_literal (why, BLN_ERROR, BLN_ERROR_TEMPLATE, "slice indices must be integers");
    g_array_unref (idx);
    return NULL;
  }
  if (st > 0) {
    lo = (start && start->t == JV_INT) ? start->u.i : 0;
    hi = (stop && stop->t == JV_INT) ? stop->u.i : n;
    if (lo < 0) lo = MAX (lo + n, 0);
    if (hi < 0) hi = MAX (hi + n, 0);
    lo = MIN (lo, n);
    hi = MIN (hi, n);
    for (i = lo; i < hi; i += st)
      g_array_append_val (idx, i);
  } else {
    lo = (start && start->t == JV_INT) ? start->u.i : n - 1;
    hi = (stop && stop->t == JV_INT) ? stop->u.i : -1 - n;
    if (lo < 0) lo = MAX (lo + n, -1);
    else lo = MIN (lo, n - 1);
    if (hi < 0) hi = MAX (hi + n, -1);
    else hi = MIN (hi, n - 1);
    for (i = lo; i > hi; i += st)
      g_array_append_val (idx, i);
  }
  return idx;
}

/* Materialises what a for loop or a filter iterates over. NULL with an error
 * for values Python cannot iterate. */
static JVal *
iter_list (Ctx *ctx, Node *at, JVal *v)
{
  JVal *l;
  guint i;
  switch (v->t) {
  case JV_LIST:
    return jv_ref (v);
  case JV_UNDEF:
    return jv_new (JV_LIST);
  case JV_DICT:
  case JV_NS:
    l = jv_new (JV_LIST);
    for (i = 0; i < v->u.d.keys->len; i++)
      list_push (l, jv_ref (g_ptr_array_index (v->u.d.keys, i)));
    return l;
  case JV_STR: {
    const char *p = v->u.s.s, *end = v->u.s.s + v->u.s.len;
    l = jv_new (JV_LIST);
    while (p < end) {
      const char *next = g_utf8_next_char (p);
      list_push (l, jv_str_len (p, (gsize) (next - p)));
      p = next;
    }
    return l;
  }
  default:
    return ctx_fail (ctx, at, "'%s' object is not iterable", jv_type_name (v));
  }
}

static JVal *
binop_fail (Ctx *ctx, Node *at, const char *op, JVal *a, JVal *b)
{
  if (a->t == JV_UNDEF)
    return fail_undefined (ctx, at, a);
  if (b->t == JV_UNDEF)
    return fail_undefined (ctx, at, b);
  return ctx_fail (ctx, at, "unsupported operand type(s) for %s: '%s' and '%s'", op,
                   jv_type_name (a), jv_type_name (b));
}

static gint64
as_int (JVal *v)
{
  return v->t == JV_BOOL ? v->u.b : v->u.i;
}

static int
compare_values (Ctx *ctx, Node *at, JVal *a, JVal *b, gboolean *ok)
{
  *ok = TRUE;
  if (jv_is_number (a) && jv_is_number (b)) {
    if (a->t != JV_FLOAT && b->t != JV_FLOAT)
      return as_int (a) < as_int (b) ? -1 : as_int (a) > as_int (b);
    {
      double x = jv_as_double (a), y = jv_as_double (b);
      return x < y ? -1 : x > y;
    }
  }
  if (a->t == JV_STR && b->t == JV_STR) {
    int c = memcmp (a->u.s.s, b->u.s.s, MIN (a->u.s.len, b->u.s.len));
    if (c)
      return c < 0 ? -1 : 1;
    return a->u.s.len < b->u.s.len ? -1 : a->u.s.len > b->u.s.len;
  }
  if (a->t == JV_LIST && b->t == JV_LIST) {
    guint i;
    for (i = 0; i < a->u.list->len && i < b->u.list->len; i++) {
      JVal *x = g_ptr_array_index (a->u.list, i), *y = g_ptr_array_index (b->u.list, i);
      if (!jv_equal (x, y))
        return compare_values (ctx, at, x, y, ok);
    }
    return a->u.list->len < b->u.list->len ? -1 : a->u.list->len > b->u.list->len;
  }
  *ok = FALSE;
  binop_fail (ctx, at, "<", a, b);
  return 0;
}

static JVal *
contains (Ctx *ctx, Node *at, JVal *needle, JVal *hay)
{
  guint i;
  switch (hay->t) {
  case JV_STR:
    if (needle->t != JV_STR) {
      if (needle->t == JV_UNDEF)
        return fail_undefined (ctx, at, needle);
      return ctx_fail (ctx, at, "'in <string>' requires string as left operand, not %s",
                       jv_type_name (needle));
    }
    if (needle->u.s.len == 0)
      return jv_bool (TRUE);
    if (needle->u.s.len > hay->u.s.len)
      return jv_bool (FALSE);
    for (i = 0; i + needle->u.s.len <= hay->u.s.len; i++)
      if (memcmp (hay->u.s.s + i, needle->u.s.s, needle->u.s.len) == 0)
        return jv_bool (TRUE);
    return jv_bool (FALSE);
  case JV_LIST:
    for (i = 0; i < hay->u.list->len; i++)
      if (jv_equal (g_ptr_array_index (hay->u.list, i), needle))
        return jv_bool (TRUE);
    return jv_bool (FALSE);
  case JV_DICT:
  case JV_NS:
    return jv_bool (dict_find (hay, needle) >= 0);
  case JV_UNDEF:
    return jv_bool (FALSE);
  default:
    return ctx_fail (ctx, at, "argument of type '%s' is not iterable", jv_type_name (hay));
  }
}

static JVal *
repeat_seq (Ctx *ctx, Node *at, JVal *seq, gint64 times)
{
  gint64 k;
  if (times < 0)
    times = 0;
  if (seq->t == JV_STR) {
    GString *g;
    if (times > 0 && !check_len (ctx, at, seq->u.s.len * (guint64) MIN (times, G_MAXINT32)))
      return NULL;
    g = g_string_sized_new (seq->u.s.len * (gsize) times);
    for (k = 0; k < times; k++)
      g_string_append_len (g, seq->u.s.s, (gssize) seq->u.s.len);
    return jv_gstr (g);
  } else {
    JVal *l = jv_new (JV_LIST);
    guint i;
    l->is_tuple = seq->is_tuple;
    if (times > 0 && (guint64) seq->u.list->len * (guint64) times > 10000000) {
      jv_unref (l);
      return ctx_fail (ctx, at, "list too large");
    }
    for (k = 0; k < times; k++)
      for (i = 0; i < seq->u.list->len; i++)
        list_push (l, jv_ref (g_ptr_array_index (seq->u.list, i)));
    return l;
  }
}

static JVal *
binop (Ctx *ctx, Node *at, const char *op, JVal *a, JVal *b)
{
  gboolean ints = (a->t == JV_INT || a->t == JV_BOOL) && (b->t == JV_INT || b->t == JV_BOOL);
  gboolean nums = jv_is_number (a) && jv_is_number (b);
  gint64 r;
  switch (op[0]) {
  case '~': {
    GString *g = g_string_new (NULL);
    append_str (g, a);
    append_str (g, b);
    if (!check_len (ctx, at, g->len)) {
      g_string_free (g, TRUE);
      return NULL;
    }
    return jv_gstr (g);
  }
  case '+':
    if (ints) {
      if (__builtin_add_overflow (as_int (a), as_int (b), &r))
        return ctx_fail (ctx, at, "integer overflow");
      return jv_int (r);
    }
    if (nums)
      return jv_float (jv_as_double (a) + jv_as_double (b));
    if (a->t == JV_STR && b->t == JV_STR) {
      char *s;
      if (!check_len (ctx, at, a->u.s.len + b->u.s.len))
        return NULL;
      s = g_malloc (a->u.s.len + b->u.s.len + 1);
      memcpy (s, a->u.s.s, a->u.s.len);
      memcpy (s + a->u.s.len, b->u.s.s, b->u.s.len);
      s[a->u.s.len + b->u.s.len] = '\0';
      return jv_str_take (s, a->u.s.len + b->u.s.len);
    }
    if (a->t == JV_LIST && b->t == JV_LIST && a->is_tuple == b->is_tuple) {
      JVal *l = jv_new (JV_LIST);
      guint i;
      l->is_tuple = a->is_tuple;
      for (i = 0; i < a->u.list->len; i++)
        list_push (l, jv_ref (g_ptr_array_index (a->u.list, i)));
      for (i = 0; i < b->u.list->len; i++)
        list_push (l, jv_ref (g_ptr_array_index (b->u.list, i)));
      return l;
    }
    return binop_fail (ctx, at, op, a, b);
  case '-':
    if (ints) {
      if (__builtin_sub_overflow (as_int (a), as_int (b), &r))
        return ctx_fail (ctx, at, "integer overflow");
      return jv_int (r);
    }
    if (nums)
      return jv_float (jv_as_double (a) - jv_as_double (b));
    return binop_fail (ctx, at, op, a, b);
  case '*':
    if (op[1] == '*') {
      if (ints && as_int (b) >= 0) {
        gint64 base = as_int (a), e = as_int (b), acc = 1;
        while (e-- > 0)
          if (__builtin_mul_overflow (acc, base, &acc))
            return ctx_fail (ctx, at, "integer overflow");
          else if (acc == 0 || acc == 1)
            break;
        return jv_int (acc);
      }
      if (nums)
        return jv_float (pow (jv_as_double (a), jv_as_double (b)));
      return binop_fail (ctx, at, op, a, b);
    }
    if (ints) {
      if (__builtin_mul_overflow (as_int (a), as_int (b), &r))
        return ctx_fail (ctx, at, "integer overflow");
      return jv_int (r);
    }
    if (nums)
      return jv_float (jv_as_double (a) * jv_as_double (b));
    if ((a->t == JV_STR || a->t == JV_LIST) && (b->t == JV_INT || b->t == JV_BOOL))
      return repeat_seq (ctx, at, a, as_int (b));
    if ((b->t == JV_STR || b->t == JV_LIST) && (a->t == JV_INT || a->t == JV_BOOL))
      return repeat_seq (ctx, at, b, as_int (a));
    return binop_fail (ctx, at, op, a, b);
  case '/':
    if (!nums)
      return binop_fail (ctx, at, op, a, b);
    if (jv_as_double (b) == 0.0)
      return ctx_fail (ctx, at, "division by zero");
    if (op[1] == '/') {
      if (ints) {
        gint64 x = as_int (a), y = as_int (b), q;
        if (x == G_MININT64 && y == -1)
          return ctx_fail (ctx, at, "integer overflow");
        q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0)))
          q--;
        return jv_int (q);
      }
      return jv_float (floor (jv_as_double (a) / jv_as_double (b)));
    }
    if (ints)
      return jv_float ((double) as_int (a) / (double) as_int (b));
    return jv_float (jv_as_double (a) / jv_as_double (b));
  case '%':
    if (!nums) {
      if (a->t == JV_STR)
        return ctx_fail (ctx, at, "unsupported construct: printf-style string formatting");
      return binop_fail (ctx, at, op, a, b);
    }
    if (jv_as_double (b) == 0.0)
      return ctx_fail (ctx, at, "modulo by zero");
    if (ints) {
      gint64 x = as_int (a), y = as_int (b), m;
      if (y == -1)
        return jv_int (0);
      m = x % y;
      if (m != 0 && ((m < 0) != (y < 0)))
        m += y;
      return jv_int (m);
    } else {
      double x = jv_as_double (a), y = jv_as_double (b), m = fmod (x, y);
      if (m != 0.0 && ((m < 0) != (y < 0)))
        m += y;
      return jv_float (m);
    }
  default:
    break;
  }
  if (strcmp (op, "==") == 0)
    return jv_bool (jv_equal (a, b));
  if (strcmp (op, "!=") == 0)
    return jv_bool (!jv_equal (a, b));
  if (strcmp (op, "in") == 0)
    return contains (ctx, at, a, b);
  if (strcmp (op, "notin") == 0) {
    JVal *v = contains (ctx, at, a, b);
    if (v)
      v->u.b = !v->u.b;
    return v;
  }
  {
    gboolean ok;
    int c = compare_values (ctx, at, a, b, &ok);
    if (!ok)
      return NULL;
    if (strcmp (op, "<") == 0)
      return jv_bool (c < 0);
    if (strcmp (op, "<=") == 0)
      return jv_bool (c <= 0);
    if (strcmp (op, ">") == 0)
      return jv_bool (c > 0);
    return jv_bool (c >= 0);
  }
}

/* Evaluates call arguments into @args / @kwvals. */
static gboolean
eval_args (Ctx *ctx, Node *n, GPtrArray *args, GPtrArray *kwvals)
{
  guint i;
  if (n->args)
    for (i = 0; i < n->args->len; i++) {
      JVal *v = eval (ctx, g_ptr_array_index (n->args, i));
      if (!v)
        return FALSE;
      g_ptr_array_add (args, v);
    }
  if (n->kwargs)
    for (i = 0; i < n->kwargs->len; i++) {
      JVal *v = eval (ctx, g_ptr_array_index (n->kwargs, i));
      if (!v)
        return FALSE;
      g_ptr_array_add (kwvals, v);
    }
  return TRUE;
}

static JVal *call_method (Ctx *ctx, Node *at, JVal *obj, const char *name, GPtrArray *args,
                          GPtrArray *kwnames, GPtrArray *kwvals, gboolean *handled);

static JVal *
eval_call (Ctx *ctx, Node *n)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  g_autoptr (GPtrArray) kwvals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  g_autoptr (JVal) fn = NULL;
  if (n->a->t == E_ATTR) {
    g_autoptr (JVal) obj = eval (ctx, n->a->a);
    gboolean handled = FALSE;
    JVal *r;
    if (!obj)
      return NULL;
    if (obj->t == JV_UNDEF)
      return fail_undefined (ctx, n, obj);
    if (!eval_args (ctx, n, args, kwvals))
      return NULL;
    r = call_method (ctx, n, obj, n->a->s, args, n->kwnames, kwvals, &handled);
    if (handled)
      return r;
    if (!(fn = get_attr (ctx, n, obj, n->a->s)))
      return NULL;
  } else {
    if (!(fn = eval (ctx, n->a)))
      return NULL;
    if (!eval_args (ctx, n, args, kwvals))
      return NULL;
  }
  return call_value (ctx, n, fn, args, n->kwnames, kwvals, NULL);
}

static JVal *
eval (Ctx *ctx, Node *n)
{
  switch (n->t) {
  case E_LIT:
    return jv_ref (n->lit);
  case E_NAME:
    return lookup (ctx, n->s);
  case E_ATTR: {
    g_autoptr (JVal) obj = eval (ctx, n->a);
    if (!obj)
      return NULL;
    return get_attr (ctx, n, obj, n->s);
  }
  case E_ITEM: {
    g_autoptr (JVal) obj = eval (ctx, n->a);
    g_autoptr (JVal) key = NULL;
    if (!obj || !(key = eval (ctx, n->b)))
      return NULL;
    return get_item (ctx, n, obj, key);
  }
  case E_SLICE: {
    g_autoptr (JVal) obj = eval (ctx, n->a);
    JVal *parts[3] = { NULL, NULL, NULL };
    GArray *idx;
    GError *why = NULL;
    JVal *res = NULL;
    int k;
    guint i;
    if (!obj)
      return NULL;
    for (k = 0; k < 3; k++) {
      Node *p = g_ptr_array_index (n->args, k);
      if (p && !(parts[k] = eval (ctx, p)))
        goto slice_out;
    }
    if (obj->t == JV_UNDEF) {
      fail_undefined (ctx, n, obj);
      goto slice_out;
    }
    if (obj->t == JV_LIST) {
      idx = slice_indices (obj->u.list->len, parts[0], parts[1], parts[2], &why);
      if (idx) {
        res = jv_new (JV_LIST);
        res->is_tuple = obj->is_tuple;
        for (i = 0; i < idx->len; i++)
          list_push (res, jv_ref (g_ptr_array_index (obj->u.list, g_array_index (idx, gint64, i))));
        g_array_unref (idx);
      }
    } else if (obj->t == JV_STR) {
      g_autofree glong *offs = NULL;
      glong ncp = g_utf8_strlen (obj->u.s.s, (gssize) obj->u.s.len), c;
      const char *p = obj->u.s.s;
      offs = g_new (glong, ncp + 1);
      for (c = 0; c <= ncp; c++) {
        offs[c] = p - obj->u.s.s;
        if (c < ncp)
          p = g_utf8_next_char (p);
      }
      idx = slice_indices (ncp, parts[0], parts[1], parts[2], &why);
      if (idx) {
        GString *g = g_string_new (NULL);
        for (i = 0; i < idx->len; i++) {
          gint64 cp = g_array_index (idx, gint64, i);
          g_string_append_len (g, obj->u.s.s + offs[cp], offs[cp + 1] - offs[cp]);
        }
        g_array_unref (idx);
        res = jv_gstr (g);
      }
    } else
      ctx_fail (ctx, n, "'%s' object is not subscriptable", jv_type_name (obj));
    if (why) {
      ctx_fail (ctx, n, "%s", why->message);
      g_error_free (why);
    }
  slice_out:
    for (k = 0; k < 3; k++)
      if (parts[k])
        jv_unref (parts[k]);
    return res;
  }
  case E_CALL:
    return eval_call (ctx, n);
  case E_FILTER: {
    g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (GPtrArray) kwvals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (JVal) in = NULL;
    if (!n->a)
      return ctx_fail (ctx, n, "filter without input");
    if (!(in = eval (ctx, n->a)) || !eval_args (ctx, n, args, kwvals))
      return NULL;
    return apply_filter (ctx, n, n->s, in, args, n->kwnames, kwvals);
  }
  case E_TEST: {
    g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (GPtrArray) kwvals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (JVal) in = eval (ctx, n->a);
    int r;
    if (!in || !eval_args (ctx, n, args, kwvals))
      return NULL;
    r = apply_test (ctx, n, n->s, in, args);
    if (r < 0)
      return NULL;
    return jv_bool (n->flag ? !r : r);
  }
  case E_NEG:
  case E_POS: {
    g_autoptr (JVal) v = eval (ctx, n->a);
    if (!v)
      return NULL;
    if (v->t == JV_INT || v->t == JV_BOOL) {
      if (n->t == E_NEG && as_int (v) == G_MININT64)
        return ctx_fail (ctx, n, "integer overflow");
      return jv_int (n->t == E_NEG ? -as_int (v) : as_int (v));
    }
    if (v->t == JV_FLOAT)
      return jv_float (n->t == E_NEG ? -v->u.f : v->u.f);
    if (v->t == JV_UNDEF)
      return fail_undefined (ctx, n, v);
    return ctx_fail (ctx, n, "bad operand type for unary %c: '%s'", n->t == E_NEG ? '-' : '+',
                     jv_type_name (v));
  }
  case E_NOT: {
    g_autoptr (JVal) v = eval (ctx, n->a);
    if (!v)
      return NULL;
    return jv_bool (!jv_truthy (v));
  }
  case E_AND:
  case E_OR: {
    JVal *a = eval (ctx, n->a);
    if (!a)
      return NULL;
    if ((n->t == E_AND) != jv_truthy (a))
      return a;
    jv_unref (a);
    return eval (ctx, n->b);
  }
  case E_BIN: {
    g_autoptr (JVal) a = eval (ctx, n->a);
    g_autoptr (JVal) b = NULL;
    if (!a || !(b = eval (ctx, n->b)))
      return NULL;
    return binop (ctx, n, n->s, a, b);
  }
  case E_COND: {
    g_autoptr (JVal) c = eval (ctx, n->a);
    if (!c)
      return NULL;
    if (jv_truthy (c))
      return eval (ctx, n->b);
    if (n->c)
      return eval (ctx, n->c);
    return jv_undef ("the inline if expression on the else branch");
  }
  case E_LIST:
  case E_TUPLE: {
    JVal *l = jv_new (JV_LIST);
    guint i;
    l->is_tuple = n->t == E_TUPLE;
    for (i = 0; i < n->args->len; i++) {
      JVal *v = eval (ctx, g_ptr_array_index (n->args, i));
      if (!v) {
        jv_unref (l);
        return NULL;
      }
      list_push (l, v);
    }
    return l;
  }
  case E_DICT: {
    JVal *d = jv_new (JV_DICT);
    guint i;
    for (i = 0; i + 1 < n->args->len; i += 2) {
      JVal *k = eval (ctx, g_ptr_array_index (n->args, i));
      JVal *v = k ? eval (ctx, g_ptr_array_index (n->args, i + 1)) : NULL;
      if (!v) {
        if (k)
          jv_unref (k);
        jv_unref (d);
        return NULL;
      }
      if (k->t == JV_LIST || k->t == JV_DICT || k->t == JV_NS) {
        jv_unref (k);
        jv_unref (v);
        jv_unref (d);
        return ctx_fail (ctx, n, "unhashable type as a dict key");
      }
      dict_set (d, k, v);
    }
    return d;
  }
  default:
    return ctx_fail (ctx, n, "internal error: statement used as an expression");
  }
}

/* ------------------------------------------------------------------------ */
/* Calls: macros and builtin functions                                      */

static JVal *
kwarg (GPtrArray *kwnames, GPtrArray *kwvals, const char *name) /* borrowed or NULL */
{
  guint i;
  if (!kwnames)
    return NULL;
  for (i = 0; i < kwnames->len && i < kwvals->len; i++)
    if (strcmp (g_ptr_array_index (kwnames, i), name) == 0)
      return g_ptr_array_index (kwvals, i);
  return NULL;
}

/* Positional argument @pos or keyword @name, borrowed, or NULL. */
static JVal *
arg (GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals, guint pos, const char *name)
{
  if (args && pos < args->len)
    return g_ptr_array_index (args, pos);
  return name ? kwarg (kwnames, kwvals, name) : NULL;
}

static JVal *
call_macro (Ctx *ctx, Node *at, JVal *mac, GPtrArray *args, GPtrArray *kwnames,
            GPtrArray *kwvals, JVal *caller)
{
  Node *m = mac->u.m.node;
  Frame *saved = ctx->frame;
  Frame *f;
  JVal *varargs, *kwdict;
  GString *out;
  guint i;
  int r;
  if (++ctx->depth > BLN_TEMPLATE_MAX_DEPTH) {
    ctx->depth--;
    return ctx_fail (ctx, at, "macro calls nested too deeply");
  }
  if (++ctx->steps > BLN_TEMPLATE_MAX_STEPS) {
    ctx->depth--;
    return ctx_fail (ctx, at, "template ran too long");
  }
  f = frame_new (mac->u.m.frame);
  ctx->frame = f;
  varargs = jv_new (JV_LIST);
  varargs->is_tuple = TRUE;
  kwdict = jv_new (JV_DICT);
  for (i = 0; i < args->len; i++) {
    if (m->targets && i < m->targets->len)
      frame_set (f, g_ptr_array_index (m->targets, i), jv_ref (g_ptr_array_index (args, i)));
    else
      list_push (varargs, jv_ref (g_ptr_array_index (args, i)));
  }
  if (kwnames)
    for (i = 0; i < kwnames->len; i++) {
      const char *k = g_ptr_array_index (kwnames, i);
      guint j;
      gboolean found = FALSE;
      for (j = 0; m->targets && j < m->targets->len; j++)
        if (strcmp (g_ptr_array_index (m->targets, j), k) == 0)
          found = TRUE;
      if (found)
        frame_set (f, k, jv_ref (g_ptr_array_index (kwvals, i)));
      else
        dict_set_str (kwdict, k, jv_ref (g_ptr_array_index (kwvals, i)));
    }
  for (i = 0; m->targets && i < m->targets->len; i++) {
    const char *p = g_ptr_array_index (m->targets, i);
    if (!g_hash_table_contains (f->vars, p)) {
      Node *d = (m->args && i < m->args->len) ? g_ptr_array_index (m->args, i) : NULL;
      JVal *v = d ? eval (ctx, d) : jv_undef (p);
      if (!v) {
        ctx->frame = saved;
        frame_unref (f);
        jv_unref (varargs);
        jv_unref (kwdict);
        ctx->depth--;
        return NULL;
      }
      frame_set (f, p, v);
    }
  }
  frame_set (f, "varargs", varargs);
  frame_set (f, "kwargs", kwdict);
  if (caller)
    frame_set (f, "caller", jv_ref (caller));
  out = g_string_new (NULL);
  r = exec_body (ctx, m->body, out);
  ctx->frame = saved;
  frame_unref (f);
  ctx->depth--;
  if (r == EX_ERR) {
    g_string_free (out, TRUE);
    return NULL;
  }
  return jv_gstr (out);
}

static JVal *
call_value (Ctx *ctx, Node *at, JVal *fn, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals,
            JVal *caller)
{
  if (fn->t == JV_FUNC)
    return fn->u.fn.fn (ctx, at, args, kwnames, kwvals);
  if (fn->t == JV_MACRO)
    return call_macro (ctx, at, fn, args, kwnames, kwvals, caller);
  if (fn->t == JV_UNDEF)
    return fail_undefined (ctx, at, fn);
  return ctx_fail (ctx, at, "'%s' object is not callable", jv_type_name (fn));
}

static JVal *
fn_raise_exception (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals)
{
  JVal *m = arg (args, kwnames, kwvals, 0, "message");
  g_autofree char *msg = m ? jv_to_cstr (m, NULL) : g_strdup ("");
  return ctx_fail (ctx, at, "raise_exception: %s", msg);
}

static JVal *
fn_strftime_now (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals)
{
  JVal *f = arg (args, kwnames, kwvals, 0, "format");
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  char buf[512];
  time_t t;
  struct tm tmv;
  size_t n;
  (void) now;
  if (!f || f->t != JV_STR)
    return ctx_fail (ctx, at, "strftime_now() takes a format string");
  t = time (NULL);
  localtime_r (&t, &tmv);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  n = strftime (buf, sizeof buf, f->u.s.s, &tmv); /* the template's own format, as Python does */
#pragma GCC diagnostic pop
  return jv_str_len (buf, n);
}

static JVal *
fn_namespace (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals)
{
  JVal *ns = jv_new (JV_NS);
  guint i;
  if (args->len > 1 || (args->len == 1 && ((JVal *) g_ptr_array_index (args, 0))->t != JV_DICT)) {
    jv_unref (ns);
    return ctx_fail (ctx, at, "namespace() takes an optional dict and keyword arguments");
  }
  if (args->len == 1) {
    JVal *d = g_ptr_array_index (args, 0);
    for (i = 0; i < d->u.d.keys->len; i++)
      dict_set (ns, jv_ref (g_ptr_array_index (d->u.d.keys, i)),
                jv_ref (g_ptr_array_index (d->u.d.vals, i)));
  }
  for (i = 0; kwnames && i < kwnames->len; i++)
    dict_set_str (ns, g_ptr_array_index (kwnames, i), jv_ref (g_ptr_array_index (kwvals, i)));
  g_ptr_array_add (ctx->namespaces, jv_ref (ns));
  return ns;
}

static JVal *
fn_dict (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals)
{
  JVal *d = jv_new (JV_DICT);
  guint i;
  if (args->len > 1 || (args->len == 1 && ((JVal *) g_ptr_array_index (args, 0))->t != JV_DICT)) {
    jv_unref (d);
    return ctx_fail (ctx, at, "unsupported construct: dict() from a non-dict");
  }
  if (args->len == 1) {
    JVal *s = g_ptr_array_index (args, 0);
    for (i = 0; i < s->u.d.keys->len; i++)
      dict_set (d, jv_ref (g_ptr_array_index (s->u.d.keys, i)),
                jv_ref (g_ptr_array_index (s->u.d.vals, i)));
  }
  for (i = 0; kwnames && i < kwnames->len; i++)
    dict_set_str (d, g_ptr_array_index (kwnames, i), jv_ref (g_ptr_array_index (kwvals, i)));
  return d;
}

static JVal *
fn_range (Ctx *ctx, Node *at, GPtrArray *args, GPtrArray *kwnames, GPtrArray *kwvals)
{
  gint64 start = 0, stop, step = 1, i;
  JVal *l;
  guint k;
  (void) kwnames;
  (void) kwvals;
  for (k = 0; k < args->len; k++)
    if (((JVal *) g_ptr_array_index (args, k))->t != JV_INT &&
        ((JVal *) g_ptr_array_index (args, k))->t != JV_BOOL)
      return ctx_fail (ctx, at, "range() takes integers");
  if (args->len == 1)
    stop = as_int (g_ptr_array_index (args, 0));
  else if (args->len == 2 || args->len == 3) {
    start = as_int (g_ptr_array_index (args, 0));
    stop = as_int (g_ptr_array_index (args, 1));
    if (args->len == 3)
      step = as_int (g_ptr_array_index (args, 2));
  } else
    return ctx_fail (ctx, at, "range() takes 1 to 3 arguments");
  if (step == 0)
    return ctx_fail (ctx, at, "range() step must not be zero");
  if ((step > 0 && stop > start && (stop - start) / step > 1000000) ||
      (step < 0 && start > stop && (start - stop) / -step > 1000000))
    return ctx_fail (ctx, at, "range too large");
  l = jv_new (JV_LIST);
  for (i = start; step > 0 ? i < stop : i > stop; i += step)
    list_push (l, jv_int (i));
  return l;
}

/* ------------------------------------------------------------------------ */
/* Python str methods                                                       */

static gboolean
in_chars (gunichar c, JVal *chars)
{
  const char *p, *end;
  if (!chars || chars->t == JV_NONE)
    return py_isspace (c);
  for (p = chars->u.s.s, end = p + chars->u.s.len; p < end; p = g_utf8_next_char (p))
    if (g_utf8_get_char (p) == c)
      return TRUE;
  return FALSE;
}

static JVal *
str_strip (JVal *s, JVal *chars, gboolean left, gboolean right)
{
  const char *b = s->u.s.s, *e = s->u.s.s + s->u.s.len;
  while (left && b < e && in_chars (g_utf8_get_char (b), chars))
    b = g_utf8_next_char (b);
  while (right && e > b) {
    const char *p = g_utf8_find_prev_char (b, e);
    if (!p || !in_chars (g_utf8_get_char (p), chars))
      break;
    e = p;
  }
  return jv_str_len (b, (gsize) (e - b));
}

static const char *
mem_find (const char *h, gsize hl, const char *n, gsize nl)
{
  gsize i;
  if (nl == 0)
    return h;
  for (i = 0; i + nl <= hl; i++)
    if (memcmp (h + i, n, nl) == 0)
      return h + i;
  return NULL;
}

static JVal *
str_split (Ctx *ctx, Node *at, JVal *s, JVal *sep, JVal *maxv)
{
  JVal *l = jv_new (JV_LIST);
  gint64 maxsplit = (maxv && maxv->t == JV_INT) ? maxv->u.i : -1;
  const char *p = s->u.s.s, *end = s->u.s.s + s->u.s.len;
  if (!sep || sep->t == JV_NONE) {
    for (;;) {
      const char *w;
      p += ws_span (p, (gsize) (end - p));
      if (p >= end)
        break;
      if (maxsplit == 0) {
        gsize keep = rstrip_len (p, (gsize) (end - p));
        list_push (l, jv_str_len (p, keep));
        break;
      }
      w = p;
      while (w < end) {
        gunichar c = g_utf8_get_char (w);
        if (py_isspace (c))
          break;
        w = g_utf8_next_char (w);
      }
      list_push (l, jv_str_len (p, (gsize) (w - p)));
      if (maxsplit > 0)
        maxsplit--;
      p = w;
    }
    return l;
  }
  if (sep->t != JV_STR) {
    jv_unref (l);
    return ctx_fail (ctx, at, "split() separator must be a string");
  }
  if (sep->u.s.len == 0) {
    jv_unref (l);
    return ctx_fail (ctx, at, "empty separator");
  }
  for (;;) {
    const char *hit = maxsplit == 0 ? NULL
                                    : mem_find (p, (gsize) (end - p), sep->u.s.s, sep->u.s.len);
    if (!hit) {
      list_push (l, jv_str_len (p, (gsize) (end - p)));
      break;
    }
    list_push (l, jv_str_len (p, (gsize) (hit - p)));
    p = hit + sep->u.s.len;
    if (maxsplit > 0)
      maxsplit--;
  }
  return l;
}

static JVal *
str_replace (Ctx *ctx, Node *at, JVal *s, JVal *old, JVal *new_, JVal *countv)
{
  GString *g;
  gint64 count = (countv && countv->t == JV_INT) ? countv->u.i : -1;
  const char *p = s->u.s.s, *end = s->u.s.s + s->u.s.len;
  if (!old || !new_ || old->t != JV_STR || new_->t != JV_STR)
    return ctx_fail (ctx, at, "replace() takes two strings");
  g = g_string_new (NULL);
  if (old->u.s.len == 0) {
    /* Python inserts the replacement between every character */
    while (count != 0) {
      g_string_append_len (g, new_->u.s.s, (gssize) new_->u.s.len);
      if (count > 0)
        count--;
      if (p >= end)
        break;
      {
        const char *nx = g_utf8_next_char (p);
        g_string_append_len (g, p, nx - p);
        p = nx;
      }
      if (!check_len (ctx, at, g->len)) {
        g_string_free (g, TRUE);
        return NULL;
      }
    }
    g_string_append_len (g, p, end - p);
    return jv_gstr (g);
  }
  while (count != 0) {
    const char *hit = mem_find (p, (gsize) (end - p), old->u.s.s, old->u.s.len);
    if (!hit)
      break;
    g_string_append_len (g, p, hit - p);
    g_string_append_len (g, new_->u.s.s, (gssize) new_->u.s.len);
    p = hit + old->u.s.len;
    if (count > 0)
      count--;
    if (!check_len (ctx, at, g->len)) {
      g_string_free (g, TRUE);
      return NULL;
    }
  }
  g_string_append_len (g, p, end - p);
  return jv_gstr (g);
}

static gboolean
str_affix (JVal *s, JVal *affix, gboolean prefix)
{
  if (affix->t == JV_LIST) {
    guint i;
    for (i = 0; i < affix->u.list->len; i++)
      if (str_affix (s, g_ptr_array_index (affix->u.list, i), prefix))
        return TRUE;
    return FALSE;
  }
  if (affix->t != JV_STR || affix->u.s.len > s->u.s.len)
    return FALSE;
  return memcmp (prefix ? s->u.s.s : s->u.s.s + s->u.s.len - affix->u.s.len, affix->u.s.s,
                 affix->u.s.len) == 0;
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE_PY, CASE_TITLE_JINJA, CASE_CAPITALIZE } CaseMode;

static gboolean
is_cased (gunichar c)
{
  return g_unichar_isupper (c) || g_unichar_islower (c) || g_unichar_istitle (c);
}

static void
append_case (GString *g, gunichar c, gboolean up)
{
  if (up) {
    g_autofree char *u = NULL;
    char buf[8];
    int n = g_unichar_to_utf8 (c, buf);
    u = g_utf8_strup (buf, n);
    g_string_append (g, u);
  } else {
    g_autofree char *l = NULL;
    char buf[8];
    int n = g_unichar_to_utf8 (c, buf);
    l = g_utf8_strdown (buf, n);
    g_string_append (g, l);
  }
}

static JVal *
str_case (JVal *s, CaseMode mode)
{
  GString *g;
  const char *p, *end;
  gboolean prev_cased = FALSE, first = TRUE;
  if (mode == CASE_UPPER) {
    char *u = g_utf8_strup (s->u.s.s, (gssize) s->u.s.len);
    return jv_str_take (u, strlen (u));
  }
  g = g_string_new (NULL);
  for (p = s->u.s.s, end = p + s->u.s.len; p < end; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    gboolean up = FALSE;
    switch (mode) {
    case CASE_LOWER:
      up = FALSE;
      break;
    case CASE_TITLE_PY:
      up = !prev_cased;
      prev_cased = is_cased (c);
      break;
    case CASE_TITLE_JINJA:
      up = first;
      first = (c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace (c));
      break;
    case CASE_CAPITALIZE:
      up = first;
      first = FALSE;
      break;
    default:
      break;
    }
    append_case (g, c, up);
  }
  return jv_gstr (g);
}

static JVal *
str_upper (JVal *s)
{
  char *u = g_utf8_strup (s->u.s.s, (gssize) s->u.s.len);
  return jv_str_take (u, strlen (u));
}

static JVal *
list_of_items (JVal *d)
{
  JVal *l = jv_new (JV_LIST);
  guint i;
  for (i = 0; i < d->u.d.keys->len; i++) {
    JVal *t = jv_new (JV_LIST);
    t->is_tuple = TRUE;
    list_push (t, jv_ref (g_ptr_array_index (d->u.d.keys, i)));
    list_push (t, jv_ref (g_ptr_array_index (d->u.d.vals, i)));
    list_push (l, t);
  }
  return l;
}

static JVal *
call_method (Ctx *ctx, Node *at, JVal *obj, const char *name, GPtrArray *args,
             GPtrArray *kwnames, GPtrArray *kwvals, gboolean *handled)
{
  JVal *a0 = arg (args, kwnames, kwvals, 0, NULL);
  JVal *a1 = arg (args, kwnames, kwvals, 1, NULL);
  JVal *a2 = arg (args, kwnames, kwvals, 2, NULL);
  *handled = TRUE;
  if (obj->t == JV_STR) {
    if (a0 && a0->t == JV_UNDEF)
      return fail_undefined (ctx, at, a0);
    if (!strcmp (name, "strip") || !strcmp (name, "lstrip") || !strcmp (name, "rstrip")) {
      if (a0 && a0->t != JV_STR && a0->t != JV_NONE)
        return ctx_fail (ctx, at, "%s arg must be None or str", name);
      return str_strip (obj, a0, name[0] != 'r', name[0] != 'l');
    }
    if (!strcmp (name, "split"))
      return str_split (ctx, at, obj, a0 ? a0 : kwarg (kwnames, kwvals, "sep"),
                        a1 ? a1 : kwarg (kwnames, kwvals, "maxsplit"));
    if (!strcmp (name, "startswith") || !strcmp (name, "endswith")) {
      if (!a0 || (a0->t != JV_STR && a0->t != JV_LIST))
        return ctx_fail (ctx, at, "%s() takes a string or a tuple", name);
      return jv_bool (str_affix (obj, a0, name[0] == 's'));
    }
    if (!strcmp (name, "replace"))
      return str_replace (ctx, at, obj, a0, a1, a2);
    if (!strcmp (name, "upper"))
      return str_upper (obj);
    if (!strcmp (name, "lower"))
      return str_case (obj, CASE_LOWER);
    if (!strcmp (name, "title"))
      return str_case (obj, CASE_TITLE_PY);
    if (!strcmp (name, "capitalize"))
      return str_case (obj, CASE_CAPITALIZE);
    if (!strcmp (name, "find") || !strcmp (name, "count") || !strcmp (name, "index")) {
      const char *hit;
      gint64 n = 0;
      if (!a0 || a0->t != JV_STR)
        return ctx_fail (ctx, at, "%s() takes a string", name);
      if (!strcmp (name, "count")) {
        const char *p = obj->u.s.s, *end = p + obj->u.s.len;
        if (a0->u.s.len == 0)
          return jv_int (g_utf8_strlen (obj->u.s.s, (gssize) obj->u.s.len) + 1);
        while ((hit = mem_find (p, (gsize) (end - p), a0->u.s.s, a0->u.s.len))) {
          n++;
          p = hit + a0->u.s.len;
        }
        return jv_int (n);
      }
      hit = mem_find (obj->u.s.s, obj->u.s.len, a0->u.s.s, a0->u.s.len);
      if (!hit && name[0] == 'i')
        return ctx_fail (ctx, at, "substring not found");
      return jv_int (hit ? g_utf8_pointer_to_offset (obj->u.s.s, hit) : -1);
    }
    if (!strcmp (name, "join")) {
      g_autoptr (JVal) items = NULL;
      GString *g;
      guint i;
      if (!a0 || !(items = iter_list (ctx, at, a0)))
        return a0 ? NULL : ctx_fail (ctx, at, "join() takes an iterable");
      g = g_string_new (NULL);
      for (i = 0; i < items->u.list->len; i++) {
        JVal *it = g_ptr_array_index (items->u.list, i);
        if (it->t != JV_STR) {
          g_string_free (g, TRUE);
          return ctx_fail (ctx, at, "sequence item %u: expected str instance", i);
        }
        if (i)
          g_string_append_len (g, obj->u.s.s, (gssize) obj->u.s.len);
        g_string_append_len (g, it->u.s.s, (gssize) it->u.s.len);
      }
      return jv_gstr (g);
    }
    if (!strcmp (name, "isdigit") || !strcmp (name, "isspace") || !strcmp (name, "isalpha") ||
        !strcmp (name, "isalnum")) {
      const char *p, *end = obj->u.s.s + obj->u.s.len;
      if (obj->u.s.len == 0)
        return jv_bool (FALSE);
      for (p = obj->u.s.s; p < end; p = g_utf8_next_char (p)) {
        gunichar c = g_utf8_get_char (p);
        gboolean ok = name[2] == 'd' ? g_unichar_isdigit (c)
                    : name[2] == 's' ? py_isspace (c)
                    : name[4] == 'a' && name[5] == '\0' ? g_unichar_isalpha (c)
                                                        : g_unichar_isalnum (c);
        if (!ok)
          return jv_bool (FALSE);
      }
      return jv_bool (TRUE);
    }
    if (!strcmp (name, "removeprefix") || !strcmp (name, "removesuffix")) {
      if (!a0 || a0->t != JV_STR)
        return ctx_fail (ctx, at, "%s() takes a string", name);
      if (!str_affix (obj, a0, name[6] == 'p'))
        return jv_ref (obj);
      if (name[6] == 'p')
        return jv_str_len (obj->u.s.s + a0->u.s.len, obj->u.s.len - a0->u.s.len);
      return jv_str_len (obj->u.s.s, obj->u.s.len - a0->u.s.len);
    }
  } else if (obj->t == JV_DICT) {
    if (!strcmp (name, "get")) {
      int i;
      if (!a0)
        return ctx_fail (ctx, at, "get() takes a key");
      i = dict_find (obj, a0);
      if (i >= 0)
        return jv_ref (g_ptr_array_index (obj->u.d.vals, i));
      return a1 ? jv_ref (a1) : jv_none ();
    }
    if (!strcmp (name, "items"))
      return list_of_items (obj);
    if (!strcmp (name, "keys") || !strcmp (name, "values")) {
      JVal *l = jv_new (JV_LIST);
      GPtrArray *src = name[0] == 'k' ? obj->u.d.keys : obj->u.d.vals;
      guint i;
      for (i = 0; i < src->len; i++)
        list_push (l, jv_ref (g_ptr_array_index (src, i)));
      return l;
    }
    if (!strcmp (name, "update") || !strcmp (name, "pop") || !strcmp (name, "setdefault") ||
        !strcmp (name, "clear") || !strcmp (name, "popitem"))
      return ctx_fail (ctx, at, "access to attribute '%s' of 'dict' object is unsafe", name);
  } else if (obj->t == JV_LIST) {
    if (!strcmp (name, "append") || !strcmp (name, "extend") || !strcmp (name, "pop") ||
        !strcmp (name, "insert") || !strcmp (name, "remove") || !strcmp (name, "sort") ||
        !strcmp (name, "reverse") || !strcmp (name, "clear"))
      return ctx_fail (ctx, at, "access to attribute '%s' of 'list' object is unsafe", name);
    if (!strcmp (name, "index") || !strcmp (name, "count")) {
      guint i;
      gint64 n = 0;
      if (!a0)
        return ctx_fail (ctx, at, "%s() takes an argument", name);
      for (i = 0; i < obj->u.list->len; i++)
        if (jv_equal (g_ptr_array_index (obj->u.list, i), a0)) {
          if (name[0] == 'i')
            return jv_int (i);
          n++;
        }
      if (name[0] == 'i')
        return ctx_fail (ctx, at, "value is not in list");
      return jv_int (n);
    }
  }
  if (obj->t == JV_DICT && obj->is_loop && !strcmp (name, "cycle")) {
    JVal *i0 = dict_get_str (obj, "index0");
    if (args->len == 0)
      return ctx_fail (ctx, at, "no items for cycling given");
    return jv_ref (g_ptr_array_index (args, (guint) (i0->u.i % args->len)));
  }
  if ((obj->t == JV_DICT || obj->t == JV_NS) && dict_get_str (obj, name)) {
    *handled = FALSE;
    return NULL;
  }
  if (obj->t == JV_STR || obj->t == JV_DICT || obj->t == JV_LIST || obj->t == JV_INT ||
      obj->t == JV_FLOAT || obj->t == JV_BOOL || obj->t == JV_NONE)
    return ctx_fail (ctx, at, "unsupported construct: method '%s' of '%s'", name,
                     jv_type_name (obj));
  *handled = FALSE;
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Filters and tests                                                        */

static JVal *
need_str (Ctx *ctx, Node *at, JVal *in)
{
  gsize len;
  char *s;
  if (in->t == JV_STR)
    return jv_ref (in);
  s = jv_to_cstr (in, &len);
  (void) ctx;
  (void) at;
  return jv_str_take (s, len);
}

/* Looks up a dotted attribute path the way jinja2's make_attrgetter does. */
static JVal *
attr_path (Ctx *ctx, Node *at, JVal *item, JVal *attr)
{
  JVal *cur;
  if (attr->t == JV_INT)
    return get_item (ctx, at, item, attr);
  if (attr->t != JV_STR)
    return ctx_fail (ctx, at, "attribute must be a string");
  cur = jv_ref (item);
  {
    g_auto (GStrv) parts = g_strsplit (attr->u.s.s, ".", -1);
    int k;
    for (k = 0; parts[k]; k++) {
      JVal *next;
      g_autoptr (JVal) key = NULL;
      char *endp;
      gint64 iv = g_ascii_strtoll (parts[k], &endp, 10);
      key = (*parts[k] && *endp == '\0') ? jv_int (iv) : jv_str (parts[k]);
      next = get_item (ctx, at, cur, key);
      jv_unref (cur);
      if (!next)
        return NULL;
      cur = next;
    }
  }
  return cur;
}

static JVal *
tojson_value (Ctx *ctx, Node *at, JVal *in, GPtrArray *args, GPtrArray *kwnames,
              GPtrArray *kwvals)
{
  JsonOpts o = { NULL, ", ", ": ", FALSE, FALSE };
  JVal *indent = arg (args, kwnames, kwvals, 0, "indent");
  JVal *ea = kwarg (kwnames, kwvals, "ensure_ascii");
  JVal *seps = kwarg (kwnames, kwvals, "separators");
  JVal *sk = kwarg (kwnames, kwvals, "sort_keys");
  g_autofree char *ind = NULL;
  GString *g;
  const char *why = NULL;
  if (indent && indent->t != JV_NONE) {
    if (indent->t == JV_INT)
      ind = g_strnfill ((gsize) CLAMP (indent->u.i, 0, 64), ' ');
    else if (indent->t == JV_STR)
      ind = g_strdup (indent->u.s.s);
    else
      return ctx_fail (ctx, at, "tojson indent must be an int or a string");
    o.indent = ind;
    o.item_sep = ",";
  }
  if (seps && seps->t == JV_LIST && seps->u.list->len == 2) {
    JVal *a = g_ptr_array_index (seps->u.list, 0), *b = g_ptr_array_index (seps->u.list, 1);
    if (a->t != JV_STR || b->t != JV_STR)
      return ctx_fail (ctx, at, "tojson separators must be strings");
    o.item_sep = a->u.s.s;
    o.key_sep = b->u.s.s;
  }
  if (sk)
    o.sort_keys = jv_truthy (sk);
  if (ea)
    o.ensure_ascii = jv_truthy (ea);
  g = g_string_new (NULL);
  if (!append_json (g, in, &o, 0, &why)) {
    g_string_free (g, TRUE);
    return ctx_fail (ctx, at, "tojson: %s", why);
  }
  if (!check_len (ctx, at, g->len)) {
    g_string_free (g, TRUE);
    return NULL;
  }
  return jv_gstr (g);
}

static gboolean
py_parse_int (const char *s, gint64 base, gint64 *out)
{
  g_autofree char *clean = NULL;
  GString *g = g_string_new (NULL);
  const char *p = s;
  char *endp;
  gsize len = strlen (s);
  gsize lead = ws_span (s, len), keep;
  p = s + lead;
  keep = rstrip_len (p, strlen (p));
  for (; keep > 0; p++, keep--)
    if (*p != '_')
      g_string_append_c (g, *p);
  clean = g_string_free (g, FALSE);
  if (!*clean)
    return FALSE;
  errno = 0;
  *out = g_ascii_strtoll (clean, &endp, (guint) base);
  return *endp == '\0' && errno == 0 && !g_ascii_isspace (clean[0]);
}

static gboolean
py_parse_float (const char *s, double *out)
{
  g_autofree char *t = g_strstrip (g_strdup (s));
  char *endp;
  if (!*t)
    return FALSE;
  *out = g_ascii_strtod (t, &endp);
  return *endp == '\0';
}

static int sort_cmp (gconstpointer a, gconstpointer b, gpointer user);

typedef struct {
  Ctx *ctx;
  Node *at;
  gboolean case_sensitive;
  gboolean reverse;
  JVal *attr;
} SortInfo;

static JVal *
sort_key (SortInfo *si, JVal *v)
{
  JVal *k = si->attr ? attr_path (si->ctx, si->at, v, si->attr) : jv_ref (v);
  if (k && k->t == JV_STR && !si->case_sensitive) {
    JVal *l = str_case (k, CASE_LOWER);
    jv_unref (k);
    return l;
  }
  return k;
}

static int
sort_cmp (gconstpointer a, gconstpointer b, gpointer user)
{
  SortInfo *si = user;
  g_autoptr (JVal) ka = NULL;
  g_autoptr (JVal) kb = NULL;
  gboolean ok = TRUE;
  int c;
  if (si->ctx->err)
    return 0;
  ka = sort_key (si, *(JVal **) a);
  kb = sort_key (si, *(JVal **) b);
  if (!ka || !kb)
    return 0;
  c = compare_values (si->ctx, si->at, ka, kb, &ok);
  return si->reverse ? -c : c;
}

static JVal *
html_escape (JVal *s)
{
  GString *g = g_string_new (NULL);
  gsize i;
  for (i = 0; i < s->u.s.len; i++) {
    char c = s->u.s.s[i];
    switch (c) {
    case '&': g_string_append (g, "&amp;"); break;
    case '<': g_string_append (g, "&lt;"); break;
    case '>': g_string_append (g, "&gt;"); break;
    case '"': g_string_append (g, "&#34;"); break;
    case '\'': g_string_append (g, "&#39;"); break;
    default: g_string_append_c (g, c); break;
    }
  }
  return jv_gstr (g);
}

static JVal *
select_items (Ctx *ctx, Node *at, JVal *in, GPtrArray *args, gboolean by_attr, gboolean keep)
{
  g_autoptr (JVal) items = iter_list (ctx, at, in);
  JVal *out;
  JVal *attr = by_attr ? arg (args, NULL, NULL, 0, NULL) : NULL;
  guint first_test = by_attr ? 1 : 0, i;
  JVal *test = arg (args, NULL, NULL, first_test, NULL);
  g_autoptr (GPtrArray) targs = g_ptr_array_new ();
  if (!items)
    return NULL;
  if (by_attr && !attr)
    return ctx_fail (ctx, at, "selectattr/rejectattr need an attribute");
  if (test && test->t != JV_STR)
    return ctx_fail (ctx, at, "test name must be a string");
  for (i = first_test + 1; i < args->len; i++)
    g_ptr_array_add (targs, g_ptr_array_index (args, i));
  out = jv_new (JV_LIST);
  for (i = 0; i < items->u.list->len; i++) {
    JVal *it = g_ptr_array_index (items->u.list, i);
    g_autoptr (JVal) v = by_attr ? attr_path (ctx, at, it, attr) : jv_ref (it);
    int r;
    if (!v) {
      jv_unref (out);
      return NULL;
    }
    r = test ? apply_test (ctx, at, test->u.s.s, v, targs) : jv_truthy (v);
    if (r < 0) {
      jv_unref (out);
      return NULL;
    }
    if ((r != 0) == keep)
      list_push (out, jv_ref (it));
  }
  return out;
}

static JVal *
apply_filter (Ctx *ctx, Node *at, const char *name, JVal *in, GPtrArray *args,
              GPtrArray *kwnames, GPtrArray *kwvals)
{
  JVal *a0 = arg (args, kwnames, kwvals, 0, NULL);
  JVal *a1 = arg (args, kwnames, kwvals, 1, NULL);
  guint i;

  if (!strcmp (name, "default") || !strcmp (name, "d")) {
    JVal *dv = arg (args, kwnames, kwvals, 0, "default_value");
    JVal *bo = arg (args, kwnames, kwvals, 1, "boolean");
    if (in->t == JV_UNDEF || (bo && jv_truthy (bo) && !jv_truthy (in)))
      return dv ? jv_ref (dv) : jv_str ("");
    return jv_ref (in);
  }
  if (!strcmp (name, "length") || !strcmp (name, "count")) {
    switch (in->t) {
    case JV_STR: return jv_int (g_utf8_strlen (in->u.s.s, (gssize) in->u.s.len));
    case JV_LIST: return jv_int (in->u.list->len);
    case JV_DICT: case JV_NS: return jv_int (in->u.d.keys->len);
    case JV_UNDEF: return jv_int (0);
    default: return ctx_fail (ctx, at, "object of type '%s' has no len()", jv_type_name (in));
    }
  }
  if (!strcmp (name, "tojson"))
    return tojson_value (ctx, at, in, args, kwnames, kwvals);
  if (!strcmp (name, "string"))
    return need_str (ctx, at, in);
  if (!strcmp (name, "safe"))
    return need_str (ctx, at, in);
  if (!strcmp (name, "items")) {
    if (in->t == JV_UNDEF)
      return jv_new (JV_LIST);
    if (in->t != JV_DICT && in->t != JV_NS)
      return ctx_fail (ctx, at, "items filter expects a mapping");
    return list_of_items (in);
  }
  if (!strcmp (name, "list"))
    return iter_list (ctx, at, in);
  if (!strcmp (name, "first") || !strcmp (name, "last")) {
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    if (!l)
      return NULL;
    if (l->u.list->len == 0)
      return jv_undef ("first/last item of an empty sequence");
    return jv_ref (g_ptr_array_index (l->u.list, name[0] == 'f' ? 0 : l->u.list->len - 1));
  }
  if (!strcmp (name, "reverse")) {
    JVal *out;
    g_autoptr (JVal) l = NULL;
    if (in->t == JV_STR) {
      g_autofree char *r = g_utf8_strreverse (in->u.s.s, (gssize) in->u.s.len);
      return jv_str_len (r, in->u.s.len);
    }
    if (!(l = iter_list (ctx, at, in)))
      return NULL;
    out = jv_new (JV_LIST);
    for (i = l->u.list->len; i > 0; i--)
      list_push (out, jv_ref (g_ptr_array_index (l->u.list, i - 1)));
    return out;
  }
  if (!strcmp (name, "join")) {
    JVal *sep = arg (args, kwnames, kwvals, 0, "d");
    JVal *attr = arg (args, kwnames, kwvals, 1, "attribute");
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    GString *g;
    if (!l)
      return NULL;
    g = g_string_new (NULL);
    for (i = 0; i < l->u.list->len; i++) {
      JVal *it = g_ptr_array_index (l->u.list, i);
      if (i && sep)
        append_str (g, sep);
      if (attr) {
        g_autoptr (JVal) v = attr_path (ctx, at, it, attr);
        if (!v) {
          g_string_free (g, TRUE);
          return NULL;
        }
        append_str (g, v);
      } else
        append_str (g, it);
      if (!check_len (ctx, at, g->len)) {
        g_string_free (g, TRUE);
        return NULL;
      }
    }
    return jv_gstr (g);
  }
  if (!strcmp (name, "selectattr") || !strcmp (name, "rejectattr"))
    return select_items (ctx, at, in, args, TRUE, name[0] == 's');
  if (!strcmp (name, "select") || !strcmp (name, "reject"))
    return select_items (ctx, at, in, args, FALSE, name[0] == 's');
  if (!strcmp (name, "map")) {
    JVal *attr = kwarg (kwnames, kwvals, "attribute");
    JVal *dflt = kwarg (kwnames, kwvals, "default");
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    JVal *out;
    if (!l)
      return NULL;
    if (!attr && (!a0 || a0->t != JV_STR))
      return ctx_fail (ctx, at, "map needs attribute= or a filter name");
    out = jv_new (JV_LIST);
    for (i = 0; i < l->u.list->len; i++) {
      JVal *it = g_ptr_array_index (l->u.list, i);
      JVal *v;
      if (attr) {
        v = attr_path (ctx, at, it, attr);
        if (v && v->t == JV_UNDEF && dflt) {
          jv_unref (v);
          v = jv_ref (dflt);
        }
      } else {
        g_autoptr (GPtrArray) rest = g_ptr_array_new ();
        guint k;
        for (k = 1; k < args->len; k++)
          g_ptr_array_add (rest, g_ptr_array_index (args, k));
        v = apply_filter (ctx, at, a0->u.s.s, it, rest, kwnames, kwvals);
      }
      if (!v) {
        jv_unref (out);
        return NULL;
      }
      list_push (out, v);
    }
    return out;
  }
  if (!strcmp (name, "unique")) {
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    JVal *out;
    if (!l)
      return NULL;
    out = jv_new (JV_LIST);
    for (i = 0; i < l->u.list->len; i++) {
      JVal *it = g_ptr_array_index (l->u.list, i);
      g_autoptr (JVal) seen = NULL;
      JVal *probe = it;
      g_autoptr (JVal) low = NULL;
      guint j;
      gboolean dup = FALSE;
      if (it->t == JV_STR)
        probe = low = str_case (it, CASE_LOWER);
      for (j = 0; j < out->u.list->len && !dup; j++) {
        JVal *o = g_ptr_array_index (out->u.list, j);
        g_autoptr (JVal) ol = o->t == JV_STR ? str_case (o, CASE_LOWER) : jv_ref (o);
        dup = jv_equal (ol, probe);
      }
      (void) seen;
      if (!dup)
        list_push (out, jv_ref (it));
    }
    return out;
  }
  if (!strcmp (name, "sort")) {
    SortInfo si = { ctx, at, FALSE, FALSE, NULL };
    JVal *rv = arg (args, kwnames, kwvals, 0, "reverse");
    JVal *cs = arg (args, kwnames, kwvals, 1, "case_sensitive");
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    JVal *out;
    if (!l)
      return NULL;
    si.reverse = rv && jv_truthy (rv);
    si.case_sensitive = cs && jv_truthy (cs);
    si.attr = arg (args, kwnames, kwvals, 2, "attribute");
    out = jv_new (JV_LIST);
    for (i = 0; i < l->u.list->len; i++)
      list_push (out, jv_ref (g_ptr_array_index (l->u.list, i)));
    g_ptr_array_sort_with_data (out->u.list, sort_cmp, &si);
    if (ctx->err) {
      jv_unref (out);
      return NULL;
    }
    return out;
  }
  if (!strcmp (name, "sum")) {
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    JVal *attr = kwarg (kwnames, kwvals, "attribute");
    JVal *acc;
    if (!l)
      return NULL;
    acc = jv_int (0);
    for (i = 0; i < l->u.list->len; i++) {
      JVal *it = g_ptr_array_index (l->u.list, i);
      g_autoptr (JVal) v = attr ? attr_path (ctx, at, it, attr) : jv_ref (it);
      JVal *n = v ? binop (ctx, at, "+", acc, v) : NULL;
      jv_unref (acc);
      if (!n)
        return NULL;
      acc = n;
    }
    return acc;
  }
  if (!strcmp (name, "min") || !strcmp (name, "max")) {
    g_autoptr (JVal) l = iter_list (ctx, at, in);
    JVal *best = NULL;
    if (!l)
      return NULL;
    for (i = 0; i < l->u.list->len; i++) {
      JVal *it = g_ptr_array_index (l->u.list, i);
      gboolean ok = TRUE;
      if (best) {
        g_autoptr (JVal) x = it->t == JV_STR ? str_case (it, CASE_LOWER) : jv_ref (it);
        g_autoptr (JVal) y = best->t == JV_STR ? str_case (best, CASE_LOWER) : jv_ref (best);
        int c = compare_values (ctx, at, x, y, &ok);
        if (!ok)
          return NULL;
        if ((name[1] == 'i' && c < 0) || (name[1] == 'a' && c > 0))
          best = it;
      } else
        best = it;
    }
    return best ? jv_ref (best) : jv_undef ("min/max of an empty sequence");
  }
  if (!strcmp (name, "abs")) {
    if (in->t == JV_INT || in->t == JV_BOOL)
      return jv_int (ABS (as_int (in)));
    if (in->t == JV_FLOAT)
      return jv_float (fabs (in->u.f));
    return ctx_fail (ctx, at, "bad operand type for abs(): '%s'", jv_type_name (in));
  }
  if (!strcmp (name, "int")) {
    JVal *dv = arg (args, kwnames, kwvals, 0, "default");
    JVal *bv = arg (args, kwnames, kwvals, 1, "base");
    gint64 base = bv && bv->t == JV_INT ? bv->u.i : 10, r;
    double f;
    if (in->t == JV_INT || in->t == JV_BOOL)
      return jv_int (as_int (in));
    if (in->t == JV_FLOAT && isfinite (in->u.f) && fabs (in->u.f) < 9.2e18)
      return jv_int ((gint64) in->u.f);
    if (in->t == JV_STR) {
      if (py_parse_int (in->u.s.s, base, &r))
        return jv_int (r);
      if (py_parse_float (in->u.s.s, &f) && isfinite (f) && fabs (f) < 9.2e18)
        return jv_int ((gint64) f);
    }
    return dv ? jv_ref (dv) : jv_int (0);
  }
  if (!strcmp (name, "float")) {
    JVal *dv = arg (args, kwnames, kwvals, 0, "default");
    double f;
    if (jv_is_number (in))
      return jv_float (jv_as_double (in));
    if (in->t == JV_STR && py_parse_float (in->u.s.s, &f))
      return jv_float (f);
    return dv ? jv_ref (dv) : jv_float (0.0);
  }
  if (!strcmp (name, "round")) {
    JVal *pv = arg (args, kwnames, kwvals, 0, "precision");
    JVal *mv = arg (args, kwnames, kwvals, 1, "method");
    gint64 prec = pv && pv->t == JV_INT ? pv->u.i : 0;
    const char *method = mv && mv->t == JV_STR ? mv->u.s.s : "common";
    double x, scale;
    if (!jv_is_number (in))
      return ctx_fail (ctx, at, "round filter expects a number");
    x = jv_as_double (in);
    prec = CLAMP (prec, -300, 300);
    if (!strcmp (method, "common")) {
      char buf[400];
      if (in->t != JV_FLOAT && prec >= 0)
        return jv_int (as_int (in));
      if (prec >= 0 && prec <= 300 && isfinite (x)) {
        snprintf (buf, sizeof buf, "%.*f", (int) prec, x);
        return jv_float (g_ascii_strtod (buf, NULL));
      }
      scale = pow (10.0, (double) prec);
      return jv_float (nearbyint (x * scale) / scale);
    }
    if (strcmp (method, "floor") != 0 && strcmp (method, "ceil") != 0)
      return ctx_fail (ctx, at, "method must be common, ceil or floor");
    scale = pow (10.0, (double) prec);
    return jv_float ((method[0] == 'f' ? floor (x * scale) : ceil (x * scale)) / scale);
  }
  /* string filters: the input is converted with str() first */
  {
    g_autoptr (JVal) s = NULL;
    if (in->t == JV_UNDEF && strcmp (name, "trim") && strcmp (name, "lower") &&
        strcmp (name, "upper") && strcmp (name, "capitalize") && strcmp (name, "title") &&
        strcmp (name, "escape") && strcmp (name, "e") && strcmp (name, "replace") &&
        strcmp (name, "indent") && strcmp (name, "wordcount"))
      return ctx_fail (ctx, at, "unsupported construct: filter '%s'", name);
    if (!(s = need_str (ctx, at, in)))
      return NULL;
    if (!strcmp (name, "trim"))
      return str_strip (s, a0 && a0->t == JV_STR ? a0 : NULL, TRUE, TRUE);
    if (!strcmp (name, "lower"))
      return str_case (s, CASE_LOWER);
    if (!strcmp (name, "upper"))
      return str_upper (s);
    if (!strcmp (name, "capitalize"))
      return str_case (s, CASE_CAPITALIZE);
    if (!strcmp (name, "title"))
      return str_case (s, CASE_TITLE_JINJA);
    if (!strcmp (name, "escape") || !strcmp (name, "e"))
      return html_escape (s);
    if (!strcmp (name, "replace")) {
      g_autoptr (JVal) o = a0 ? need_str (ctx, at, a0) : NULL;
      g_autoptr (JVal) nw = a1 ? need_str (ctx, at, a1) : NULL;
      return str_replace (ctx, at, s, o, nw, arg (args, kwnames, kwvals, 2, "count"));
    }
    if (!strcmp (name, "wordcount")) {
      g_autoptr (JVal) l = str_split (ctx, at, s, NULL, NULL);
      return l ? jv_int (l->u.list->len) : NULL;
    }
    if (!strcmp (name, "indent")) {
      JVal *wv = arg (args, kwnames, kwvals, 0, "width");
      JVal *fv = arg (args, kwnames, kwvals, 1, "first");
      JVal *bv = arg (args, kwnames, kwvals, 2, "blank");
      g_autofree char *ind = NULL;
      GString *g = g_string_new (NULL);
      g_auto (GStrv) lines = NULL;
      g_autofree char *src = g_strconcat (s->u.s.s, "\n", NULL);
      int k, n;
      gboolean blank = bv && jv_truthy (bv);
      if (wv && wv->t == JV_STR)
        ind = g_strdup (wv->u.s.s);
      else
        ind = g_strnfill ((gsize) CLAMP (wv && wv->t == JV_INT ? wv->u.i : 4, 0, 256), ' ');
      lines = g_strsplit (src, "\n", -1);
      n = (int) g_strv_length (lines) - 1; /* the appended newline leaves an empty tail */
      for (k = 0; k < n; k++) {
        if (k > 0)
          g_string_append_c (g, '\n');
        if ((k > 0 || (fv && jv_truthy (fv))) && (blank || lines[k][0] != '\0'))
          g_string_append (g, ind);
        g_string_append (g, lines[k]);
      }
      if (!check_len (ctx, at, g->len)) {
        g_string_free (g, TRUE);
        return NULL;
      }
      return jv_gstr (g);
    }
  }
  return ctx_fail (ctx, at, "unsupported construct: filter '%s'", name);
}

/* Returns 1 / 0, or -1 with ctx->err set. */
static int
apply_test (Ctx *ctx, Node *at, const char *name, JVal *in, GPtrArray *args)
{
  JVal *a0 = args && args->len > 0 ? g_ptr_array_index (args, 0) : NULL;
  if (!strcmp (name, "defined"))
    return in->t != JV_UNDEF;
  if (!strcmp (name, "undefined"))
    return in->t == JV_UNDEF;
  if (!strcmp (name, "none"))
    return in->t == JV_NONE;
  if (!strcmp (name, "boolean"))
    return in->t == JV_BOOL;
  if (!strcmp (name, "true"))
    return in->t == JV_BOOL && in->u.b;
  if (!strcmp (name, "false"))
    return in->t == JV_BOOL && !in->u.b;
  if (!strcmp (name, "string"))
    return in->t == JV_STR;
  if (!strcmp (name, "number"))
    return jv_is_number (in);
  if (!strcmp (name, "integer"))
    return in->t == JV_INT;
  if (!strcmp (name, "float"))
    return in->t == JV_FLOAT;
  if (!strcmp (name, "mapping"))
    return in->t == JV_DICT;
  if (!strcmp (name, "iterable"))
    return in->t == JV_STR || in->t == JV_LIST || in->t == JV_DICT || in->t == JV_UNDEF;
  if (!strcmp (name, "sequence"))
    return in->t == JV_STR || in->t == JV_LIST || in->t == JV_DICT;
  if (!strcmp (name, "callable"))
    return in->t == JV_FUNC || in->t == JV_MACRO;
  if (!strcmp (name, "lower") || !strcmp (name, "upper")) {
    g_autoptr (JVal) s = need_str (ctx, at, in);
    g_autoptr (JVal) c = name[0] == 'l' ? str_case (s, CASE_LOWER) : str_upper (s);
    return jv_equal (s, c);
  }
  if (!strcmp (name, "odd") || !strcmp (name, "even") || !strcmp (name, "divisibleby")) {
    gint64 d = 2, v;
    if (in->t != JV_INT && in->t != JV_BOOL) {
      ctx_fail (ctx, at, "test '%s' expects an integer", name);
      return -1;
    }
    v = as_int (in);
    if (name[0] == 'd') {
      if (!a0 || (a0->t != JV_INT) || a0->u.i == 0) {
        ctx_fail (ctx, at, "divisibleby needs a non-zero integer");
        return -1;
      }
      d = a0->u.i;
      return v % d == 0;
    }
    return (((v % 2) + 2) % 2 == 1) == (name[0] == 'o');
  }
  if (a0 == NULL && (!strcmp (name, "eq") || !strcmp (name, "equalto") || !strcmp (name, "==") ||
                     !strcmp (name, "sameas") || !strcmp (name, "in") || !strcmp (name, "ne") ||
                     !strcmp (name, "lt") || !strcmp (name, "gt") || !strcmp (name, "le") ||
                     !strcmp (name, "ge"))) {
    ctx_fail (ctx, at, "test '%s' needs an argument", name);
    return -1;
  }
  if (!strcmp (name, "eq") || !strcmp (name, "equalto") || !strcmp (name, "=="))
    return jv_equal (in, a0);
  if (!strcmp (name, "ne") || !strcmp (name, "!="))
    return !jv_equal (in, a0);
  if (!strcmp (name, "sameas"))
    return (in->t == JV_NONE && a0->t == JV_NONE) ||
           (in->t == JV_BOOL && a0->t == JV_BOOL && in->u.b == a0->u.b) || in == a0;
  if (!strcmp (name, "in")) {
    g_autoptr (JVal) r = contains (ctx, at, in, a0);
    return r ? r->u.b : -1;
  }
  if (!strcmp (name, "lt") || !strcmp (name, "gt") || !strcmp (name, "le") ||
      !strcmp (name, "ge")) {
    static const char *const ops[][2] = { { "lt", "<" }, { "gt", ">" }, { "le", "<=" },
                                          { "ge", ">=" } };
    int k;
    for (k = 0; k < 4; k++)
      if (!strcmp (name, ops[k][0])) {
        g_autoptr (JVal) r = binop (ctx, at, ops[k][1], in, a0);
        return r ? r->u.b : -1;
      }
  }
  ctx_fail (ctx, at, "unsupported construct: test '%s'", name);
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Statements                                                               */

/* Applies a filter chain parsed over an empty input (filter blocks, set blocks). */
static JVal *
apply_chain (Ctx *ctx, Node *f, JVal *base)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  g_autoptr (GPtrArray) kwvals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
  g_autoptr (JVal) in = NULL;
  if (f->t != E_FILTER)
    return ctx_fail (ctx, f, "expected a filter");
  in = f->a ? apply_chain (ctx, f->a, base) : jv_ref (base);
  if (!in || !eval_args (ctx, f, args, kwvals))
    return NULL;
  return apply_filter (ctx, f, f->s, in, args, f->kwnames, kwvals);
}

static gboolean
assign_targets (Ctx *ctx, Node *at, GPtrArray *targets, JVal *v, Frame *f)
{
  guint i;
  if (targets->len == 1) {
    frame_set (f, g_ptr_array_index (targets, 0), jv_ref (v));
    return TRUE;
  }
  {
    g_autoptr (JVal) l = iter_list (ctx, at, v);
    if (!l)
      return FALSE;
    if (l->u.list->len != targets->len) {
      ctx_fail (ctx, at, "cannot unpack %u values into %u names", l->u.list->len, targets->len);
      return FALSE;
    }
    for (i = 0; i < targets->len; i++)
      frame_set (f, g_ptr_array_index (targets, i), jv_ref (g_ptr_array_index (l->u.list, i)));
  }
  return TRUE;
}

static gboolean
emit (Ctx *ctx, Node *at, GString *out, JVal *v)
{
  append_str (out, v);
  return check_len (ctx, at, out->len);
}

static int exec_node (Ctx *ctx, Node *n, GString *out);

static int
exec_for (Ctx *ctx, Node *n, GString *out)
{
  g_autoptr (JVal) seq = eval (ctx, n->a);
  g_autoptr (JVal) items = NULL;
  Frame *saved = ctx->frame;
  guint i, len;
  int r = EX_OK;
  if (!seq)
    return EX_ERR;
  if (seq->t == JV_NONE || seq->t == JV_INT || seq->t == JV_FLOAT || seq->t == JV_BOOL) {
    ctx_fail (ctx, n, "'%s' object is not iterable", jv_type_name (seq));
    return EX_ERR;
  }
  if (!(items = iter_list (ctx, n, seq)))
    return EX_ERR;
  if (n->b) {
    /* the inline `if` filters before the loop runs, so loop.length counts what is kept */
    JVal *kept = jv_new (JV_LIST);
    for (i = 0; i < items->u.list->len; i++) {
      JVal *it = g_ptr_array_index (items->u.list, i);
      Frame *f = frame_new (saved);
      JVal *c;
      ctx->frame = f;
      c = assign_targets (ctx, n, n->targets, it, f) ? eval (ctx, n->b) : NULL;
      ctx->frame = saved;
      frame_unref (f);
      if (!c || ++ctx->steps > BLN_TEMPLATE_MAX_STEPS) {
        if (c)
          ctx_fail (ctx, n, "template ran too long");
        jv_unref (c);
        jv_unref (kept);
        return EX_ERR;
      }
      if (jv_truthy (c))
        list_push (kept, jv_ref (it));
      jv_unref (c);
    }
    jv_unref (items);
    items = kept;
  }
  len = items->u.list->len;
  for (i = 0; i < len; i++) {
    JVal *it = g_ptr_array_index (items->u.list, i);
    Frame *f;
    JVal *loop;
    if (++ctx->steps > BLN_TEMPLATE_MAX_STEPS) {
      ctx_fail (ctx, n, "template ran too long");
      return EX_ERR;
    }
    f = frame_new (saved);
    loop = jv_new (JV_DICT);
    loop->is_loop = TRUE;
    dict_set_str (loop, "index", jv_int (i + 1));
    dict_set_str (loop, "index0", jv_int (i));
    dict_set_str (loop, "revindex", jv_int (len - i));
    dict_set_str (loop, "revindex0", jv_int (len - i - 1));
    dict_set_str (loop, "first", jv_bool (i == 0));
    dict_set_str (loop, "last", jv_bool (i + 1 == len));
    dict_set_str (loop, "length", jv_int (len));
    dict_set_str (loop, "depth", jv_int (1));
    dict_set_str (loop, "depth0", jv_int (0));
    if (i > 0)
      dict_set_str (loop, "previtem", jv_ref (g_ptr_array_index (items->u.list, i - 1)));
    if (i + 1 < len)
      dict_set_str (loop, "nextitem", jv_ref (g_ptr_array_index (items->u.list, i + 1)));
    frame_set (f, "loop", loop);
    ctx->frame = f;
    if (!assign_targets (ctx, n, n->targets, it, f))
      r = EX_ERR;
    else
      r = exec_body (ctx, n->body, out);
    ctx->frame = saved;
    frame_unref (f);
    if (r == EX_ERR)
      return EX_ERR;
    if (r == EX_BREAK)
      break;
    r = EX_OK;
  }
  if (len == 0 && n->orelse)
    return exec_body (ctx, n->orelse, out);
  return EX_OK;
}

static int
exec_node (Ctx *ctx, Node *n, GString *out)
{
  switch (n->t) {
  case N_TEXT:
    g_string_append_len (out, n->lit->u.s.s, (gssize) n->lit->u.s.len);
    return check_len (ctx, n, out->len) ? EX_OK : EX_ERR;
  case N_OUTPUT: {
    g_autoptr (JVal) v = eval (ctx, n->a);
    if (!v || !emit (ctx, n, out, v))
      return EX_ERR;
    return EX_OK;
  }
  case N_IF: {
    g_autoptr (JVal) c = eval (ctx, n->a);
    if (!c)
      return EX_ERR;
    if (jv_truthy (c))
      return exec_body (ctx, n->body, out);
    if (n->orelse)
      return exec_body (ctx, n->orelse, out);
    return EX_OK;
  }
  case N_FOR:
    return exec_for (ctx, n, out);
  case N_SET: {
    g_autoptr (JVal) v = eval (ctx, n->b);
    if (!v)
      return EX_ERR;
    if (n->a) {
      g_autoptr (JVal) ns = lookup (ctx, n->a->s);
      if (ns->t != JV_NS) {
        ctx_fail (ctx, n, "cannot assign attribute on non-namespace object");
        return EX_ERR;
      }
      dict_set_str (ns, n->s, jv_ref (v));
      return EX_OK;
    }
    return assign_targets (ctx, n, n->targets, v, ctx->frame) ? EX_OK : EX_ERR;
  }
  case N_SET_BLOCK: {
    GString *g = g_string_new (NULL);
    JVal *v;
    if (exec_body (ctx, n->body, g) == EX_ERR) {
      g_string_free (g, TRUE);
      return EX_ERR;
    }
    v = jv_gstr (g);
    if (n->a) {
      JVal *f = apply_chain (ctx, n->a, v);
      jv_unref (v);
      if (!f)
        return EX_ERR;
      v = f;
    }
    frame_set (ctx->frame, g_ptr_array_index (n->targets, 0), v);
    return EX_OK;
  }
  case N_MACRO: {
    JVal *m = jv_new (JV_MACRO);
    m->u.m.node = n;
    m->u.m.frame = ctx->frame;
    ctx->frame->ref++;
    ctx->frame->ref++;
    g_ptr_array_add (ctx->captured, ctx->frame);
    frame_set (ctx->frame, n->s, m);
    return EX_OK;
  }
  case N_CALLBLOCK: {
    g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (GPtrArray) kwvals = g_ptr_array_new_with_free_func ((GDestroyNotify) jv_unref);
    g_autoptr (JVal) fn = eval (ctx, n->a->a);
    g_autoptr (JVal) caller = NULL;
    g_autoptr (JVal) r = NULL;
    if (!fn || !eval_args (ctx, n->a, args, kwvals))
      return EX_ERR;
    if (fn->t != JV_MACRO) {
      ctx_fail (ctx, n, "call block needs a macro");
      return EX_ERR;
    }
    caller = jv_new (JV_MACRO);
    caller->u.m.node = n;
    caller->u.m.frame = ctx->frame;
    ctx->frame->ref += 2;
    g_ptr_array_add (ctx->captured, ctx->frame);
    r = call_macro (ctx, n, fn, args, n->a->kwnames, kwvals, caller);
    if (!r || !emit (ctx, n, out, r))
      return EX_ERR;
    return EX_OK;
  }
  case N_FILTERBLOCK: {
    GString *g = g_string_new (NULL);
    g_autoptr (JVal) body = NULL;
    g_autoptr (JVal) r = NULL;
    if (exec_body (ctx, n->body, g) == EX_ERR) {
      g_string_free (g, TRUE);
      return EX_ERR;
    }
    body = jv_gstr (g);
    if (!(r = apply_chain (ctx, n->a, body)) || !emit (ctx, n, out, r))
      return EX_ERR;
    return EX_OK;
  }
  case N_BODY:
    return exec_body (ctx, n->body, out);
  case N_BREAK:
    return EX_BREAK;
  case N_CONTINUE:
    return EX_CONTINUE;
  default:
    ctx_fail (ctx, n, "internal error: expression used as a statement");
    return EX_ERR;
  }
}

static int
exec_body (Ctx *ctx, GPtrArray *body, GString *out)
{
  guint i;
  if (!body)
    return EX_OK;
  for (i = 0; i < body->len; i++) {
    int r = exec_node (ctx, g_ptr_array_index (body, i), out);
    if (r != EX_OK)
      return r;
  }
  return EX_OK;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

BlnTemplate *
bln_template_new (const char *source, GError **error)
{
  BlnTemplate *tmpl;
  Lexer lx = { 0 };
  Parser ps = { 0 };
  GString *norm;
  const char *p;
  g_return_val_if_fail (source != NULL, NULL);
  if (!g_utf8_validate (source, -1, NULL)) {
    g_set_error_literal (error, BLN_ERROR, BLN_ERROR_TEMPLATE, "template is not valid UTF-8");
    return NULL;
  }
  /* jinja2 normalises \r\n and \r to \n and drops one trailing newline */
  norm = g_string_new (NULL);
  for (p = source; *p; p++) {
    if (*p == '\r') {
      g_string_append_c (norm, '\n');
      if (p[1] == '\n')
        p++;
    } else
      g_string_append_c (norm, *p);
  }
  if (norm->len > 0 && norm->str[norm->len - 1] == '\n')
    g_string_truncate (norm, norm->len - 1);

  tmpl = g_new0 (BlnTemplate, 1);
  tmpl->toks = g_array_new (FALSE, TRUE, sizeof (Tok));
  tmpl->nodes = g_ptr_array_new_with_free_func ((GDestroyNotify) node_free);
  lx.tmpl = tmpl;
  lx.src = norm->str;
  lx.len = norm->len;
  lx.line = 1;
  lx.error = error;
  if (!lex_all (&lx)) {
    g_string_free (norm, TRUE);
    bln_template_free (tmpl);
    return NULL;
  }
  g_string_free (norm, TRUE);
  ps.tmpl = tmpl;
  ps.error = error;
  tmpl->body = parse_body (&ps, NULL);
  if (!tmpl->body) {
    bln_template_free (tmpl);
    return NULL;
  }
  return tmpl;
}

void
bln_template_free (BlnTemplate *tmpl)
{
  guint i;
  if (!tmpl)
    return;
  for (i = 0; i < tmpl->toks->len; i++)
    g_free (g_array_index (tmpl->toks, Tok, i).s);
  g_array_unref (tmpl->toks);
  if (tmpl->body)
    g_ptr_array_unref (tmpl->body);
  g_ptr_array_unref (tmpl->nodes);
  g_free (tmpl);
}

static void
add_builtin (GHashTable *g, const char *name, BuiltinFn fn)
{
  JVal *v = jv_new (JV_FUNC);
  v->u.fn.fn = fn;
  v->u.fn.name = name;
  g_hash_table_insert (g, g_strdup (name), v);
}

char *
bln_template_render (BlnTemplate *tmpl, JsonNode *vars, GError **error)
{
  Ctx ctx = { 0 };
  GString *out;
  int r;
  guint i;
  g_return_val_if_fail (tmpl != NULL, NULL);
  if (vars && !JSON_NODE_HOLDS_OBJECT (vars)) {
    g_set_error_literal (error, BLN_ERROR, BLN_ERROR_INVALID,
                         "template variables must be a JSON object");
    return NULL;
  }
  ctx.tmpl = tmpl;
  ctx.root = frame_new (NULL);
  ctx.frame = ctx.root;
  ctx.globals = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify) jv_unref);
  ctx.captured = g_ptr_array_new ();
  ctx.namespaces = g_ptr_array_new ();
  add_builtin (ctx.globals, "raise_exception", fn_raise_exception);
  add_builtin (ctx.globals, "strftime_now", fn_strftime_now);
  add_builtin (ctx.globals, "namespace", fn_namespace);
  add_builtin (ctx.globals, "dict", fn_dict);
  add_builtin (ctx.globals, "range", fn_range);
  if (vars) {
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    json_object_iter_init_ordered (&it, json_node_get_object (vars));
    while (json_object_iter_next_ordered (&it, &name, &member))
      frame_set (ctx.root, name, jv_from_json (member, 0));
  }
  out = g_string_new (NULL);
  r = exec_body (&ctx, tmpl->body, out);

  /* break the cycles macros and namespaces may have formed, then free */
  for (i = 0; i < ctx.captured->len; i++)
    g_hash_table_remove_all (((Frame *) g_ptr_array_index (ctx.captured, i))->vars);
  for (i = 0; i < ctx.namespaces->len; i++) {
    JVal *ns = g_ptr_array_index (ctx.namespaces, i);
    g_ptr_array_set_size (ns->u.d.keys, 0);
    g_ptr_array_set_size (ns->u.d.vals, 0);
    jv_unref (ns);
  }
  for (i = 0; i < ctx.captured->len; i++)
    frame_unref (g_ptr_array_index (ctx.captured, i));
  g_ptr_array_unref (ctx.captured);
  g_ptr_array_unref (ctx.namespaces);
  frame_unref (ctx.root);
  g_hash_table_unref (ctx.globals);

  if (r == EX_ERR || ctx.err) {
    g_string_free (out, TRUE);
    if (ctx.err)
      g_propagate_error (error, ctx.err);
    else
      g_set_error_literal (error, BLN_ERROR, BLN_ERROR_TEMPLATE, "template failed to render");
    return NULL;
  }
  if (r == EX_BREAK || r == EX_CONTINUE) {
    /* jinja2 rejects break/continue outside loops at compile time */
    g_string_free (out, TRUE);
    g_set_error_literal (error, BLN_ERROR, BLN_ERROR_TEMPLATE,
                         "break or continue outside of a loop");
    return NULL;
  }
  return g_string_free (out, FALSE);
}
