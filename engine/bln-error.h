/* bln-error.h — the engine's error domain.
 *
 * Every fallible engine function takes a GError ** as its last argument and
 * returns FALSE / NULL on failure with the error set in this domain. Nothing in
 * the engine aborts or exits on bad input.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define BLN_ERROR (bln_error_quark ())

typedef enum {
  BLN_ERROR_IO,          /* a file cannot be opened, read or mapped */
  BLN_ERROR_CORRUPT,     /* a file is malformed: truncated, bad offsets, bad counts */
  BLN_ERROR_UNSUPPORTED, /* well-formed but not something we handle (type, arch, construct) */
  BLN_ERROR_INVALID,     /* a bad argument from the caller or the user */
  BLN_ERROR_NOMEM,       /* an allocation failed or would be unreasonably large */
  BLN_ERROR_TEMPLATE,    /* a chat template failed to parse or render */
  BLN_ERROR_BACKEND,     /* the compute backend failed */
} BlnErrorCode;

GQuark bln_error_quark (void);

G_END_DECLS
