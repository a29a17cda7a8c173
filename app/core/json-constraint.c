/* json-constraint.c — see json-constraint.h. */
#include "json-constraint.h"

#include <string.h>
#include <stdlib.h>
#include "bln-error.h"

enum {
  S_VALUE,        /* a value is expected */
  S_OBJ_FIRST,    /* after '{': a key or '}' */
  S_OBJ_KEY,      /* after ',' in an object: a key */
  S_COLON,        /* after a key */
  S_ARR_FIRST,    /* after '[': a value or ']' */
  S_AFTER,        /* after a value inside a container: ',' or the closing bracket */
  S_STR,
  S_STR_ESC,      /* after a backslash */
  S_STR_U,        /* in \uXXXX; aux digits left */
  S_STR_UTF8,     /* in a multi-byte character; aux continuation bytes left */
  S_NUM_MINUS,    /* after '-' */
  S_NUM_ZERO,     /* integer part "0" */
  S_NUM_INT,      /* integer digits */
  S_NUM_DOT,      /* after '.' */
  S_NUM_FRAC,
  S_NUM_E,        /* after 'e' / 'E' */
  S_NUM_ESIGN,    /* after the exponent's sign */
  S_NUM_EXP,
  S_LIT,          /* in true / false / null; aux bytes read */
  S_ENUM,         /* schema mode: matching enum texts; mpos bytes read */
  S_DONE,
};

/* ---------------------------------------------------------------------- */
/* compiled schemas                                                        */

enum {
  T_OBJECT = 1 << 0,
  T_ARRAY = 1 << 1,
  T_STRING = 1 << 2,
  T_INTEGER = 1 << 3,
  T_NUMBER = 1 << 4,     /* any number, integers included */
  T_BOOLEAN = 1 << 5,
  T_NULL = 1 << 6,
  T_ALL = 0x7f,
};

#define MAX_NODES 4096
#define MAX_PROPS 64
#define MAX_ENUM 64
#define MAX_KEY_LEN 1024
#define MAX_MIN_ITEMS 256
#define MAX_COMPILE_DEPTH 64
#define MAX_MIN_TEXT (64 * 1024)
#define NODE_ANY 0

typedef struct {
  guint8 types;
  gboolean closed;        /* additionalProperties: false */
  guint16 extra;          /* node of the values of other properties */
  int n_props;
  char **keys;            /* canonical JSON string contents (no quotes) */
  guint16 *key_len;
  guint16 *prop;          /* the properties' nodes */
  guint64 required;       /* bit i: property i */
  guint64 dead;           /* properties whose schema has no finite value */
  guint16 items;
  int min_items, max_items;   /* max_items < 0: no limit */
  int n_enum;
  char **enum_text;       /* compact canonical texts */
  guint16 *enum_len;
  int n_alts;
  guint16 *alts;          /* anyOf */
  guint8 first[32];       /* bytes a value may begin with */
  char *min;              /* smallest value; NULL: none is finite (the node is dead) */
  char *ptr;              /* where it is in the schema, for messages */
} Node;

struct _BlnJsonSchema {
  gint ref_count;
  Node *nodes;
  guint n_nodes;
  guint16 root;
};

static void
node_clear (Node *n)
{
  g_strfreev (n->keys);
  g_free (n->key_len);
  g_free (n->prop);
  g_strfreev (n->enum_text);
  g_free (n->enum_len);
  g_free (n->alts);
  g_free (n->min);
  g_free (n->ptr);
}

BlnJsonSchema *
bln_json_schema_ref (BlnJsonSchema *s)
{
  g_atomic_int_inc (&s->ref_count);
  return s;
}

void
bln_json_schema_unref (BlnJsonSchema *s)
{
  guint i;

  if (s == NULL || !g_atomic_int_dec_and_test (&s->ref_count))
    return;
  for (i = 0; i < s->n_nodes; i++)
    node_clear (&s->nodes[i]);
  g_free (s->nodes);
  g_free (s);
}

const char *
bln_json_schema_min_value (const BlnJsonSchema *s)
{
  return s->nodes[s->root].min;
}

gboolean
bln_json_schema_objects_only (const BlnJsonSchema *s)
{
  const Node *n = &s->nodes[s->root];
  int i;

  for (i = 0; i < 32; i++)
    if (n->first[i] != (i == '{' / 8 ? 1u << ('{' % 8) : 0u))
      return FALSE;
  return TRUE;
}

/* The contents of a JSON string for @s in canonical form: only '"', '\\'
 * and control characters escaped (the short escapes where JSON has them). */
static void
append_escaped (GString *out, const char *s)
{
  for (; *s; s++)
    {
      guint8 b = (guint8) *s;

      switch (b)
        {
        case '"': g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\b': g_string_append (out, "\\b"); break;
        case '\f': g_string_append (out, "\\f"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        default:
          if (b < 0x20)
            g_string_append_printf (out, "\\u%04x", b);
          else
            g_string_append_c (out, (char) b);
        }
    }
}

/* The shortest decimal text that reads back as @d. */
static void
append_double (GString *out, double d)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  int prec;

  for (prec = 1; prec <= 17; prec++)
    {
      char fmt[8];

      g_snprintf (fmt, sizeof fmt, "%%.%dg", prec);
      g_ascii_formatd (buf, sizeof buf, fmt, d);
      if (g_ascii_strtod (buf, NULL) == d)
        break;
    }
  g_string_append (out, buf);
}

/* Compact canonical text of a JSON value (object members in their order). */
static void
append_canonical (GString *out, JsonNode *n)
{
  if (JSON_NODE_HOLDS_NULL (n))
    g_string_append (out, "null");
  else if (JSON_NODE_HOLDS_OBJECT (n))
    {
      JsonObject *o = json_node_get_object (n);
      GList *names = json_object_get_members (o), *l;

      g_string_append_c (out, '{');
      for (l = names; l != NULL; l = l->next)
        {
          if (l != names)
            g_string_append_c (out, ',');
          g_string_append_c (out, '"');
          append_escaped (out, l->data);
          g_string_append (out, "\":");
          append_canonical (out, json_object_get_member (o, l->data));
        }
      g_list_free (names);
      g_string_append_c (out, '}');
    }
  else if (JSON_NODE_HOLDS_ARRAY (n))
    {
      JsonArray *a = json_node_get_array (n);
      guint i;

      g_string_append_c (out, '[');
      for (i = 0; i < json_array_get_length (a); i++)
        {
          if (i > 0)
            g_string_append_c (out, ',');
          append_canonical (out, json_array_get_element (a, i));
        }
      g_string_append_c (out, ']');
    }
  else
    switch (json_node_get_value_type (n))
      {
      case G_TYPE_BOOLEAN:
        g_string_append (out, json_node_get_boolean (n) ? "true" : "false");
        break;
      case G_TYPE_INT64:
        g_string_append_printf (out, "%" G_GINT64_FORMAT, json_node_get_int (n));
        break;
      case G_TYPE_DOUBLE:
        append_double (out, json_node_get_double (n));
        break;
      default:
        g_string_append_c (out, '"');
        append_escaped (out, json_node_get_string (n));
        g_string_append_c (out, '"');
        break;
      }
}

/* The JSON type bits a value has. */
static guint8
value_types (JsonNode *n)
{
  if (JSON_NODE_HOLDS_NULL (n))
    return T_NULL;
  if (JSON_NODE_HOLDS_OBJECT (n))
    return T_OBJECT;
  if (JSON_NODE_HOLDS_ARRAY (n))
    return T_ARRAY;
  switch (json_node_get_value_type (n))
    {
    case G_TYPE_BOOLEAN:
      return T_BOOLEAN;
    case G_TYPE_INT64:
      return T_INTEGER | T_NUMBER;
    case G_TYPE_DOUBLE:
      {
        double d = json_node_get_double (n);
        /* a whole number written with a fraction is still an integer to validators */
        return d == (double) (gint64) d ? T_INTEGER | T_NUMBER : T_NUMBER;
      }
    default:
      return T_STRING;
    }
}

typedef struct {
  GArray *nodes;          /* Node */
  GHashTable *memo;       /* JsonObject * -> index + 1 */
  JsonObject *root;
  JsonNode *root_node;
  int depth;
} Compiler;

static Node *
cnode (Compiler *cc, int i)
{
  return &g_array_index (cc->nodes, Node, i);
}

static gboolean
is_annotation (const char *k)
{
  static const char *const names[] = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "$defs", "definitions",
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (names); i++)
    if (g_str_equal (k, names[i]))
      return TRUE;
  return FALSE;
}

static int compile_node (Compiler *cc, JsonNode *n, const char *ptr, GError **error);

/* Resolves a local $ref; NULL with @error set when it cannot. */
static JsonNode *
resolve_ref (Compiler *cc, const char *ref, const char *ptr, GError **error)
{
  const char *name = NULL, *defs = NULL;
  g_autoptr (GString) key = g_string_new (NULL);
  JsonNode *d;
  const char *p;

  if (g_str_equal (ref, "#"))
    return cc->root_node;
  if (g_str_has_prefix (ref, "#/$defs/"))
    defs = "$defs", name = ref + 8;
  else if (g_str_has_prefix (ref, "#/definitions/"))
    defs = "definitions", name = ref + 14;
  if (name == NULL || *name == '\0' || strchr (name, '/') != NULL || cc->root == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "$ref '%s' at %s is not supported: only \"#\", \"#/$defs/NAME\" and "
                   "\"#/definitions/NAME\" are", ref, ptr);
      return NULL;
    }
  /* JSON pointer escapes: ~1 is '/', ~0 is '~' */
  for (p = name; *p; p++)
    if (p[0] == '~' && p[1] == '1')
      g_string_append_c (key, '/'), p++;
    else if (p[0] == '~' && p[1] == '0')
      g_string_append_c (key, '~'), p++;
    else
      g_string_append_c (key, *p);
  d = json_object_get_member (cc->root, defs);
  if (d != NULL && JSON_NODE_HOLDS_OBJECT (d))
    d = json_object_get_member (json_node_get_object (d), key->str);
  else
    d = NULL;
  if (d == NULL)
    g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "$ref '%s' at %s points at nothing", ref,
                 ptr);
  return d;
}

static gboolean
get_count (JsonObject *o, const char *k, const char *ptr, int limit, int *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, k);
  gint64 v;

  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64
      || (v = json_node_get_int (n)) < 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s at %s must be a non-negative integer",
                   k, ptr);
      return FALSE;
    }
  if (v > limit)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s at %s is over %d, which is not "
                   "supported", k, ptr, limit);
      return FALSE;
    }
  *out = (int) v;
  return TRUE;
}

static gboolean
parse_types (JsonNode *n, const char *ptr, guint8 *out, GError **error)
{
  static const char *const names[] = {
    "object", "array", "string", "integer", "number", "boolean", "null",
  };
  static const guint8 bits[] = {
    T_OBJECT, T_ARRAY, T_STRING, T_INTEGER, T_NUMBER | T_INTEGER, T_BOOLEAN, T_NULL,
  };
  JsonArray *a = NULL;
  guint i, k, len = 1;

  *out = 0;
  if (JSON_NODE_HOLDS_ARRAY (n))
    {
      a = json_node_get_array (n);
      len = json_array_get_length (a);
    }
  for (i = 0; i < len; i++)
    {
      JsonNode *e = a != NULL ? json_array_get_element (a, i) : n;
      const char *t;

      if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING)
        goto bad;
      t = json_node_get_string (e);
      for (k = 0; k < G_N_ELEMENTS (names); k++)
        if (g_str_equal (t, names[k]))
          break;
      if (k == G_N_ELEMENTS (names))
        goto bad;
      *out |= bits[k];
    }
  if (*out != 0)
    return TRUE;
bad:
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "type at %s must be one of object, array, "
               "string, integer, number, boolean, null, or a non-empty list of them", ptr);
  return FALSE;
}

static int
compile_object (Compiler *cc, JsonObject *o, const char *ptr, GError **error)
{
  static const char *const known[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "enum", "const", "anyOf", "$ref",
  };
  GList *names = json_object_get_members (o), *l;
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) props = g_array_new (FALSE, FALSE, sizeof (guint16));
  int idx, i;
  guint8 types = T_ALL;
  gboolean has_enum = FALSE, has_alts = FALSE, others = FALSE;
  const char *other_name = NULL;
  JsonNode *n;

  /* every keyword must be known */
  for (l = names; l != NULL; l = l->next)
    {
      const char *k = l->data;
      guint j;

      if (is_annotation (k))
        continue;
      for (j = 0; j < G_N_ELEMENTS (known); j++)
        if (g_str_equal (k, known[j]))
          break;
      if (j == G_N_ELEMENTS (known))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "the JSON Schema keyword '%s' at %s is not supported (supported: type, "
                       "properties, required, additionalProperties, items, minItems, maxItems, "
                       "enum, const, anyOf, $ref)", k, ptr);
          g_list_free (names);
          return -1;
        }
      if (g_str_equal (k, "enum") || g_str_equal (k, "const"))
        has_enum = TRUE;
      else if (g_str_equal (k, "anyOf"))
        has_alts = TRUE;
      else if (!g_str_equal (k, "type") && !g_str_equal (k, "$ref"))
        others = TRUE, other_name = k;
    }
  g_list_free (names);

  if (json_object_has_member (o, "$ref"))
    {
      JsonNode *r = json_object_get_member (o, "$ref"), *target;
      int t;

      if (has_enum || has_alts || others || json_object_has_member (o, "type"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "$ref at %s with other "
                       "keywords beside it is not supported", ptr);
          return -1;
        }
      if (!JSON_NODE_HOLDS_VALUE (r) || json_node_get_value_type (r) != G_TYPE_STRING)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "$ref at %s must be a string", ptr);
          return -1;
        }
      target = resolve_ref (cc, json_node_get_string (r), ptr, error);
      if (target == NULL)
        return -1;
      t = compile_node (cc, target, json_node_get_string (r), error);
      if (t >= 0)
        g_hash_table_insert (cc->memo, o, GINT_TO_POINTER (t + 1));
      return t;
    }
  if ((has_enum && (has_alts || others)) || (has_alts && (others || json_object_has_member (o,
                                                                                         "type"))))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s at %s together with '%s' is not "
                   "supported", has_enum ? "enum/const" : "anyOf", ptr,
                   other_name ? other_name : has_alts && has_enum ? "anyOf" : "type");
      return -1;
    }
  if (cc->nodes->len >= MAX_NODES)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "the schema has over %d parts",
                   MAX_NODES);
      return -1;
    }
  idx = (int) cc->nodes->len;
  g_array_set_size (cc->nodes, cc->nodes->len + 1);
  cnode (cc, idx)->ptr = g_strdup (ptr);
  cnode (cc, idx)->max_items = -1;
  g_hash_table_insert (cc->memo, o, GINT_TO_POINTER (idx + 1));

  if ((n = json_object_get_member (o, "type")) != NULL && !parse_types (n, ptr, &types, error))
    return -1;
  cnode (cc, idx)->types = types;

  if (has_enum)
    {
      g_autoptr (GPtrArray) texts = g_ptr_array_new_with_free_func (g_free);
      JsonArray *vals = NULL;
      guint len = 1, j;

      if (json_object_has_member (o, "enum") && json_object_has_member (o, "const"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "enum and const together at %s "
                       "are not supported", ptr);
          return -1;
        }
      n = json_object_get_member (o, "enum");
      if (n != NULL)
        {
          if (!JSON_NODE_HOLDS_ARRAY (n) || json_array_get_length (json_node_get_array (n)) == 0)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "enum at %s must be a non-empty "
                           "array", ptr);
              return -1;
            }
          vals = json_node_get_array (n);
          len = json_array_get_length (vals);
          if (len > MAX_ENUM)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "enum at %s has over %d "
                           "values, which is not supported", ptr, MAX_ENUM);
              return -1;
            }
        }
      else
        n = json_object_get_member (o, "const");
      for (j = 0; j < len; j++)
        {
          JsonNode *v = vals != NULL ? json_array_get_element (vals, j) : n;
          GString *t;
          guint k;

          if ((value_types (v) & types) == 0)
            continue;   /* not of an allowed type: no valid instance equals it */
          t = g_string_new (NULL);
          append_canonical (t, v);
          for (k = 0; k < texts->len; k++)
            if (g_str_equal (texts->pdata[k], t->str))
              break;
          if (k < texts->len || t->len >= G_MAXUINT16)
            g_string_free (t, TRUE);
          else
            g_ptr_array_add (texts, g_string_free (t, FALSE));
        }
      if (texts->len == 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "enum/const at %s admits no value "
                       "of the allowed types", ptr);
          return -1;
        }
      cnode (cc, idx)->n_enum = (int) texts->len;
      cnode (cc, idx)->enum_len = g_new (guint16, texts->len);
      for (j = 0; j < texts->len; j++)
        cnode (cc, idx)->enum_len[j] = (guint16) strlen (texts->pdata[j]);
      g_ptr_array_add (texts, NULL);
      cnode (cc, idx)->enum_text = (char **) g_ptr_array_steal (texts, NULL);
      return idx;
    }

  if (has_alts)
    {
      JsonArray *a;
      guint j, len;

      n = json_object_get_member (o, "anyOf");
      if (!JSON_NODE_HOLDS_ARRAY (n) || (len = json_array_get_length (a = json_node_get_array (n)))
                                          == 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "anyOf at %s must be a non-empty "
                       "array", ptr);
          return -1;
        }
      if (len > 16)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "anyOf at %s has over 16 "
                       "alternatives", ptr);
          return -1;
        }
      cnode (cc, idx)->alts = g_new (guint16, len);
      for (j = 0; j < len; j++)
        {
          g_autofree char *p = g_strdup_printf ("%s/anyOf/%u", ptr, j);
          int t = compile_node (cc, json_array_get_element (a, j), p, error);

          if (t < 0)
            return -1;
          cnode (cc, idx)->alts[j] = (guint16) t;
          cnode (cc, idx)->n_alts = (int) j + 1;
        }
      return idx;
    }

  /* objects */
  if ((n = json_object_get_member (o, "properties")) != NULL)
    {
      JsonObject *po;
      GList *pn;

      if (!JSON_NODE_HOLDS_OBJECT (n))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "properties at %s must be an object",
                       ptr);
          return -1;
        }
      po = json_node_get_object (n);
      pn = json_object_get_members (po);
      for (l = pn; l != NULL; l = l->next)
        {
          g_autofree char *p = g_strdup_printf ("%s/properties/%s", ptr, (char *) l->data);
          GString *k = g_string_new (NULL);
          int t;
          guint16 t16;

          append_escaped (k, l->data);
          if (keys->len >= MAX_PROPS || k->len > MAX_KEY_LEN)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "properties at %s: over %d "
                           "properties or a name over %d bytes is not supported", ptr,
                           MAX_PROPS, MAX_KEY_LEN);
              g_string_free (k, TRUE);
              g_list_free (pn);
              return -1;
            }
          g_ptr_array_add (keys, g_string_free (k, FALSE));
          t = compile_node (cc, json_object_get_member (po, l->data), p, error);
          if (t < 0)
            {
              g_list_free (pn);
              return -1;
            }
          t16 = (guint16) t;
          g_array_append_val (props, t16);
        }
      g_list_free (pn);
    }
  cnode (cc, idx)->extra = NODE_ANY;
  if ((n = json_object_get_member (o, "additionalProperties")) != NULL)
    {
      if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_BOOLEAN)
        cnode (cc, idx)->closed = !json_node_get_boolean (n);
      else if (JSON_NODE_HOLDS_OBJECT (n))
        {
          g_autofree char *p = g_strdup_printf ("%s/additionalProperties", ptr);
          int t = compile_node (cc, n, p, error);

          if (t < 0)
            return -1;
          cnode (cc, idx)->extra = (guint16) t;
        }
      else
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "additionalProperties at %s must be "
                       "a boolean or a schema", ptr);
          return -1;
        }
    }
  if ((n = json_object_get_member (o, "required")) != NULL)
    {
      JsonArray *a;
      guint j;

      if (!JSON_NODE_HOLDS_ARRAY (n))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "required at %s must be an array of "
                       "strings", ptr);
          return -1;
        }
      a = json_node_get_array (n);
      for (j = 0; j < json_array_get_length (a); j++)
        {
          JsonNode *e = json_array_get_element (a, j);
          g_autoptr (GString) k = g_string_new (NULL);
          guint m;

          if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "required at %s must be an array "
                           "of strings", ptr);
              return -1;
            }
          append_escaped (k, json_node_get_string (e));
          for (m = 0; m < keys->len; m++)
            if (g_str_equal (keys->pdata[m], k->str))
              break;
          if (m == keys->len)
            {
              /* required but not described: a property with the other properties' schema */
              guint16 t16 = cnode (cc, idx)->extra;

              if (cnode (cc, idx)->closed)
                {
                  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "required property '%s' at "
                               "%s is not allowed by additionalProperties: false",
                               json_node_get_string (e), ptr);
                  return -1;
                }
              if (keys->len >= MAX_PROPS || k->len > MAX_KEY_LEN)
                {
                  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "too many properties at "
                               "%s", ptr);
                  return -1;
                }
              g_ptr_array_add (keys, g_strdup (k->str));
              g_array_append_val (props, t16);
            }
          cnode (cc, idx)->required |= G_GUINT64_CONSTANT (1) << m;
        }
    }
  cnode (cc, idx)->n_props = (int) keys->len;
  cnode (cc, idx)->key_len = g_new (guint16, keys->len + 1);
  for (i = 0; i < (int) keys->len; i++)
    cnode (cc, idx)->key_len[i] = (guint16) strlen (keys->pdata[i]);
  g_ptr_array_add (keys, NULL);
  cnode (cc, idx)->keys = (char **) g_ptr_array_steal (keys, NULL);
  cnode (cc, idx)->prop = (guint16 *) g_array_steal (props, NULL);

  /* arrays */
  cnode (cc, idx)->items = NODE_ANY;
  if ((n = json_object_get_member (o, "items")) != NULL)
    {
      g_autofree char *p = g_strdup_printf ("%s/items", ptr);
      int t;

      if (JSON_NODE_HOLDS_ARRAY (n))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "items at %s as an array (tuple "
                       "form) is not supported", ptr);
          return -1;
        }
      t = compile_node (cc, n, p, error);
      if (t < 0)
        return -1;
      cnode (cc, idx)->items = (guint16) t;
    }
  if (json_object_has_member (o, "minItems")
      && !get_count (o, "minItems", ptr, MAX_MIN_ITEMS, &cnode (cc, idx)->min_items, error))
    return -1;
  if (json_object_has_member (o, "maxItems")
      && !get_count (o, "maxItems", ptr, G_MAXUINT16 - 1, &cnode (cc, idx)->max_items, error))
    return -1;
  if (cnode (cc, idx)->max_items >= 0 && cnode (cc, idx)->max_items < cnode (cc, idx)->min_items
      && (types & ~T_ARRAY) == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "maxItems is below minItems at %s", ptr);
      return -1;
    }
  return idx;
}

static int
compile_node (Compiler *cc, JsonNode *n, const char *ptr, GError **error)
{
  gpointer hit;
  int r;

  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_BOOLEAN)
    {
      if (json_node_get_boolean (n))
        return NODE_ANY;
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "the schema 'false' at %s admits no "
                   "value", ptr);
      return -1;
    }
  if (!JSON_NODE_HOLDS_OBJECT (n))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "the schema at %s must be an object or "
                   "a boolean", ptr);
      return -1;
    }
  hit = g_hash_table_lookup (cc->memo, json_node_get_object (n));
  if (hit != NULL)
    return GPOINTER_TO_INT (hit) - 1;
  if (++cc->depth > MAX_COMPILE_DEPTH)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "the schema is nested over %d deep "
                   "at %s", MAX_COMPILE_DEPTH, ptr);
      return -1;
    }
  r = compile_object (cc, json_node_get_object (n), ptr, error);
  cc->depth--;
  return r;
}

static void
set_bit (guint8 *set, guint8 b)
{
  set[b >> 3] |= (guint8) (1u << (b & 7));
}

static gboolean
has_bit (const guint8 *set, guint8 b)
{
  return (set[b >> 3] >> (b & 7)) & 1;
}

/* The smallest value of @n from what is known of its children; NULL when
 * none is known yet. */
static char *
min_candidate (BlnJsonSchema *s, Node *n)
{
  GString *best = NULL;
  int i;

#define OFFER(str) G_STMT_START {                                         \
    const char *o_ = (str);                                                \
    if (best == NULL)                                                      \
      best = g_string_new (o_);                                            \
    else if (strlen (o_) < best->len)                                      \
      g_string_assign (best, o_);                                          \
  } G_STMT_END

  if (n->n_enum > 0)
    {
      for (i = 0; i < n->n_enum; i++)
        OFFER (n->enum_text[i]);
    }
  else if (n->n_alts > 0)
    {
      for (i = 0; i < n->n_alts; i++)
        if (s->nodes[n->alts[i]].min != NULL)
          OFFER (s->nodes[n->alts[i]].min);
    }
  else
    {
      if (n->types & (T_INTEGER | T_NUMBER))
        OFFER ("0");
      if (n->types & T_STRING)
        OFFER ("\"\"");
      if (n->types & T_NULL)
        OFFER ("null");
      if (n->types & T_BOOLEAN)
        OFFER ("true");
      if (n->types & T_ARRAY)
        {
          const char *item = s->nodes[n->items].min;

          if (n->min_items == 0)
            OFFER ("[]");
          else if (item != NULL && (gsize) n->min_items * (strlen (item) + 1) < MAX_MIN_TEXT)
            {
              g_autoptr (GString) t = g_string_new ("[");

              for (i = 0; i < n->min_items; i++)
                {
                  if (i > 0)
                    g_string_append_c (t, ',');
                  g_string_append (t, item);
                }
              g_string_append_c (t, ']');
              OFFER (t->str);
            }
        }
      if (n->types & T_OBJECT)
        {
          g_autoptr (GString) t = g_string_new ("{");
          gboolean ok = TRUE;

          for (i = 0; i < n->n_props && ok; i++)
            if (n->required & (G_GUINT64_CONSTANT (1) << i))
              {
                const char *v = s->nodes[n->prop[i]].min;

                if (v == NULL || t->len > MAX_MIN_TEXT)
                  ok = FALSE;
                else
                  g_string_append_printf (t, "%s\"%s\":%s", t->len > 1 ? "," : "", n->keys[i], v);
              }
          g_string_append_c (t, '}');
          if (ok)
            OFFER (t->str);
        }
    }
#undef OFFER
  return best != NULL ? g_string_free (best, FALSE) : NULL;
}

/* Fills in every node's smallest value, first bytes and dead properties;
 * checks that anyOf alternatives begin differently. */
static gboolean
finish_schema (BlnJsonSchema *s, GError **error)
{
  gboolean changed = TRUE;
  guint i, round;
  int j, k;

  for (round = 0; changed && round < 100000; round++)
    {
      changed = FALSE;
      for (i = 0; i < s->n_nodes; i++)
        {
          Node *n = &s->nodes[i];
          char *m = min_candidate (s, n);

          if (m != NULL && (n->min == NULL || strlen (m) < strlen (n->min)))
            {
              g_free (n->min);
              n->min = m;
              changed = TRUE;
            }
          else
            g_free (m);
        }
    }
  if (s->nodes[s->root].min == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "the schema admits no finite value");
      return FALSE;
    }
  for (i = 0; i < s->n_nodes; i++)
    {
      Node *n = &s->nodes[i];

      for (j = 0; j < n->n_props; j++)
        if (s->nodes[n->prop[j]].min == NULL)
          n->dead |= G_GUINT64_CONSTANT (1) << j;
    }
  /* first bytes: a fixed point too (anyOf of $refs) */
  for (changed = TRUE, round = 0; changed && round < 100000; round++)
    {
      changed = FALSE;
      for (i = 0; i < s->n_nodes; i++)
        {
          Node *n = &s->nodes[i];
          guint8 f[32] = { 0 };

          if (n->min == NULL)
            continue;   /* dead: no value may begin */
          if (n->n_enum > 0)
            for (j = 0; j < n->n_enum; j++)
              set_bit (f, (guint8) n->enum_text[j][0]);
          else if (n->n_alts > 0)
            for (j = 0; j < n->n_alts; j++)
              for (k = 0; k < 32; k++)
                f[k] |= s->nodes[n->alts[j]].first[k];
          else
            {
              if (n->types & T_OBJECT)
                set_bit (f, '{');
              if ((n->types & T_ARRAY) && (n->max_items < 0 || n->max_items >= n->min_items))
                set_bit (f, '[');
              if (n->types & T_STRING)
                set_bit (f, '"');
              if (n->types & (T_INTEGER | T_NUMBER))
                for (k = '0'; k <= '9'; k++)
                  set_bit (f, (guint8) k);
              if (n->types & (T_INTEGER | T_NUMBER))
                set_bit (f, '-');
              if (n->types & T_BOOLEAN)
                set_bit (f, 't'), set_bit (f, 'f');
              if (n->types & T_NULL)
                set_bit (f, 'n');
            }
          if (memcmp (f, n->first, 32) != 0)
            {
              memcpy (n->first, f, 32);
              changed = TRUE;
            }
        }
    }
  for (i = 0; i < s->n_nodes; i++)
    {
      Node *n = &s->nodes[i];

      for (j = 0; j < n->n_alts; j++)
        for (k = j + 1; k < n->n_alts; k++)
          {
            int b;

            for (b = 0; b < 32; b++)
              if (s->nodes[n->alts[j]].first[b] & s->nodes[n->alts[k]].first[b])
                {
                  g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                               "anyOf at %s: alternatives %d and %d can begin alike (same "
                               "JSON type); only alternatives of different types are supported",
                               n->ptr, j, k);
                  return FALSE;
                }
          }
    }
  return TRUE;
}

BlnJsonSchema *
bln_json_schema_compile (JsonNode *schema, GError **error)
{
  Compiler cc = { 0 };
  BlnJsonSchema *s;
  Node any = { 0 };
  int root;

  g_return_val_if_fail (schema != NULL, NULL);

  cc.nodes = g_array_new (FALSE, TRUE, sizeof (Node));
  cc.memo = g_hash_table_new (NULL, NULL);
  cc.root_node = schema;
  cc.root = JSON_NODE_HOLDS_OBJECT (schema) ? json_node_get_object (schema) : NULL;
  any.types = T_ALL;
  any.max_items = -1;
  any.ptr = g_strdup ("(any)");
  any.keys = g_new0 (char *, 1);
  g_array_append_val (cc.nodes, any);
  root = compile_node (&cc, schema, "#", error);
  g_hash_table_destroy (cc.memo);
  s = g_new0 (BlnJsonSchema, 1);
  s->ref_count = 1;
  s->n_nodes = cc.nodes->len;
  s->nodes = (Node *) g_array_free (cc.nodes, FALSE);
  s->root = (guint16) MAX (root, 0);
  if (root < 0 || !finish_schema (s, error))
    {
      bln_json_schema_unref (s);
      return NULL;
    }
  return s;
}

/* ---------------------------------------------------------------------- */
/* the recogniser                                                          */

#define BIT(i) (G_GUINT64_CONSTANT (1) << (i))

void
bln_json_constraint_init (BlnJsonConstraint *c, gboolean object_only)
{
  memset (c, 0, sizeof *c);
  c->state = S_VALUE;
  c->object_only = object_only ? 1 : 0;
}

void
bln_json_constraint_init_schema (BlnJsonConstraint *c, const BlnJsonSchema *schema)
{
  bln_json_constraint_init (c, FALSE);
  c->schema = schema;
  c->vnode = schema->root;
}

static const Node *
node_of (const BlnJsonConstraint *c, guint16 i)
{
  return &c->schema->nodes[i];
}

static gboolean
number_may_end (guint8 state)
{
  return state == S_NUM_ZERO || state == S_NUM_INT || state == S_NUM_FRAC || state == S_NUM_EXP;
}

gboolean
bln_json_constraint_complete (const BlnJsonConstraint *c)
{
  if (c->state == S_DONE)
    return TRUE;
  return c->schema != NULL && c->depth == 0
         && (number_may_end (c->state) || (c->state == S_ENUM && c->mdone));
}

static void
end_value (BlnJsonConstraint *c)
{
  c->state = c->depth == 0 ? S_DONE : S_AFTER;
}

static gboolean
is_ws (guint8 b)
{
  return b == ' ' || b == '\n' || b == '\r' || b == '\t';
}

static const char *
literal_text (guint8 lit)
{
  return lit == 't' ? "true" : lit == 'f' ? "false" : "null";
}

/* Enum matching: after reading a byte, end the value when no candidate
 * can go on, note when one could end here. */
static void
enum_settle (BlnJsonConstraint *c)
{
  const Node *n = node_of (c, c->vnode);
  gboolean done = FALSE, longer = FALSE;
  int i;

  for (i = 0; i < n->n_enum; i++)
    if (c->mmask & BIT (i))
      {
        if (n->enum_len[i] == c->mpos)
          done = TRUE;
        else
          longer = TRUE;
      }
  c->mdone = done;
  if (done && !longer)
    end_value (c);
}

/* Schema mode: the node a value starting with @b is read against (anyOf
 * resolved by the first byte); -1 when none allows it. */
static int
resolve_start (const BlnJsonConstraint *c, guint16 node, guint8 b)
{
  int guard;

  for (guard = 0; guard < 64; guard++)
    {
      const Node *n = node_of (c, node);
      int i;

      if (!has_bit (n->first, b))
        return -1;
      if (n->n_alts == 0)
        return node;
      for (i = 0; i < n->n_alts; i++)
        if (has_bit (node_of (c, n->alts[i])->first, b))
          break;
      if (i == n->n_alts)
        return -1;
      node = n->alts[i];
    }
  return -1;
}

/* Starts a value with byte @b. */
static gboolean
start_value (BlnJsonConstraint *c, guint8 b)
{
  guint8 types = T_ALL;

  if (c->object_only && c->depth == 0 && b != '{')
    return FALSE;
  if (c->schema != NULL)
    {
      int node = resolve_start (c, c->vnode, b);
      const Node *n;

      if (node < 0)
        return FALSE;
      c->vnode = (guint16) node;
      n = node_of (c, c->vnode);
      if (n->n_enum > 0)
        {
          int i;

          c->mmask = 0;
          for (i = 0; i < n->n_enum; i++)
            if ((guint8) n->enum_text[i][0] == b)
              c->mmask |= BIT (i);
          if (c->mmask == 0)
            return FALSE;
          c->mpos = 1;
          c->state = S_ENUM;
          enum_settle (c);
          return TRUE;
        }
      types = n->types;
      c->int_only = (types & T_NUMBER) == 0;
    }
  switch (b)
    {
    case '{':
    case '[':
      if (c->depth >= BLN_JSON_MAX_DEPTH)
        return FALSE;
      c->frames[c->depth].node = c->vnode;
      c->frames[c->depth].seen = 0;
      c->frames[c->depth].count = 0;
      c->stack[c->depth++] = b;
      c->state = b == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
      return (types & (b == '{' ? T_OBJECT : T_ARRAY)) != 0;
    case '"':
      c->in_key = 0;
      c->state = S_STR;
      return (types & T_STRING) != 0;
    case '-':
      c->state = S_NUM_MINUS;
      return (types & (T_INTEGER | T_NUMBER)) != 0;
    case '0':
      c->state = S_NUM_ZERO;
      return (types & (T_INTEGER | T_NUMBER)) != 0;
    case 't':
    case 'f':
    case 'n':
      c->lit = b;
      c->aux = 1;
      c->state = S_LIT;
      return (types & (b == 'n' ? T_NULL : T_BOOLEAN)) != 0;
    default:
      if (b >= '1' && b <= '9')
        {
          c->state = S_NUM_INT;
          return (types & (T_INTEGER | T_NUMBER)) != 0;
        }
      return FALSE;
    }
}

static gboolean
close_container (BlnJsonConstraint *c, guint8 b)
{
  guint8 want = b == '}' ? '{' : '[';

  if (c->depth == 0 || c->stack[c->depth - 1] != want)
    return FALSE;
  if (c->schema != NULL)
    {
      const BlnJsonFrame *f = &c->frames[c->depth - 1];
      const Node *n = node_of (c, f->node);

      if (b == '}' && (n->required & ~f->seen) != 0)
        return FALSE;
      if (b == ']' && f->count < n->min_items)
        return FALSE;
    }
  c->depth--;
  end_value (c);
  return TRUE;
}

/* Schema mode: whether another property may follow in the open object. */
static gboolean
more_keys (const BlnJsonConstraint *c)
{
  const BlnJsonFrame *f = &c->frames[c->depth - 1];
  const Node *n = node_of (c, f->node);
  guint64 all = n->n_props >= 64 ? ~G_GUINT64_CONSTANT (0) : BIT (n->n_props) - 1;

  return !n->closed || (all & ~(f->seen | n->dead)) != 0;
}

/* Schema mode: a key begins (its opening quote was read). */
static gboolean
key_start (BlnJsonConstraint *c)
{
  const BlnJsonFrame *f = &c->frames[c->depth - 1];
  const Node *n = node_of (c, f->node);
  guint64 all = n->n_props >= 64 ? ~G_GUINT64_CONSTANT (0) : BIT (n->n_props) - 1;

  c->kfree = !n->closed;
  /* a free key is checked against every name, to catch repeats */
  c->mmask = c->kfree ? all : all & ~(f->seen | n->dead);
  c->mpos = 0;
  return c->mmask != 0 || c->kfree;
}

/* Schema mode: byte @b of a key's text (not its closing quote). */
static gboolean
key_byte (BlnJsonConstraint *c, guint8 b)
{
  const Node *n = node_of (c, c->frames[c->depth - 1].node);
  guint64 m = 0;
  int i;

  if (c->kfree && b == '\\' && n->n_props > 0)
    return FALSE;   /* an escaped free key could spell a property's name */
  for (i = 0; i < n->n_props; i++)
    if ((c->mmask & BIT (i)) && n->key_len[i] > c->mpos && (guint8) n->keys[i][c->mpos] == b)
      m |= BIT (i);
  c->mmask = m;
  if (c->mpos < G_MAXUINT16)
    c->mpos++;
  return m != 0 || c->kfree;
}

/* Schema mode: a key's closing quote: find its property. */
static gboolean
key_end (BlnJsonConstraint *c)
{
  BlnJsonFrame *f = &c->frames[c->depth - 1];
  const Node *n = node_of (c, f->node);
  int i;

  for (i = 0; i < n->n_props; i++)
    if ((c->mmask & BIT (i)) && n->key_len[i] == c->mpos)
      {
        if ((f->seen | n->dead) & BIT (i))
          return FALSE;
        f->seen |= BIT (i);
        c->vnode = n->prop[i];
        return TRUE;
      }
  if (!c->kfree || node_of (c, n->extra)->min == NULL)
    return FALSE;
  c->vnode = n->extra;
  return TRUE;
}

static gboolean
step (BlnJsonConstraint *c, guint8 b)
{
  if (c->schema != NULL && c->in_key
      && (c->state == S_STR || c->state == S_STR_ESC || c->state == S_STR_U
          || c->state == S_STR_UTF8))
    {
      if (c->state == S_STR && b == '"')
        {
          if (!key_end (c))
            return FALSE;
        }
      else if (!key_byte (c, b))
        return FALSE;
    }
  switch (c->state)
    {
    case S_VALUE:
    case S_OBJ_FIRST:
    case S_OBJ_KEY:
    case S_COLON:
    case S_ARR_FIRST:
    case S_AFTER:
      if (is_ws (b))
        return ++c->spaces <= BLN_JSON_MAX_SPACE;
      c->spaces = 0;
      switch (c->state)
        {
        case S_VALUE:
          return start_value (c, b);
        case S_OBJ_FIRST:
          if (b == '}')
            return close_container (c, b);
          /* fall through */
        case S_OBJ_KEY:
          if (b != '"')
            return FALSE;
          c->in_key = 1;
          c->state = S_STR;
          return c->schema == NULL || key_start (c);
        case S_COLON:
          if (b != ':')
            return FALSE;
          c->state = S_VALUE;
          return TRUE;
        case S_ARR_FIRST:
          if (b == ']')
            return close_container (c, b);
          if (c->schema != NULL)
            {
              BlnJsonFrame *f = &c->frames[c->depth - 1];
              const Node *n = node_of (c, f->node);

              if (n->max_items == 0)
                return FALSE;
              f->count = 1;
              c->vnode = n->items;
            }
          return start_value (c, b);
        default:   /* S_AFTER */
          if (b == ',')
            {
              gboolean obj = c->stack[c->depth - 1] == '{';

              if (c->schema != NULL)
                {
                  BlnJsonFrame *f = &c->frames[c->depth - 1];
                  const Node *n = node_of (c, f->node);

                  if (obj && !more_keys (c))
                    return FALSE;
                  if (!obj)
                    {
                      if (n->max_items >= 0 && f->count >= n->max_items)
                        return FALSE;
                      if (f->count < G_MAXUINT16)
                        f->count++;
                      c->vnode = n->items;
                    }
                }
              c->state = obj ? S_OBJ_KEY : S_VALUE;
              return TRUE;
            }
          if (b == '}' || b == ']')
            return close_container (c, b);
          return FALSE;
        }
    case S_STR:
      if (b == '"')
        {
          if (c->in_key)
            c->state = S_COLON;
          else
            end_value (c);
          return TRUE;
        }
      if (b == '\\')
        {
          c->state = S_STR_ESC;
          return TRUE;
        }
      if (b < 0x20)
        return FALSE;
      if (b < 0x80)
        return TRUE;
      /* a UTF-8 lead byte: the ranges of RFC 3629's table */
      c->utf8_min = 0x80;
      c->utf8_max = 0xBF;
      if (b >= 0xC2 && b <= 0xDF)
        c->aux = 1;
      else if (b >= 0xE0 && b <= 0xEF)
        {
          c->aux = 2;
          if (b == 0xE0)
            c->utf8_min = 0xA0;
          else if (b == 0xED)
            c->utf8_max = 0x9F;
        }
      else if (b >= 0xF0 && b <= 0xF4)
        {
          c->aux = 3;
          if (b == 0xF0)
            c->utf8_min = 0x90;
          else if (b == 0xF4)
            c->utf8_max = 0x8F;
        }
      else
        return FALSE;
      c->state = S_STR_UTF8;
      return TRUE;
    case S_STR_UTF8:
      if (b < c->utf8_min || b > c->utf8_max)
        return FALSE;
      c->utf8_min = 0x80;
      c->utf8_max = 0xBF;
      if (--c->aux == 0)
        c->state = S_STR;
      return TRUE;
    case S_STR_ESC:
      if (b == 'u')
        {
          c->aux = 4;
          c->state = S_STR_U;
          return TRUE;
        }
      if (strchr ("\"\\/bfnrt", b) == NULL || b == 0)
        return FALSE;
      c->state = S_STR;
      return TRUE;
    case S_STR_U:
      if (!g_ascii_isxdigit (b))
        return FALSE;
      if (--c->aux == 0)
        c->state = S_STR;
      return TRUE;
    case S_NUM_MINUS:
      if (b == '0')
        c->state = S_NUM_ZERO;
      else if (b >= '1' && b <= '9')
        c->state = S_NUM_INT;
      else
        return FALSE;
      return TRUE;
    case S_NUM_ZERO:
    case S_NUM_INT:
      if (b >= '0' && b <= '9' && c->state == S_NUM_INT)
        return TRUE;
      if (b == '.' || b == 'e' || b == 'E')
        {
          if (c->schema != NULL && c->int_only)
            return FALSE;
          c->state = b == '.' ? S_NUM_DOT : S_NUM_E;
          return TRUE;
        }
      end_value (c);
      return c->state != S_DONE && step (c, b);
    case S_NUM_DOT:
      if (b < '0' || b > '9')
        return FALSE;
      c->state = S_NUM_FRAC;
      return TRUE;
    case S_NUM_FRAC:
      if (b >= '0' && b <= '9')
        return TRUE;
      if (b == 'e' || b == 'E')
        {
          c->state = S_NUM_E;
          return TRUE;
        }
      end_value (c);
      return c->state != S_DONE && step (c, b);
    case S_NUM_E:
      if (b == '+' || b == '-')
        {
          c->state = S_NUM_ESIGN;
          return TRUE;
        }
      /* fall through */
    case S_NUM_ESIGN:
      if (b < '0' || b > '9')
        return FALSE;
      c->state = S_NUM_EXP;
      return TRUE;
    case S_NUM_EXP:
      if (b >= '0' && b <= '9')
        return TRUE;
      end_value (c);
      return c->state != S_DONE && step (c, b);
    case S_LIT:
      {
        const char *lit = literal_text (c->lit);

        if (b != (guint8) lit[c->aux])
          return FALSE;
        if (lit[++c->aux] == '\0')
          end_value (c);
        return TRUE;
      }
    case S_ENUM:
      {
        const Node *n = node_of (c, c->vnode);
        guint64 m = 0;
        int i;

        for (i = 0; i < n->n_enum; i++)
          if ((c->mmask & BIT (i)) && n->enum_len[i] > c->mpos
              && (guint8) n->enum_text[i][c->mpos] == b)
            m |= BIT (i);
        if (m != 0)
          {
            c->mmask = m;
            c->mpos++;
            enum_settle (c);
            return TRUE;
          }
        if (!c->mdone)
          return FALSE;
        end_value (c);   /* a number that ended: the byte belongs to what follows */
        return c->state != S_DONE && step (c, b);
      }
    case S_DONE:
    default:
      return FALSE;
    }
}

gboolean
bln_json_constraint_feed (BlnJsonConstraint *c, const char *bytes, gsize n)
{
  gsize i;

  for (i = 0; i < n; i++)
    if (!step (c, (guint8) bytes[i]))
      return FALSE;
  return TRUE;
}

gboolean
bln_json_constraint_accepts (const BlnJsonConstraint *c, const char *bytes, gsize n)
{
  BlnJsonConstraint copy;

  if (n == 0)
    return FALSE;
  /* most candidates fail at their first byte: try that before copying all */
  if (c->schema != NULL)
    {
      BlnJsonConstraint head;

      memcpy (&head, c, G_STRUCT_OFFSET (BlnJsonConstraint, frames));
      memcpy (head.frames, c->frames, sizeof (BlnJsonFrame) * MIN (c->depth + 1,
                                                                   BLN_JSON_MAX_DEPTH));
      if (!step (&head, (guint8) bytes[0]))
        return FALSE;
      if (n == 1)
        return TRUE;
      return bln_json_constraint_feed (&head, bytes + 1, n - 1);
    }
  copy = *c;
  return bln_json_constraint_feed (&copy, bytes, n);
}

/* A key for a free property that names none of @n's properties. */
static void
append_free_key (const Node *n, GString *out)
{
  g_autoptr (GString) k = g_string_new (NULL);
  int i;

  for (;;)
    {
      for (i = 0; i < n->n_props; i++)
        if (g_str_equal (n->keys[i], k->str))
          break;
      if (i == n->n_props)
        break;
      g_string_append_c (k, '_');
    }
  g_string_append_printf (out, "\"%s\":", k->str);
}

/* Schema mode, inside an object: the next key to write, or '}'. @comma:
 * a value came before. */
static void
next_member (const BlnJsonConstraint *c, gboolean comma, GString *out)
{
  const BlnJsonFrame *f = &c->frames[c->depth - 1];
  const Node *n = node_of (c, f->node);
  int i;

  for (i = 0; i < n->n_props; i++)
    if ((n->required & BIT (i)) && !(f->seen & BIT (i)))
      {
        g_string_append_printf (out, "%s\"%s\":", comma ? "," : "", n->keys[i]);
        return;
      }
  g_string_append_c (out, '}');
}

/* One piece of the ending from state @c (which is not complete). */
static void
closing_piece (const BlnJsonConstraint *c, GString *out)
{
  int i;

  if (c->schema != NULL && c->in_key
      && (c->state == S_STR || c->state == S_STR_ESC || c->state == S_STR_U
          || c->state == S_STR_UTF8))
    {
      const Node *n = node_of (c, c->frames[c->depth - 1].node);
      guint64 taken = c->frames[c->depth - 1].seen | n->dead;
      int best = -1;

      /* finish the name of a property not written yet: a required one
       * first, in their order (as next_member() and S_OBJ_KEY choose, so
       * that the ending stays the same while it is being written) */
      for (i = 0; i < n->n_props && best < 0; i++)
        if ((c->mmask & BIT (i)) && !(taken & BIT (i)) && (n->required & BIT (i)))
          best = i;
      for (i = 0; i < n->n_props && best < 0; i++)
        if ((c->mmask & BIT (i)) && !(taken & BIT (i)))
          best = i;
      if (best >= 0)
        {
          g_string_append_len (out, n->keys[best] + c->mpos, n->key_len[best] - c->mpos);
          g_string_append_c (out, '"');
          return;
        }
      if (c->state == S_STR)
        {
          /* a free name: not one of the written properties' */
          for (i = 0; i < n->n_props; i++)
            if ((c->mmask & BIT (i)) && n->key_len[i] == c->mpos)
              break;
          g_string_append_c (out, i < n->n_props ? '_' : '"');
          return;
        }
    }
  switch (c->state)
    {
    case S_VALUE:
      if (c->schema != NULL)
        g_string_append (out, node_of (c, c->vnode)->min);
      else
        g_string_append (out, c->object_only && c->depth == 0 ? "{}" : "null");
      break;
    case S_OBJ_FIRST:
      if (c->schema != NULL)
        next_member (c, FALSE, out);
      else
        g_string_append_c (out, '}');
      break;
    case S_OBJ_KEY:
      if (c->schema != NULL)
        {
          const BlnJsonFrame *f = &c->frames[c->depth - 1];
          const Node *n = node_of (c, f->node);

          for (i = 0; i < n->n_props; i++)
            if (!((f->seen | n->dead) & BIT (i))
                && ((n->required & BIT (i)) || (n->required & ~f->seen) == 0))
              break;
          if (i < n->n_props)
            g_string_append_printf (out, "\"%s\":", n->keys[i]);
          else
            append_free_key (n, out);
        }
      else
        g_string_append (out, "\"\":");
      break;
    case S_COLON:
      g_string_append_c (out, ':');
      break;
    case S_ARR_FIRST:
    case S_AFTER:
      if (c->stack[c->depth - 1] == '{')
        {
          if (c->schema != NULL)
            next_member (c, TRUE, out);
          else
            g_string_append_c (out, '}');
        }
      else if (c->schema != NULL
               && c->frames[c->depth - 1].count
                    < node_of (c, c->frames[c->depth - 1].node)->min_items)
        {
          const Node *n = node_of (c, c->frames[c->depth - 1].node);

          if (c->state == S_AFTER)
            g_string_append_c (out, ',');
          g_string_append (out, node_of (c, n->items)->min);
        }
      else
        g_string_append_c (out, ']');
      break;
    case S_STR:
      g_string_append_c (out, '"');
      break;
    case S_STR_UTF8:
      for (i = 0; i < c->aux; i++)
        g_string_append_c (out, (char) (i == 0 ? c->utf8_min : 0x80));
      break;
    case S_STR_ESC:
      g_string_append_c (out, 'n');
      break;
    case S_STR_U:
      for (i = 0; i < c->aux; i++)
        g_string_append_c (out, '0');
      break;
    case S_NUM_MINUS:
    case S_NUM_DOT:
    case S_NUM_E:
    case S_NUM_ESIGN:
      g_string_append_c (out, '0');
      break;
    case S_NUM_ZERO:
    case S_NUM_INT:
    case S_NUM_FRAC:
    case S_NUM_EXP:
      {
        /* the number ends where its container goes on */
        BlnJsonConstraint after = *c;

        end_value (&after);
        closing_piece (&after, out);
        break;
      }
    case S_LIT:
      g_string_append (out, literal_text (c->lit) + c->aux);
      break;
    case S_ENUM:
      {
        const Node *n = node_of (c, c->vnode);
        int best = -1;

        if (c->mdone)
          {
            BlnJsonConstraint after = *c;

            end_value (&after);
            closing_piece (&after, out);
            break;
          }
        for (i = 0; i < n->n_enum; i++)
          if ((c->mmask & BIT (i)) && (best < 0 || n->enum_len[i] < n->enum_len[best]))
            best = i;
        if (best >= 0)
          g_string_append (out, n->enum_text[best] + c->mpos);
        break;
      }
    default:
      break;
    }
}

void
bln_json_constraint_closing (const BlnJsonConstraint *c, GString *out)
{
  BlnJsonConstraint *cur = g_new (BlnJsonConstraint, 1);
  g_autoptr (GString) piece = g_string_new (NULL);
  int guard;

  *cur = *c;
  for (guard = 0; guard < 100000 && !bln_json_constraint_complete (cur); guard++)
    {
      g_string_truncate (piece, 0);
      closing_piece (cur, piece);
      if (piece->len == 0 || !bln_json_constraint_feed (cur, piece->str, piece->len))
        {
          g_warning ("json constraint: no closing from state %d (depth %d)", cur->state,
                     cur->depth);
          break;
        }
      g_string_append_len (out, piece->str, (gssize) piece->len);
    }
  g_free (cur);
}
