/* sampler.h — turns a logit vector into the next token id.
 *
 * Steps, in this order (HF transformers' order for its processors, with the
 * OpenAI penalties right after its repetition penalty):
 *   1. repetition penalty (HF): for every token seen in the history, a
 *      positive logit is divided by the penalty and a negative one multiplied;
 *   2. presence / frequency penalties (OpenAI): logit -= presence * (count > 0)
 *      + frequency * count, count being the token's occurrences in the history;
 *   3. temperature: logits divided by it; 0 means greedy (argmax after step 2,
 *      the smallest id winning a tie) and skips everything below;
 *   4. top-k: keeps the tokens whose logit is >= the k-th largest (ties with
 *      the k-th are kept, as HF does);
 *   5. top-p (nucleus): keeps the smallest set of most likely tokens whose
 *      probability sums to >= top_p (at least one token);
 *   6. min-p: keeps the tokens whose probability is >= min_p times the
 *      largest probability;
 *   7. draws from the renormalised survivors with the seeded generator.
 * NaN and -inf logits never survive; if no logit is usable, id 0 is returned.
 *
 * Random numbers: xoshiro256** (Blackman and Vigna), its state seeded from the
 * 64-bit seed by splitmix64; each draw takes one 64-bit output and uses its
 * top 53 bits as a double in [0, 1). The same seed, parameters, history and
 * logits therefore give the same tokens on every machine.
 *
 * Cost per token is O(V) plus O(m log m) where m is the number of tokens the
 * nucleus needs (found by growing partial selections, never a full sort of
 * the vocabulary unless the nucleus really spans it), and O(V) extra memory
 * allocated once.
 *
 * Logprobs are those of the model: the log-softmax of the raw logits given
 * to bln_sampler_sample(), before penalties, temperature and filtering (what
 * OpenAI's API reports), computed in double precision.
 */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct {
  float temperature;          /* 0 = greedy; default 1 */
  float top_p;                /* (0, 1); >= 1 disables; <= 0 keeps only the top token; default 1 */
  float min_p;                /* (0, 1]; <= 0 disables; default 0 */
  int top_k;                  /* > 0 enables; default 0 */
  float repetition_penalty;   /* > 0; 1 disables (also used for <= 0); default 1 */
  float presence_penalty;     /* default 0 */
  float frequency_penalty;    /* default 0 */
  uint64_t seed;              /* default 0 */
} BlnSamplerParams;

/* One token and its log-probability under the raw logits. */
typedef struct {
  int32_t id;
  float logprob;
} BlnLogprob;

/* One survivor of the filters and its renormalised probability. */
typedef struct {
  int32_t id;
  float logit;    /* after penalties and temperature */
  float prob;
} BlnCandidate;

typedef struct _BlnSampler BlnSampler;

/* Fills @params with the defaults above (plain multinomial sampling). */
void bln_sampler_params_init (BlnSamplerParams *params);

/* Checks @params for values an API caller should be told about: a NaN, a
 * negative temperature, top_p or min_p outside [0, 1], a negative top_k, a
 * repetition penalty <= 0, presence or frequency penalties outside [-2, 2]
 * (OpenAI's range). FALSE with BLN_ERROR_INVALID naming the field. The
 * sampler itself never fails on such values; it uses the readings above. */
gboolean bln_sampler_params_validate (const BlnSamplerParams *params, GError **error);

/* A sampler for a vocabulary of @n_vocab (> 0) tokens, with an empty
 * history and the generator seeded from params->seed. @params is copied.
 * Allocates O(n_vocab) memory; returns NULL only for n_vocab <= 0. Free
 * with bln_sampler_free(). */
BlnSampler *bln_sampler_new (const BlnSamplerParams *params, int n_vocab);

void bln_sampler_free (BlnSampler *sampler);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnSampler, bln_sampler_free)

/* The parameters in use (a copy owned by @sampler). */
const BlnSamplerParams *bln_sampler_params (const BlnSampler *sampler);

/* Records @id as generated (or as part of the prompt, when the penalties
 * should see it), for the penalties. Ids outside [0, n_vocab) are ignored. */
void bln_sampler_accept (BlnSampler *sampler, int32_t id);

/* Forgets the history and restarts the generator from params->seed. */
void bln_sampler_reset (BlnSampler *sampler);

/* Runs steps 1-6 on @logits (n_vocab values, not modified) and stores the
 * survivors in a buffer owned by @sampler, valid until the next call; @out
 * gets its address. Returns how many there are (>= 1). Greedy mode yields the
 * one argmax token with probability 1. The order of the survivors is
 * unspecified. */
int bln_sampler_filter (BlnSampler *sampler, const float *logits, const BlnCandidate **out);

/* Picks the next token from @logits (n_vocab values, not modified; a float *
 * that the caller may reuse). When @top is not NULL it must hold @n_top + 1
 * entries: top[0] gets the chosen token and its logprob, top[1..n_top] the
 * @n_top most likely tokens under the raw logits, most likely first (fewer
 * than n_top real entries when n_vocab is smaller; the rest get id -1).
 * Does not record the token: call bln_sampler_accept() with it. */
int32_t bln_sampler_sample (BlnSampler *sampler, const float *logits, BlnLogprob *top,
                            int n_top);

/* Log-softmax of @logits (n values) at @id, in double precision. */
double bln_logprob (const float *logits, int n, int32_t id);

/* For other implementations of the same steps (the GPU sampler,
 * engine/cuda/sample.h), which must agree with bln_sampler_sample() token for
 * token. bln_sampler_sample() takes exactly one number from the generator
 * when more than one token survives the filters (step 7), none otherwise. */

/* The vocabulary size @sampler was made for. */
int bln_sampler_n_vocab (const BlnSampler *sampler);

/* The history the penalties see: returns how many distinct ids it holds;
 * *@ids gets them (in order of first appearance) and *@counts the per-id
 * occurrence table of n_vocab entries (counts[ids[j]] > 0). Both are owned
 * by @sampler and valid until the next accept or reset. */
int bln_sampler_history (const BlnSampler *sampler, const int32_t **ids, const int32_t **counts);

/* The uniform number in [0, 1) the next draw would use, without taking it. */
double bln_sampler_peek_uniform (const BlnSampler *sampler);

/* Takes (discards) one number from the generator, as a draw does. */
void bln_sampler_skip_uniform (BlnSampler *sampler);

/* ---------------------------------------------------------------------- */
/* Compact sampling (docs/GPU-SAMPLING.md)                                 */

/* What a GPU kernel (kernels/sample-compact.h) reduces one logits row to, so
 * that the draw can be made without copying the row. "Usable" means what the
 * filters keep: not NaN, not -inf after scaling. */
typedef struct {
  int k;                  /* entries in ids / logits */
  const int32_t *ids;     /* the k largest non-NaN raw logits' ids, in the sampler's
                           * total order (larger logit first, smaller id on a tie) */
  const float *logits;    /* their raw logits */
  gboolean complete;      /* the entries are every non-NaN logit of the row */
  float next;             /* the (k+1)-th largest non-NaN raw logit (when !complete) */
  double raw_max;         /* the largest non-NaN raw logit (-inf when none) */
  double raw_lse;         /* log-sum-exp of the raw logits (raw_max when not finite) */
  double t_max;           /* the largest usable raw logit / T (clamped as the sampler
                           * clamps; T = params.temperature) over the tokens outside
                           * the penalty history (all tokens when no penalty is
                           * on); -inf when none; unused when greedy */
  double t_sum;           /* sum of exp (l / T - t_max) over the same tokens, in
                           * double; 0 when none */
  const float *hist;      /* raw logits of the history ids (bln_sampler_history's
                           * order), n_hist of them; NULL when no penalty is on */
  int n_hist;
} BlnCompactRow;

/* The largest top-k and record size bln_sampler_compact_k() ever asks for. */
#define BLN_COMPACT_MAX_K 1024

/* How many entries (K) a compact record for @sampler's next draw needs, with
 * @n_top top logprobs: 256 or a larger power of two (up to
 * BLN_COMPACT_MAX_K) that covers top_k and n_top; 0 when a compact record
 * can never decide this draw (plain sampling: temperature > 0 with no
 * top-k, top-p or min-p; a top-k above n_vocab / 8 or BLN_COMPACT_MAX_K),
 * so the caller copies the full row instead. */
int bln_sampler_compact_k (const BlnSampler *sampler, int n_top);

/* TRUE when the penalties are on, i.e. a compact record needs the history's
 * logits (BlnCompactRow.hist). */
gboolean bln_sampler_compact_needs_history (const BlnSampler *sampler);

/* bln_sampler_sample() from a compact record of the row: when it returns
 * TRUE, *@out_id, @top and the generator are exactly what
 * bln_sampler_sample() on the full row would give (logprobs up to the
 * rounding of the record's raw_lse). FALSE when the record cannot decide
 * (ties with the (k+1)-th value, a nucleus or min-p set reaching beyond the
 * record, see docs/GPU-SAMPLING.md): nothing is changed, and the caller
 * runs bln_sampler_sample() on the full row. Does not record the token. */
gboolean bln_sampler_sample_compact (BlnSampler *sampler, const BlnCompactRow *row,
                                     BlnLogprob *top, int n_top, int32_t *out_id);

/* For tests: builds @row from a full row @logits the way the GPU kernel
 * does (K = @k entries, penalty history gathered when the penalties are on),
 * sums in id order. The arrays ids / logits / hist are allocated with
 * g_new; free them with bln_compact_row_clear(). */
void bln_compact_row_build (const BlnSampler *sampler, const float *logits, int k,
                            BlnCompactRow *row);
void bln_compact_row_clear (BlnCompactRow *row);

G_END_DECLS
