/* detok.c — the incremental detokenizer (see tokenizer.h).
 *
 * Token bytes are appended to a pending buffer; whatever prefix of it is made of whole
 * characters is emitted. A valid but unfinished sequence at the end waits for the next
 * token; a sequence that can no longer become valid is emitted as U+FFFD at once, since
 * no later byte can repair it. */
#include <string.h>
#include "tokenizer-private.h"
#include "unicode.h"

struct _BlnDetok {
  const BlnTokenizer *tok;
  GString *pending;
  gboolean at_start;   /* nothing emitted yet: SPM drops one leading space */
};

BlnDetok *
bln_detok_new (const BlnTokenizer *tok)
{
  BlnDetok *d;

  g_return_val_if_fail (tok != NULL, NULL);
  d = g_new0 (BlnDetok, 1);
  d->tok = tok;
  d->pending = g_string_new (NULL);
  d->at_start = TRUE;
  return d;
}

void
bln_detok_free (BlnDetok *detok)
{
  if (detok == NULL)
    return;
  g_string_free (detok->pending, TRUE);
  g_free (detok);
}

void
bln_detok_reset (BlnDetok *detok)
{
  g_string_truncate (detok->pending, 0);
  detok->at_start = TRUE;
}

gsize
bln_detok_push_append (BlnDetok *detok, int32_t id, GString *out)
{
  const BlnTokenizer *tok = detok->tok;
  const char *b;
  gsize n, i = 0, len0 = out->len;
  GString *p = detok->pending;

  g_return_val_if_fail (out != NULL, 0);
  if (id < 0 || id >= tok->n_vocab)
    return 0;
  b = tok->bytes[id];
  n = tok->bytes_len[id];
  if (n == 0)
    return 0;
  if (detok->at_start)
    {
      detok->at_start = FALSE;
      if (tok->spm_prefix && b[0] == ' ')
        {
          b++;
          n--;
        }
    }
  g_string_append_len (p, b, n);

  while (i < p->len)
    {
      gunichar c;
      int r = bln_utf8_scan ((const guint8 *) p->str + i, p->len - i, &c);

      if (r == 0)
        break;
      if (r > 0)
        {
          g_string_append_len (out, p->str + i, r);
          i += r;
        }
      else
        {
          g_string_append (out, "\xef\xbf\xbd");
          i += -r;
        }
    }
  g_string_erase (p, 0, i);
  return out->len - len0;
}

char *
bln_detok_push (BlnDetok *detok, int32_t id)
{
  GString *out = g_string_new (NULL);

  bln_detok_push_append (detok, id, out);
  return g_string_free (out, FALSE);
}

char *
bln_detok_flush (BlnDetok *detok)
{
  GString *out = g_string_new (NULL);

  bln_utf8_append_lossy (out, detok->pending->str, detok->pending->len);
  bln_detok_reset (detok);
  return g_string_free (out, FALSE);
}
