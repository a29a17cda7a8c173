/* tokenizer-private.h — the tokenizer's internals, shared by tokenizer.c (encoding),
 * tokenizer-load.c (building it from GGUF / tokenizer.json) and detok.c. */
#pragma once

#include <pcre2.h>
#include "tokenizer.h"

G_BEGIN_DECLS

#define BLN_TOK_MAX_REGEX 8

/* Per-token attributes. */
enum {
  BLN_TOK_ATTR_SPECIAL = 1 << 0, /* control token (HF special=true, GGUF type 3 / 2) */
  BLN_TOK_ATTR_ADDED = 1 << 1,   /* an added token, matched in raw text */
  BLN_TOK_ATTR_BYTE = 1 << 2,    /* <0xNN> byte-fallback token */
  BLN_TOK_ATTR_UNUSED = 1 << 3,  /* never produced by merging (control, unknown, unused) */
};

typedef struct {
  int32_t id;
  gboolean special;
  gboolean lstrip, rstrip, single_word;
} BlnAddedToken;

/* A trie node over the bytes of the added tokens. */
typedef struct {
  int32_t first_child, next_sibling;
  int32_t added;   /* index into added[], or -1 */
  guint8 byte;
} BlnTrieNode;

typedef struct {
  uint64_t key;    /* (left id << 32) | right id; 0 = empty slot marker via rank < 0 */
  int32_t rank;    /* -1: empty */
  int32_t id;
} BlnMergeSlot;

/* One Split step of the pre-tokenizer. */
typedef struct {
  pcre2_code *code;
  gboolean remove;   /* behavior Removed: matches are dropped */
  gboolean invert;
} BlnSplitRegex;

struct _BlnTokenizer {
  BlnTokenizerKind kind;
  int32_t n_vocab;

  /* Vocabulary: entry text as stored, its decoded bytes, attributes. */
  char **text;
  guint32 *text_len;
  char **bytes;
  guint32 *bytes_len;
  guint8 *attr;
  float *scores;            /* SPM by score; NULL for merge-rank models */
  GStringChunk *strings;

  /* Open-addressing index text → id (size power of two, -1 empty). */
  int32_t *index;
  guint32 index_mask;

  /* Merges (pair of ids → rank, merged id); NULL for score-based SPM. */
  BlnMergeSlot *merges;
  guint32 merges_mask;

  int32_t byte_to_id[256];  /* byte-level: id of each byte's GPT-2 char; SPM: <0xNN> id */
  gboolean byte_fallback;
  gboolean ignore_merges;
  int32_t unk;

  /* Pre-tokenizer and normaliser. */
  BlnSplitRegex regex[BLN_TOK_MAX_REGEX];
  int n_regex;
  gboolean byte_level_prefix_space;
  gboolean nfc;
  gboolean spm_prefix;      /* SPM: prepend '▁' to each text run, ' ' → '▁' */

  /* Added tokens. */
  BlnAddedToken *added;
  int n_added;
  BlnTrieNode *trie;
  int n_trie;

  int32_t bos, eos, eot, pad;
  gboolean add_bos, add_eos;
  GArray *eog;              /* int32 ids that end generation */
  GHashTable *templates;    /* name → template text */
};

/* Shared helpers in tokenizer.c used by the loaders. */
BlnTokenizer *bln_tokenizer_alloc (BlnTokenizerKind kind, int32_t n_vocab);
void bln_tokenizer_set_text (BlnTokenizer *tok, int32_t id, const char *text, gsize len);
void bln_tokenizer_build_index (BlnTokenizer *tok);
gboolean bln_tokenizer_finish (BlnTokenizer *tok, GError **error);
gboolean bln_tokenizer_add_merge (BlnTokenizer *tok, int32_t left, int32_t right,
                                  int32_t result, int32_t rank);
void bln_tokenizer_alloc_merges (BlnTokenizer *tok, gsize n);
gboolean bln_tokenizer_add_regex (BlnTokenizer *tok, const char *pattern, gboolean remove,
                                  gboolean invert, GError **error);
void bln_tokenizer_add_added (BlnTokenizer *tok, int32_t id, gboolean special,
                              gboolean lstrip, gboolean rstrip, gboolean single_word);
int32_t bln_tokenizer_lookup (const BlnTokenizer *tok, const char *text, gsize len);

extern const char bln_tokenizer_gpt2_regex[];

G_END_DECLS
