/* reasoning.c — see reasoning.h. */
#include "reasoning.h"

#include <string.h>

#define OPEN_TAG "<think>"
#define CLOSE_TAG "</think>"

typedef enum {
  STATE_START,     /* nothing but whitespace yet: an opening tag may come */
  STATE_INSIDE,    /* in the thinking block */
  STATE_GAP,       /* just after the closing tag: skipping whitespace */
  STATE_ANSWER,    /* plain answer text to the end */
} State;

struct _BlnReasoningSplit {
  State state;
  GString *held;   /* bytes not classified yet */
};

BlnReasoningSplit *
bln_reasoning_split_new (gboolean starts_inside)
{
  BlnReasoningSplit *rs = g_new0 (BlnReasoningSplit, 1);

  rs->state = starts_inside ? STATE_INSIDE : STATE_START;
  rs->held = g_string_new (NULL);
  return rs;
}

void
bln_reasoning_split_free (BlnReasoningSplit *rs)
{
  if (rs == NULL)
    return;
  g_string_free (rs->held, TRUE);
  g_free (rs);
}

gboolean
bln_reasoning_split_in_reasoning (BlnReasoningSplit *rs)
{
  return rs->state == STATE_START || rs->state == STATE_INSIDE;
}

static gboolean
is_space (char c)
{
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Longest suffix of @s (length @n) that is a proper prefix of @tag. */
static gsize
partial_suffix (const char *s, gsize n, const char *tag)
{
  gsize tl = strlen (tag), k;

  for (k = MIN (n, tl - 1); k > 0; k--)
    if (memcmp (s + n - k, tag, k) == 0)
      return k;
  return 0;
}

/* Processes rs->held as far as it can. */
static void
drain (BlnReasoningSplit *rs, GString *reasoning, GString *content)
{
  for (;;)
    {
      GString *h = rs->held;

      if (h->len == 0)
        return;
      switch (rs->state)
        {
        case STATE_START:
          {
            gsize i = 0, rest;

            while (i < h->len && is_space (h->str[i]))
              i++;
            rest = h->len - i;
            if (rest >= strlen (OPEN_TAG) && memcmp (h->str + i, OPEN_TAG, strlen (OPEN_TAG)) == 0)
              {
                g_string_erase (h, 0, (gssize) (i + strlen (OPEN_TAG)));
                rs->state = STATE_INSIDE;
                continue;
              }
            if (rest < strlen (OPEN_TAG) && memcmp (h->str + i, OPEN_TAG, rest) == 0)
              return;   /* still undecided (whitespace, or a piece of the tag) */
            rs->state = STATE_ANSWER;
            continue;
          }
        case STATE_INSIDE:
          {
            const char *end = memmem (h->str, h->len, CLOSE_TAG, strlen (CLOSE_TAG));
            gsize keep;

            if (end != NULL)
              {
                g_string_append_len (reasoning, h->str, end - h->str);
                g_string_erase (h, 0, (gssize) (end - h->str + strlen (CLOSE_TAG)));
                rs->state = STATE_GAP;
                continue;
              }
            keep = partial_suffix (h->str, h->len, CLOSE_TAG);
            g_string_append_len (reasoning, h->str, (gssize) (h->len - keep));
            g_string_erase (h, 0, (gssize) (h->len - keep));
            return;
          }
        case STATE_GAP:
          {
            gsize i = 0;

            while (i < h->len && is_space (h->str[i]))
              i++;
            g_string_erase (h, 0, (gssize) i);
            if (h->len > 0)
              rs->state = STATE_ANSWER;
            else
              return;
            continue;
          }
        case STATE_ANSWER:
        default:
          g_string_append_len (content, h->str, (gssize) h->len);
          g_string_truncate (h, 0);
          return;
        }
    }
}

void
bln_reasoning_split_push (BlnReasoningSplit *rs, const char *text, gssize len, GString *reasoning,
                          GString *content)
{
  if (text == NULL)
    return;
  g_string_append_len (rs->held, text, len < 0 ? (gssize) strlen (text) : len);
  drain (rs, reasoning, content);
}

void
bln_reasoning_split_finish (BlnReasoningSplit *rs, GString *reasoning, GString *content)
{
  drain (rs, reasoning, content);
  if (rs->held->len == 0)
    return;
  if (rs->state == STATE_INSIDE)
    g_string_append_len (reasoning, rs->held->str, (gssize) rs->held->len);
  else if (rs->state == STATE_START)
    {
      /* only whitespace or a cut-off opening tag: that is the whole answer */
      g_string_append_len (content, rs->held->str, (gssize) rs->held->len);
    }
  g_string_truncate (rs->held, 0);
  rs->state = STATE_ANSWER;
}

gboolean
bln_reasoning_prompt_opens_block (const char *prompt)
{
  const char *open = NULL, *p, *close;
  gsize plen;

  if (prompt == NULL)
    return FALSE;
  plen = strlen (prompt);
  /* the last opening tag */
  for (p = prompt; (p = strstr (p, OPEN_TAG)) != NULL; p += strlen (OPEN_TAG))
    open = p;
  if (open == NULL)
    return FALSE;
  close = strstr (open, CLOSE_TAG);
  if (close != NULL)
    return FALSE;
  for (p = open + strlen (OPEN_TAG); p < prompt + plen; p++)
    if (!is_space (*p))
      return FALSE;
  return TRUE;
}
