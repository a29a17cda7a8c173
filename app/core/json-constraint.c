/* json-constraint.c — see json-constraint.h. */
#include "json-constraint.h"

#include <string.h>

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
  S_DONE,
};

void
bln_json_constraint_init (BlnJsonConstraint *c, gboolean object_only)
{
  memset (c, 0, sizeof *c);
  c->state = S_VALUE;
  c->object_only = object_only ? 1 : 0;
}

gboolean
bln_json_constraint_complete (const BlnJsonConstraint *c)
{
  return c->state == S_DONE;
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

/* Starts a value with byte @b. */
static gboolean
start_value (BlnJsonConstraint *c, guint8 b)
{
  if (c->object_only && c->depth == 0 && b != '{')
    return FALSE;
  switch (b)
    {
    case '{':
    case '[':
      if (c->depth >= BLN_JSON_MAX_DEPTH)
        return FALSE;
      c->stack[c->depth++] = b;
      c->state = b == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
      return TRUE;
    case '"':
      c->in_key = 0;
      c->state = S_STR;
      return TRUE;
    case '-':
      c->state = S_NUM_MINUS;
      return TRUE;
    case '0':
      c->state = S_NUM_ZERO;
      return TRUE;
    case 't':
    case 'f':
    case 'n':
      c->lit = b;
      c->aux = 1;
      c->state = S_LIT;
      return TRUE;
    default:
      if (b >= '1' && b <= '9')
        {
          c->state = S_NUM_INT;
          return TRUE;
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
  c->depth--;
  end_value (c);
  return TRUE;
}

static gboolean
step (BlnJsonConstraint *c, guint8 b)
{
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
          return TRUE;
        case S_COLON:
          if (b != ':')
            return FALSE;
          c->state = S_VALUE;
          return TRUE;
        case S_ARR_FIRST:
          if (b == ']')
            return close_container (c, b);
          return start_value (c, b);
        default:   /* S_AFTER */
          if (b == ',')
            {
              c->state = c->stack[c->depth - 1] == '{' ? S_OBJ_KEY : S_VALUE;
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
      if (b == '.')
        {
          c->state = S_NUM_DOT;
          return TRUE;
        }
      if (b == 'e' || b == 'E')
        {
          c->state = S_NUM_E;
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
  BlnJsonConstraint copy = *c;

  return n > 0 && bln_json_constraint_feed (&copy, bytes, n);
}

void
bln_json_constraint_closing (const BlnJsonConstraint *c, GString *out)
{
  int i;

  switch (c->state)
    {
    case S_VALUE:
      g_string_append (out, c->object_only && c->depth == 0 ? "{}" : "null");
      break;
    case S_OBJ_KEY:
      g_string_append (out, "\"\":null");
      break;
    case S_COLON:
      g_string_append (out, ":null");
      break;
    case S_STR_UTF8:
      for (i = 0; i < c->aux; i++)
        g_string_append_c (out, (char) (i == 0 ? c->utf8_min : 0x80));
      g_string_append (out, c->in_key ? "\":null" : "\"");
      break;
    case S_STR_ESC:
      g_string_append (out, c->in_key ? "n\":null" : "n\"");
      break;
    case S_STR_U:
      for (i = 0; i < c->aux; i++)
        g_string_append_c (out, '0');
      /* fall through */
    case S_STR:
      g_string_append (out, c->in_key ? "\":null" : "\"");
      break;
    case S_NUM_MINUS:
    case S_NUM_DOT:
    case S_NUM_E:
    case S_NUM_ESIGN:
      g_string_append_c (out, '0');
      break;
    case S_LIT:
      g_string_append (out, literal_text (c->lit) + c->aux);
      break;
    default:
      break;
    }
  if (c->state == S_DONE)
    return;
  for (i = c->depth; i > 0; i--)
    g_string_append_c (out, c->stack[i - 1] == '{' ? '}' : ']');
}
