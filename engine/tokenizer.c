/* tokenizer.c — encoding and decoding (see tokenizer.h).
 *
 * Sections: vocabulary index and merge table, pre-tokenizer regexes, added-token
 * splitting, the two merge loops (by rank and by score), the public encode/decode API.
 * Building a tokenizer from a file is in tokenizer-load.c.
 */
#include <string.h>
#include "bln-error.h"
#include "tokenizer-private.h"
#include "unicode.h"

/* The pre-tokenizer regex of GPT-2 (HF ByteLevel with use_regex=true). */
const char bln_tokenizer_gpt2_regex[] =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---------------------------------------------------------------------------------------
 * Vocabulary index: open addressing over token texts, FNV-1a hashed.
 */

static guint32
hash_bytes (const char *p, gsize n)
{
  guint32 h = 2166136261u;
  gsize i;

  for (i = 0; i < n; i++)
    {
      h ^= (guint8) p[i];
      h *= 16777619u;
    }
  return h;
}

int32_t
bln_tokenizer_lookup (const BlnTokenizer *tok, const char *text, gsize len)
{
  guint32 i;

  if (tok->index == NULL)
    return -1;
  for (i = hash_bytes (text, len) & tok->index_mask;; i = (i + 1) & tok->index_mask)
    {
      int32_t id = tok->index[i];

      if (id < 0)
        return -1;
      if (tok->text_len[id] == len && memcmp (tok->text[id], text, len) == 0)
        return id;
    }
}

void
bln_tokenizer_build_index (BlnTokenizer *tok)
{
  guint32 size = 16;
  int32_t id;

  while (size < (guint32) tok->n_vocab * 2u)
    size <<= 1;
  tok->index = g_new (int32_t, size);
  memset (tok->index, 0xff, sizeof (int32_t) * size);
  tok->index_mask = size - 1;
  for (id = 0; id < tok->n_vocab; id++)
    {
      guint32 i;

      if (tok->text[id] == NULL || bln_tokenizer_lookup (tok, tok->text[id], tok->text_len[id]) >= 0)
        continue;
      for (i = hash_bytes (tok->text[id], tok->text_len[id]) & tok->index_mask;
           tok->index[i] >= 0; i = (i + 1) & tok->index_mask)
        ;
      tok->index[i] = id;
    }
}

/* Merge table keyed by the pair of ids. */

static guint32
hash_pair (uint64_t key)
{
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return (guint32) key;
}

void
bln_tokenizer_alloc_merges (BlnTokenizer *tok, gsize n)
{
  guint32 size = 16;
  guint32 i;

  while (size < n * 2)
    size <<= 1;
  g_free (tok->merges);
  tok->merges = g_new (BlnMergeSlot, size);
  for (i = 0; i < size; i++)
    tok->merges[i].rank = -1;
  tok->merges_mask = size - 1;
}

/* Returns FALSE when the pair is already present (the first, lowest rank, wins). */
gboolean
bln_tokenizer_add_merge (BlnTokenizer *tok, int32_t left, int32_t right, int32_t result,
                         int32_t rank)
{
  uint64_t key = ((uint64_t) (guint32) left << 32) | (guint32) right;
  guint32 i;

  for (i = hash_pair (key) & tok->merges_mask; tok->merges[i].rank >= 0;
       i = (i + 1) & tok->merges_mask)
    if (tok->merges[i].key == key)
      return FALSE;
  tok->merges[i].key = key;
  tok->merges[i].rank = rank;
  tok->merges[i].id = result;
  return TRUE;
}

static const BlnMergeSlot *
find_merge (const BlnTokenizer *tok, int32_t left, int32_t right)
{
  uint64_t key = ((uint64_t) (guint32) left << 32) | (guint32) right;
  guint32 i;

  for (i = hash_pair (key) & tok->merges_mask; tok->merges[i].rank >= 0;
       i = (i + 1) & tok->merges_mask)
    if (tok->merges[i].key == key)
      return &tok->merges[i];
  return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Construction helpers used by the loaders.
 */

BlnTokenizer *
bln_tokenizer_alloc (BlnTokenizerKind kind, int32_t n_vocab)
{
  BlnTokenizer *tok = g_new0 (BlnTokenizer, 1);
  int i;

  tok->kind = kind;
  tok->n_vocab = n_vocab;
  tok->text = g_new0 (char *, n_vocab);
  tok->text_len = g_new0 (guint32, n_vocab);
  tok->bytes = g_new0 (char *, n_vocab);
  tok->bytes_len = g_new0 (guint32, n_vocab);
  tok->attr = g_new0 (guint8, n_vocab);
  tok->strings = g_string_chunk_new (1 << 20);
  tok->bos = tok->eos = tok->eot = tok->pad = tok->unk = -1;
  for (i = 0; i < 256; i++)
    tok->byte_to_id[i] = -1;
  tok->eog = g_array_new (FALSE, FALSE, sizeof (int32_t));
  tok->templates = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return tok;
}

void
bln_tokenizer_set_text (BlnTokenizer *tok, int32_t id, const char *text, gsize len)
{
  tok->text[id] = g_string_chunk_insert_len (tok->strings, text, len);
  tok->text_len[id] = len;
}

void
bln_tokenizer_add_added (BlnTokenizer *tok, int32_t id, gboolean special, gboolean lstrip,
                         gboolean rstrip, gboolean single_word)
{
  BlnAddedToken *a;

  tok->added = g_renew (BlnAddedToken, tok->added, tok->n_added + 1);
  a = &tok->added[tok->n_added++];
  a->id = id;
  a->special = special;
  a->lstrip = lstrip;
  a->rstrip = rstrip;
  a->single_word = single_word;
  tok->attr[id] |= BLN_TOK_ATTR_ADDED | BLN_TOK_ATTR_UNUSED;
  if (special)
    tok->attr[id] |= BLN_TOK_ATTR_SPECIAL;
}

/* HF's regexes run on Oniguruma, whose \s is the Unicode White_Space set; PCRE2's UCP \s
 * leaves out U+0085. Spell the set out so both agree. */
#define WS_SET "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
               "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

static char *
translate_regex (const char *pattern)
{
  GString *out = g_string_new (NULL);
  gboolean in_class = FALSE;
  const char *p;

  for (p = pattern; *p; p++)
    {
      if (*p == '\\' && p[1] != '\0')
        {
          if (p[1] == 's')
            g_string_append (out, in_class ? WS_SET : "[" WS_SET "]");
          else if (p[1] == 'S' && !in_class)
            g_string_append (out, "[^" WS_SET "]");
          else
            g_string_append_len (out, p, 2);
          p++;
          continue;
        }
      if (!in_class && *p == '[')
        {
          in_class = TRUE;
          g_string_append_c (out, *p);
          /* A ']' right after '[' or '[^' is a literal. */
          if (p[1] == '^')
            g_string_append_c (out, *++p);
          if (p[1] == ']')
            g_string_append_c (out, *++p);
          continue;
        }
      if (in_class && *p == '[' && p[1] == ':')
        {
          const char *end = strstr (p + 2, ":]");

          if (end != NULL)
            {
              g_string_append_len (out, p, end + 2 - p);
              p = end + 1;
              continue;
            }
        }
      if (in_class && *p == ']')
        in_class = FALSE;
      g_string_append_c (out, *p);
    }
  return g_string_free (out, FALSE);
}

gboolean
bln_tokenizer_add_regex (BlnTokenizer *tok, const char *pattern, gboolean remove,
                         gboolean invert, GError **error)
{
  g_autofree char *translated = NULL;
  pcre2_code *code;
  int errcode;
  PCRE2_SIZE erroff;

  if (tok->n_regex >= BLN_TOK_MAX_REGEX)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "pre-tokenizer has more than %d Split steps", BLN_TOK_MAX_REGEX);
      return FALSE;
    }
  translated = translate_regex (pattern);
  code = pcre2_compile ((PCRE2_SPTR) translated, PCRE2_ZERO_TERMINATED,
                        PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &errcode, &erroff, NULL);
  if (code == NULL)
    {
      PCRE2_UCHAR msg[256];

      pcre2_get_error_message (errcode, msg, sizeof msg);
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "pre-tokenizer regex “%s” does not compile at offset %zu: %s", pattern,
                   (size_t) erroff, (const char *) msg);
      return FALSE;
    }
  pcre2_jit_compile (code, PCRE2_JIT_COMPLETE); /* optional speed-up; failure is fine */
  tok->regex[tok->n_regex].code = code;
  tok->regex[tok->n_regex].remove = remove;
  tok->regex[tok->n_regex].invert = invert;
  tok->n_regex++;
  return TRUE;
}

static int
trie_child (const BlnTokenizer *tok, int node, guint8 b)
{
  int c;

  for (c = tok->trie[node].first_child; c >= 0; c = tok->trie[c].next_sibling)
    if (tok->trie[c].byte == b)
      return c;
  return -1;
}

static void
build_trie (BlnTokenizer *tok)
{
  int cap = 64;
  int i;

  tok->trie = g_new (BlnTrieNode, cap);
  tok->trie[0] = (BlnTrieNode) { -1, -1, -1, 0 };
  tok->n_trie = 1;
  for (i = 0; i < tok->n_added; i++)
    {
      const char *t = tok->text[tok->added[i].id];
      guint32 len = tok->text_len[tok->added[i].id];
      int node = 0;
      guint32 k;

      if (t == NULL || len == 0)
        continue;
      for (k = 0; k < len; k++)
        {
          int c = trie_child (tok, node, (guint8) t[k]);

          if (c < 0)
            {
              if (tok->n_trie == cap)
                {
                  cap *= 2;
                  tok->trie = g_renew (BlnTrieNode, tok->trie, cap);
                }
              c = tok->n_trie++;
              tok->trie[c] = (BlnTrieNode) { -1, tok->trie[node].first_child, -1, (guint8) t[k] };
              tok->trie[node].first_child = c;
            }
          node = c;
        }
      if (tok->trie[node].added < 0)
        tok->trie[node].added = i;
    }
}

static const char *const eog_names[] = {
  "<｜end▁of▁sentence｜>", "<|EOT|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
  "<|eom_id|>", "<|end_of_text|>", "</s>", "<|end|>", "<end_of_turn>",
};

static const char *const eot_names[] = {
  "<|EOT|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>",
};

static void
add_eog (BlnTokenizer *tok, int32_t id)
{
  guint i;

  if (id < 0)
    return;
  for (i = 0; i < tok->eog->len; i++)
    if (g_array_index (tok->eog, int32_t, i) == id)
      return;
  g_array_append_val (tok->eog, id);
}

/* Called by the loaders once texts, attributes, merges and added tokens are in place:
 * builds the index, the decoded bytes of each token, the byte table, the trie and the
 * end-of-generation set. */
gboolean
bln_tokenizer_finish (BlnTokenizer *tok, GError **error)
{
  int32_t id;
  guint i;

  if (tok->index == NULL)
    bln_tokenizer_build_index (tok);
  for (id = 0; id < tok->n_vocab; id++)
    {
      const char *t = tok->text[id];
      guint32 n = tok->text_len[id];
      GString *b;
      const char *p;

      if (t == NULL)
        {
          tok->bytes[id] = g_string_chunk_insert_len (tok->strings, "", 0);
          continue;
        }
      if (tok->attr[id] & BLN_TOK_ATTR_ADDED)
        {
          tok->bytes[id] = tok->text[id];
          tok->bytes_len[id] = n;
          continue;
        }
      if (tok->attr[id] & BLN_TOK_ATTR_BYTE)
        {
          int v = -1;
          char c;

          if (n == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>'
              && g_ascii_isxdigit (t[3]) && g_ascii_isxdigit (t[4]))
            v = g_ascii_xdigit_value (t[3]) * 16 + g_ascii_xdigit_value (t[4]);
          if (v >= 0)
            {
              c = (char) v;
              tok->bytes[id] = g_string_chunk_insert_len (tok->strings, &c, 1);
              tok->bytes_len[id] = 1;
              if (tok->byte_to_id[v] < 0)
                tok->byte_to_id[v] = id;
              continue;
            }
          tok->attr[id] &= ~BLN_TOK_ATTR_BYTE;
        }
      b = g_string_sized_new (n);
      for (p = t; p < t + n;)
        {
          gunichar c;
          int r = bln_utf8_scan ((const guint8 *) p, t + n - p, &c);
          int byte;

          if (r <= 0)
            {
              g_string_append_c (b, *p++);
              continue;
            }
          if (tok->kind == BLN_TOKENIZER_BYTE_BPE && (byte = bln_gpt2_to_byte (c)) >= 0)
            g_string_append_c (b, (char) byte);
          else if (tok->kind == BLN_TOKENIZER_SPM && c == 0x2581)
            g_string_append_c (b, ' ');
          else
            g_string_append_len (b, p, r);
          p += r;
        }
      tok->bytes[id] = g_string_chunk_insert_len (tok->strings, b->str, b->len);
      tok->bytes_len[id] = b->len;
      g_string_free (b, TRUE);
    }

  if (tok->kind == BLN_TOKENIZER_BYTE_BPE)
    {
      int b;

      for (b = 0; b < 256; b++)
        {
          char buf[8];
          int n = g_unichar_to_utf8 (bln_byte_to_gpt2 ((guint8) b), buf);

          tok->byte_to_id[b] = bln_tokenizer_lookup (tok, buf, n);
        }
    }

  build_trie (tok);

  add_eog (tok, tok->eos);
  for (i = 0; i < G_N_ELEMENTS (eog_names); i++)
    {
      id = bln_tokenizer_lookup (tok, eog_names[i], strlen (eog_names[i]));
      if (id >= 0 && (tok->attr[id] & (BLN_TOK_ATTR_SPECIAL | BLN_TOK_ATTR_ADDED)))
        add_eog (tok, id);
    }
  if (tok->eot < 0)
    {
      for (i = 0; i < G_N_ELEMENTS (eot_names) && tok->eot < 0; i++)
        {
          id = bln_tokenizer_lookup (tok, eot_names[i], strlen (eot_names[i]));
          if (id >= 0 && (tok->attr[id] & (BLN_TOK_ATTR_SPECIAL | BLN_TOK_ATTR_ADDED)))
            tok->eot = id;
        }
      if (tok->eot < 0)
        tok->eot = tok->eos;
    }
  add_eog (tok, tok->eot);
  return TRUE;
}

void
bln_tokenizer_free (BlnTokenizer *tok)
{
  int i;

  if (tok == NULL)
    return;
  for (i = 0; i < tok->n_regex; i++)
    pcre2_code_free (tok->regex[i].code);
  g_free (tok->text);
  g_free (tok->text_len);
  g_free (tok->bytes);
  g_free (tok->bytes_len);
  g_free (tok->attr);
  g_free (tok->scores);
  g_string_chunk_free (tok->strings);
  g_free (tok->index);
  g_free (tok->merges);
  g_free (tok->added);
  g_free (tok->trie);
  g_array_unref (tok->eog);
  g_hash_table_unref (tok->templates);
  g_free (tok);
}

/* ---------------------------------------------------------------------------------------
 * The merge loop. Symbols form a linked list; candidate pairs sit in a binary heap ordered
 * by (key, position) so the best pair, leftmost on ties, merges first, as HF's BPE and
 * SentencePiece do. A popped candidate is stale when its symbols changed since it was
 * pushed; it is then dropped. O(n log n) in the piece length.
 */

typedef struct {
  int32_t id;          /* -1: a character missing from the vocabulary */
  int32_t prev, next;
  guint32 start, len;  /* bytes of the piece; len 0 = merged away */
} Sym;

typedef struct {
  float key;           /* rank, or minus the score */
  int32_t pos;         /* left symbol */
  int32_t left_id, right_id, new_id;
  guint32 len;         /* left + right length when pushed */
} Cand;

typedef struct {
  GArray *syms;        /* Sym */
  GArray *heap;        /* Cand */
  GString *buf;
} Scratch;

static gboolean
cand_less (const Cand *a, const Cand *b)
{
  return a->key < b->key || (a->key == b->key && a->pos < b->pos);
}

static void
heap_push (GArray *heap, const Cand *c)
{
  Cand *h;
  guint i;

  g_array_append_val (heap, *c);
  h = (Cand *) heap->data;
  for (i = heap->len - 1; i > 0;)
    {
      guint parent = (i - 1) / 2;
      Cand t;

      if (!cand_less (&h[i], &h[parent]))
        break;
      t = h[i];
      h[i] = h[parent];
      h[parent] = t;
      i = parent;
    }
}

static Cand
heap_pop (GArray *heap)
{
  Cand *h = (Cand *) heap->data;
  Cand top = h[0];
  guint n = heap->len - 1;
  guint i = 0;

  h[0] = h[n];
  g_array_set_size (heap, n);
  for (;;)
    {
      guint l = 2 * i + 1, r = l + 1, m = i;
      Cand t;

      if (l < n && cand_less (&h[l], &h[m]))
        m = l;
      if (r < n && cand_less (&h[r], &h[m]))
        m = r;
      if (m == i)
        break;
      t = h[i];
      h[i] = h[m];
      h[m] = t;
      i = m;
    }
  return top;
}

/* Pushes the candidate merge of symbol @pos with its right neighbour, if any. */
static void
try_pair (const BlnTokenizer *tok, const char *piece, Scratch *s, int32_t pos)
{
  const Sym *syms = (const Sym *) s->syms->data;
  const Sym *l = &syms[pos];
  const Sym *r;
  Cand c;

  if (l->next < 0)
    return;
  r = &syms[l->next];
  if (tok->merges != NULL)
    {
      const BlnMergeSlot *m;

      if (l->id < 0 || r->id < 0 || (m = find_merge (tok, l->id, r->id)) == NULL)
        return;
      c.key = (float) m->rank;
      c.new_id = m->id;
    }
  else
    {
      int32_t id = bln_tokenizer_lookup (tok, piece + l->start, l->len + r->len);

      if (id < 0 || (tok->attr[id] & (BLN_TOK_ATTR_UNUSED | BLN_TOK_ATTR_BYTE)))
        return;
      c.key = -tok->scores[id];
      c.new_id = id;
    }
  c.pos = pos;
  c.left_id = l->id;
  c.right_id = r->id;
  c.len = l->len + r->len;
  heap_push (s->heap, &c);
}

static void
emit_unknown (const BlnTokenizer *tok, const char *p, guint32 len, GArray *out)
{
  guint32 i;

  if (tok->byte_fallback)
    {
      for (i = 0; i < len; i++)
        if (tok->byte_to_id[(guint8) p[i]] < 0)
          break;
      if (i == len)
        {
          for (i = 0; i < len; i++)
            g_array_append_val (out, tok->byte_to_id[(guint8) p[i]]);
          return;
        }
    }
  if (tok->unk >= 0)
    g_array_append_val (out, tok->unk);
}

/* Tokenizes one pre-token (a piece of the normalised text). */
static void
encode_piece (const BlnTokenizer *tok, const char *piece, gsize len, Scratch *s, GArray *out)
{
  Sym *syms;
  int32_t n = 0;
  int32_t i;

  if (len == 0)
    return;

  if (tok->kind == BLN_TOKENIZER_BYTE_BPE)
    {
      if (tok->ignore_merges || len == 1)
        {
          int32_t id;

          g_string_truncate (s->buf, 0);
          for (i = 0; i < (int32_t) len; i++)
            g_string_append_unichar (s->buf, bln_byte_to_gpt2 ((guint8) piece[i]));
          id = bln_tokenizer_lookup (tok, s->buf->str, s->buf->len);
          if (id >= 0)
            {
              g_array_append_val (out, id);
              return;
            }
        }
      g_array_set_size (s->syms, len);
      syms = (Sym *) s->syms->data;
      for (i = 0; i < (int32_t) len; i++)
        syms[i] = (Sym) { tok->byte_to_id[(guint8) piece[i]], i - 1, i + 1, i, 1 };
      n = len;
    }
  else
    {
      const char *p = piece;

      if (tok->ignore_merges)
        {
          int32_t id = bln_tokenizer_lookup (tok, piece, len);

          if (id >= 0)
            {
              g_array_append_val (out, id);
              return;
            }
        }
      g_array_set_size (s->syms, len);
      syms = (Sym *) s->syms->data;
      while (p < piece + len)
        {
          gunichar c;
          int r = bln_utf8_scan ((const guint8 *) p, piece + len - p, &c);

          if (r <= 0)
            r = 1; /* cannot happen: the text was validated */
          syms[n] = (Sym) { bln_tokenizer_lookup (tok, p, r), n - 1, n + 1,
                            (guint32) (p - piece), (guint32) r };
          if (syms[n].id >= 0 && (tok->attr[syms[n].id] & BLN_TOK_ATTR_UNUSED))
            syms[n].id = -1;
          n++;
          p += r;
        }
    }
  syms[n - 1].next = -1;

  g_array_set_size (s->heap, 0);
  for (i = 0; i + 1 < n; i++)
    try_pair (tok, piece, s, i);
  while (s->heap->len > 0)
    {
      Cand c = heap_pop (s->heap);
      Sym *l, *r;

      syms = (Sym *) s->syms->data;
      l = &syms[c.pos];
      if (l->len == 0 || l->next < 0 || l->id != c.left_id)
        continue;
      r = &syms[l->next];
      if (r->id != c.right_id || l->len + r->len != c.len)
        continue;
      l->id = c.new_id;
      l->len += r->len;
      r->len = 0;
      l->next = r->next;
      if (l->next >= 0)
        syms[l->next].prev = c.pos;
      if (l->prev >= 0)
        try_pair (tok, piece, s, l->prev);
      try_pair (tok, piece, s, c.pos);
    }

  syms = (Sym *) s->syms->data;
  for (i = 0; i >= 0; i = syms[i].next)
    {
      if (syms[i].id >= 0)
        g_array_append_val (out, syms[i].id);
      else
        emit_unknown (tok, piece + syms[i].start, syms[i].len, out);
    }
}

/* ---------------------------------------------------------------------------------------
 * Normalisation and pre-tokenisation of one run of plain text (between added tokens).
 */

typedef struct {
  guint32 start, len;
} Span;

static gboolean
split_pieces (const BlnTokenizer *tok, const char *text, GArray **pieces, GError **error)
{
  pcre2_match_data *md = pcre2_match_data_create (1, NULL);
  int k;

  for (k = 0; k < tok->n_regex; k++)
    {
      const BlnSplitRegex *rx = &tok->regex[k];
      GArray *next = g_array_new (FALSE, FALSE, sizeof (Span));
      guint i;

      for (i = 0; i < (*pieces)->len; i++)
        {
          Span sp = g_array_index (*pieces, Span, i);
          const char *subj = text + sp.start;
          PCRE2_SIZE off = 0, last = 0;
          gboolean keep_match = !rx->remove || rx->invert;
          gboolean keep_gap = !rx->remove || !rx->invert;

          while (off < sp.len)
            {
              int rc = pcre2_match (rx->code, (PCRE2_SPTR) subj, sp.len, off,
                                    PCRE2_NO_UTF_CHECK, md, NULL);
              PCRE2_SIZE *ov;

              if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match (rx->code, (PCRE2_SPTR) subj, sp.len, off,
                                  PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
              if (rc == PCRE2_ERROR_NOMATCH)
                break;
              if (rc < 0)
                {
                  PCRE2_UCHAR msg[256];

                  pcre2_get_error_message (rc, msg, sizeof msg);
                  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                               "pre-tokenizer regex failed: %s", (const char *) msg);
                  g_array_unref (next);
                  pcre2_match_data_free (md);
                  return FALSE;
                }
              ov = pcre2_get_ovector_pointer (md);
              if (ov[1] == ov[0])
                {
                  /* Empty match: step over one character. */
                  off = ov[0] + 1;
                  while (off < sp.len && ((guint8) subj[off] & 0xc0) == 0x80)
                    off++;
                  continue;
                }
              if (ov[0] > last && keep_gap)
                g_array_append_val (next, ((Span) { sp.start + last, ov[0] - last }));
              if (keep_match)
                g_array_append_val (next, ((Span) { sp.start + ov[0], ov[1] - ov[0] }));
              last = off = ov[1];
            }
          if (last < sp.len && keep_gap)
            g_array_append_val (next, ((Span) { sp.start + last, sp.len - last }));
        }
      g_array_unref (*pieces);
      *pieces = next;
    }
  pcre2_match_data_free (md);
  return TRUE;
}

static char *
nfc (const char *text, gsize len, gsize *out_len)
{
  GString *out = g_string_sized_new (len);
  gsize i = 0;

  /* g_utf8_normalize stops at NUL: normalise the runs between NUL bytes. */
  while (i <= len)
    {
      const char *nul = memchr (text + i, 0, len - i);
      gsize run = nul ? (gsize) (nul - text) - i : len - i;

      if (run > 0)
        {
          g_autofree char *n = g_utf8_normalize (text + i, run, G_NORMALIZE_NFC);

          if (n != NULL)
            g_string_append (out, n);
          else
            g_string_append_len (out, text + i, run);
        }
      if (nul == NULL)
        break;
      g_string_append_c (out, '\0');
      i += run + 1;
    }
  *out_len = out->len;
  return g_string_free (out, FALSE);
}

static gboolean
encode_run (const BlnTokenizer *tok, const char *text, gsize len, Scratch *s, GArray *out,
            GError **error)
{
  g_autofree char *owned = NULL;
  GArray *pieces;
  gsize i;
  gboolean ok;

  if (len == 0)
    return TRUE;
  if (tok->nfc)
    {
      for (i = 0; i < len && (guint8) text[i] < 0x80; i++)
        ;
      if (i < len)
        {
          owned = nfc (text, len, &len);
          text = owned;
        }
    }
  if (tok->spm_prefix)
    {
      GString *b = g_string_sized_new (len + 8);

      g_string_append (b, "\xe2\x96\x81");
      for (i = 0; i < len; i++)
        {
          if (text[i] == ' ')
            g_string_append (b, "\xe2\x96\x81");
          else
            g_string_append_c (b, text[i]);
        }
      g_free (owned);
      len = b->len;
      owned = g_string_free (b, FALSE);
      text = owned;
    }
  else if (tok->byte_level_prefix_space && text[0] != ' ')
    {
      char *b = g_malloc (len + 1);

      b[0] = ' ';
      memcpy (b + 1, text, len);
      g_free (owned);
      owned = b;
      text = owned;
      len++;
    }

  pieces = g_array_new (FALSE, FALSE, sizeof (Span));
  g_array_append_val (pieces, ((Span) { 0, len }));
  ok = split_pieces (tok, text, &pieces, error);
  if (ok)
    for (i = 0; i < pieces->len; i++)
      {
        Span sp = g_array_index (pieces, Span, i);

        encode_piece (tok, text + sp.start, sp.len, s, out);
      }
  g_array_unref (pieces);
  return ok;
}

/* ---------------------------------------------------------------------------------------
 * Added tokens: leftmost-longest match over the raw text.
 */

static gboolean
is_word_char (gunichar c)
{
  return c == '_' || g_unichar_isalnum (c);
}

/* Longest eligible added token starting at @i, or -1; *end gets its end. */
static int
match_added (const BlnTokenizer *tok, const char *text, gsize len, gsize i,
             gboolean parse_special, gsize *end)
{
  int node = 0;
  int best = -1;
  gsize k;

  for (k = i; k < len; k++)
    {
      node = trie_child (tok, node, (guint8) text[k]);
      if (node < 0)
        break;
      if (tok->trie[node].added >= 0)
        {
          const BlnAddedToken *a = &tok->added[tok->trie[node].added];

          if (a->special && !parse_special)
            continue;
          if (a->single_word)
            {
              const char *before = i > 0 ? g_utf8_find_prev_char (text, text + i) : NULL;

              if (before != NULL && is_word_char (g_utf8_get_char (before)))
                continue;
              if (k + 1 < len && is_word_char (g_utf8_get_char (text + k + 1)))
                continue;
            }
          best = tok->trie[node].added;
          *end = k + 1;
        }
    }
  return best;
}

static gsize
utf8_validate_len (const char *text, gsize len)
{
  gsize i = 0;

  while (i < len)
    {
      gunichar c;
      int r = bln_utf8_scan ((const guint8 *) text + i, len - i, &c);

      if (r <= 0)
        return i;
      i += r;
    }
  return i;
}

gboolean
bln_tokenizer_encode_append (const BlnTokenizer *tok, const char *text, gssize len,
                             gboolean add_bos, gboolean parse_special, GArray *out,
                             GError **error)
{
  guint out_len0;
  Scratch s;
  gsize n, i, run_start;
  gboolean ok = TRUE;

  g_return_val_if_fail (tok != NULL, FALSE);
  g_return_val_if_fail (text != NULL || len == 0, FALSE);
  g_return_val_if_fail (out != NULL && g_array_get_element_size (out) == sizeof (int32_t),
                        FALSE);

  n = len < 0 ? strlen (text) : (gsize) len;
  if ((i = utf8_validate_len (text, n)) != n)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "text to tokenize is not valid UTF-8 (at byte %zu)", i);
      return FALSE;
    }

  out_len0 = out->len;
  s.syms = g_array_new (FALSE, FALSE, sizeof (Sym));
  s.heap = g_array_new (FALSE, FALSE, sizeof (Cand));
  s.buf = g_string_new (NULL);

  if (add_bos && tok->bos >= 0)
    g_array_append_val (out, tok->bos);

  run_start = 0;
  for (i = 0; i < n && ok;)
    {
      gsize end = 0, run_end, next;
      int a;

      if (tok->trie[0].first_child < 0 || trie_child (tok, 0, (guint8) text[i]) < 0
          || (a = match_added (tok, text, n, i, parse_special, &end)) < 0)
        {
          i++;
          continue;
        }
      run_end = i;
      next = end;
      if (tok->added[a].lstrip)
        while (run_end > run_start && g_ascii_isspace (text[run_end - 1]))
          run_end--;
      if (tok->added[a].rstrip)
        while (next < n && g_ascii_isspace (text[next]))
          next++;
      ok = encode_run (tok, text + run_start, run_end - run_start, &s, out, error);
      g_array_append_val (out, tok->added[a].id);
      i = run_start = next;
    }
  if (ok)
    ok = encode_run (tok, text + run_start, n - run_start, &s, out, error);

  g_array_unref (s.syms);
  g_array_unref (s.heap);
  g_string_free (s.buf, TRUE);
  if (!ok)
    g_array_set_size (out, out_len0);
  return ok;
}

GArray *
bln_tokenizer_encode (const BlnTokenizer *tok, const char *text, gssize len, gboolean add_bos,
                      gboolean parse_special, GError **error)
{
  GArray *arr = g_array_new (FALSE, FALSE, sizeof (int32_t));

  if (!bln_tokenizer_encode_append (tok, text, len, add_bos, parse_special, arr, error))
    {
      g_array_unref (arr);
      return NULL;
    }
  return arr;
}

gssize
bln_tokenizer_encode_into (const BlnTokenizer *tok, const char *text, gssize len,
                           gboolean add_bos, gboolean parse_special, int32_t *ids, gsize cap,
                           GError **error)
{
  g_autoptr (GArray) arr = g_array_new (FALSE, FALSE, sizeof (int32_t));

  if (!bln_tokenizer_encode_append (tok, text, len, add_bos, parse_special, arr, error))
    return -1;
  if (ids != NULL && cap > 0)
    memcpy (ids, arr->data, sizeof (int32_t) * MIN (cap, arr->len));
  return arr->len;
}

/* ---------------------------------------------------------------------------------------
 * Accessors and decoding.
 */

const char *
bln_tokenizer_token_bytes (const BlnTokenizer *tok, int32_t id, gsize *len)
{
  g_return_val_if_fail (tok != NULL, NULL);
  if (id < 0 || id >= tok->n_vocab)
    return NULL;
  if (len != NULL)
    *len = tok->bytes_len[id];
  return tok->bytes[id];
}

const char *
bln_tokenizer_token_text (const BlnTokenizer *tok, int32_t id)
{
  g_return_val_if_fail (tok != NULL, NULL);
  if (id < 0 || id >= tok->n_vocab)
    return NULL;
  return tok->text[id] != NULL ? tok->text[id] : "";
}

int32_t
bln_tokenizer_token_id (const BlnTokenizer *tok, const char *text)
{
  g_return_val_if_fail (tok != NULL && text != NULL, -1);
  return bln_tokenizer_lookup (tok, text, strlen (text));
}

char *
bln_tokenizer_decode_full (const BlnTokenizer *tok, const int32_t *ids, gsize n,
                           gboolean skip_special, gsize *len)
{
  GString *out = g_string_new (NULL);
  gsize i;

  g_return_val_if_fail (tok != NULL, NULL);
  for (i = 0; i < n; i++)
    {
      int32_t id = ids[i];

      if (id < 0 || id >= tok->n_vocab)
        continue;
      if (skip_special && (tok->attr[id] & BLN_TOK_ATTR_SPECIAL))
        continue;
      g_string_append_len (out, tok->bytes[id], tok->bytes_len[id]);
    }
  if (tok->spm_prefix && out->len > 0 && out->str[0] == ' ')
    g_string_erase (out, 0, 1);
  if (len != NULL)
    *len = out->len;
  return g_string_free (out, FALSE);
}

char *
bln_tokenizer_decode (const BlnTokenizer *tok, const int32_t *ids, gsize n, gsize *len)
{
  return bln_tokenizer_decode_full (tok, ids, n, FALSE, len);
}

BlnTokenizerKind
bln_tokenizer_kind (const BlnTokenizer *tok)
{
  return tok->kind;
}

int32_t
bln_tokenizer_n_vocab (const BlnTokenizer *tok)
{
  return tok->n_vocab;
}

int32_t
bln_tokenizer_bos (const BlnTokenizer *tok)
{
  return tok->bos;
}

int32_t
bln_tokenizer_eos (const BlnTokenizer *tok)
{
  return tok->eos;
}

int32_t
bln_tokenizer_eot (const BlnTokenizer *tok)
{
  return tok->eot;
}

int32_t
bln_tokenizer_pad (const BlnTokenizer *tok)
{
  return tok->pad;
}

gboolean
bln_tokenizer_add_bos (const BlnTokenizer *tok)
{
  return tok->add_bos;
}

gboolean
bln_tokenizer_add_eos (const BlnTokenizer *tok)
{
  return tok->add_eos;
}

gboolean
bln_tokenizer_is_special (const BlnTokenizer *tok, int32_t id)
{
  return id >= 0 && id < tok->n_vocab && (tok->attr[id] & BLN_TOK_ATTR_SPECIAL) != 0;
}

gboolean
bln_tokenizer_is_end_of_generation (const BlnTokenizer *tok, int32_t id)
{
  return bln_tokenizer_is_eog (tok, id);
}

const char *
bln_tokenizer_bos_text (const BlnTokenizer *tok)
{
  return tok->bos >= 0 ? tok->text[tok->bos] : NULL;
}

const char *
bln_tokenizer_eos_text (const BlnTokenizer *tok)
{
  return tok->eos >= 0 ? tok->text[tok->eos] : NULL;
}

gboolean
bln_tokenizer_is_eog (const BlnTokenizer *tok, int32_t id)
{
  guint i;

  for (i = 0; i < tok->eog->len; i++)
    if (g_array_index (tok->eog, int32_t, i) == id)
      return TRUE;
  return FALSE;
}

const char *
bln_tokenizer_chat_template (const BlnTokenizer *tok)
{
  return bln_tokenizer_chat_template_named (tok, NULL);
}

const char *
bln_tokenizer_chat_template_named (const BlnTokenizer *tok, const char *name)
{
  return g_hash_table_lookup (tok->templates, name != NULL ? name : "default");
}
