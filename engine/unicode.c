/* unicode.c — UTF-8 scanning and the GPT-2 byte alphabet. */
#include "unicode.h"

/* Bytes that GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. The other 68 bytes
 * are numbered in byte order from U+0100. */
static gboolean
byte_is_kept (guint8 b)
{
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

gunichar
bln_byte_to_gpt2 (guint8 b)
{
  guint n = 0;
  guint i;

  if (byte_is_kept (b))
    return b;
  for (i = 0; i < b; i++)
    if (!byte_is_kept ((guint8) i))
      n++;
  return 0x100 + n;
}

int
bln_gpt2_to_byte (gunichar c)
{
  /* The 68 remapped bytes in order: 0x00-0x20, 0x7f-0xa0, 0xad. */
  guint n;

  if (c < 0x100)
    return byte_is_kept ((guint8) c) ? (int) c : -1;
  if (c >= 0x100 + 68)
    return -1;
  n = c - 0x100;
  if (n <= 0x20)
    return (int) n;
  if (n <= 0x20 + 34)
    return (int) (0x7f + n - 0x21);
  return 0xad;
}

int
bln_utf8_scan (const guint8 *p, gsize n, gunichar *c)
{
  guint8 b = p[0];
  int need;
  gunichar cp;
  guint8 lo = 0x80, hi = 0xbf;
  int i;

  if (b < 0x80)
    {
      *c = b;
      return 1;
    }
  if (b >= 0xc2 && b <= 0xdf)
    {
      need = 2;
      cp = b & 0x1f;
    }
  else if (b >= 0xe0 && b <= 0xef)
    {
      need = 3;
      cp = b & 0x0f;
      if (b == 0xe0)
        lo = 0xa0;
      else if (b == 0xed)
        hi = 0x9f;
    }
  else if (b >= 0xf0 && b <= 0xf4)
    {
      need = 4;
      cp = b & 0x07;
      if (b == 0xf0)
        lo = 0x90;
      else if (b == 0xf4)
        hi = 0x8f;
    }
  else
    return -1;

  for (i = 1; i < need; i++)
    {
      guint8 cb;

      if ((gsize) i >= n)
        return 0;
      cb = p[i];
      if (cb < lo || cb > hi)
        return -i;
      lo = 0x80;
      hi = 0xbf;
      cp = (cp << 6) | (cb & 0x3f);
    }
  *c = cp;
  return need;
}

void
bln_utf8_append_lossy (GString *out, const char *p, gsize n)
{
  gsize i = 0;

  while (i < n)
    {
      gunichar c;
      int r = bln_utf8_scan ((const guint8 *) p + i, n - i, &c);

      if (r > 0)
        {
          g_string_append_len (out, p + i, r);
          i += r;
        }
      else
        {
          g_string_append (out, "\xef\xbf\xbd");
          /* An incomplete tail is one maximal subpart: all of it. */
          i += r < 0 ? (gsize) -r : n - i;
        }
    }
}
