/*
 * hex.c - lower-case hex encoding: digests, signatures, tokens, random
 * ids and JSON escapes all come through here.  No state; any thread.
 */
#include "hex.h"

/*
 * Write the 2 * n lower-case hex digits of the n bytes at p to out, then a
 * NUL: out has room for 2 * n + 1 bytes.
 */
void
hex_encode(const void *p, size_t n, char *out)
{
	static const char	 digits[] = "0123456789abcdef";
	const unsigned char	*b = p;
	size_t			 i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}
