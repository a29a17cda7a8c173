/* gguf-write.h — a streaming writer for GGUF v3 files.
 *
 * Usage: create a writer, add the metadata (any GGUF value type) and declare
 * every tensor (name, type, shape) up front; then hand over the tensor data in
 * declaration order, in as many pieces as convenient, and finish. The header
 * (metadata + tensor table) is written when the first data byte arrives (or at
 * finish), so only the metadata and the current write buffer are ever held in
 * memory: a file of any size can be produced from generated or streamed data.
 *
 * Offsets and the padding between tensors follow general.alignment: the
 * alignment given at creation is recorded as general.alignment (a u32) unless
 * it is the format default of 32, as llama.cpp's writers do.
 *
 * Failure: every call reports a problem through a GError (BLN_ERROR domain:
 * BLN_ERROR_IO for a system error such as ENOSPC — the message carries
 * strerror —, BLN_ERROR_INVALID for a caller mistake). After an I/O failure the
 * writer is "failed": later calls fail with the same kind of error and the
 * partially written file has already been removed. A writer freed without a
 * successful bln_gguf_writer_finish() also removes its file.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "gguf.h"
#include "quant.h"

G_BEGIN_DECLS

typedef struct _BlnGgufWriter BlnGgufWriter;

/* Creates (truncates) @path for writing. @alignment: a power of two between 1
 * and 1 GiB, or 0 for the default 32. Returns NULL with @error set
 * (BLN_ERROR_IO naming the path and the system error, BLN_ERROR_INVALID for a
 * bad alignment). Free with bln_gguf_writer_free(). */
BlnGgufWriter *bln_gguf_writer_new (const char *path, size_t alignment, GError **error);

/* Closes the file if still open and frees the writer. When finish was not
 * reached successfully, the (partial) file is unlinked. NULL is ignored. */
void bln_gguf_writer_free (BlnGgufWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnGgufWriter, bln_gguf_writer_free)

/* Metadata. Every adder copies its arguments. They fail with BLN_ERROR_INVALID
 * when the key is empty or already present, or when the header has already been
 * written (data writing started); general.alignment is reserved (set it through
 * bln_gguf_writer_new()). Keys are stored in the order they are added. */
gboolean bln_gguf_writer_add_uint8 (BlnGgufWriter *w, const char *key, uint8_t v, GError **error);
gboolean bln_gguf_writer_add_int8 (BlnGgufWriter *w, const char *key, int8_t v, GError **error);
gboolean bln_gguf_writer_add_uint16 (BlnGgufWriter *w, const char *key, uint16_t v,
                                     GError **error);
gboolean bln_gguf_writer_add_int16 (BlnGgufWriter *w, const char *key, int16_t v, GError **error);
gboolean bln_gguf_writer_add_uint32 (BlnGgufWriter *w, const char *key, uint32_t v,
                                     GError **error);
gboolean bln_gguf_writer_add_int32 (BlnGgufWriter *w, const char *key, int32_t v, GError **error);
gboolean bln_gguf_writer_add_uint64 (BlnGgufWriter *w, const char *key, uint64_t v,
                                     GError **error);
gboolean bln_gguf_writer_add_int64 (BlnGgufWriter *w, const char *key, int64_t v, GError **error);
gboolean bln_gguf_writer_add_float32 (BlnGgufWriter *w, const char *key, float v, GError **error);
gboolean bln_gguf_writer_add_float64 (BlnGgufWriter *w, const char *key, double v,
                                      GError **error);
gboolean bln_gguf_writer_add_bool (BlnGgufWriter *w, const char *key, gboolean v, GError **error);
/* A NUL-terminated string. */
gboolean bln_gguf_writer_add_string (BlnGgufWriter *w, const char *key, const char *v,
                                     GError **error);
/* A string of @len bytes (may hold NULs). */
gboolean bln_gguf_writer_add_string_len (BlnGgufWriter *w, const char *key, const char *v,
                                         size_t len, GError **error);

/* An array of @n scalars of @elem_type (any type but STRING and ARRAY) packed
 * in host order at @data (@n * the element size bytes; bools are one byte
 * each, 0 or 1). */
gboolean bln_gguf_writer_add_array (BlnGgufWriter *w, const char *key, BlnGgufType elem_type,
                                    const void *data, uint64_t n, GError **error);

/* An array of @n strings. @lens may be NULL (then each string is
 * NUL-terminated) or give each string's byte length. */
gboolean bln_gguf_writer_add_string_array (BlnGgufWriter *w, const char *key,
                                           const char *const *strv, const size_t *lens,
                                           uint64_t n, GError **error);

/* Declares a tensor: @n_dims (1..4) extents in @ne (ne[0] is the row length
 * and must be a multiple of @type's block size). Fails with BLN_ERROR_INVALID
 * for a duplicate or empty name, an unknown type, a bad shape, or once data
 * writing has started. Tensors are laid out in declaration order. */
gboolean bln_gguf_writer_add_tensor (BlnGgufWriter *w, const char *name, BlnType type,
                                     int n_dims, const int64_t *ne, GError **error);

/* Bytes the data of tensor @index (declaration order) takes, or 0 when out of
 * range. */
size_t bln_gguf_writer_tensor_nbytes (const BlnGgufWriter *w, int64_t index);

/* Total size the finished file will have: header, padding and all data.
 * Changes while metadata or tensors are still being added. */
uint64_t bln_gguf_writer_file_size (const BlnGgufWriter *w);

/* Appends @len bytes of tensor data. Data goes to the tensors in declaration
 * order; a piece may span the end of one tensor and the start of the next
 * (the alignment padding is inserted automatically). The first call writes the
 * header. Fails with BLN_ERROR_INVALID when more bytes are given than the
 * tensors need, or BLN_ERROR_IO (file removed) on a write failure. */
gboolean bln_gguf_writer_write (BlnGgufWriter *w, const void *data, size_t len, GError **error);

/* Index of the tensor the next data byte belongs to (n_tensors when all data
 * has been written). */
int64_t bln_gguf_writer_current_tensor (const BlnGgufWriter *w);

/* Skips the rest of the current tensor's data without writing it: the file
 * gets a hole there (reads as zeros, takes no disk blocks on most file
 * systems). For layout tests of huge models. */
gboolean bln_gguf_writer_skip_tensor (BlnGgufWriter *w, GError **error);

/* Callback for bln_gguf_writer_write_tensor_cb(): fills @buf with @len bytes
 * of the tensor's data starting at byte @offset. Return FALSE with @error set
 * to abort (the file is then removed). */
typedef gboolean (*BlnGgufWriterFill) (void *buf, size_t offset, size_t len, gpointer user_data,
                                       GError **error);

/* Writes the whole current tensor by asking @fill for consecutive pieces of at
 * most a few MiB. Convenience over bln_gguf_writer_write(). */
gboolean bln_gguf_writer_write_tensor_cb (BlnGgufWriter *w, BlnGgufWriterFill fill,
                                          gpointer user_data, GError **error);

/* Checks that every tensor's data was written, flushes, fsyncs and closes the
 * file. On failure the file is removed and @error set (BLN_ERROR_INVALID when
 * data is missing, BLN_ERROR_IO otherwise). Call at most once. */
gboolean bln_gguf_writer_finish (BlnGgufWriter *w, GError **error);

G_END_DECLS
