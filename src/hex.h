/* hex.h - lower-case hex encoding of bytes. */
#ifndef HEX_H
#define HEX_H

#include <stddef.h>

void	hex_encode(const void *p, size_t n, char *out);

#endif
