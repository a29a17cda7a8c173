/* fuzz-rules.c — libFuzzer target for the safety rule engine and the
 * streaming output filter.
 *
 * Input: rule lines, a blank line, then the text. Each rule line is a kind
 * letter and a pattern: 'w' word, 'i' word ignoring case, 'f' word ignoring
 * case and width, 'r' regex, 'c' regex ignoring case; the second character
 * picks the action ('b' block, 'm' mask, else log). Invalid rules are refused
 * (that is tested too). Checks: every match lies inside the text on character
 * boundaries; masking keeps the text valid UTF-8; and, for word rules on
 * valid UTF-8, streaming the text in pieces emits what scanning the whole
 * text predicts: the same masked text when nothing blocks, else a prefix of
 * it that ends at or before the start of the first blocked phrase. */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "moderation.h"
#include "rules.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static char *
expected (BlnRuleSet *set, const char *text, gsize len)
{
  g_autoptr (GArray) m = bln_rule_set_scan (set, text, len);
  gsize end = len;

  for (guint i = 0; i < m->len; i++)
    if (g_array_index (m, BlnRuleMatch, i).action == BLN_RULE_BLOCK)
      {
        end = g_array_index (m, BlnRuleMatch, i).start;
        g_array_set_size (m, i);
        break;
      }
  return bln_rule_mask_text (text, end, m);
}

/* Whether there is a block match; its start, the first by start, in @start. */
static gboolean
first_block (BlnRuleSet *set, const char *text, gsize len, gsize *start)
{
  g_autoptr (GArray) m = bln_rule_set_scan (set, text, len);

  for (guint i = 0; i < m->len; i++)
    if (g_array_index (m, BlnRuleMatch, i).action == BLN_RULE_BLOCK)
      {
        *start = g_array_index (m, BlnRuleMatch, i).start;
        return TRUE;
      }
  return FALSE;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *buf = g_strndup ((const char *) data, size);
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GArray) m = NULL;
  g_autofree char *masked = NULL;
  gboolean regex = FALSE;
  char *text = strstr (buf, "\n\n");
  const char *valid_end = NULL;
  char **lines;
  gsize len;

  if (!text || size > 8192)
    return 0;
  *text = '\0';
  text += 2;
  len = strlen (text);
  lines = g_strsplit (buf, "\n", 64);
  for (char **l = lines; *l; l++)
    {
      BlnRule r = { 0 };
      char k = (*l)[0];

      if (!k || !(*l)[1])
        continue;
      r.id = l - lines + 1;
      r.kind = k == 'r' || k == 'c' ? BLN_RULE_REGEX : BLN_RULE_WORD;
      r.nocase = k == 'i' || k == 'f' || k == 'c';
      r.nowidth = k == 'f';
      r.action = (*l)[1] == 'b' ? BLN_RULE_BLOCK : (*l)[1] == 'm' ? BLN_RULE_MASK : BLN_RULE_LOG;
      r.scope = BLN_RULE_BOTH;
      r.pattern = *l + 2;
      if (bln_rule_set_add (set, &r, NULL) && r.kind == BLN_RULE_REGEX)
        regex = TRUE;
    }
  g_strfreev (lines);

  g_utf8_validate_len (text, len, &valid_end);
  m = bln_rule_set_scan (set, text, len);
  for (guint i = 0; i < m->len; i++)
    {
      const BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, i);
      /* inside the valid prefix (the scan stops at invalid UTF-8), on
       * character boundaries */
      g_assert_true (x->start < x->end && x->end <= (gsize) (valid_end - text));
      g_assert_true (((guint8) text[x->start] & 0xC0) != 0x80);
      g_assert_true (text + x->end == valid_end || ((guint8) text[x->end] & 0xC0) != 0x80);
    }
  masked = bln_rule_mask_text (text, len, m);
  if (g_utf8_validate (text, len, NULL))
    g_assert_true (g_utf8_validate (masked, -1, NULL));

  /* stream in pieces whose sizes come from the text itself */
  {
    g_autoptr (BlnStreamFilter) f = bln_stream_filter_new (set, BLN_OUTPUT_STOP, 8);
    g_autoptr (GString) out = g_string_new (NULL);
    gsize at = 0;
    gboolean go = TRUE;

    while (at < len && go)
      {
        gsize n = MIN (len - at, 1 + ((guint8) text[at] % 7));
        go = bln_stream_filter_push (f, text + at, n, out);
        g_assert_true (g_utf8_validate (out->str, out->len, NULL));
        at += n;
      }
    if (go)
      bln_stream_filter_finish (f, out);
    g_assert_true (g_utf8_validate (out->str, out->len, NULL));
    if (!regex && g_utf8_validate (text, len, NULL))
      {
        g_autofree char *want = expected (set, text, len);
        gsize block_start = 0;

        if (!first_block (set, text, len, &block_start))
          g_assert_cmpstr (out->str, ==, want);  /* no block: masks exactly as a whole */
        else
          {
            /* Stopped, and what went out is the text as masked whole, cut at
             * some character boundary at or before the start of the first
             * blocked phrase: never any of it, even when a shorter blocked
             * word inside or after it completed first. (It may stop short of
             * that start, where a longer word could still have been under way
             * when the stream stopped.) */
            gboolean found = FALSE;
            g_assert_false (go);
            for (gsize k = 0; k <= block_start && !found; k++)
              {
                g_autofree char *cand = NULL;
                if (((guint8) text[k] & 0xC0) == 0x80)
                  continue;
                cand = bln_rule_mask_text (text, k, m);
                found = strcmp (cand, out->str) == 0;
              }
            g_assert_true (found);
          }
      }
  }
  return 0;
}
