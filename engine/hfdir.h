/* hfdir.h — a Hugging Face model directory: config.json plus safetensors.
 *
 * A directory holds config.json and either one model.safetensors or shards
 * listed by model.safetensors.index.json ("weight_map": tensor name -> shard
 * file name). Opening parses config.json, opens every shard once (each is
 * validated by safetensors.c), and checks that every tensor the index lists
 * is in the shard it names and that no tensor is present in two shards.
 * Shard names must be plain file names inside the directory: a name with a
 * path separator, "." / "..", or an absolute path is rejected (symbolic links
 * inside the directory, as in the Hub's cache layout, are followed).
 * When both model.safetensors and an index exist, model.safetensors is used,
 * as transformers does.
 *
 * tokenizer.json and tokenizer_config.json are not read here; their paths are
 * exposed for the tokenizer and chat template loaders.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include "safetensors.h"
#include "tensor.h"

G_BEGIN_DECLS

typedef struct _BlnHfDir BlnHfDir;

/* Opens the model directory @path. Returns NULL with @error set on failure:
 * BLN_ERROR_IO when config.json or a weight file is missing or unreadable,
 * BLN_ERROR_CORRUPT for malformed JSON, a bad index (unsafe shard name,
 * tensor missing from its shard or present in two shards) or a bad
 * safetensors file, BLN_ERROR_UNSUPPORTED for a dtype safetensors.c does not
 * know. Free with bln_hfdir_free(). */
BlnHfDir *bln_hfdir_open (const char *path, GError **error);

/* Frees the directory, its shards and every tensor handed out. NULL is fine. */
void bln_hfdir_free (BlnHfDir *hf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnHfDir, bln_hfdir_free)

/* The directory path given to open. Owned by @hf. */
const char *bln_hfdir_path (const BlnHfDir *hf);

/* The root object of config.json, owned by @hf (do not modify or free). */
JsonObject *bln_hfdir_config (const BlnHfDir *hf);

/* Full paths of tokenizer.json, tokenizer_config.json and
 * generation_config.json, or NULL when the file does not exist. Owned by @hf. */
const char *bln_hfdir_tokenizer_json (const BlnHfDir *hf);
const char *bln_hfdir_tokenizer_config (const BlnHfDir *hf);
const char *bln_hfdir_generation_config (const BlnHfDir *hf);

/* Number of weight files opened (1 for a single model.safetensors). */
int bln_hfdir_n_shards (const BlnHfDir *hf);

/* Tensor names, sorted; @i in [0, n_tensors). Owned by @hf. */
int64_t bln_hfdir_n_tensors (const BlnHfDir *hf);
const char *bln_hfdir_tensor_name (const BlnHfDir *hf, int64_t i);

/* The header entry of tensor @name (dtype, file-order shape), or NULL when
 * there is no such tensor. Owned by @hf. */
const BlnStTensorInfo *bln_hfdir_tensor_info (const BlnHfDir *hf, const char *name);

/* Tensor @name as a BlnTensor (ne[0] = the last file dimension; data borrowed
 * from the mapping), owned by @hf. Returns NULL with @error set:
 * BLN_ERROR_CORRUPT when there is no such tensor, BLN_ERROR_UNSUPPORTED for a
 * dtype other than F32/F16/BF16 (or FP8 with block scales, see below) or more
 * than four dimensions. */
const BlnTensor *bln_hfdir_get_tensor (BlnHfDir *hf, const char *name, GError **error);

/* FP8 checkpoints (DeepSeek-V3 / R1 as published): a weight stored as
 * float8 e4m3 with a companion "<name>_scale_inv" (one float per block of
 * quantization_config.weight_block_size, default 128 x 128) reads as its
 * values times its block's scale. bln_hfdir_get_tensor() returns such a
 * tensor decoded to F32 (kept until the directory is freed: for small
 * models); the scale tensors are not listed among the names. Other FP8
 * layouts are refused (BLN_ERROR_UNSUPPORTED). For large models read rows
 * one at a time: bln_hfdir_fp8_row() decodes row @r (file order: shape[0]
 * rows of shape[1] values) into @out. */
gboolean bln_hfdir_tensor_is_fp8 (BlnHfDir *hf, const char *name);
/* Tensor @name's type and shape (as bln_hfdir_get_tensor() gives them)
 * without decoding an FP8 tensor: for those, a header whose data is NULL. */
const BlnTensor *bln_hfdir_get_shape (BlnHfDir *hf, const char *name, GError **error);
gboolean bln_hfdir_fp8_row (BlnHfDir *hf, const char *name, int64_t r, float *out,
                            GError **error);

/* Same, but quietly NULL for an absent or unusable tensor (optional weights). */
const BlnTensor *bln_hfdir_find_tensor (BlnHfDir *hf, const char *name);

/* config.json helpers. @key may be a dotted path into nested objects
 * ("rope_scaling.factor"); @obj is usually bln_hfdir_config(). Each returns
 * @def when a component is missing, is JSON null, or has the wrong type.
 * get_int accepts an integral JSON number (and a boolean); get_float any
 * number; get_string a string (owned by the JSON tree). get_object returns
 * the nested object or NULL. */
int64_t bln_hf_config_get_int (JsonObject *obj, const char *key, int64_t def);
double bln_hf_config_get_float (JsonObject *obj, const char *key, double def);
gboolean bln_hf_config_get_bool (JsonObject *obj, const char *key, gboolean def);
const char *bln_hf_config_get_string (JsonObject *obj, const char *key, const char *def);
JsonObject *bln_hf_config_get_object (JsonObject *obj, const char *key);

/* TRUE when @key (dotted path as above) is present and not null. */
gboolean bln_hf_config_has (JsonObject *obj, const char *key);

G_END_DECLS
