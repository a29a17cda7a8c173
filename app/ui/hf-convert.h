/* hf-convert.h — converting a Hugging Face model folder to one GGUF file.
 *
 * The folder holds config.json, the weights as safetensors (one file or
 * shards with an index), tokenizer.json and usually tokenizer_config.json.
 * The GGUF file gets the layout llama.cpp's converter gives such a model: the
 * same metadata keys, the GGUF tensor names, the query and key rows of
 * "llama" models reordered for GGUF's adjacent-pair rotary embedding, and the
 * byte-level BPE vocabulary with its merges, special token ids and chat
 * template. Two-dimensional weights are stored as the chosen type (rows whose
 * length is not a multiple of its block fall back to Q8_0, or F16 when not a
 * multiple of 32 either); norms and biases stay F32.
 *
 * Architectures: "llama" (LlamaForCausalLM: DeepSeek-LLM, DeepSeek-Coder 1.x,
 * R1-Distill-Llama without llama3 rope scaling, SmolLM2), "qwen2"
 * (R1-Distill-Qwen) and "deepseek2" (DeepSeek-V2, -V2-Lite, -V2.5, -V3, R1
 * in BF16/F16/F32, and the FP8 checkpoints as published (float8 e4m3
 * weights with a weight_scale_inv per block, decoded row by row): MLA's kv_b
 * split into attn_k_b / attn_v_b, experts stacked, yarn rope). GLib and the engine only (no GTK); the work is blocking, so run
 * it on a worker thread.
 */
#pragma once

#include <gio/gio.h>

#include "quant.h"

G_BEGIN_DECLS

/* The types a folder can be converted to, with their names ("q8_0", ...). */
typedef struct {
  const char *name;     /* as the gguf package spells it */
  BlnType type;
} BlnConvertType;

/* bln_hf_convert_types: the supported targets (static), @n set to their
 * number: q8_0, q4_0, q4_K, q6_K, f16, bf16, f32. */
const BlnConvertType *bln_hf_convert_types (guint *n);

/* bln_hf_convert_type_from_name: the type named @name; FALSE if not a target. */
gboolean bln_hf_convert_type_from_name (const char *name, BlnType *out);

/* Called between tensors and every few MiB with the fraction done (0..1). */
typedef void (*BlnConvertProgress) (double fraction, gpointer user_data);

/* bln_hf_convert:
 * Writes the model of the folder @hf_dir to the GGUF file @out_path as @type.
 * The data goes to "@out_path.part" first, renamed to @out_path only when
 * complete, so a failed or cancelled conversion leaves nothing behind.
 * @progress may be NULL. Returns FALSE with @error set: G_IO_ERROR_CANCELLED
 * when @cancellable was cancelled; BLN_ERROR_UNSUPPORTED for an architecture,
 * rope scaling or tokenizer it does not convert (the message says which);
 * BLN_ERROR_CORRUPT / BLN_ERROR_IO from reading the folder; BLN_ERROR_INVALID
 * for a @type that is not a target; BLN_ERROR_IO when the file cannot be
 * written (disk full).
 */
gboolean bln_hf_convert (const char *hf_dir, const char *out_path, BlnType type,
                         GCancellable *cancellable, BlnConvertProgress progress,
                         gpointer user_data, GError **error);

/* bln_hf_convert_file_name: the file name the app gives a conversion of
 * @hf_dir to @type: "<folder name>-<type name>.gguf" (new string). */
char *bln_hf_convert_file_name (const char *hf_dir, BlnType type);

G_END_DECLS
