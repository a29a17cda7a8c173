#include "bln-error.h"

G_DEFINE_QUARK (bln-error-quark, bln_error)
